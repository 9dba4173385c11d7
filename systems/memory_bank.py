"""A memory bank of short texts, one partition per speaker, that memory managers edit with
ADD / UPDATE / DELETE / NOOP operations and that retrieves by embedding similarity.

It knows nothing of prompts: whoever decides the operations (Mem0's update step, Memory-R1's Memory
Manager, a trainer's rollout) hands it `Operation`s whose UPDATE/DELETE ids are real bank ids. Every memory
keeps the ids of the turns it was derived from and the history of the operations that shaped it, so
evidence recall can be measured and a bank can be audited after a run.
"""

from __future__ import annotations

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


class MemoryBank:
    """Memories keyed by short stable ids (`m1`, `m2`, ... in creation order), searchable per speaker.

    One exact cosine index per speaker partition; texts are embedded with the run's embedder (disk-cached
    by the runner, so re-ingesting a history re-embeds nothing).
    """

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder
        self._items: dict[str, MemoryItem] = {}
        self._indexes: dict[str | None, VectorIndex] = {}
        self._next_id = 1

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

    async def _embed(self, text: str) -> np.ndarray:
        return np.asarray((await self.embedder.embed([text]))[0], dtype=np.float32)

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
        vector = await self._embed(after.text)
        self._index(after.speaker, len(vector)).upsert([memory_id], vector[None, :])
        self._items[memory_id] = after
        return Change("UPDATE", memory_id, before=before.model_copy(deep=True), after=after.model_copy(deep=True))

    async def _add(self, event: MemoryEvent, provenance: Provenance) -> Change:
        memory_id = f"m{self._next_id}"
        self._next_id += 1
        item = MemoryItem(
            id=memory_id,
            text=event.text,
            timestamp=provenance.timestamp,
            source_turn_ids=list(dict.fromkeys(provenance.source_turn_ids)),
            speaker=provenance.speaker,
            history=[event],
        )
        vector = await self._embed(item.text)
        self._index(item.speaker, len(vector)).upsert([memory_id], vector[None, :])
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
        """Every memory the bank holds, in creation order, with its history."""
        return [item.model_copy(deep=True) for item in self._items.values()]
