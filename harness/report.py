"""The console report of one run: its tables (`harness.reporting`), counts, costs and memory footprint."""

from __future__ import annotations

from rich.console import Console

from harness.reporting import (
    abstention_report_table,
    dollars,
    gold_evidence_notes,
    score_report_table,
    usage_report_table,
)
from harness.results import RunResult
from harness.tables import make_console, to_rich


def run_header(result: RunResult) -> str:
    spec = result.spec
    roles = ", ".join(f"{role}={info.spec}" for role, info in spec.roles.items())
    options = "".join(f" {k}={v}" for k, v in spec.task_options.items())
    labels = f" · question types: {spec.label_convention} labels" if spec.label_convention else ""
    return " · ".join(part for part in (f"{spec.task}{options}", spec.system, roles) if part) + labels


def print_run(result: RunResult, run_dir: str, console: Console | None = None) -> None:
    console = console or make_console()
    console.print(run_header(result))
    if result.aggregates:
        console.print(to_rich(score_report_table([result])))
    notes = [f"cells: mean [95% bootstrap interval, seed {result.spec.seed}]"] if result.aggregates else []
    if any(a.overall.sd_repeats is not None for a in result.aggregates.values()):
        notes.append(f"±: sd of the cell mean across {result.spec.judge_repeats} judge repeats")
    for agreement in result.judge_agreement:
        kappa = "undefined" if agreement.kappa is None else f"{agreement.kappa:.2f}"
        notes.append(
            f"judge agreement {agreement.a} vs {agreement.b}: {100 * agreement.raw:.1f}% of {agreement.n} verdicts,"
            f" Cohen's kappa {kappa}"
        )
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
        if m.snapshots:
            outcomes = ", ".join(f"{outcome} {n}" for outcome, n in m.snapshots.items())
            notes.append(f"memory snapshots (histories): {outcomes}")
    if result.efficiency is not None:
        e = result.efficiency
        per_correct = ", ".join(f"{m} {v:,.0f}" for m, v in e.tokens_per_correct.items() if v is not None)
        notes.append(
            f"system cost: {e.system_tokens:,} tokens, ${dollars(e.system_cost_usd, e.unpriced_calls)}"
            + (f"; tokens per correct answer: {per_correct}" if per_correct else "")
        )
    if not result.spec.data.checksum_verified:
        notes.append(f"data file {result.spec.data.path} used without checksum verification")
    notes += gold_evidence_notes([result])
    for note in notes:
        console.print(note)
    abstention = abstention_report_table([result])
    if abstention is not None:
        console.print(to_rich(abstention))
        for note in abstention.notes:
            console.print(note, highlight=False, markup=False)
    if result.usage:
        console.print(to_rich(usage_report_table(result)))
    console.print(f"status: {result.status} · run directory: {run_dir}")
