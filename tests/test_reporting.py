"""Reports of runs: score tables (one run, several runs), usage tables, the chart and the HTML page."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from harness.llm import Model
from harness.llm.providers.mock import MockBackend
from harness.metrics.aggregate import Cell, MetricAggregate
from harness.reporting import (
    chart,
    format_cell,
    html_report,
    read_results,
    run_labels,
    score_figure,
    score_report_table,
    usage_report_table,
)
from harness.results import RoleInfo, RunResult, RunSpec, UsageSummary
from harness.runner import RunConfig, run
from harness.task import DataFileInfo, DataOptions
from tasks.locomo import LABEL_DESCRIPTIONS

TYPES = ["single-hop", "multi-hop", "temporal"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
needs_matplotlib = pytest.mark.skipif(
    importlib.util.find_spec("matplotlib") is None, reason='needs matplotlib: pip install "memory-harness[report]"'
)


def cell(mean: float | None, low: float | None = None, high: float | None = None, n: int = 10, **extra) -> Cell:
    return Cell(mean=mean, n=n, ci_low=low, ci_high=high, **extra)


def aggregate(overall: Cell, **by_type: Cell) -> MetricAggregate:
    return MetricAggregate(overall=overall, by_type={t.replace("_", "-"): c for t, c in by_type.items()})


def make_run(
    run_id: str = "r1",
    system: str = "rag",
    model: str = "openai:gpt-4o-mini",
    aggregates: dict[str, MetricAggregate] | None = None,
    labels: str = "locomo",
    **spec_fields,
) -> RunResult:
    aggregates = aggregates or {
        "f1": aggregate(cell(0.5, 0.4, 0.6, n=20), single_hop=cell(0.6123, 0.5, 0.701), multi_hop=cell(0.4, n=1)),
    }
    spec = RunSpec(
        task="locomo",
        task_version="locomo10@3eb6f2c",
        task_options={"labels": labels},
        label_convention=labels,
        label_description=LABEL_DESCRIPTIONS[labels],
        data=DataFileInfo(path="/data/locomo10.json", origin="cache", sha256="ab", checksum_verified=True),
        data_options=DataOptions(),
        system=system,
        roles={"model": RoleInfo(spec=model, provider=model.split(":")[0], model=model)},
        metrics=list(aggregates),
        question_types=TYPES,
        **spec_fields,
    )
    return RunResult(run_id=run_id, status="finished", created_at="now", spec=spec, aggregates=aggregates)


def two_metric_run() -> RunResult:
    return make_run(
        aggregates={
            "f1": aggregate(cell(0.5, 0.4, 0.6, n=20), temporal=cell(0.25, 0.1, 0.4, n=8), single_hop=cell(0.7, n=1)),
            "llm_judge": aggregate(
                cell(0.55, 0.45, 0.65, n=19, n_unscored=1),
                temporal=cell(0.3, 0.2, 0.4, n=7, n_unscored=1),
                single_hop=cell(1.0, n=1),
            ),
        }
    )


def usage(calls: int, **fields) -> UsageSummary:
    defaults = {"cache_hits": 0, "prompt_tokens": 100 * calls, "completion_tokens": 10 * calls, "latency_s": 1.0}
    defaults |= {"latency_p50_s": 0.1, "latency_p95_s": 0.5, "latency_p99_s": 0.9, "cost_usd": 0.01}
    return UsageSummary(calls=calls, **(defaults | fields))


def test_format_cell_is_x100_with_one_decimal_interval_sd_and_n():
    assert format_cell(cell(0.61234, 0.5, 0.70149)) == "61.2 [50.0, 70.1]"
    assert format_cell(cell(0.5, n=1), with_n=True) == "50.0 (n=1)"
    assert (
        format_cell(cell(0.5, 0.4, 0.6, sd_repeats=0.0123, repeats=3), with_n=True) == "50.0 [40.0, 60.0] ±1.2 (n=10)"
    )
    assert format_cell(cell(None, n=0)) == format_cell(None) == "-"


def test_one_run_has_a_column_per_metric_and_an_n_column_in_task_type_order():
    table = score_report_table([two_metric_run()])

    assert table.columns == ["question type", "n", "f1", "llm_judge"]
    assert table.rows == [
        ["single-hop", "1", "70.0", "100.0"],
        ["temporal", "8", "25.0 [10.0, 40.0]", "30.0 [20.0, 40.0]"],
        ["overall", "20", "50.0 [40.0, 60.0]", "55.0 [45.0, 65.0]"],
    ]
    assert table.emphasized_rows == {2}
    assert "unscored questions, left out of the means (e.g. unparsable judge replies): llm_judge 1" in table.notes


def test_one_run_with_a_metric_shows_only_that_metric():
    assert score_report_table([two_metric_run()], "f1").columns == ["question type", "n", "f1"]


def test_several_runs_have_one_column_per_run_with_the_interval_and_n():
    runs = [make_run("a", system="rag"), make_run("b", system="mem0")]
    table = score_report_table(runs)

    assert table.columns == ["question type", "rag", "mem0"]
    assert table.rows[0] == ["single-hop", "61.2 [50.0, 70.1] (n=10)", "61.2 [50.0, 70.1] (n=10)"]
    assert table.rows[-1] == ["overall", "50.0 [40.0, 60.0] (n=20)", "50.0 [40.0, 60.0] (n=20)"]
    assert "rag: system rag · model=openai:gpt-4o-mini · run a" in table.notes


def test_several_runs_default_to_llm_judge_when_all_have_it_else_the_first_common_metric():
    judged = [two_metric_run(), two_metric_run()]
    assert score_report_table(judged).title == "locomo · llm_judge x100 per run"
    assert score_report_table([two_metric_run(), make_run()]).title == "locomo · f1 x100 per run"
    with pytest.raises(ValueError, match="'llm_judge' is not scored in run"):
        score_report_table([two_metric_run(), make_run()], "llm_judge")


def test_run_labels_keep_what_differs_and_stay_unique():
    same_system = [make_run("a", model="openai:gpt-4o@http://localhost:8000/v1"), make_run("b", model="mock")]
    assert run_labels(same_system) == ["openai:gpt-4o", "mock"]
    assert run_labels([make_run("a"), make_run("b")]) == ["a", "b"]
    assert run_labels([make_run("a"), make_run("a")]) == ["a", "a #2"]
    assert run_labels([make_run("a", system="rag", model="mock")]) == ["rag · mock · a"]


def test_notes_name_the_label_convention_metrics_intervals_and_unverified_data():
    mem0_view = make_run(labels="mem0", seed=7)
    mem0_view.spec.data.checksum_verified = False
    notes = score_report_table([mem0_view]).notes

    assert "task locomo (locomo10@3eb6f2c) · labels=mem0" in notes
    assert LABEL_DESCRIPTIONS["mem0"] in notes and "Mem0/Memory-R1 view" in LABEL_DESCRIPTIONS["mem0"]
    assert "f1: set-based token F1 of the Mem0 / Memory-R1 evaluations" in notes
    assert any("95% bootstrap intervals of the mean (seed 7)" in note for note in notes)
    assert "data file /data/locomo10.json used without checksum verification" in notes
    assert any("LoCoMo's own labels" in note for note in score_report_table([make_run()]).notes)


def test_runs_with_different_label_conventions_are_flagged():
    notes = score_report_table([make_run("a"), make_run("b", labels="mem0")]).notes
    assert "the runs name question types differently: types of the same name hold different questions" in notes
    assert any("not over the same questions" in note for note in notes)


def test_judge_repeats_add_the_sd_and_its_note():
    repeated = cell(0.5, 0.4, 0.6, sd_repeats=0.02, repeats=3)
    result = make_run(aggregates={"llm_judge": aggregate(repeated, temporal=repeated)})
    table = score_report_table([result, result])

    assert table.rows[-1][1] == "50.0 [40.0, 60.0] ±2.0 (n=10)"
    assert "±sd: standard deviation of the cell mean across the 3 judge repeats" in table.notes


def test_usage_table_has_a_row_per_stage_percentiles_cost_and_a_total():
    result = make_run()
    result.usage = {"answer": usage(4), "judge": usage(2, unpriced_calls=1, latency_p99_s=None)}
    table = usage_report_table(result)

    assert table.columns[-2:] == ["p99 s", "cost $"]
    assert table.rows == [
        ["answer", "4", "0", "400", "40", "1.0", "0.10", "0.50", "0.90", "0.0100"],
        ["judge", "2", "0", "200", "20", "1.0", "0.10", "0.50", "-", ">=0.0100"],
        ["total", "6", "0", "600", "60", "2.0", "", "", "", ">=0.0200"],
    ]
    assert table.emphasized_rows == {2}
    assert any(note.startswith("1 calls of models with no known price") for note in table.notes)


def test_usage_of_an_unpriced_model_is_not_shown_as_free():
    result = make_run()
    result.usage = {"answer": usage(3, unpriced_calls=3, cost_usd=0.0)}
    assert usage_report_table(result).rows == [["answer", "3", "0", "300", "30", "1.0", "0.10", "0.50", "0.90", "?"]]


@needs_matplotlib
def test_score_figure_draws_a_bar_with_an_error_bar_per_run_and_group():
    runs = [make_run("a"), make_run("b"), make_run("c")]
    from matplotlib.container import BarContainer

    figure = score_figure(runs, "f1")
    axes = figure.axes[0]

    bars = [c for c in axes.containers if isinstance(c, BarContainer)]
    assert len(bars) == 3 and len(axes.patches) == 3 * 3
    assert all(b.errorbar is not None for b in bars)
    assert [t.get_text() for t in axes.get_xticklabels()] == ["single-hop", "multi-hop", "overall"]
    assert [t.get_text() for t in figure.legends[0].get_texts()] == ["a", "b", "c"]
    assert axes.get_ylabel() == "f1 (x100)" and axes.get_title().startswith("locomo: f1")
    heights = [p.get_height() for p in bars[0].patches]
    assert heights[0] == pytest.approx(61.23) and heights[-1] == pytest.approx(50.0)
    low, high = bars[0].errorbar.lines[2][0].get_segments()[0][:, 1]
    assert (low, high) == pytest.approx((50.0, 70.1))


@needs_matplotlib
def test_chart_writes_a_png(tmp_path):
    path = chart([make_run("a"), make_run("b")], None, tmp_path / "out" / "chart.png")
    assert path.read_bytes().startswith(PNG_SIGNATURE)


def test_chart_without_matplotlib_says_how_to_install_it(monkeypatch):
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError, match=r'pip install "memory-harness\[report\]"'):
        score_figure([make_run()])


@needs_matplotlib
def test_html_report_is_a_page_with_the_tables_and_the_chart_inline():
    first, second = make_run("a", system="<b>rag</b>"), make_run("b")
    first.usage = {"answer": usage(1)}
    page = html_report([first, second])

    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "<b>rag</b>" not in page and "&lt;b&gt;rag&lt;/b&gt;" in page
    assert page.count('src="data:image/png;base64,iVBORw0KGgo') == 1
    assert page.count("<table") == 3 and "no LLM calls recorded" in page


async def test_report_of_real_toy_runs_read_from_their_directories(tmp_path):
    def answer(messages):
        question = messages[-1]["content"].rsplit("Question: ", 1)[1]
        return "May" if question.startswith("When is Alice") else "no idea"

    for run_id in ("r1", "r2"):
        model = Model(MockBackend(responder=answer), spec="mock", max_retries=1, backoff_s=0)
        settings = {"system": "full-context", "run_id": run_id, "roles": {"model": "mock"}, "metrics": ["exact_match"]}
        await run(RunConfig(task="toy", output_dir=tmp_path, **settings), models={"model": model})
    runs = read_results([tmp_path / "toy" / "full-context" / r for r in ("r1", "r2")])
    table = score_report_table(runs)

    assert table.columns == ["question type", "r1", "r2"]
    assert [row[0] for row in table.rows] == ["single-hop", "multi-hop", "temporal", "overall"]
    assert table.rows[2][1:] == ["50.0 [0.0, 100.0] (n=2)"] * 2
    assert table.rows[-1][1].startswith("16.7 [0.0, ") and table.rows[-1][1].endswith("] (n=6)")
    assert usage_report_table(runs[0]).rows[0][:2] == ["answer", "6"]
