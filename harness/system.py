"""The seam between the runner and a memory system."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict

from harness.embeddings.base import Embedder
from harness.inputs import parse_options
from harness.llm.model import Model
from harness.types import MemoryItem, Prediction, Query, Session, StageUsage, merge_usage


class SystemContext(BaseModel):
    """What a system is built with: its LLM roles and a scratch directory for caches."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    roles: dict[str, Model]
    """At least `model` (the system's own LLM); systems may look up further roles they document."""
    speakers: tuple[str, ...] = ()
    work_dir: Path | None = None
    embedder_factory: Callable[[], Embedder] | None = None
    """Builds (once per run, shared by all histories) the embedding model given by `--embedder`."""

    def role(self, name: str) -> Model:
        """The model of role `name`, falling back to `model` when the run gives none for it."""
        return self.roles.get(name) or self.roles["model"]

    def embedder(self) -> Embedder:
        if self.embedder_factory is None:
            raise ValueError("this run has no embedding model; pass --embedder SPEC")
        return self.embedder_factory()


class MemorySystem(Protocol):
    """One instance serves one history: the runner builds a fresh one per sample.

    `ingest` is called once per session, in date order, before any `answer`; `answer` may then be called
    concurrently. Systems receive `Query`s, never gold answers, and no evidence unless their factory declares
    `reads_gold_evidence` (see `SystemFactory`).
    """

    async def ingest(self, session: Session) -> StageUsage: ...

    async def answer(self, query: Query) -> Prediction: ...

    def memory_dump(self) -> list[MemoryItem]:
        """The memory bank as it stands, for inspection."""
        ...

    def memory_stats(self) -> dict[str, int]:
        """Counters of how the memory was built (e.g. operations applied, invalid manager replies); may be empty."""
        ...


@runtime_checkable
class IngestsWholeHistory(Protocol):
    """A system that takes all sessions at once (to overlap work across them); the runner then calls this
    instead of `ingest` per session. The result must be what ingesting them one by one in order builds."""

    async def ingest_history(self, sessions: Sequence[Session]) -> StageUsage: ...


@runtime_checkable
class Snapshotting(Protocol):
    """A system whose finished memory can be stored and restored (`harness.snapshots`)."""

    def snapshot_identity(self) -> dict[str, Any]:
        """Everything that decides the memory this system builds from a history (options, memory models,
        prompts, embedder), and nothing that does not (the answer model): JSON values only."""
        ...

    def snapshot(self) -> dict[str, Any]:
        """The memory as it stands after ingestion, as JSON values."""
        ...

    def restore(self, payload: dict[str, Any]) -> None:
        """Take the memory of a `snapshot()`; raise ValueError (or pydantic's ValidationError) when the payload
        is not one."""
        ...


async def ingest_history(system: MemorySystem, sessions: Sequence[Session]) -> StageUsage:
    """Ingest a history's sessions in order, all at once where the system can take them so."""
    if isinstance(system, IngestsWholeHistory):
        return await system.ingest_history(sessions)
    usage: StageUsage = {}
    for session in sessions:
        merge_usage(usage, await system.ingest(session))
    return usage


class SystemFactory(Protocol):
    """Registered under a system's name: builds one system for one history from the run's options.

    A factory may also carry `prompts: dict[str, str]` (name -> instruction text): the run spec records a
    fingerprint of each, so `compare` can warn when two runs of a system asked their LLMs differently;
    `options_model`, the pydantic model of its `-S` options, so they are checked before the run starts; and
    `reads_gold_evidence: ClassVar[bool] = True` for a reference system that is handed each question's gold
    evidence ids (`Query.gold_evidence`): the run spec records it and every table marks such a run.
    """

    def __call__(self, context: SystemContext, **options: str) -> MemorySystem: ...


def check_system_options(name: str, factory: object, options: Mapping[str, str]) -> None:
    """Raise OptionError (one line, like a bad task option) when the factory's `options_model` rejects
    `options`; checked up front, a bad option would otherwise fail every history of the run."""
    model: type[BaseModel] | None = getattr(factory, "options_model", None)
    if model is not None:
        parse_options("system", name, model, options)


def reads_gold_evidence(factory: object) -> bool:
    """Whether the system is a reference that reads the gold evidence by design (an oracle, not a memory system)."""
    return getattr(factory, "reads_gold_evidence", False) is True


def prompt_fingerprints(factory: object) -> dict[str, str]:
    """sha256 prefixes of the prompts a system factory declares (none declared: empty)."""
    prompts: dict[str, str] = getattr(factory, "prompts", {})
    return {name: hashlib.sha256(text.encode()).hexdigest()[:12] for name, text in prompts.items()}
