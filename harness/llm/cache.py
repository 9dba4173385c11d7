"""A persistent cache of LLM calls in sqlite, so a re-run costs nothing and a killed run resumes cheaply.

A request is a canonical JSON document holding the backend's identity (provider, model, base URL), every
semantic generation parameter and the messages, each message's content given as the sha256 of its blocks
(the pieces between blank lines); the key is the document's sha256. The document is stored beside the value,
and each block once in `blocks`, so the cache can be read and audited by hand (`CallCache.document` joins a
request back together) while a history that fills every full-context prompt of its questions is stored once,
and a 100 KB prompt costs a hash of its bytes per call instead of a JSON encoding, a second hash and a copy.
Sampled calls without a seed are never cached: they would freeze one random draw.

Inside an event loop, the entries put during one turn of the loop are committed together at the start of the
next: one sqlite transaction per batch instead of per call (the commit was a tenth of the harness's CPU per call
at 640 calls/s, when one turn handles several replies). A `kill -9` loses at most one turn's entries, whose calls
a resumed run pays again.

Version 1 of this file kept whole documents, keyed by the sha256 of the document with the contents inline, in
table `calls`; a cache that still holds such rows serves them on a miss (and copies them to version 2), so
answers paid for before stay paid for.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import hashlib
import json
import sqlite3
import threading
import weakref
from dataclasses import asdict, dataclass, field
from pathlib import Path

from harness.llm.base import Completion, GenerateConfig, Message
from harness.llm.prefix_memo import SEPARATOR, PrefixMemo
from harness.paths import cache_root

_SCHEMA = """
CREATE TABLE IF NOT EXISTS calls_v2 (
    key TEXT PRIMARY KEY,
    request TEXT NOT NULL,
    text TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    finish_reason TEXT
);
CREATE TABLE IF NOT EXISTS blocks (hash TEXT PRIMARY KEY, text TEXT NOT NULL);
"""
_COLUMNS = "text, prompt_tokens, completion_tokens, finish_reason"
BLOCK_SEPARATOR = SEPARATOR
FLUSH_EVERY = 256
"""Pending entries that are committed at once, without waiting for the loop's next turn."""


def default_cache_path() -> Path:
    return cache_root() / "llm_calls.sqlite"


@dataclass(frozen=True)
class CallRequest:
    """One request as the cache sees it; equal requests have equal keys."""

    key: str
    document: str
    """The canonical JSON document (contents as block hashes) that `key` hashes."""
    blocks: dict[str, str] = field(compare=False)
    """Block hash -> block text, for the blocks the document names."""
    messages: list[Message] = field(compare=False)
    backend: dict[str, str | None] = field(compare=False)
    settings: dict[str, object] = field(compare=False)

    def v1_document(self) -> str:
        """The version-1 document (contents inline): encoded only to look up a version-1 row."""
        return json.dumps(
            {"backend": self.backend, "config": self.settings, "messages": self.messages},
            sort_keys=True,
            ensure_ascii=False,
        )


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _hashed_blocks(text: str) -> list[tuple[str, str]]:
    return [(_sha256(block), block) for block in text.split(BLOCK_SEPARATOR)]


_prefix_blocks = PrefixMemo(_hashed_blocks)
"""A history shared by the prompts of its questions is split and hashed once, not per question."""


def blocks_of(content: str) -> list[tuple[str, str]]:
    """The content's blocks as (sha256, text), in order."""
    split = _prefix_blocks.split(content)
    if split is None:
        return [(_sha256(content), content)]
    prefix_blocks, last = split
    return [*prefix_blocks, (_sha256(last), last)]


@functools.lru_cache(maxsize=256)
def _settings(config: GenerateConfig) -> dict[str, object]:
    """The config as the document holds it (computed once per config: `asdict` recurses, ~0.05 ms a call)."""
    return asdict(config)


def request_document(identity: dict[str, str | None], messages: list[Message], config: GenerateConfig) -> CallRequest:
    blocks: dict[str, str] = {}
    shown: list[dict[str, object]] = []
    for message in messages:
        hashes = []
        for digest, block in blocks_of(message["content"]):
            blocks[digest] = block
            hashes.append(digest)
        shown.append({"role": message["role"], "blocks": hashes})
    settings = _settings(config)
    document = json.dumps({"backend": identity, "config": settings, "messages": shown}, sort_keys=True)
    return CallRequest(hashlib.sha256(document.encode()).hexdigest(), document, blocks, messages, identity, settings)


