"""The report of one or more runs, read from their run directories: score and usage tables, a chart, an HTML page.

Scores are shown x100 as `mean [low, high]`, the seeded bootstrap 95% interval the aggregation stored, so a
reader sees at a glance which differences between runs are within noise. The tables are `ReportTable`s and
render to any format of `harness.export`; the chart needs matplotlib (the `report` extra), imported only here.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from harness.export import to_html
from harness.metrics.abstention import EXTRA_PHRASES, AbstentionSummary
from harness.metrics.aggregate import Cell
from harness.plugins import METRICS
from harness.results import RunDir, RunResult, UsageSummary
from harness.tables import ReportTable

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DEFAULT_METRIC = "llm_judge"
"""The metric a comparison shows when every run has it: the one the memory papers lead with."""
INSTALL_REPORT_EXTRA = 'pip install "memory-harness[report]"'

"""What each label convention a task may record means; tasks without one name their types one way only."""


OVERALL = "overall"
GOLD_EVIDENCE_MARK = " (gold)"
"""Appended to the label of a run whose system reads the gold evidence (`RunSpec.reads_gold_evidence`)."""
GOLD_EVIDENCE_NOTE = (
    "(gold): the system reads each question's gold evidence, a reference ceiling for its answer model, "
    "not a memory system"
)


def dollars(cost: float, unpriced_calls: int) -> str:
    """A cost that is exact, a lower bound (some calls unpriced: `>=`), or unknown (`?`)."""
    if unpriced_calls and not cost:
        return "?"
    return (">=" if unpriced_calls else "") + f"{cost:.4f}"


def read_results(run_dirs: Sequence[Path]) -> list[RunResult]:
    """Each directory's `run.json` (for the DataFrame of their records: `harness.results.load_runs`)."""
    return [RunDir(Path(run_dir)).read_result() for run_dir in run_dirs]


def format_cell(cell: Cell | None, *, with_n: bool = False) -> str:
    """`mean [low, high]` x100 with one decimal, ` ±sd` across judge repeats, `(n=scored)` on request."""
    if cell is None or cell.mean is None:
        return "-"
    text = f"{100 * cell.mean:.1f}"
    if cell.ci_low is not None and cell.ci_high is not None:
        text += f" [{100 * cell.ci_low:.1f}, {100 * cell.ci_high:.1f}]"
    if cell.sd_repeats is not None:
        text += f" ±{100 * cell.sd_repeats:.1f}"
    return f"{text} (n={cell.n})" if with_n else text


def run_labels(results: Sequence[RunResult]) -> list[str]:
    """`system · model · run_id`, keeping of system and model only what differs between the runs, and the run id
    only where it is needed to tell runs apart; unique (a repeated label gets ` #2`, ` #3`)."""
    parts = [(r.spec.system, _model_spec(r), r.run_id) for r in results]
    if len(results) == 1:
        return _marked(results, [" · ".join(p for p in parts[0] if p)])
    varying = [i for i in (0, 1) if len({p[i] for p in parts}) > 1]
    short = [" · ".join(p[i] for i in varying) for p in parts]
    if not varying or len(set(short)) < len(short):
        short = [" · ".join(p[i] for i in [*varying, 2]) for p in parts]
    seen: dict[str, int] = {}
    labels = []
    for label in short:
        seen[label] = seen.get(label, 0) + 1
        labels.append(label if seen[label] == 1 else f"{label} #{seen[label]}")
    return _marked(results, labels)


def _marked(results: Sequence[RunResult], labels: list[str]) -> list[str]:
    return [
        label + (GOLD_EVIDENCE_MARK if r.spec.reads_gold_evidence else "")
        for r, label in zip(results, labels, strict=True)
    ]


def _model_spec(result: RunResult) -> str:
    """The model under test's spec without a server's base URL, which only lengthens a label."""
    roles = result.spec.roles
    role = roles.get("model") or next(iter(roles.values()), None)
    return "" if role is None else role.spec.split("@http", 1)[0]


