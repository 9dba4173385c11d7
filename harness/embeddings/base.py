"""The embedding interface: texts -> unit-length float32 vectors, so inner product is cosine similarity."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import numpy as np


DEFAULT_EMBEDDER_SPEC = "sentence-transformers:all-MiniLM-L6-v2"


@dataclass(frozen=True)
class EmbedderInfo:
    provider: str
    model: str
    dim: int | None
    """Vector size, when known before the first call (servers reveal it only then: read the array's shape)."""
    base_url: str | None = None
    source: str | None = None
    """Where the weights were loaded from (e.g. the packaged model's folder), for the record; not part of
    the cache key, since an install path moves between machines while the model stays the same."""


class Embedder(Protocol):
    """A sentence-embedding model (local sentence-transformers, an `/v1/embeddings` server, a test double)."""

    info: EmbedderInfo

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        """A `(len(texts), dim)` float32 array of L2-normalised rows."""
        ...
