"""Embeddings cached on disk by content hash, so a history is embedded once across runs and systems."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from harness.embeddings.base import Embedder, EmbedderInfo
from harness.paths import cache_root


def default_embedding_cache_path() -> Path:
    return cache_root() / "embeddings.sqlite"


class CachedEmbedder:
    """Wraps an embedder: texts seen before (same provider, model and text) are read from sqlite; only the
    others are sent to the model, in one batch."""

    def __init__(self, embedder: Embedder, path: Path) -> None:
        self.embedder = embedder
        self.info: EmbedderInfo = embedder.info
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS vectors (key TEXT PRIMARY KEY, vector BLOB NOT NULL)")
        self.hits = 0
        self.misses = 0

    def _key(self, text: str) -> str:
        identity = f"{self.info.provider}\x00{self.info.model}\x00{self.info.base_url}\x00{text}"
        return hashlib.sha256(identity.encode()).hexdigest()

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        keys = [self._key(t) for t in texts]
        found: dict[str, np.ndarray] = {}
        with self._lock:
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                marks = ",".join("?" * len(chunk))
                for key, blob in self._db.execute(f"SELECT key, vector FROM vectors WHERE key IN ({marks})", chunk):
                    found[key] = np.frombuffer(blob, dtype=np.float32)
        missing = list(dict.fromkeys(k for k in keys if k not in found))
        self.hits += len(keys) - sum(k in missing for k in keys)
        self.misses += len(missing)
        if missing:
            text_of = dict(zip(keys, texts, strict=True))
            vectors = await self.embedder.embed([text_of[k] for k in missing])
            self.info = self.embedder.info  # servers reveal the vector size with their first answer
            with self._lock:
                self._db.executemany(
                    "INSERT OR REPLACE INTO vectors VALUES (?, ?)",
                    [(k, np.asarray(v, dtype=np.float32).tobytes()) for k, v in zip(missing, vectors, strict=True)],
                )
            found.update(zip(missing, np.asarray(vectors, dtype=np.float32), strict=True))
        if not keys:
            return np.zeros((0, self.info.dim or 0), dtype=np.float32)
        return np.stack([found[k] for k in keys])