def resolve_metric(results: Sequence[RunResult], metric: str | None = None) -> str:
    """`metric` if every run scores it; by default llm_judge when all do, else the first metric all runs share."""
    common = [m for m in results[0].spec.metrics if all(m in r.spec.metrics for r in results)]
    if metric is None:
        if not common:
            raise ValueError(
                "the runs share no metric: " + "; ".join(f"{r.run_id}: {', '.join(r.spec.metrics)}" for r in results)
            )
        return DEFAULT_METRIC if DEFAULT_METRIC in common else common[0]
    missing = [r.run_id for r in results if metric not in r.spec.metrics]
    if missing:
        raise ValueError(
            f"metric {metric!r} is not scored in run(s) {', '.join(missing)}; common metrics: {', '.join(common)}"
        )
    return metric


def score_report_table(results: Sequence[RunResult], metric: str | None = None) -> ReportTable:
    """Scores x100 per question type and overall. One run: a column per metric (or just `metric`) and an n column;
    several runs: a column per run for one metric (see `resolve_metric`), each cell with its n."""
    if not results:
        raise ValueError("no runs to report")
    if len(results) == 1 and metric is None:
        metrics = [m for m in results[0].spec.metrics if m in results[0].aggregates]
        if not metrics:
            raise ValueError(f"run {results[0].run_id} has no scores yet (status: {results[0].status})")
    else:
        metrics = [resolve_metric(results, metric)]
    table = _single_run_table(results[0], metrics) if len(results) == 1 else _multi_run_table(results, metrics[0])
    table.notes = _score_notes(results, metrics)
    return table


def _single_run_table(result: RunResult, metrics: list[str]) -> ReportTable:
    table = ReportTable(
        title=f"{result.spec.task} · {run_labels([result])[0]} · scores x100",
        columns=["question type", "n", *metrics],
    )
    for qtype in _question_types([result]):
        cells = [result.aggregates[m].by_type.get(qtype) for m in metrics]
        table.add_row(qtype, _group_size(cells), *(format_cell(c) for c in cells))
    overall = [result.aggregates[m].overall for m in metrics]
    table.add_row(OVERALL, _group_size(overall), *(format_cell(c) for c in overall), emphasized=True)
    return table


def _group_size(cells: Sequence[Cell | None]) -> str:
    """Questions in the group with a record, scored or not (the metrics may leave different ones unscored)."""
    return str(max((c.n + c.n_unscored for c in cells if c is not None), default=0))


def _multi_run_table(results: Sequence[RunResult], metric: str) -> ReportTable:
    tasks = " / ".join(dict.fromkeys(r.spec.task for r in results))
    table = ReportTable(title=f"{tasks} · {metric} x100 per run", columns=["question type", *run_labels(results)])
    for qtype in _question_types(results):
        table.add_row(qtype, *(format_cell(r.aggregates[metric].by_type.get(qtype), with_n=True) for r in results))
    overall = [format_cell(r.aggregates[metric].overall, with_n=True) for r in results]
    table.add_row(OVERALL, *overall, emphasized=True)
    return table


def _question_types(results: Sequence[RunResult]) -> list[str]:
    """Types with a score in any run: in the tasks' display order, then the others as first seen."""
    present = dict.fromkeys(t for r in results for a in r.aggregates.values() for t in a.by_type)
    order = [t for r in results for t in r.spec.question_types]
    return [t for t in dict.fromkeys([*order, *present]) if t in present]


