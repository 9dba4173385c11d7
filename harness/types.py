"""The nouns every part of the harness speaks: histories, questions, predictions, memories, usage.

A task turns a benchmark file into `Sample`s; a memory system ingests a `Sample`'s sessions and answers
`Query`s (never `Question`s, so gold answers and evidence cannot leak into a system; only a reference system
that declares `reads_gold_evidence` gets the evidence ids); the runner scores each `Prediction` against its
`Question`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

JSONScalar = str | int | float | bool | None
ScoreDetail = JSONScalar | list[JSONScalar]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Turn(_Frozen):
    """One utterance of a dialogue."""

    turn_id: str
    """Stable id inside the conversation, e.g. LoCoMo's `D3:14` or `<session>:<index>`."""
    speaker: str
    text: str


class Session(_Frozen):
    """A sitting of the conversation: consecutive turns that share one date."""

    session_id: str
    date: str | None = None
    """The benchmark's own date string, shown to systems verbatim (e.g. `1:56 pm on 8 May, 2023`)."""
    turns: tuple[Turn, ...]


class Conversation(_Frozen):
    conversation_id: str
    speakers: tuple[str, ...]
    sessions: tuple[Session, ...]
    """In the order the system must ingest them (date order)."""

    @property
    def n_turns(self) -> int:
        return sum(len(s.turns) for s in self.sessions)


class Query(_Frozen):
    """What a memory system is asked: the question without its gold answer or evidence."""

    question_id: str
    text: str
    date: str | None = None
    """When the question is asked (LongMemEval's `question_date`), if the benchmark says."""
    gold_evidence: tuple[str, ...] | None = None
    """The question's gold evidence ids, handed only to systems that declare `reads_gold_evidence` (reference
    ceilings such as `oracle-evidence`, marked as such in every table); None for every other system."""


class Question(_Frozen):
    """A benchmark question with everything needed to score an answer to it."""

    question_id: str
    text: str
    answers: tuple[str, ...]
    """Gold answers; a prediction matching any of them is correct. Empty for adversarial items."""
    question_type: str
    """Readable type name used for the per-type table (e.g. `multi-hop`, `abstention`)."""
    evidence: tuple[str, ...] = ()
    """Ids of the turns (or sessions) that hold the answer."""
    date: str | None = None
    metadata: dict[str, JSONScalar] = Field(default_factory=dict)
    """Benchmark-specific facts a metric may need, e.g. `locomo_category`."""

    def to_query(self, *, with_evidence: bool = False) -> Query:
        """What a system is asked; the gold evidence only `with_evidence` (systems that read it by design)."""
        evidence = self.evidence if with_evidence else None
        return Query(question_id=self.question_id, text=self.text, date=self.date, gold_evidence=evidence)


class Sample(_Frozen):
    """One history and the questions asked about it (the unit the runner ingests once)."""

    sample_id: str
    conversation: Conversation
    questions: tuple[Question, ...]


class MemoryEvent(BaseModel):
    """One operation that shaped a memory, kept so a bank's history can be inspected."""

    op: Literal["ADD", "UPDATE", "DELETE"]
    text: str
    previous_text: str | None = None
    session_id: str | None = None
    timestamp: str | None = None
    source_turn_ids: list[str] = Field(default_factory=list)


class MemoryItem(BaseModel):
    """An entry of a memory bank, or a chunk a system retrieved to answer."""

    id: str
    text: str
    timestamp: str | None = None
    source_turn_ids: list[str] = Field(default_factory=list)
    """The turns (or sessions) this item was derived from: what evidence recall is measured on."""
    speaker: str | None = None
    """Whose memory this is, for systems that keep one bank per speaker."""
    score: float | None = None
    """Retrieval score, when the item was retrieved."""
    history: list[MemoryEvent] = Field(default_factory=list)
    """How the item came to be (memory banks fill this in their dump; retrieved items leave it empty)."""


class Usage(BaseModel):
    """LLM cost of one stage (ingest, answer, judge, ...)."""

    calls: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    latencies_s: list[float] = Field(default_factory=list)
    """Per-call latencies, so percentiles can be reported; cache hits count as 0 s."""
    cost_usd: float = 0.0
    """List price of the priced calls (see `harness.llm.pricing`)."""
    unpriced_calls: int = 0
    """Calls of models with no known price: when non-zero, `cost_usd` is a lower bound."""
    retries: int = 0
    """Attempts that failed transiently and were retried before the calls succeeded."""

    def add(self, other: Usage) -> None:
        self.calls += other.calls
        self.cache_hits += other.cache_hits
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.latency_s += other.latency_s
        self.latencies_s.extend(other.latencies_s)
        self.cost_usd += other.cost_usd
        self.unpriced_calls += other.unpriced_calls
        self.retries += other.retries


StageUsage = dict[str, Usage]


def merge_usage(into: StageUsage, other: StageUsage) -> None:
    for stage, usage in other.items():
        into.setdefault(stage, Usage()).add(usage)


class Prediction(BaseModel):
    """A system's answer to one query, with what it looked at and what it cost."""

    question_id: str
    answer: str
    retrieved: list[MemoryItem] | None = None
    """What the system retrieved to answer, best first, with the source turn ids of each item; None for
    systems that do not retrieve (e.g. full-context), whose evidence recall is then not scored."""
    usage: StageUsage = Field(default_factory=dict)
    latency_s: float = 0.0
    metadata: dict[str, JSONScalar | list[str]] = Field(default_factory=dict)
    """System-specific facts worth keeping, e.g. how a history was truncated."""


@dataclass(frozen=True)
class Score:
    """A metric's verdict on one prediction. `value` None means "not scorable" (e.g. unparsable judge)."""

    value: float | None
    details: dict[str, ScoreDetail] = field(default_factory=dict)
    usage: Usage | None = None
    repeats: tuple[float | None, ...] = ()
    """Each repeat's value when the metric scored the prediction several times; `value` is their mean."""


def count_by_type(questions: Iterable[Question]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for q in questions:
        counts[q.question_type] = counts.get(q.question_type, 0) + 1
    return counts
