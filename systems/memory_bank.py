"""A memory bank of short texts, one partition per speaker, that memory managers edit with
ADD / UPDATE / DELETE / NOOP operations and that retrieves by embedding similarity.

It knows nothing of prompts: whoever decides the operations (Mem0's update step, Memory-R1's Memory
Manager, a trainer's rollout) hands it `Operation`s whose UPDATE/DELETE ids are real bank ids. Every memory
keeps the ids of the turns it was derived from and the history of the operations that shaped it, so
evidence recall can be measured and a bank can be audited after a run.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from harness.embeddings.base import Embedder
from harness.types import MemoryEvent, MemoryItem
from systems.retrieval.vector_index import VectorIndex

OpEvent = Literal["ADD", "UPDATE", "DELETE", "NOOP"]


class Operation(BaseModel):
    """One memory operation, as a manager decided it (after its reply was parsed and its ids resolved)."""

    model_config = ConfigDict(frozen=True)

    event: OpEvent
    id: str | None = None
    """The bank id of the memory an UPDATE or DELETE acts on; None for ADD (the bank assigns one)."""
    text: str = ""
    """The new memory text of an ADD or UPDATE."""
    old_memory: str | None = None
    """The text an UPDATE replaces, as the manager quoted it (kept for inspection; the bank's own copy wins)."""


@dataclass(frozen=True)
class Provenance:
    """Where the information behind an operation came from."""

    speaker: str | None
    timestamp: str | None
    """The session date; a memory shows the date of the session that last wrote it."""
    session_id: str | None
    source_turn_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class Change:
    """What one applied operation did: `before` is None for ADD, `after` is None for DELETE."""

    event: Literal["ADD", "UPDATE", "DELETE"]
    memory_id: str
    before: MemoryItem | None
    after: MemoryItem | None


class MissingMemory(KeyError):
    """An UPDATE or DELETE named an id the bank does not hold (e.g. deleted earlier in the same decision)."""


def _merge_ids(first: list[str], second: tuple[str, ...]) -> list[str]:
    return list(dict.fromkeys([*first, *second]))


def id_prefix(speaker: str | None) -> str:
    """The id prefix of a speaker's memories: `alice-` for "Alice", `m` for memories without a speaker."""
    slug = _NOT_ID.sub("-", (speaker or "").lower()).strip("-")
    return f"{slug}-" if slug else "m"


_NOT_ID = re.compile(r"[^a-z0-9]+")


class MemoryBank:
    """Memories keyed by short stable ids, numbered per speaker in creation order (`alice-1`, `alice-2`, `bob-1`;
    `m1`, `m2` without a speaker), searchable per speaker.

    Ids and `dump()` order depend on each speaker's own sequence of operations only, so a bank whose speakers
    are written concurrently (as `mem0` ingests) is the same bank whatever the interleaving. One exact cosine
    index per speaker partition; texts are embedded with the run's embedder (disk-cached by the runner, so
    re-ingesting a history re-embeds nothing).
    """

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder
        self._items: dict[str, MemoryItem] = {}
        self._indexes: dict[str | None, VectorIndex] = {}
        self._vectors: dict[str, np.ndarray] = {}
        """The vector of every memory held, by id (for snapshots)."""
        self._prepared: dict[str, np.ndarray] = {}
        """Vectors of texts embedded ahead of use by `prepare` (a fact is searched for, then often written)."""
        self._numbers: dict[str, int] = {}
        """The last number given per id prefix."""

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, memory_id: str) -> bool:
        return memory_id in self._items

    def get(self, memory_id: str) -> MemoryItem:
        try:
            return self._items[memory_id].model_copy(deep=True)
        except KeyError:
            raise MissingMemory(memory_id) from None

    def speakers(self) -> list[str | None]:
        """The partitions that hold at least one memory, in order of first appearance."""
        return list(dict.fromkeys(item.speaker for item in self._items.values()))

    async def prepare(self, texts: Sequence[str]) -> None:
        """Embed `texts` in one batch now, so the searches and writes of them that follow embed nothing (a batch
        of n short texts costs about as much as one text on a CPU embedder)."""
        missing = list(dict.fromkeys(t for t in texts if t not in self._prepared))
        if missing:
            vectors = np.asarray(await self.embedder.embed(missing), dtype=np.float32)
            self._prepared.update(zip(missing, vectors, strict=True))

    async def _embed(self, text: str) -> np.ndarray:
        prepared = self._prepared.get(text)
        if prepared is not None:
            return prepared
        return np.asarray((await self.embedder.embed([text]))[0], dtype=np.float32)

    def _store_vector(self, item: MemoryItem, vector: np.ndarray) -> None:
        self._index(item.speaker, len(vector)).upsert([item.id], vector[None, :])
        self._vectors[item.id] = vector

    def _index(self, speaker: str | None, dim: int) -> VectorIndex:
        if speaker not in self._indexes:
            self._indexes[speaker] = VectorIndex(dim)
        return self._indexes[speaker]

    async def apply(self, operation: Operation, provenance: Provenance) -> Change | None:
        """Apply one operation; returns what changed, None for NOOP.

        Raises `MissingMemory` for an UPDATE/DELETE of an id the bank does not hold, and ValueError for an
        ADD/UPDATE without text: both are the caller's to record as invalid.
        """
        if operation.event == "NOOP":
            return None
        if operation.event in ("ADD", "UPDATE") and not operation.text.strip():
            raise ValueError(f"{operation.event} without text")
        event = MemoryEvent(
            op=operation.event,
            text=operation.text.strip(),
            session_id=provenance.session_id,
            timestamp=provenance.timestamp,
            source_turn_ids=list(provenance.source_turn_ids),
        )
        if operation.event == "ADD":
            return await self._add(event, provenance)
        memory_id = operation.id or ""
        if memory_id not in self._items:
            raise MissingMemory(memory_id)
        before = self._items[memory_id]
        event.previous_text = before.text
        if operation.event == "DELETE":
            event.text = before.text
            del self._items[memory_id]
            del self._vectors[memory_id]
            self._indexes[before.speaker].remove([memory_id])
            before.history.append(event)
            return Change("DELETE", memory_id, before=before.model_copy(deep=True), after=None)
        after = before.model_copy(
            update={
                "text": event.text,
                "timestamp": provenance.timestamp or before.timestamp,
                "source_turn_ids": _merge_ids(before.source_turn_ids, provenance.source_turn_ids),
                "history": [*before.history, event],
            },
            deep=True,
        )
        self._store_vector(after, await self._embed(after.text))
        self._items[memory_id] = after
        return Change("UPDATE", memory_id, before=before.model_copy(deep=True), after=after.model_copy(deep=True))

    async def _add(self, event: MemoryEvent, provenance: Provenance) -> Change:
        prefix = id_prefix(provenance.speaker)
        self._numbers[prefix] = self._numbers.get(prefix, 0) + 1
        memory_id = f"{prefix}{self._numbers[prefix]}"
        item = MemoryItem(
            id=memory_id,
            text=event.text,
            timestamp=provenance.timestamp,
            source_turn_ids=list(dict.fromkeys(provenance.source_turn_ids)),
            speaker=provenance.speaker,
            history=[event],
        )
        self._store_vector(item, await self._embed(item.text))
        self._items[memory_id] = item
        return Change("ADD", memory_id, before=None, after=item.model_copy(deep=True))

    async def search(
        self, text: str, k: int, speaker: str | None = None, *, all_speakers: bool = False
    ) -> list[MemoryItem]:
        """The `k` memories most similar to `text`, best first, with `score` set and without history.

        Searches the partition of `speaker` (None is the partition of memories without a speaker), or every
        partition when `all_speakers` is set.
        """
        partitions = list(self._indexes) if all_speakers else [speaker]
        indexes = [self._indexes[p] for p in partitions if p in self._indexes and len(self._indexes[p])]
        if k <= 0 or not indexes:
            return []
        query = await self._embed(text)
        hits = [hit for index in indexes for hit in index.search(query, k)]
        hits.sort(key=lambda hit: -hit[1])
        return [
            self._items[memory_id].model_copy(update={"score": score, "history": []}, deep=True)
            for memory_id, score in hits[:k]
        ]

    def dump(self) -> list[MemoryItem]:
        """Every memory the bank holds with its history: by speaker (in order of the speakers' names), each in
        creation order."""
        return [item.model_copy(deep=True) for item in sorted(self._items.values(), key=_dump_order)]

    def export(self) -> BankState:
        """Everything the bank holds (items with their histories, vectors, the next id), for a snapshot."""
        ids = [item.id for item in sorted(self._items.values(), key=_dump_order)]
        vectors = np.stack([self._vectors[i] for i in ids]) if ids else np.zeros((0, 0), dtype=np.float32)
        return BankState(items=self.dump(), vectors=vectors, numbers=dict(self._numbers))

    def load(self, state: BankState) -> None:
        """Replace the bank's contents by an exported state."""
        if len(state.items) != len(state.vectors):
            raise ValueError(f"bank state has {len(state.items)} items but {len(state.vectors)} vectors")
        self._items, self._indexes, self._vectors, self._prepared = {}, {}, {}, {}
        for item, vector in zip(state.items, state.vectors, strict=True):
            self._items[item.id] = item.model_copy(deep=True)
            self._store_vector(item, np.asarray(vector, dtype=np.float32))
        self._numbers = dict(state.numbers)


@dataclass(frozen=True)
class BankState:
    """A bank's contents: its items in `dump()` order, their vectors (one row each), and the last number given
    per id prefix (so ids of deleted memories are never reused)."""

    items: list[MemoryItem]
    vectors: np.ndarray
    numbers: dict[str, int]


def _dump_order(item: MemoryItem) -> tuple[str, int]:
    prefix, _, number = item.id.rpartition("-") if "-" in item.id else ("", "", item.id.removeprefix("m"))
    return (prefix, int(number) if number.isdigit() else 0)
