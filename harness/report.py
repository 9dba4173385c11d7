"""Console tables of a run: scores x100 per question type and overall, with counts and costs."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from harness.results import RunResult

OVERALL = "overall"
PIPE_WIDTH = 160
"""Console width when output goes to a file or pipe, where rich would otherwise wrap tables at 80 columns."""


def make_console() -> Console:
    console = Console()
    return console if console.is_terminal else Console(width=PIPE_WIDTH)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def run_header(result: RunResult) -> str:
    spec = result.spec
    roles = ", ".join(f"{role}={info.spec}" for role, info in spec.roles.items())
    options = "".join(f" {k}={v}" for k, v in spec.task_options.items())
    labels = f" · question types: {spec.label_convention} labels" if spec.label_convention else ""
    return f"{spec.task}{options} · {spec.system} · {roles}{labels} · scores x100"


def score_table(result: RunResult) -> Table:
    spec = result.spec
    table = Table()
    table.add_column("question type")
    table.add_column("n", justify="right")
    for metric in spec.metrics:
        table.add_column(metric, justify="right")
    if not result.aggregates:
        return table
    first = result.aggregates[spec.metrics[0]]
    types = [t for t in [*spec.question_types, *first.by_type] if t in first.by_type]
    for qtype in dict.fromkeys(types):
        cells = [result.aggregates[m].by_type.get(qtype) for m in spec.metrics]
        n = max((c.n + c.n_unscored for c in cells if c is not None), default=0)
        table.add_row(qtype, str(n), *(_pct(c.mean if c else None) for c in cells))
    overall = [result.aggregates[m].overall for m in spec.metrics]
    table.add_section()
    table.add_row(
        OVERALL, str(max(c.n + c.n_unscored for c in overall)), *(_pct(c.mean) for c in overall), style="bold"
    )
    return table


def usage_table(result: RunResult) -> Table:
    table = Table()
    columns = ("stage", "calls", "cached", "prompt tok", "completion tok", "latency s", "p50 s", "p95 s", "p99 s", "$")
    for column in columns:
        table.add_column(column, justify="left" if column == "stage" else "right")
    for stage, u in result.usage.items():
        table.add_row(
            stage,
            str(u.calls),
            str(u.cache_hits),
            str(u.prompt_tokens),
            str(u.completion_tokens),
            f"{u.latency_s:.1f}",
            *(_seconds(p) for p in (u.latency_p50_s, u.latency_p95_s, u.latency_p99_s)),
            dollars(u.cost_usd, u.unpriced_calls),
        )
    return table


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def dollars(cost: float, unpriced_calls: int) -> str:
    """A cost that is exact, a lower bound (some calls unpriced: `>=`), or unknown (`?`)."""
    if unpriced_calls and not cost:
        return "?"
    return (">=" if unpriced_calls else "") + f"{cost:.4f}"


def print_run(result: RunResult, run_dir: str, console: Console | None = None) -> None:
    console = console or make_console()
    console.print(run_header(result))
    console.print(score_table(result))
    notes = []
    if result.counts is not None:
        c = result.counts
        notes.append(f"{c.answered}/{c.questions} questions answered in {c.samples} histories; {c.failed} failed")
        if result.planned_questions is not None and c.questions < result.planned_questions:
            notes.append(f"incomplete: {c.questions} of {result.planned_questions} planned questions have a record")
    unscored = {m: a.overall.n_unscored for m, a in result.aggregates.items() if a.overall.n_unscored}
    if unscored:
        notes.append("unscored (e.g. unparsable judge replies): " + ", ".join(f"{m} {n}" for m, n in unscored.items()))
    if result.memory is not None and result.memory.histories:
        m = result.memory
        stats = ", ".join(f"{k} {v}" for k, v in m.stats.items())
        notes.append(
            f"memory: {m.items_total} items, {m.words_total:,} words over {m.histories} histories"
            f" ({m.items_per_history} items, {m.words_per_history:,.0f} words per history)"
            + (f"; {stats}" if stats else "")
        )
    if result.efficiency is not None:
        e = result.efficiency
        per_correct = ", ".join(f"{m} {v:,.0f}" for m, v in e.tokens_per_correct.items() if v is not None)
        notes.append(
            f"system cost: {e.system_tokens:,} tokens, ${dollars(e.system_cost_usd, e.unpriced_calls)}"
            + (f"; tokens per correct answer: {per_correct}" if per_correct else "")
        )
    if not result.spec.data.checksum_verified:
        notes.append(f"data file {result.spec.data.path} used without checksum verification")
    for note in notes:
        console.print(note)
    if result.usage:
        console.print("LLM usage per stage")
        console.print(usage_table(result))
    console.print(f"status: {result.status} · run directory: {run_dir}")
