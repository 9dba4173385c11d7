"""`mem0`: a Mem0-style memory (Chhikara et al., 2025), written here without the mem0 library.

Ingestion: the history is cut into extraction units, by default Mem0's message pairs (turns 2i and 2i+1 of a
session; `-S extraction_unit=session` takes a whole session at once). For each speaker of a unit the LLM
extracts facts about that speaker (so every memory belongs to one speaker). Then the update step
(`memory_ops.MemoryManager`) sees new facts with the most similar memories of that speaker and returns
ADD / UPDATE / DELETE / NOOP operations, which the bank applies: one call per fact by default (Mem0), or one
call per unit with all its facts (`-S manager_unit=turn`, Memory-R1's algorithm). A fact carries the ids of
its unit's turns; an UPDATE merges them into the memory's. Memories are timestamped with the session date.

The critical path of ingestion is the chain of update calls of one speaker: each sees the bank the previous
one left. Everything else runs beside it (`ingest_history`):
- extraction never reads the bank, so the whole history's extraction calls run ahead of the updates, as
  background calls: a chain's next update call takes the next free slot before them, and a chain busy with a
  unit keeps a slot reserved (`harness.llm.slots`), across all histories that share the model;
- the speakers' banks are independent partitions, so their update chains run concurrently;
- a unit's facts are embedded in one batch as soon as they are extracted.
The result is the bank the sequential algorithm builds: each chain applies its speaker's units in order.

Answering: the `memories_per_speaker` memories of each speaker most similar to the question (30 each, 60
in all, as in Mem0's LoCoMo evaluation), rendered "<date>: <memory>" under "Memories of <speaker>:", then
the shared short-answer prompt with role `answer`.

`-S memory_source=turns` skips extraction and update: every dialogue turn becomes one memory ("<speaker>:
<text>", dated, with its turn id), with no LLM call. It is the cheap bank the Memory-R1 trainers' CPU runs use
(`trainers.memr1.banks`, source `turns`), so an Answer Agent trained on such banks is evaluated on one.

A finished bank can be stored and reused (`snapshot_identity`, `snapshot`, `restore`): its identity holds
everything that built it (the ingestion options, the memory and manager models, the prompts, the embedder),
and not the answer model, so evaluating several answer models ingests each history once.

Usage stages: `ingest` (extraction and update calls), `ingest_search` (retrievals of related memories while
ingesting), `search` (one per question: retrieval of the candidates) and `answer`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from harness.llm import GenerateConfig, usage_of
from harness.system import SystemContext, prompt_fingerprints
from harness.types import MemoryItem, Prediction, Query, Session, StageUsage, Turn, Usage
from systems.memory_bank import BankState, MemoryBank, MissingMemory, Operation, Provenance
from systems.memory_ops import (
    EXTRACTION_CONFIG,
    EXTRACTION_INSTRUCTIONS,
    MANAGER_INSTRUCTIONS,
    ExtractionCall,
    MemoryManager,
    extract_facts,
    extraction_config,
    manager_schema,
)
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
    extraction_unit: Literal["pair", "session"] = "pair"
    """What one extraction call reads: a message pair (Mem0) or a whole session."""
    manager_unit: Literal["fact", "turn"] = "fact"
    """One update call per fact (Mem0), or per extraction unit with all its facts (Memory-R1)."""
    min_facts: int = Field(default=0, ge=0)
    """Facts the extraction schema requires per call. Small models allowed none tend to write none; 1 makes them
    write something (measured: SmolLM2 then often copies the turn)."""
    max_facts: int | None = Field(default=8, ge=1)
    """At most this many facts per extraction call (`maxItems` of the schema); None: no cap."""
    max_fact_chars: int | None = Field(default=200, ge=1)
    """At most this many characters per fact (`maxLength`); None: no cap. Measured on Qwen2.5-Coder-0.5B without
    caps: 4 of 49 real LoCoMo extraction replies repeated a fact, or a phrase inside one, until the 256-token
    limit cut the JSON off (invalid, and ~18 s each)."""
    speakers: str | None = None
    """Comma-separated speakers whose memories are kept (extraction runs only about them); None: every speaker.
    `user` for LongMemEval, whose questions are about the user (its `single-session-assistant` ones are not)."""
    structured: bool = True
    """Send JSON schemas with extraction and update calls (enforced where the backend can); `false`: JSON mode
    only, as before schemas (for comparisons, or a provider that rejects schemas)."""
    top_k_related: int = 5
    """Existing memories of the speaker shown to the update step with each new fact (Mem0 retrieves 5)."""
    memories_per_speaker: int = 30
    """Candidates retrieved per speaker to answer a question."""
    max_answer_tokens: int = 32


INGESTION_OPTIONS = frozenset(
    {
        "memory_source",
        "extraction_unit",
        "manager_unit",
        "speakers",
        "min_facts",
        "max_facts",
        "max_fact_chars",
        "structured",
        "top_k_related",
    }
)
"""The options that shape the memory (the others only shape answering): they enter the snapshot identity."""


class Mem0Snapshot(BaseModel):
    """A `mem0`/`memr1` bank as stored by `harness.snapshots`."""

    items: list[MemoryItem]
    vectors: str
    """The items' vectors, one row each: little-endian float32, base64."""
    shape: tuple[int, int]
    numbers: dict[str, int]
    counts: dict[str, int]


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


