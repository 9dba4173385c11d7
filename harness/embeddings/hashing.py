"""`hashing`: a deterministic bag-of-words embedder with no model, for fast offline tests.

Each lowercased word is hashed into one of `dim` buckets; texts that share words get similar vectors. It
is not a semantic model and is never a default.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy as np

from harness.embeddings.base import EmbedderInfo

_WORD = re.compile(r"[a-z0-9]+")


class HashingEmbedder:
    def __init__(self, model: str | None = None, base_url: str | None = None, dim: int = 256) -> None:
        self.dim = dim
        self.info = EmbedderInfo(provider="hashing", model=model or f"bow-{dim}", dim=dim)
        self.calls = 0

    def _bucket(self, word: str) -> int:
        return int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little") % self.dim

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += 1
        vectors = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in _WORD.findall(text.lower()):
                vectors[row, self._bucket(word)] += 1.0
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.where(norms == 0, 1.0, norms)
