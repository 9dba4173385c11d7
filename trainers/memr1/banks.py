"""The memory banks Memory-R1's agents start from, built with the `memr1` system's own ingestion, cached on disk.

Two sources (`BankConfig.source`):
- `llm` (the paper's): the `memr1` system ingests the turns with the bank-building model in both its roles,
  `memory` (fact extraction) and `manager` (ADD / UPDATE / DELETE / NOOP), exactly as an evaluation run does.
  Memory-R1 builds these banks with a stronger LLM than the one it trains.
- `turns` (ours, for CPU smoke runs): every dialogue turn becomes one memory, "<speaker>: <text>", dated with its
  session and carrying its turn id. No LLM is called.

Windows: a Memory Manager episode at turn t starts from the bank built over the `window_turns` turns before t
(in conversation order, across sessions). The paper states both 24 and 50 turns in different places; the
default is 50. A window never starts on the second turn of a message pair (it then starts one turn later), so
the `llm` source extracts from the same pairs as a whole-session ingestion and reuses its cached LLM calls.
An Answer Agent question starts from the bank of its whole conversation (`BankBuilder.whole`).

Cache: `<cache_root>/memr1-banks/<sha256 of the key>.jsonl`, one `MemoryItem` per line (ids renumbered
per speaker in creation order, `alice-1`, `alice-2`, ...; histories kept for inspection), beside
`<hash>.key.json`, the readable key: source,
conversation id, window end and size, model spec (and a hash of the extraction and manager prompts), embedder,
and a hash of the window's turns. `load_bank` rebuilds a searchable `MemoryBank` from the items.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from harness.embeddings.base import DEFAULT_EMBEDDER_SPEC, Embedder, EmbedderInfo
from harness.embeddings.build import build_embedder
from harness.llm import Completion, GenerateConfig, LLMError, Message, Model
from harness.llm.base import BackendInfo
from harness.llm.build import build_model
from harness.llm.cache import CallCache, default_cache_path
from harness.paths import cache_root
from harness.system import SystemContext
from harness.types import Conversation, MemoryItem, Session, Turn
from systems.mem0 import turn_memory_text
from systems.memory_bank import MemoryBank, Operation, Provenance, id_prefix
from systems.memory_ops import EXTRACTION_INSTRUCTIONS, MANAGER_INSTRUCTIONS
from systems.memr1.system import MemR1System

BankSource = Literal["llm", "turns"]
CACHE_FORMAT = 2


class BankConfig(BaseModel):
    """How the starting banks are built (recorded with the datasets made from them)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: BankSource = "llm"
    """`llm`: the memr1 ingestion with `model` (the paper's); `turns`: one memory per turn, no LLM (CPU smoke runs)."""
    window_turns: int = Field(50, ge=1)
    """Turns before a manager episode's turn that its starting bank is built from (the paper states 24 and 50)."""
    model: str | None = None
    """Spec of the bank-building model (roles `memory` and `manager`); required for the `llm` source."""
    embedder: str = DEFAULT_EMBEDDER_SPEC
    top_k_related: int = 5
    """Related memories retrieved per new fact while ingesting (the memr1 / mem0 default)."""


@dataclass(frozen=True)
class PlacedTurn:
    """A turn with its session and its place in the conversation."""

    turn: Turn
    session: Session
    index: int
    """Position in the whole conversation, from 0."""
    position: int
    """Position in its session, from 0 (even: the first turn of a message pair)."""


def placed_turns(conversation: Conversation) -> list[PlacedTurn]:
    """Every turn of the conversation in order."""
    turns = [(turn, session, j) for session in conversation.sessions for j, turn in enumerate(session.turns)]
    return [PlacedTurn(turn, session, i, j) for i, (turn, session, j) in enumerate(turns)]


def window_before(turns: Sequence[PlacedTurn], end: int, window_turns: int) -> list[PlacedTurn]:
    """The at most `window_turns` turns before `turns[end]`, starting on the first turn of a message pair."""
    start = max(0, end - window_turns)
    if start < end and turns[start].position % 2:
        start += 1
    return list(turns[start:end])


