"""Where the harness keeps its caches: `$HARNESS_CACHE_DIR`, else `$XDG_CACHE_HOME/memory-harness`, else
`~/.cache/memory-harness` (LLM calls, embeddings and downloaded data files)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    explicit = os.environ.get("HARNESS_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "memory-harness"