class CallCache:
    """`get(request)` / `put(request, completion)` over one sqlite file; safe to share across threads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # In WAL mode, NORMAL syncs at checkpoints, not at every commit: a killed run keeps every committed entry
        # (only a power cut can lose the last ones, which are then recomputed). FULL stalled the event loop ~3 ms
        # per put.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._has_v1 = self._db.execute("SELECT 1 FROM sqlite_master WHERE name = 'calls'").fetchone() is not None
        self._stored_blocks: set[str] = set()
        """Blocks this instance has stored: not sent to sqlite again (a history's blocks recur in every prompt)."""
        self._pending: dict[str, tuple[CallRequest, Completion]] = {}
        """Entries put but not committed yet (see the module docstring), by key; `get` serves them too."""
        self._flush_scheduled: asyncio.Handle | None = None
        self._flush_loop: asyncio.AbstractEventLoop | None = None
        atexit.register(_flush_at_exit, weakref.ref(self))
        self.hits = 0
        self.misses = 0

    @staticmethod
    def v1_key(document: str) -> str:
        return hashlib.sha256(document.encode()).hexdigest()

    def get(self, request: CallRequest) -> Completion | None:
        with self._lock:
            pending = self._pending.get(request.key)
            if pending is not None:
                row = _row_of(pending[1])
            else:
                row = self._db.execute(f"SELECT {_COLUMNS} FROM calls_v2 WHERE key = ?", (request.key,)).fetchone()
        if row is None and self._has_v1:
            row = self._v1_row(request)
        if row is None:
            self.misses += 1
            return None
        self.hits += 1
        return Completion(
            text=row[0], prompt_tokens=row[1], completion_tokens=row[2], finish_reason=row[3], cached=True
        )

    def _v1_row(self, request: CallRequest) -> tuple[str, int, int, str | None] | None:
        """A version-1 row of the request, copied to version 2 so the next lookup finds it there."""
        with self._lock:
            key = self.v1_key(request.v1_document())
            row = self._db.execute(f"SELECT {_COLUMNS} FROM calls WHERE key = ?", (key,)).fetchone()
        if row is not None:
            self.put(
                request, Completion(text=row[0], prompt_tokens=row[1], completion_tokens=row[2], finish_reason=row[3])
            )
        return row

    def put(self, request: CallRequest, completion: Completion) -> None:
        """Store an entry: at once outside an event loop, else with the other entries of this turn of the loop."""
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        with self._lock:
            self._pending[request.key] = (request, completion)
            if loop is None or len(self._pending) >= FLUSH_EVERY:
                self._commit_pending()
            elif self._flush_scheduled is None or self._flush_loop is not loop:  # none yet, or on a loop that ended
                self._flush_scheduled = loop.call_soon(self.flush)
                self._flush_loop = loop

    def flush(self) -> None:
        """Commit the entries put so far."""
        with self._lock:
            self._commit_pending()

    def _commit_pending(self) -> None:
        if self._flush_scheduled is not None:
            self._flush_scheduled.cancel()
            self._flush_scheduled = self._flush_loop = None
        if not self._pending:
            return
        entries = list(self._pending.values())
        new_blocks = {
            digest: text
            for request, _ in entries
            for digest, text in request.blocks.items()
            if digest not in self._stored_blocks
        }
        self._db.execute("BEGIN")
        try:
            self._db.executemany("INSERT OR IGNORE INTO blocks VALUES (?, ?)", new_blocks.items())
            self._db.executemany(
                "INSERT OR REPLACE INTO calls_v2 VALUES (?, ?, ?, ?, ?, ?)",
                [(request.key, request.document, *_row_of(completion)) for request, completion in entries],
            )
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        self._stored_blocks.update(new_blocks)
        self._pending.clear()

    def document(self, key: str) -> str | None:
        """The request of `key` with its message contents inline, as a JSON document (for reading by hand)."""
        with self._lock:
            self._commit_pending()
            row = self._db.execute("SELECT request FROM calls_v2 WHERE key = ?", (key,)).fetchone()
            if row is None:
                return None
            request = json.loads(row[0])
            hashes = {h for message in request["messages"] for h in message["blocks"]}
            texts = dict(
                self._db.execute(
                    f"SELECT hash, text FROM blocks WHERE hash IN ({','.join('?' * len(hashes))})", list(hashes)
                ).fetchall()
            )
        for message in request["messages"]:
            message["content"] = BLOCK_SEPARATOR.join(texts[h] for h in message.pop("blocks"))
        return json.dumps(request, sort_keys=True, ensure_ascii=False)

    def __len__(self) -> int:
        """Requests held in version 2 (version-1 rows count once a lookup has copied them)."""
        with self._lock:
            self._commit_pending()
            return int(self._db.execute("SELECT COUNT(*) FROM calls_v2").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._commit_pending()
            self._db.close()


def _row_of(completion: Completion) -> tuple[str, int, int, str | None]:
    """What the cache keeps of a completion, in `_COLUMNS` order."""
    return completion.text, completion.prompt_tokens, completion.completion_tokens, completion.finish_reason


def _flush_at_exit(cache: weakref.ref[CallCache]) -> None:
    """Entries still pending at interpreter exit are written (unless the cache was closed or collected)."""
    alive = cache()
    if alive is not None:
        alive.flush()
