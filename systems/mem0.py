"""`mem0`: a Mem0-style memory (Chhikara et al., 2025), written here without the mem0 library.

Ingestion, per message pair (turns 2i and 2i+1 of a session): for each speaker of the pair, the LLM extracts
facts about that speaker (so every memory belongs to one speaker); then, one fact at a time, the most
similar memories of that speaker are retrieved and the update step (`memory_ops.MemoryManager`) returns
ADD / UPDATE / DELETE / NOOP operations, which the bank applies. A fact carries the ids of both turns of
its pair; an UPDATE merges them into the memory's. Memories are timestamped with the session date.

The extraction calls of one session run concurrently (they do not depend on the bank); the update calls
run in order, since each sees the bank the previous ones left. Extraction and update use role `memory`.

Answering: the `memories_per_speaker` memories of each speaker most similar to the question (30 each, 60
in all, as in Mem0's LoCoMo evaluation), rendered "<date>: <memory>" under "Memories of <speaker>:", then
the shared short-answer prompt with role `answer`.

`-S memory_source=turns` skips extraction and update: every dialogue turn becomes one memory ("<speaker>:
<text>", dated, with its turn id), with no LLM call. It is the cheap bank the Memory-R1 trainers' CPU runs use
(`trainers.memr1.banks`, source `turns`), so an Answer Agent trained on such banks is evaluated on one.

Usage stages: `ingest` (extraction and update calls), `ingest_search` (retrievals of related memories while
ingesting), `search` (one per question: retrieval of the candidates) and `answer`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict

from harness.llm import GenerateConfig, usage_of
from harness.system import SystemContext
from harness.types import MemoryItem, Prediction, Query, Session, StageUsage, Turn, Usage
from systems.memory_bank import MemoryBank, MissingMemory, Operation, Provenance
from systems.memory_ops import EXTRACTION_INSTRUCTIONS, MANAGER_INSTRUCTIONS, MemoryManager, extract_facts
from systems.prompts import ANSWER_INSTRUCTIONS, answer_messages, clean_short_answer

log = logging.getLogger(__name__)

T = TypeVar("T")

STAT_KEYS = (
    "ADD",
    "UPDATE",
    "DELETE",
    "NOOP",
    "invalid_manager_output",
    "facts_extracted",
    "memories",
    "extraction_calls",
    "invalid_extraction_output",
    "manager_calls",
)


class Mem0Options(BaseModel):
    """Options of `mem0` (`-S KEY=VALUE` on the command line)."""

    model_config = ConfigDict(extra="forbid")

    memory_source: Literal["extracted", "turns"] = "extracted"
    """`extracted`: Mem0's LLM extraction and update; `turns`: one memory per dialogue turn, no LLM."""
    top_k_related: int = 5
    """Existing memories of the speaker shown to the update step with each new fact (Mem0 retrieves 5)."""
    memories_per_speaker: int = 30
    """Candidates retrieved per speaker to answer a question."""
    max_answer_tokens: int = 32


@dataclass(frozen=True)
class InvalidOutput:
    """A malformed extraction or manager reply, kept for inspection (it was treated as no facts / NOOP)."""

    step: str
    """`extraction` or `manager`."""
    speaker: str | None
    source_turn_ids: tuple[str, ...]
    fact: str | None
    """The fact the manager was asked about (None for extraction)."""
    reply: str
    reasons: tuple[str, ...]


async def gather_or_cancel(awaitables: Sequence[Awaitable[T]]) -> list[T]:
    """Like `asyncio.gather`, but the first failure cancels the others (no LLM calls are left running)."""
    tasks = [asyncio.ensure_future(a) for a in awaitables]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        raise


def message_pairs(turns: Sequence[Turn]) -> list[tuple[Turn, ...]]:
    """Turns 2i and 2i+1 of a session (the last pair of an odd session has one turn)."""
    return [tuple(turns[i : i + 2]) for i in range(0, len(turns), 2)]


def turn_memory_text(turn: Turn) -> str:
    """A turn as a memory of the `turns` source."""
    return f"{turn.speaker}: {turn.text}"


def render_memory(item: MemoryItem) -> str:
    return f"{item.timestamp}: {item.text}" if item.timestamp else item.text


def render_memories_by_speaker(groups: Sequence[tuple[str | None, Sequence[MemoryItem]]]) -> str:
    """The `mem0` answer context: one block per speaker, memories as "<date>: <memory>"."""
    blocks = []
    for speaker, items in groups:
        lines = [render_memory(item) for item in items] or ["(none)"]
        blocks.append("\n".join([f"Memories of {speaker or 'unknown speaker'}:", *lines]))
    return "\n\n".join(blocks)