def _score_notes(results: Sequence[RunResult], metrics: list[str]) -> list[str]:
    labels = run_labels(results)
    notes = [*task_notes(results), *label_notes(results), *(metric_note(m, results) for m in metrics)]
    seeds = ", ".join(str(s) for s in dict.fromkeys(r.spec.seed for r in results))
    notes.append(
        f"scores x100 as mean [low, high]: percentile 95% bootstrap intervals of the mean (seed {seeds}); "
        "no interval where fewer than 2 questions were scored"
    )
    if len(results) == 1:
        notes.append("n: questions of the type with a record; means are over the scored ones only")
    else:
        notes.append("(n=…): questions scored, the mean's denominator; unscored ones are left out, never counted as 0")
        notes += [f"{label}: {run_description(r)}" for label, r in zip(labels, results, strict=True)]
    repeats = [c.repeats for r in results for m in metrics for c in _cells(r, m) if c.sd_repeats is not None]
    if repeats:
        notes.append(f"±sd: standard deviation of the cell mean across the {max(repeats)} judge repeats")
    notes += _unscored_notes(results, metrics, labels)
    notes += _run_state_notes(results, labels)
    notes += gold_evidence_notes(results)
    unverified = dict.fromkeys(r.spec.data.path for r in results if _unverified_file(r))
    notes += [f"data file {path} used without checksum verification" for path in unverified]
    return notes


def _unverified_file(result: RunResult) -> bool:
    """A data file read without checking its sha256 (built-in data is code, with nothing to verify)."""
    data = result.spec.data
    return not data.checksum_verified and data.origin != "built-in"


def task_notes(results: Sequence[RunResult]) -> list[str]:
    def describe(r: RunResult) -> str:
        options = ", ".join(f"{k}={v}" for k, v in r.spec.task_options.items())
        limit = "" if r.spec.limit is None else f" · limit {r.spec.limit} (seed {r.spec.seed})"
        return f"task {r.spec.task} ({r.spec.task_version})" + (f" · {options}" if options else "") + limit

    described = list(dict.fromkeys(describe(r) for r in results))
    data = {r.spec.data.sha256 for r in results}
    if len(described) > 1 or len(data) > 1:
        described.append("the runs differ in task, options, limit or data: their rows are not over the same questions")
    return described


def label_notes(results: Sequence[RunResult]) -> list[str]:
    conventions = list(dict.fromkeys(r.spec.label_convention for r in results if r.spec.label_convention))
    described = {r.spec.label_convention: r.spec.label_description for r in results}
    notes = [described.get(c) or f"question types: {c} labels" for c in conventions]
    if len(conventions) > 1:
        notes.append("the runs name question types differently: types of the same name hold different questions")
    return notes


def metric_note(metric: str, results: Sequence[RunResult]) -> str:
    descriptions = {entry.name: entry.description for entry in METRICS.entries()}
    text = f"{metric}: {descriptions.get(metric.partition('@')[0]) or 'no description registered'}"
    judges = dict.fromkeys(r.spec.roles["judge"].spec for r in results if "judge" in r.spec.roles)
    if metric == DEFAULT_METRIC and judges:
        text += f" (judge: {', '.join(judges)})"
    return text


def run_description(result: RunResult) -> str:
    roles = ", ".join(f"{role}={info.spec}" for role, info in result.spec.roles.items())
    options = "".join(f" {k}={v}" for k, v in result.spec.system_options.items())
    config = f" (config {result.spec.config_hash[:8]})" if result.spec.config_hash else ""
    return f"system {result.spec.system}{options} · {roles} · run {result.run_id}{config}"


def _cells(result: RunResult, metric: str) -> list[Cell]:
    aggregate = result.aggregates[metric]
    return [aggregate.overall, *aggregate.by_type.values()]


def _unscored_notes(results: Sequence[RunResult], metrics: list[str], labels: list[str]) -> list[str]:
    notes = []
    for label, result in zip(labels, results, strict=True):
        counts = {m: result.aggregates[m].overall.n_unscored for m in metrics}
        listed = ", ".join(f"{m} {n}" for m, n in counts.items() if n)
        if listed:
            prefix = f"{label}: " if len(results) > 1 else ""
            notes.append(f"{prefix}unscored questions, left out of the means (e.g. unparsable judge replies): {listed}")
    return notes


