"""BM25 over text chunks keyed by the caller's string ids, with the `bm25s` library.

Texts are tokenized by bm25s's own tokenizer (lowercased words of 2+ characters, its English stopword list),
with nltk's Porter stemmer (pure Python, needs no downloaded data) so that `played` matches `play`. bm25s
builds a static index; chunks arrive session by session, so token lists are kept and the index is rebuilt on
the first search after an addition (cheap next to embedding: milliseconds for a LoCoMo history).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from types import ModuleType
from typing import TYPE_CHECKING

from harness.stemming import porter_stem

if TYPE_CHECKING:
    import bm25s

STOPWORDS = "en"
"""bm25s's built-in English stopword list."""


def _bm25s() -> ModuleType:
    try:
        import bm25s
    except ImportError as error:
        raise ImportError("BM25 retrieval needs: pip install bm25s") from error

    # bm25s sets its own logger to DEBUG at import, which would print a line per index build in our runs
    logging.getLogger("bm25s").setLevel(logging.WARNING)
    return bm25s


def _stem_words(words: list[str]) -> list[str]:  # bm25s hands over each distinct word once per call
    return [porter_stem(w) for w in words]


class BM25Index:
    """Okapi BM25 top-k (bm25s defaults: Lucene variant, k1=1.5, b=0.75) over chunks added over time."""

    def __init__(self, stemming: bool = True) -> None:
        self._stem = _stem_words if stemming else None
        self._keys: list[str] = []
        self._tokens: list[list[str]] = []
        self._retriever: bm25s.BM25 | None = None

    def __len__(self) -> int:
        return len(self._keys)

    def _tokenize(self, texts: Sequence[str]) -> list[list[str]]:
        tokens = _bm25s().tokenize(
            list(texts), stopwords=STOPWORDS, stemmer=self._stem, return_ids=False, show_progress=False
        )
        return [list(t) for t in tokens]

    def add(self, keys: Sequence[str], texts: Sequence[str]) -> None:
        if len(keys) != len(texts):
            raise ValueError(f"{len(keys)} keys for {len(texts)} texts")
        self._keys.extend(keys)
        self._tokens.extend(self._tokenize(texts))
        self._retriever = None

    def _index(self) -> bm25s.BM25:
        if self._retriever is None:
            retriever = _bm25s().BM25()
            retriever.index(self._tokens, show_progress=False)
            self._retriever = retriever
        return self._retriever

    def search(self, query: str, k: int) -> list[tuple[str, float]]:
        """The `k` best-scoring keys for `query`, best first; chunks sharing no term with it are left out."""
        if not self._keys or k <= 0:
            return []
        query_tokens = self._tokenize([query])
        if not query_tokens[0]:
            return []
        documents, scores = self._index().retrieve(query_tokens, k=min(k, len(self._keys)), show_progress=False)
        return [(self._keys[int(d)], float(s)) for d, s in zip(documents[0], scores[0], strict=True) if float(s) > 0.0]
