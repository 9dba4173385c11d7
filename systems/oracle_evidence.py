"""`oracle-evidence`: the gold evidence as the context, the ceiling of any retriever with the same answer model.

**It reads the gold evidence by design.** Its class declares `reads_gold_evidence`, so the runner hands it
each question's evidence ids (`Query.gold_evidence`), which no other system gets; the run spec records it,
every table marks the run, and `compare` warns when it is ranked beside real systems. It is a reference for
what the answer model does with perfect retrieval, not a memory system.

The context is `full-context`'s over the evidence alone: an id that names a session (LongMemEval's
`answer_session_ids`) brings the whole session; an id that names a turn (LoCoMo's `D3:5`) brings that turn
under its session's header and date, as full-context renders them. Sessions keep the history's (date) order
and turns their order within the session. Evidence that does not fit the context window loses its oldest
sessions, as full-context does, and the prediction records how many.

A question with no usable evidence (none annotated, or only ids that name no turn of the history: some
LoCoMo ids do, see `tasks/locomo.py`) gets an empty context, the `no-memory` prompt, so the model should
abstain; the prediction records `oracle_context: "empty"` and the unmatched ids in `evidence_missing`.
LoCoMo's adversarial questions do carry evidence (the turns behind the tempting wrong answer, mostly about
the other speaker): the oracle shows them, and an abstention is still the right answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from harness.system import SystemContext
from harness.types import MemoryItem, Prediction, Query, Session, StageUsage
from systems.full_context import FullContextOptions, FullContextSystem
from systems.prompts import ANSWER_INSTRUCTIONS


@dataclass(frozen=True)
class EvidenceSelection:
    sessions: list[Session]
    """The evidence in history order: whole sessions, or sessions cut down to their evidence turns."""
    missing: list[str]
    """Evidence ids that name no session or turn of the history, in the order given."""

    @property
    def turns(self) -> int:
        return sum(len(s.turns) for s in self.sessions)


def select_evidence(sessions: Sequence[Session], evidence: Sequence[str]) -> EvidenceSelection:
    """The sessions and turns of `sessions` that `evidence` names (a session id takes the whole session)."""
    wanted = set(evidence)
    selected: list[Session] = []
    found: set[str] = set()
    for session in sessions:
        whole = session.session_id in wanted
        turns = session.turns if whole else tuple(t for t in session.turns if t.turn_id in wanted)
        if whole:
            found.add(session.session_id)
        if turns:
            selected.append(session if whole else session.model_copy(update={"turns": turns}))
            found.update(t.turn_id for t in turns)
    return EvidenceSelection(selected, [e for e in dict.fromkeys(evidence) if e not in found])


class OracleEvidenceSystem:
    """Answers each question with `full-context` over that question's gold evidence only."""

    options_model: ClassVar[type[FullContextOptions]] = FullContextOptions
    prompts: ClassVar[dict[str, str]] = {"answer": ANSWER_INSTRUCTIONS}
    reads_gold_evidence: ClassVar[bool] = True

    def __init__(self, context: SystemContext, **options: str) -> None:
        self.context = context
        self.options = options
        self.history = FullContextSystem(context, **options)
        """Every ingested session (and the options, checked once), from which each question's evidence is cut."""

    async def ingest(self, session: Session) -> StageUsage:
        return await self.history.ingest(session)

    async def answer(self, query: Query) -> Prediction:
        if query.gold_evidence is None:
            raise ValueError(
                f"{query.question_id}: oracle-evidence got no gold evidence; the runner passes it only to systems "
                "that declare reads_gold_evidence"
            )
        selection = select_evidence(self.history.sessions, query.gold_evidence)
        reader = FullContextSystem(self.context, **self.options)
        for session in selection.sessions:
            await reader.ingest(session)
        prediction = await reader.answer(query)
        kept = set(reader.fitted_history().kept_session_ids)
        prediction.retrieved = [item for item in reader.memory_dump() if item.id in kept]
        prediction.metadata |= {
            "oracle_context": "evidence" if kept else "empty",
            "evidence_ids": list(query.gold_evidence),
            "evidence_missing": selection.missing,
            "evidence_sessions": len(selection.sessions),
            "evidence_turns": selection.turns,
        }
        return prediction

    def memory_dump(self) -> list[MemoryItem]:
        return self.history.memory_dump()

    def memory_stats(self) -> dict[str, int]:
        return {"sessions": len(self.history.sessions)}