@dataclass(frozen=True)
class ExtractionUnit:
    """What one extraction call reads, and about whom."""

    speaker: str
    turns: tuple[Turn, ...]
    provenance: Provenance


def extraction_units(sessions: Sequence[Session], unit: Literal["pair", "session"]) -> list[ExtractionUnit]:
    """The history's extraction units in order: per message pair (or session), one per speaker in it."""
    units = []
    for session in sessions:
        groups = message_pairs(session.turns) if unit == "pair" else [tuple(session.turns)]
        for turns in groups:
            turn_ids = tuple(t.turn_id for t in turns)
            for speaker in dict.fromkeys(t.speaker for t in turns):
                provenance = Provenance(speaker, session.date, session.session_id, turn_ids)
                units.append(ExtractionUnit(speaker=speaker, turns=turns, provenance=provenance))
    return units


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
        structured = self.options.structured
        self.extraction_config = (
            extraction_config(self.options.min_facts, self.options.max_facts, self.options.max_fact_chars)
            if structured
            else EXTRACTION_CONFIG
        )
        self.manager = MemoryManager(context.role(self.manager_role), constrained=structured)
        self.answer_model = context.role("answer")
        self.bank = MemoryBank(context.embedder())
        self.counts: Counter[str] = Counter({key: 0 for key in STAT_KEYS if key != "memories"})
        self.invalid_outputs: list[InvalidOutput] = []

    async def ingest(self, session: Session) -> StageUsage:
        return await self.ingest_history([session])

    async def ingest_history(self, sessions: Sequence[Session]) -> StageUsage:
        """Ingest sessions in order along the critical path (see the module docstring)."""
        if self.options.memory_source == "turns":
            for session in sessions:
                await self._ingest_turns(session)
            return {}
        usage: StageUsage = {"ingest": Usage(), "ingest_search": Usage()}
        units = extraction_units(sessions, self.options.extraction_unit)
        if self.options.speakers is not None:
            kept = {name.strip() for name in self.options.speakers.split(",")}
            units = [unit for unit in units if unit.speaker in kept]
        speakers = list(dict.fromkeys(unit.provenance.speaker for unit in units))

        async def extract(unit: ExtractionUnit) -> ExtractionCall:
            date = unit.provenance.timestamp
            call = await extract_facts(
                self.extractor, unit.turns, unit.speaker, date, self.extraction_config, background=True
            )
            await self.bank.prepare(call.extracted.facts)
            return call

        extractions = [asyncio.ensure_future(extract(unit)) for unit in units]
        if self.extractor.max_concurrency == 1:
            # One slot: nothing runs beside anything, and llama.cpp reuses the KV cache of the previous prompt's
            # prefix, so all extraction calls first (one system prompt), then all update calls (the other).
            await gather_or_cancel(extractions)

        async def update_chain(speaker: str | None) -> None:
            for unit, extraction in zip(units, extractions, strict=True):
                if unit.provenance.speaker == speaker:
                    extracted = await extraction
                    with self.manager.model.slots.reserve():
                        await self._update_with_unit(unit, extracted, usage)

        try:
            await gather_or_cancel([update_chain(speaker) for speaker in speakers])
        finally:
            for extraction in extractions:
                extraction.cancel()
        return usage

    async def _ingest_turns(self, session: Session) -> None:
        for turn in session.turns:
            provenance = Provenance(
                speaker=turn.speaker,
                timestamp=session.date,
                session_id=session.session_id,
                source_turn_ids=(turn.turn_id,),
            )
            await self.bank.apply(Operation(event="ADD", text=turn_memory_text(turn)), provenance)
            self.counts["ADD"] += 1

    async def _update_with_unit(self, unit: ExtractionUnit, extraction: ExtractionCall, usage: StageUsage) -> None:
        usage["ingest"].add(extraction.usage)
        self.counts["extraction_calls"] += 1
        if extraction.extracted.invalid:
            self.counts["invalid_extraction_output"] += 1
            self._record_invalid("extraction", unit.provenance, None, extraction.reply, [extraction.extracted.invalid])
        facts = extraction.extracted.facts
        self.counts["facts_extracted"] += len(facts)
        batches = [[fact] for fact in facts] if self.options.manager_unit == "fact" else [facts] if facts else []
        for batch in batches:
            await self._update_with_facts(batch, unit.provenance, usage)

    async def _update_with_facts(self, facts: list[str], provenance: Provenance, usage: StageUsage) -> None:
        """Retrieve the speaker's memories related to `facts`, ask the manager, apply its operations."""
        started = time.perf_counter()
        related = await self._related(facts, provenance.speaker)
        usage["ingest_search"].add(_search_usage(time.perf_counter() - started))
        call = await self.manager.decide(facts, related)
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
            self._record_invalid("manager", provenance, " | ".join(facts), call.reply, reasons)

    async def _related(self, facts: Sequence[str], speaker: str | None) -> list[MemoryItem]:
        """The speaker's `top_k_related` memories nearest each fact, merged without repeats, nearest first."""
        found: dict[str, MemoryItem] = {}
        for fact in facts:
            for item in await self.bank.search(fact, self.options.top_k_related, speaker):
                if item.id not in found or (item.score or 0.0) > (found[item.id].score or 0.0):
                    found[item.id] = item
        return sorted(found.values(), key=lambda item: -(item.score or 0.0))

    def _record_invalid(
        self, step: str, provenance: Provenance, fact: str | None, reply: str, reasons: list[str]
    ) -> None:
        self.invalid_outputs.append(
            InvalidOutput(step, provenance.speaker, provenance.source_turn_ids, fact, reply, tuple(reasons))
        )
        log.debug("invalid %s output at %s: %s; reply: %.200s", step, provenance.source_turn_ids, reasons, reply)

    def answer_speakers(self) -> list[str | None]:
        """The history's speakers (those kept, under `-S speakers`), then any other partition the bank holds."""
        kept = self.speakers
        if self.options.speakers is not None:
            chosen = {name.strip() for name in self.options.speakers.split(",")}
            kept = tuple(speaker for speaker in kept if speaker in chosen)
        return list(dict.fromkeys([*kept, *self.bank.speakers()]))

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

    def snapshot_identity(self) -> dict[str, Any]:
        options = self.options.model_dump(include=INGESTION_OPTIONS)
        embedder = self.bank.embedder.info
        identity: dict[str, Any] = {
            "options": options,
            "embedder": {"provider": embedder.provider, "model": embedder.model, "base_url": embedder.base_url},
        }
        if self.options.memory_source == "extracted":
            identity["memory_model"] = self.extractor.identity
            identity["manager_model"] = self.manager.model.identity
            prompts = prompt_fingerprints(type(self))
            identity["prompts"] = {name: prompts[name] for name in ("extraction", "manager")}
            identity["generation"] = {
                "extraction": dataclasses.asdict(self.extraction_config),
                "manager": dataclasses.asdict(self.manager.config),
                "manager_schema": manager_schema(["0"], 1).text,
            }
        return identity

    def snapshot(self) -> dict[str, Any]:
        state = self.bank.export()
        return Mem0Snapshot(
            items=state.items,
            vectors=base64.b64encode(state.vectors.astype("<f4").tobytes()).decode(),
            shape=state.vectors.shape,
            numbers=state.numbers,
            counts=dict(self.counts),
        ).model_dump(mode="json")

    def restore(self, payload: dict[str, Any]) -> None:
        snapshot = Mem0Snapshot.model_validate(payload)
        try:
            flat = np.frombuffer(base64.b64decode(snapshot.vectors, validate=True), dtype="<f4")
            vectors = flat.reshape(snapshot.shape) if snapshot.items else np.zeros((0, 0), dtype=np.float32)
        except (binascii.Error, ValueError) as error:
            raise ValueError(f"snapshot vectors: {error}") from error
        self.bank.load(BankState(items=snapshot.items, vectors=vectors, numbers=snapshot.numbers))
        self.counts = Counter(snapshot.counts)

    def memory_stats(self) -> dict[str, int]:
        return {**self.counts, "memories": len(self.bank)}


def best_first(groups: Sequence[tuple[str | None, Sequence[MemoryItem]]]) -> list[MemoryItem]:
    """All candidates of all speakers, by descending similarity."""
    return sorted((item for _, items in groups for item in items), key=lambda item: -(item.score or 0.0))


def _search_usage(latency_s: float) -> Usage:
    return Usage(calls=1, latency_s=latency_s, latencies_s=[latency_s])
