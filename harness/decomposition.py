"""Where a retrieving system's errors come from: retrieval that missed the evidence, or answering that failed
with the evidence in hand.

For every answered question with gold evidence whose system retrieved (`prediction.retrieved` is set), the
question counts as *retrieved* when the top `k` items (all of them without `k`) cover every gold evidence id
(the `evidence_recall` rule: a session id is covered by any of its turns), else as *missed* (partial coverage
included). Per question type and overall, the mean score of a metric in each group is reported: with a judge,
P(correct | retrieved) and P(correct | missed). A high score when retrieved and a low one when missed puts the
errors on retrieval; a low score even when retrieved puts them on answering.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.metrics.aggregate import Cell, cell
from harness.metrics.evidence_recall import evidence_recall_of
from harness.results import QuestionRecord, RunDir
from harness.tables import ReportTable

OVERALL = "overall"


@dataclass(frozen=True)
class Decomposition:
    """One group's (question type's) split of a metric by whether retrieval covered the evidence."""

    retrieved: Cell
    missed: Cell

    @property
    def share_retrieved(self) -> float | None:
        n = self.retrieved.n + self.missed.n
        return self.retrieved.n / n if n else None


def evidence_retrieved(record: QuestionRecord, k: int | None) -> bool | None:
    """Whether the top `k` retrieved items cover all of the question's gold evidence; None when the question has
    no gold evidence, failed, or its system does not retrieve."""
    prediction = record.prediction
    if record.failed or prediction is None or prediction.retrieved is None or not record.evidence:
        return None
    items = prediction.retrieved if k is None else prediction.retrieved[:k]
    covered, total = evidence_recall_of(record.evidence, items)
    return covered == total


def decompose(
    records: Sequence[QuestionRecord],
    metric: str,
    k: int | None = None,
    *,
    type_order: Sequence[str] = (),
    seed: int = 0,
) -> dict[str, Decomposition] | None:
    """Per question type (in `type_order`, then as found) and `overall`; None when no record can be split (the
    system does not retrieve, or no question has gold evidence and a score)."""
    groups: dict[str, tuple[list[float], list[float]]] = {}
    for record in records:
        hit = evidence_retrieved(record, k)
        score = record.scores.get(metric)
        if hit is None or score is None:
            continue
        for group in (record.question_type, OVERALL):
            retrieved, missed = groups.setdefault(group, ([], []))
            (retrieved if hit else missed).append(score)
    if not groups:
        return None
    order = [t for t in type_order if t in groups] + [t for t in groups if t not in type_order and t != OVERALL]
    return {
        group: Decomposition(cell(groups[group][0], seed=seed), cell(groups[group][1], seed=seed))
        for group in [*order, OVERALL]
    }


def decomposition_table(
    labels: Sequence[str],
    records: Sequence[Sequence[QuestionRecord]],
    metric: str,
    k: int | None = None,
    *,
    type_order: Sequence[str] = (),
    seed: int = 0,
) -> ReportTable | None:
    """A `retrieved` and a `missed` column per run that retrieves (x100, interval, n); None when none does."""
    from harness.reporting import format_cell

    computed = [
        (label, decompose(rs, metric, k, type_order=type_order, seed=seed))
        for label, rs in zip(labels, records, strict=True)
    ]
    split = [(label, d) for label, d in computed if d is not None]
    if not split:
        return None
    top = "all retrieved items" if k is None else f"top {k}"
    columns = ["question type"]
    for label, _ in split:
        columns += [f"{label}: evidence retrieved", f"{label}: missed"]
    table = ReportTable(f"{metric} x100 by whether retrieval ({top}) covered the gold evidence", columns)
    groups = list(dict.fromkeys(g for _, d in split for g in d if g != OVERALL))
    for group in [*groups, OVERALL]:
        cells = [group]
        for _, decomposition in split:
            part = decomposition.get(group)
            cells += [format_cell(part.retrieved if part else None, with_n=True)]
            cells += [format_cell(part.missed if part else None, with_n=True)]
        table.add_row(*cells, emphasized=group == OVERALL)
    for label, decomposition in split:
        share = decomposition[OVERALL].share_retrieved
        if share is not None:
            table.notes.append(f"{label}: the evidence was retrieved for {100 * share:.1f}% of the questions split")
    table.notes.append(
        "retrieved: every gold evidence id covered by the retrieved items' source turns (a session by any of its "
        "turns); missed: partly or not at all. A low score when retrieved puts the errors on answering; a high "
        "one when retrieved and a low one when missed puts them on retrieval. Questions without gold evidence, "
        "failed ones and unscored ones are left out."
    )
    return table


def runs_decomposition_table(run_dirs: Sequence[Path], metric: str | None = None) -> ReportTable | None:
    """`decomposition_table` of run directories (as `report` and `compare` show it), on `metric` or the runs'
    default one (`harness.reporting.resolve_metric`)."""
    from harness.reporting import read_results, resolve_metric, run_labels

    results = read_results(run_dirs)
    records = [RunDir(Path(path)).latest_questions() for path in run_dirs]
    return decomposition_table(
        run_labels(results),
        records,
        resolve_metric(results, metric),
        type_order=results[0].spec.question_types,
        seed=results[0].spec.seed,
    )