def _run_state_notes(results: Sequence[RunResult], labels: list[str]) -> list[str]:
    notes = []
    for label, result in zip(labels, results, strict=True):
        counts, planned = result.counts, result.planned_questions
        if counts is not None and planned is not None and counts.questions < planned:
            notes.append(f"{label}: incomplete ({result.status}), {counts.questions} of {planned} planned questions")
        elif result.status != "finished":
            notes.append(f"{label}: run status {result.status}")
    return notes


def gold_evidence_notes(results: Sequence[RunResult]) -> list[str]:
    return [GOLD_EVIDENCE_NOTE] if any(r.spec.reads_gold_evidence for r in results) else []


def abstention_report_table(results: Sequence[RunResult]) -> ReportTable | None:
    """Abstention rates x100 (`harness.metrics.abstention`), a column per run, apart from the score table; None
    when no run holds an unanswerable question."""
    summaries = [r.abstention for r in results]
    if all(s is None for s in summaries):
        return None
    judges = list(dict.fromkeys(j for s in summaries if s is not None for j in s.by_judge))
    per_run = [_abstention_cells(s, judges) for s in summaries]
    tasks = " / ".join(dict.fromkeys(r.spec.task for r in results))
    table = ReportTable(title=f"{tasks} · abstention x100", columns=["rate", *run_labels(results)])
    for name in per_run[0]:
        table.add_row(name, *(format_cell(cells[name], with_n=True) for cells in per_run))
    table.notes = [
        "apart from the headline: the score table counts these questions under their own types",
        "recall and hallucination: over the unanswerable questions (LoCoMo adversarial, LongMemEval abstention); "
        "false abstention: over the answerable ones",
        "rule: the answer contains 'not mentioned' or 'no information available' (LoCoMo's category-5 rule), or as "
        "whole words one of: " + ", ".join(f"'{p}'" for p in EXTRA_PHRASES),
        "judge rows: the judge's verdicts on unanswerable questions it graded with an abstention prompt",
        "(n=…): questions; mean [low, high]: percentile 95% bootstrap interval",
    ]
    return table


def _abstention_cells(summary: AbstentionSummary | None, judges: Sequence[str]) -> dict[str, Cell | None]:
    """One run's cells by row name; None where the run lacks the rate (no summary, or not graded by that judge)."""
    sources = {"rule": summary.rule if summary else None}
    sources |= {judge: summary.by_judge.get(judge) if summary else None for judge in judges}
    cells: dict[str, Cell | None] = {}
    for source, rates in sources.items():
        cells[f"abstention recall · {source}"] = rates.recall if rates else None
        cells[f"hallucination · {source}"] = rates.hallucination if rates else None
    cells["false abstention · rule"] = summary.false_abstention if summary else None
    return cells


def usage_report_table(result: RunResult) -> ReportTable:
    """LLM calls per stage (ingest, answer, judge, ...) with tokens, latency percentiles and list-price cost."""
    columns = ["stage", "calls", "cached", "prompt tok", "completion tok", "latency s", "p50 s", "p95 s", "p99 s"]
    table = ReportTable(title=f"LLM usage per stage · {run_labels([result])[0]}", columns=[*columns, "cost $"])
    for stage, u in result.usage.items():
        percentiles = [_seconds(u.latency_p50_s), _seconds(u.latency_p95_s), _seconds(u.latency_p99_s)]
        table.add_row(stage, *_usage_totals([u]), *percentiles, _cost([u]))
    stages = list(result.usage.values())
    if len(stages) > 1:
        table.add_row("total", *_usage_totals(stages), "", "", "", _cost(stages), emphasized=True)
    table.notes = _usage_notes(stages)
    return table


def _usage_totals(usages: Sequence[UsageSummary]) -> list[str]:
    return [
        str(sum(u.calls for u in usages)),
        str(sum(u.cache_hits for u in usages)),
        str(sum(u.prompt_tokens for u in usages)),
        str(sum(u.completion_tokens for u in usages)),
        f"{sum(u.latency_s for u in usages):.1f}",
    ]


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _cost(usages: Sequence[UsageSummary]) -> str:
    return dollars(sum(u.cost_usd for u in usages), sum(u.unpriced_calls for u in usages))


