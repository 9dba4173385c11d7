"""`evidence_recall@k`: how much of a question's gold evidence the system's retrieval reached.

Score = the fraction of the question's gold evidence ids covered by the source ids (`source_turn_ids`) of
the top `k` retrieved items (all of them without `@k`). A gold id is covered by an equal source id or, when
it names a session (LongMemEval's `answer_session_ids`), by any source turn of that session: turn ids of
such tasks are `<session_id>:<index>`. Unscored (None, left out of the mean and counted as unscored):
questions without gold evidence, and predictions of systems that do not retrieve (`retrieved` is None).
"""

from __future__ import annotations

from collections.abc import Iterable

from harness.metrics.base import MetricContext
from harness.types import MemoryItem, Prediction, Question, Score

NAME = "evidence_recall"


def covered_ids(items: Iterable[MemoryItem]) -> set[str]:
    """Every id the items' sources cover: each source id and the session id that prefixes it (`S:3` -> `S`)."""
    covered: set[str] = set()
    for item in items:
        for source in item.source_turn_ids:
            covered.add(source)
            session, sep, _ = source.rpartition(":")
            if sep and session:
                covered.add(session)
    return covered


def evidence_recall_of(evidence: Iterable[str], items: Iterable[MemoryItem]) -> tuple[int, int]:
    """(covered, total) distinct gold ids."""
    gold = set(evidence)
    return len(gold & covered_ids(items)), len(gold)


class EvidenceRecall:
    higher_is_better = True

    def __init__(self, k: int | None) -> None:
        self.k = k
        self.name = NAME if k is None else f"{NAME}@{k}"

    async def score(self, question: Question, prediction: Prediction) -> Score:
        if not question.evidence:
            return Score(None, details={"reason": "no gold evidence"})
        if prediction.retrieved is None:
            return Score(None, details={"reason": "system does not retrieve"})
        considered = prediction.retrieved if self.k is None else prediction.retrieved[: self.k]
        covered, total = evidence_recall_of(question.evidence, considered)
        return Score(covered / total, details={"covered": covered, "gold": total, "items": len(considered)})


def evidence_recall(context: MetricContext) -> EvidenceRecall:
    """`evidence_recall` (all retrieved items) or `evidence_recall@k` (the top k)."""
    if context.argument is None:
        return EvidenceRecall(None)
    try:
        k = int(context.argument)
    except ValueError:
        k = 0
    if k <= 0:
        raise ValueError(f"{NAME}@{context.argument}: the part after '@' must be a positive integer, e.g. {NAME}@10")
    return EvidenceRecall(k)
