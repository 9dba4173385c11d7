"""`PrefixMemo`: a function of long prompts' shared prefixes, computed once per prefix.

Every full-context prompt of a history is that history plus a question, and most prompts of a retrieval system
share their instructions: work on a 100 KB prompt (hashing it for the cache key, JSON-encoding it for a request
body) is mostly work on a prefix seen a moment ago. Contents are cut before their last blank line, where the
question or the retrieved part begins.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")

SEPARATOR = "\n\n"


class PrefixMemo(Generic[T]):
    """`compute(prefix)` for the last `size` prefixes seen (a content's part before its last `SEPARATOR`), keyed by
    length: a hit costs a comparison with the remembered prefix of that length (a dict keyed by the prefix text
    would hash it, half the cost of hashing it for real)."""

    def __init__(self, compute: Callable[[str], T], size: int = 64) -> None:
        self.compute = compute
        self.size = size
        self._known: dict[int, tuple[str, T]] = {}
        self._lock = threading.Lock()

    def split(self, content: str) -> tuple[T, str] | None:
        """`compute` of the content's prefix and the rest after the separator; None without a separator."""
        cut = content.rfind(SEPARATOR)
        if cut < 0:
            return None
        with self._lock:
            known = self._known.get(cut)
        if known is None or not content.startswith(known[0]):
            prefix = content[:cut]
            known = (prefix, self.compute(prefix))
            with self._lock:
                self._known.pop(cut, None)
                self._known[cut] = known
                if len(self._known) > self.size:
                    del self._known[next(iter(self._known))]
        return known[1], content[cut + len(SEPARATOR) :]