def _usage_notes(usages: Sequence[UsageSummary]) -> list[str]:
    if not usages:
        return ["no LLM calls recorded"]
    notes = [
        "latency s: total seconds of the calls, cache hits counted as 0 s; p50/p95/p99: per-call percentiles",
        "cost $: list price of the tokens (cache hits priced too, so runs compare by method, not by bill)",
    ]
    unpriced = sum(u.unpriced_calls for u in usages)
    if unpriced:
        notes.append(f"{unpriced} calls of models with no known price: cost $ is a lower bound (>=) or unknown (?)")
    return notes


def score_figure(results: Sequence[RunResult], metric: str | None = None) -> Figure:
    """Grouped bars x100, one per run per question type and overall, with the bootstrap 95% intervals as error bars."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError(f"charts need matplotlib: {INSTALL_REPORT_EXTRA}") from error
    metric = resolve_metric(results, metric)
    groups = [*_question_types(results), OVERALL]
    width = 0.8 / len(results)
    figure = Figure(figsize=(max(6.0, 1.4 * len(groups)), 4.0 + 0.25 * len(results)), layout="constrained")
    FigureCanvasAgg(figure)  # the Agg canvas: renders without a display and leaves pyplot's global state alone
    axes = figure.add_subplot()
    for index, (result, label) in enumerate(zip(results, run_labels(results), strict=True)):
        aggregate = result.aggregates[metric]
        cells = [aggregate.overall if g == OVERALL else aggregate.by_type.get(g) for g in groups]
        heights, below, above = zip(*(_bar(c) for c in cells), strict=True)
        offset = (index - (len(results) - 1) / 2) * width
        positions = [g + offset for g in range(len(groups))]
        axes.bar(positions, heights, width, yerr=[below, above], capsize=3, label=label)
    axes.set_xticks(range(len(groups)), groups)
    axes.set_xlabel("question type")
    axes.set_ylabel(f"{metric} (x100)")
    axes.set_ylim(0, 100)
    tasks = " / ".join(dict.fromkeys(r.spec.task for r in results))
    axes.set_title(f"{tasks}: {metric} per question type, 95% bootstrap intervals")
    figure.legend(loc="outside lower center", fontsize="small")
    return figure


def _bar(cell: Cell | None) -> tuple[float, float, float]:
    """Height and the error bar's extent below and above it, x100; NaN (nothing drawn) where a value is missing."""
    if cell is None or cell.mean is None:
        return math.nan, math.nan, math.nan
    if cell.ci_low is None or cell.ci_high is None:
        return 100 * cell.mean, math.nan, math.nan
    return 100 * cell.mean, 100 * (cell.mean - cell.ci_low), 100 * (cell.ci_high - cell.mean)


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    return buffer.getvalue()


def chart(results: Sequence[RunResult], metric: str | None, path: Path) -> Path:
    """Save `score_figure` as a PNG at `path`; returns `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_png(score_figure(results, metric)))
    return path


def html_report(results: Sequence[RunResult], metric: str | None = None) -> str:
    """A complete HTML page: the score table, the chart (an embedded PNG) and each run's usage table."""
    scores = score_report_table(results, metric)
    abstention = abstention_report_table(results)
    image = base64.b64encode(_png(score_figure(results, metric))).decode("ascii")
    title = html.escape(scores.title)
    body = [
        f"<h1>{title}</h1>",
        to_html(scores),
        *([] if abstention is None else [to_html(abstention)]),
        f'<img alt="{title}: bar chart" src="data:image/png;base64,{image}">',
        *(to_html(usage_report_table(r)) for r in results),
    ]
    return (
        "\n".join(
            [
                "<!DOCTYPE html>",
                '<html lang="en">',
                f'<head><meta charset="utf-8"><title>{title}</title></head>',
                '<body style="font-family:sans-serif">',
                *body,
                "</body>",
                "</html>",
            ]
        )
        + "\n"
    )
