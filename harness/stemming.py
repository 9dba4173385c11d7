"""nltk's Porter stemmer (pure Python, no downloaded data), memoized per word: the LoCoMo F1 and BM25 retrieval
stem the same few thousand words again and again (for BM25, every turn of a history and every query)."""

from __future__ import annotations

from functools import cache, lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nltk.stem.porter import PorterStemmer


@cache
def load_porter() -> PorterStemmer:
    """The stemmer, imported on first use: nltk's package import pulls in scipy, a second of every command's
    start-up."""
    from nltk.stem.porter import PorterStemmer

    return PorterStemmer()


@lru_cache(maxsize=1 << 16)
def porter_stem(word: str) -> str:
    return load_porter().stem(word)
