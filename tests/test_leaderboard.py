"""`harness leaderboard`: runs made by the harness (mock LLMs), one killed mid-run, ranked per question type."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from support import as_killed, config, gold_judge, mock_model, oracle, toy_questions

from harness.cli import main
from harness.reporting import format_cell
from harness.results import RunDir
from harness.runner import RunConfig, run, summarize
from harness.task import DataOptions

pytest.importorskip("pandas", reason='needs pandas: pip install "memory-harness[frames]"')
from harness.leaderboard import leaderboard_table

REQUIRED_DATA = ["locomo/locomo10.json"]
QUESTIONS = toy_questions()
TYPES = ["single-hop", "multi-hop", "temporal"]
RANKED = ["c-all", "b-half", "a-killed"]
"""Best first: all right; temporal wrong and one question failed (3 of 5); killed after its first history,
whose multi-hop and temporal answers were wrong (1 of 3). Their names sort the other way round."""


@pytest.fixture
async def runs(tmp_path: Path) -> Path:
    answers = {
        "c-all": oracle(),
        "b-half": oracle(wrong_types={"temporal"}, failing={QUESTIONS[3].text}),
        "a-killed": oracle(wrong_types={"temporal", "multi-hop"}),
    }
    for run_id, respond in answers.items():
        models = {"model": mock_model(respond), "judge": mock_model(gold_judge())}
        settings = {"run_id": run_id, "roles": {"model": "mock", "judge": "mock"}}
        await run(config(tmp_path, **settings, metrics=["exact_match", "llm_judge"]), models=models)
    as_killed(tmp_path / "toy" / "full-context" / "a-killed", keep=lambda r: r.sample_id == "toy-1")
    return tmp_path


def run_dir(root: Path, run_id: str) -> Path:
    return root / "toy" / "full-context" / run_id


def test_runs_are_ranked_by_their_overall_score_with_a_cell_per_question_type(runs):
    table = leaderboard_table([runs])

    assert table.title == "toy · llm_judge x100 · leaderboard"  # every run has the judge: its metric leads
    assert table.columns == ["run", "overall", *TYPES]
    assert [row[0] for row in table.rows] == RANKED
    assert [row[1].split(" ")[0] for row in table.rows] == ["100.0", "60.0", "33.3"]


def test_cells_are_those_of_the_runs_own_aggregation(runs):
    """Finished runs: as in their run.json; the killed one: as recomputed from what it recorded."""
    table = leaderboard_table([runs], metric="exact_match")
    cells = {row[0]: row[1:] for row in table.rows}

    for run_id in RANKED:
        directory = RunDir(run_dir(runs, run_id))
        result = directory.read_result()
        aggregate = (result.aggregates or summarize(directory, result.spec)["aggregates"])["exact_match"]
        expected = [aggregate.overall, *(aggregate.by_type[t] for t in TYPES)]
        assert cells[run_id] == [format_cell(c, with_n=True) for c in expected]
    assert cells["b-half"][0].endswith("(n=5)")  # the failed question is left out
    assert cells["a-killed"] == ["33.3 [0.0, 100.0] (n=3)", "100.0 (n=1)", "0.0 (n=1)", "0.0 (n=1)"]


def test_notes_name_the_label_convention_and_the_incomplete_and_failed_runs(runs):
    notes = leaderboard_table([runs]).notes

    assert "question types: as the task names them (no label convention recorded)" in notes
    assert "a-killed: incomplete (running), 3 of 6 planned questions" in notes
    assert "b-half: 1 of its questions failed (no answer), left out of the cells" in notes
    assert "rows sorted by the overall mean, best first" in notes
    assert any(note.startswith("llm_judge: LLM-as-judge") and "(judge: mock)" in note for note in notes)
    assert not any(note.startswith("c-all: incomplete") for note in notes)


def test_the_command_writes_csv_markdown_html_and_the_console(runs, tmp_path, capsys):
    out = tmp_path / "board.csv"
    assert main(["leaderboard", str(runs), "--metric", "exact_match", "--format", "csv", "--output", str(out)]) == 0
    rows = list(csv.reader(io.StringIO(out.read_text())))
    assert rows[0] == ["run", "overall", *TYPES] and [r[0] for r in rows[1:]] == RANKED

    assert main(["leaderboard", str(run_dir(runs, "c-all")), str(run_dir(runs, "b-half")), "--format", "md"]) == 0
    markdown = capsys.readouterr().out
    assert markdown.startswith("**toy · llm_judge x100 · leaderboard**")
    assert "| c-all | 100.0 [100.0, 100.0] (n=6) |" in markdown and "a-killed" not in markdown

    assert main(["leaderboard", str(runs), "--format", "html"]) == 0
    page = capsys.readouterr().out
    assert page.count("<tr") == 1 + len(RANKED) and "incomplete (running)" in page

    assert main(["leaderboard", str(runs)]) == 0
    console = capsys.readouterr().out
    assert "leaderboard" in console and "mean [low, high] (n=scored)" in console  # notes not read as markup


def test_a_metric_some_run_lacks_is_refused_by_name(runs, capsys):
    assert main(["leaderboard", str(runs), "--metric", "f1"]) == 2
    assert "metric 'f1' is not scored in run(s) a-killed, b-half, c-all" in capsys.readouterr().err


async def test_locomo_runs_under_two_label_conventions_are_told_apart(tmp_path, shared_data_dir):
    for labels in ("mem0", "locomo"):
        settings = RunConfig(
            task="locomo",
            system="full-context",
            task_options={"labels": labels},
            data=DataOptions(data_dir=str(shared_data_dir)),
            roles={"model": "mock"},
            metrics=["exact_match"],
            limit=8,
            output_dir=tmp_path,
            run_id=labels,
        )
        await run(settings, models={"model": mock_model(lambda messages: "no idea")})
    from tasks.locomo import LABEL_DESCRIPTIONS

    table = leaderboard_table([tmp_path / "locomo"])

    assert [row[0] for row in table.rows] == ["locomo", "mem0"]  # tied at 0: in the order found
    assert LABEL_DESCRIPTIONS["mem0"] in table.notes and LABEL_DESCRIPTIONS["locomo"] in table.notes
    assert "the runs name question types differently: types of the same name hold different questions" in table.notes
    assert {"single-hop", "multi-hop", "temporal"} <= set(table.columns)
