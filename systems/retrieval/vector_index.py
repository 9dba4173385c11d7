"""A faiss inner-product index over unit vectors (cosine similarity) whose entries can be replaced and removed,
as memory banks need for UPDATE and DELETE."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class VectorIndex:
    """Exact cosine top-k (faiss `IndexFlatIP` behind an id map) keyed by the caller's string ids."""

    def __init__(self, dim: int) -> None:
        import faiss  # imported here: faiss is heavy and only the systems that retrieve need it

        self.dim = dim
        self._faiss = faiss
        self._index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self._number_of: dict[str, int] = {}
        self._key_of: dict[int, str] = {}
        self._next = 0

    def __len__(self) -> int:
        return len(self._number_of)

    def __contains__(self, key: str) -> bool:
        return key in self._number_of

    def upsert(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        """Add entries, replacing any that already have one of `keys`."""
        if len(keys) != len(vectors):
            raise ValueError(f"{len(keys)} keys for {len(vectors)} vectors")
        if not keys:
            return
        self.remove([k for k in keys if k in self._number_of])
        numbers = np.arange(self._next, self._next + len(keys), dtype=np.int64)
        self._next += len(keys)
        for key, number in zip(keys, numbers.tolist(), strict=True):
            self._number_of[key] = number
            self._key_of[number] = key
        self._index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), numbers)

    def remove(self, keys: Sequence[str]) -> None:
        numbers = [self._number_of.pop(k) for k in keys if k in self._number_of]
        for number in numbers:
            del self._key_of[number]
        if numbers:
            self._index.remove_ids(np.asarray(numbers, dtype=np.int64))

    def search(self, vector: np.ndarray, k: int) -> list[tuple[str, float]]:
        """The `k` nearest keys to one query vector, best first, with their cosine similarity."""
        if not self._number_of or k <= 0:
            return []
        query = np.ascontiguousarray(vector.reshape(1, -1), dtype=np.float32)
        # One query over a bank-sized flat index: OpenMP's thread start-up costs more than the scan (measured on
        # 2 cores: 2-15 ms with the default threads, 0.06 ms with one). The setting is per calling thread.
        self._faiss.omp_set_num_threads(1)
        scores, numbers = self._index.search(query, min(k, len(self._number_of)))
        return [(self._key_of[int(n)], float(s)) for s, n in zip(scores[0], numbers[0], strict=True) if n != -1]