class Mem0System:
    """Mem0's extract-then-update memory over one history (see the module docstring)."""

    options_model: type[Mem0Options] = Mem0Options
    prompts: ClassVar[dict[str, str]] = {
        "extraction": EXTRACTION_INSTRUCTIONS,
        "manager": MANAGER_INSTRUCTIONS,
        "answer": ANSWER_INSTRUCTIONS,
    }
    manager_role = "memory"
    """The role of the update step (Memory-R1 overrides it with its own `manager`)."""

    def __init__(self, context: SystemContext, **options: str) -> None:
        self.options = self.options_model.model_validate(options)
        self.speakers = context.speakers
        self.extractor = context.role("memory")
        self.manager = MemoryManager(context.role(self.manager_role))
        self.answer_model = context.role("answer")
        self.bank = MemoryBank(context.embedder())
        self.counts: Counter[str] = Counter({key: 0 for key in STAT_KEYS if key != "memories"})
        self.invalid_outputs: list[InvalidOutput] = []

    async def ingest(self, session: Session) -> StageUsage:
        if self.options.memory_source == "turns":
            return await self._ingest_turns(session)
        usage: StageUsage = {"ingest": Usage(), "ingest_search": Usage()}
        jobs = [
            (pair, speaker)
            for pair in message_pairs(session.turns)
            for speaker in dict.fromkeys(t.speaker for t in pair)
        ]
        extractions = await gather_or_cancel(
            [extract_facts(self.extractor, pair, speaker, session.date) for pair, speaker in jobs]
        )
        for (pair, speaker), extraction in zip(jobs, extractions, strict=True):
            usage["ingest"].add(extraction.usage)
            provenance = Provenance(
                speaker=speaker,
                timestamp=session.date,
                session_id=session.session_id,
                source_turn_ids=tuple(t.turn_id for t in pair),
            )
            self.counts["extraction_calls"] += 1
            if extraction.extracted.invalid:
                self.counts["invalid_extraction_output"] += 1
                self._record_invalid("extraction", provenance, None, extraction.reply, [extraction.extracted.invalid])
            self.counts["facts_extracted"] += len(extraction.extracted.facts)
            for fact in extraction.extracted.facts:
                await self._update_with_fact(fact, provenance, usage)
        return usage

    async def _ingest_turns(self, session: Session) -> StageUsage:
        for turn in session.turns:
            provenance = Provenance(
                speaker=turn.speaker,
                timestamp=session.date,
                session_id=session.session_id,
                source_turn_ids=(turn.turn_id,),
            )
            await self.bank.apply(Operation(event="ADD", text=turn_memory_text(turn)), provenance)
            self.counts["ADD"] += 1
        return {}

    async def _update_with_fact(self, fact: str, provenance: Provenance, usage: StageUsage) -> None:
        """Retrieve the speaker's memories related to `fact`, ask the manager, apply its operations."""
        started = time.perf_counter()
        related = await self.bank.search(fact, self.options.top_k_related, provenance.speaker)
        usage["ingest_search"].add(_search_usage(time.perf_counter() - started))
        call = await self.manager.decide([fact], related)
        usage["ingest"].add(call.usage)
        self.counts["manager_calls"] += 1
        reasons = list(call.decision.invalid)
        for operation in call.decision.operations:
            try:
                await self.bank.apply(operation, provenance)
            except (MissingMemory, ValueError) as error:
                reasons.append(f"{operation.event} not applied: {error}")
                self.counts["NOOP"] += 1
                continue
            self.counts[operation.event] += 1
        if reasons:
            self.counts["invalid_manager_output"] += 1
            self._record_invalid("manager", provenance, fact, call.reply, reasons)

    def _record_invalid(
        self, step: str, provenance: Provenance, fact: str | None, reply: str, reasons: list[str]
    ) -> None:
        self.invalid_outputs.append(
            InvalidOutput(step, provenance.speaker, provenance.source_turn_ids, fact, reply, tuple(reasons))
        )
        log.debug("invalid %s output at %s: %s; reply: %.200s", step, provenance.source_turn_ids, reasons, reply)

    def answer_speakers(self) -> list[str | None]:
        """The history's speakers, then any other partition the bank holds."""
        return list(dict.fromkeys([*self.speakers, *self.bank.speakers()]))

    async def candidates(self, query: Query) -> tuple[list[tuple[str | None, list[MemoryItem]]], Usage]:
        """The top `memories_per_speaker` memories of each speaker for `query`, best first, and the retrieval's
        usage (one `search` call per question)."""
        started = time.perf_counter()
        k = self.options.memories_per_speaker
        groups = [(speaker, await self.bank.search(query.text, k, speaker)) for speaker in self.answer_speakers()]
        return groups, _search_usage(time.perf_counter() - started)

    async def answer(self, query: Query) -> Prediction:
        groups, search_usage = await self.candidates(query)
        context = render_memories_by_speaker(groups)
        completion = await self.answer_model.generate(
            answer_messages(context, query), GenerateConfig(max_tokens=self.options.max_answer_tokens)
        )
        return Prediction(
            question_id=query.question_id,
            answer=clean_short_answer(completion.text),
            retrieved=best_first(groups),
            usage={"search": search_usage, "answer": usage_of(completion)},
            metadata={"raw_answer": completion.text},
        )

    def memory_dump(self) -> list[MemoryItem]:
        return self.bank.dump()

    def memory_stats(self) -> dict[str, int]:
        return {**self.counts, "memories": len(self.bank)}


def best_first(groups: Sequence[tuple[str | None, Sequence[MemoryItem]]]) -> list[MemoryItem]:
    """All candidates of all speakers, by descending similarity."""
    return sorted((item for _, items in groups for item in items), key=lambda item: -(item.score or 0.0))


def _search_usage(latency_s: float) -> Usage:
    return Usage(calls=1, latency_s=latency_s, latencies_s=[latency_s])
