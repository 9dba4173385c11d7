"""Memory snapshots: a history's finished memory, stored under a key of everything that built it.

Ingestion is the expensive part of evaluating a memory system (thousands of LLM calls per LoCoMo history),
and it does not depend on the answer model. A system that can snapshot (`harness.system.Snapshotting`) names
what built its memory (`snapshot_identity`: options, memory models, prompts, embedder); the runner adds the
system's name and the history's content hash, and the sha256 of that document is the key. A later run with
the same key restores the memory instead of ingesting, so ten answer models cost one ingestion per history.

A snapshot file holds its identity document and the sha256 of its payload. A file that does not parse, whose
payload does not match its checksum, or whose identity is not the one asked for is never used: the runner
ingests again and overwrites it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from harness.paths import cache_root
from harness.types import Conversation

SNAPSHOT_FORMAT = 1


class SnapshotFile(BaseModel):
    format: int
    identity: dict[str, Any]
    payload: dict[str, Any]
    payload_sha256: str


def _canonical(value: object) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def default_snapshot_dir() -> Path:
    return cache_root() / "memory_snapshots"


@dataclass(frozen=True)
class Loaded:
    """What `SnapshotStore.load` found: the payload, or None with the reason a stored file was unusable
    (`problem` is None when there simply was no snapshot)."""

    payload: dict[str, Any] | None
    problem: str | None = None


class SnapshotStore:
    """Snapshot files `<root>/<key>.json`, written atomically."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root or default_snapshot_dir()

    @staticmethod
    def identity(system: str, built_by: dict[str, Any], conversation: Conversation) -> dict[str, Any]:
        """The full identity document of a history's memory."""
        history = _sha256(conversation.model_dump_json())
        identity = {"format": SNAPSHOT_FORMAT, "system": system, "history_sha256": history, "built_by": built_by}
        return dict(json.loads(_canonical(identity)))  # as JSON gives it back (tuples become lists)

    @staticmethod
    def key(identity: dict[str, Any]) -> str:
        return _sha256(_canonical(identity))

    def path(self, identity: dict[str, Any]) -> Path:
        return self.root / f"{self.key(identity)}.json"

    def load(self, identity: dict[str, Any]) -> Loaded:
        path = self.path(identity)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return Loaded(None)
        except OSError as error:
            return Loaded(None, f"{path}: unreadable: {error}")
        try:
            stored = SnapshotFile.model_validate_json(text)
        except ValidationError as error:
            return Loaded(None, f"{path}: not a snapshot file ({error.error_count()} errors)")
        if stored.format != SNAPSHOT_FORMAT or stored.identity != identity:
            return Loaded(None, f"{path}: built by something else (identity differs)")
        if _sha256(_canonical(stored.payload)) != stored.payload_sha256:
            return Loaded(None, f"{path}: payload checksum mismatch")
        return Loaded(stored.payload)

    def save(self, identity: dict[str, Any], payload: dict[str, Any]) -> Path:
        path = self.path(identity)
        path.parent.mkdir(parents=True, exist_ok=True)
        document = SnapshotFile(
            format=SNAPSHOT_FORMAT, identity=identity, payload=payload, payload_sha256=_sha256(_canonical(payload))
        )
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".tmp")
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                out.write(document.model_dump_json())
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return path