class MemoEmbedder:
    """Keeps every vector computed in memory, so reloading a bank (once per reward call) re-embeds nothing, and
    embeds what it has not seen in one batch."""

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder
        self.info: EmbedderInfo = embedder.info
        self._vectors: dict[str, np.ndarray] = {}

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        missing = list(dict.fromkeys(t for t in texts if t not in self._vectors))
        if missing:
            vectors = np.asarray(await self.embedder.embed(missing), dtype=np.float32)
            self.info = self.embedder.info
            self._vectors.update(zip(missing, vectors, strict=True))
        if not texts:
            return np.zeros((0, self.info.dim or 0), dtype=np.float32)
        return np.stack([self._vectors[t] for t in texts])


def memo_embedder(embedder: Embedder) -> MemoEmbedder:
    return embedder if isinstance(embedder, MemoEmbedder) else MemoEmbedder(embedder)


async def load_bank(items: Sequence[MemoryItem], embedder: Embedder) -> MemoryBank:
    """A searchable bank holding `items` (ids numbered per speaker, as the cache stores them), each re-added with
    its speaker, date and source turns."""
    embedder = memo_embedder(embedder)
    await embedder.embed([item.text for item in items])
    bank = MemoryBank(embedder)
    for item in items:
        session_id = item.history[-1].session_id if item.history else None
        provenance = Provenance(item.speaker, item.timestamp, session_id, tuple(item.source_turn_ids))
        change = await bank.apply(Operation(event="ADD", text=item.text), provenance)
        if change is None or change.memory_id != item.id:
            raise ValueError(f"bank items must be numbered per speaker, as the bank numbers them; got {item.id!r}")
    return bank


def read_items(path: Path) -> list[MemoryItem]:
    return [MemoryItem.model_validate_json(line) for line in path.read_text().splitlines() if line.strip()]


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text)
    temporary.replace(path)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _renumbered(items: Sequence[MemoryItem]) -> list[MemoryItem]:
    """Ids numbered from 1 per speaker, as a `MemoryBank` numbers the items re-added in this order."""
    numbers: dict[str, int] = {}
    renumbered = []
    for item in items:
        prefix = id_prefix(item.speaker)
        numbers[prefix] = numbers.get(prefix, 0) + 1
        renumbered.append(item.model_copy(update={"id": f"{prefix}{numbers[prefix]}", "score": None}))
    return renumbered


@dataclass(frozen=True)
class BuiltBank:
    bank: MemoryBank
    items: list[MemoryItem]
    """What the bank holds, as cached (with histories)."""
    path: Path
    hit: bool
    """Whether the bank came from the disk cache."""


