"""A persistent cache of LLM calls in sqlite, so a re-run costs nothing and a killed run resumes cheaply.

The key is the sha256 of a canonical JSON document holding the backend's identity (provider, model, base
URL), every semantic generation parameter, the messages and the seed. The document itself is stored beside
the value so the cache can be read and audited by hand. Sampled calls without a seed are never cached:
they would freeze one random draw.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from dataclasses import asdict
from pathlib import Path

from harness.llm.base import Completion, GenerateConfig, Message
from harness.paths import cache_root

_SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    key TEXT PRIMARY KEY,
    request TEXT NOT NULL,
    text TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    finish_reason TEXT
)
"""


def default_cache_path() -> Path:
    return cache_root() / "llm_calls.sqlite"


def request_document(identity: dict[str, str | None], messages: list[Message], config: GenerateConfig) -> str:
    return json.dumps(
        {"backend": identity, "config": asdict(config), "messages": messages}, sort_keys=True, ensure_ascii=False
    )


class CallCache:
    """`get(request)` / `put(request, completion)` over one sqlite file; safe to share across threads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(_SCHEMA)
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(request: str) -> str:
        return hashlib.sha256(request.encode()).hexdigest()

    def get(self, request: str) -> Completion | None:
        with self._lock:
            row = self._db.execute(
                "SELECT text, prompt_tokens, completion_tokens, finish_reason FROM calls WHERE key = ?",
                (self.key(request),),
            ).fetchone()
        if row is None:
            self.misses += 1
            return None
        self.hits += 1
        return Completion(
            text=row[0], prompt_tokens=row[1], completion_tokens=row[2], finish_reason=row[3], cached=True
        )

    def put(self, request: str, completion: Completion) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO calls VALUES (?, ?, ?, ?, ?, ?)",
                (
                    self.key(request),
                    request,
                    completion.text,
                    completion.prompt_tokens,
                    completion.completion_tokens,
                    completion.finish_reason,
                ),
            )

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM calls").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