class BankBuilder:
    """Builds (or reads back from the cache) the starting banks of one `BankConfig`.

    `model` and `embedder` default to those the config's specs name (the model with the persistent LLM-call
    cache); pass them to reuse objects or in tests. The cache key uses `model.spec` and the embedder's identity.
    """

    def __init__(
        self,
        config: BankConfig,
        *,
        model: Model | None = None,
        embedder: Embedder | None = None,
        cache_dir: Path | None = None,
    ) -> None:
        if config.source == "llm" and model is None:
            if not config.model:
                raise ValueError("the llm bank source needs a bank-building model: set BankConfig.model to a spec")
            model = build_model(config.model, cache=CallCache(default_cache_path()))
        self.config = config
        self.model = model
        self.embedder = memo_embedder(embedder or build_embedder(config.embedder))
        self.cache_dir = cache_dir or cache_root() / "memr1-banks"

    async def whole(self, conversation: Conversation) -> BuiltBank:
        """The bank of the whole conversation (all sessions): what an Answer Agent question starts from."""
        return await self._built(conversation, placed_turns(conversation), window_end="end", window="all")

    async def before(self, conversation: Conversation, turn_id: str) -> BuiltBank:
        """The bank over the window of turns before `turn_id`: what a manager episode at that turn starts from."""
        turns = placed_turns(conversation)
        end = next((t.index for t in turns if t.turn.turn_id == turn_id), None)
        if end is None:
            raise KeyError(f"{conversation.conversation_id} has no turn {turn_id!r}")
        window = window_before(turns, end, self.config.window_turns)
        return await self._built(conversation, window, window_end=turn_id, window=self.config.window_turns)

    def key(
        self, conversation: Conversation, turns: Sequence[PlacedTurn], window_end: str, window: int | str
    ) -> dict[str, object]:
        """The cache key of the bank over `turns` (a readable JSON document; the file name is its sha256)."""
        content = json.dumps([(t.turn.turn_id, t.turn.speaker, t.turn.text, t.session.date) for t in turns])
        info = self.embedder.info
        key: dict[str, object] = {
            "format": CACHE_FORMAT,
            "source": self.config.source,
            "conversation_id": conversation.conversation_id,
            "window_end": window_end,
            "window_turns": window,
            "embedder": f"{info.provider}:{info.model}" + (f"@{info.base_url}" if info.base_url else ""),
            "turns": _sha256(content),
        }
        if self.config.source == "llm":
            assert self.model is not None
            key["model"] = self.model.spec
            key["prompts"] = _sha256(EXTRACTION_INSTRUCTIONS + "\n" + MANAGER_INSTRUCTIONS)[:16]
            key["top_k_related"] = self.config.top_k_related
        return key

    async def _built(
        self, conversation: Conversation, turns: Sequence[PlacedTurn], window_end: str, window: int | str
    ) -> BuiltBank:
        key = self.key(conversation, turns, window_end, window)
        digest = _sha256(json.dumps(key, sort_keys=True))
        path = self.cache_dir / f"{digest}.jsonl"
        hit = path.is_file()
        if hit:
            items = read_items(path)
        else:
            items = _renumbered(await self._ingest(conversation, turns))
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            _write_atomically(path.with_suffix(".key.json"), json.dumps(key, indent=1, sort_keys=True) + "\n")
            _write_atomically(path, "".join(item.model_dump_json() + "\n" for item in items))
        return BuiltBank(await load_bank(items, self.embedder), items, path, hit)

    async def _ingest(self, conversation: Conversation, turns: Sequence[PlacedTurn]) -> list[MemoryItem]:
        if self.config.source == "turns":
            return [
                MemoryItem(
                    id=f"m{t.index}",
                    text=turn_memory_text(t.turn),
                    timestamp=t.session.date,
                    source_turn_ids=[t.turn.turn_id],
                    speaker=t.turn.speaker,
                )
                for t in turns
            ]
        assert self.model is not None
        roles = {"model": self.model, "memory": self.model, "manager": self.model}
        context = SystemContext(roles=roles, speakers=conversation.speakers, embedder_factory=lambda: self.embedder)
        system = MemR1System(context, top_k_related=str(self.config.top_k_related))
        for session in session_fragments(turns):
            await system.ingest(session)
        return system.memory_dump()


def session_fragments(turns: Sequence[PlacedTurn]) -> list[Session]:
    """The turns grouped back into (parts of) their sessions, in order, each keeping its session's id and date."""
    groups = [list(group) for _, group in groupby(turns, key=lambda placed: placed.session.session_id)]
    return [group[0].session.model_copy(update={"turns": tuple(p.turn for p in group)}) for group in groups]


class _RetrievalOnly:
    """The answer role of a system used only for its retrieval: any call is a bug."""

    info = BackendInfo(provider="none", model="retrieval-only")

    async def generate(self, messages: list[Message], config: GenerateConfig) -> Completion:
        raise LLMError("this memr1 system was built to retrieve candidates only; it has no answer model")

    def count_tokens(self, text: str) -> int | None:
        return None

    async def aclose(self) -> None:
        return None


def answering_system(
    bank: MemoryBank,
    speakers: Sequence[str],
    answer_model: Model | None = None,
    memories_per_speaker: int | None = None,
) -> MemR1System:
    """The `memr1` system answering from `bank`: its `candidates` are the Answer Agent's retrieval
    (`memories_per_speaker` per speaker, the system's `-S memories_per_speaker`, default 30; in the system's order)
    and its `answer` is the Answer Agent itself, run by `answer_model`."""
    model = answer_model or Model(_RetrievalOnly(), spec="none")
    context = SystemContext(roles={"model": model}, speakers=tuple(speakers), embedder_factory=lambda: bank.embedder)
    options = {} if memories_per_speaker is None else {"memories_per_speaker": str(memories_per_speaker)}
    system = MemR1System(context, **options)
    system.bank = bank
    return system
