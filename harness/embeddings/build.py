"""Turn an embedder spec (`sentence-transformers:all-MiniLM-L6-v2`, `openai:MODEL@URL`, `hashing`) into an
embedder, cached on disk unless told otherwise."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from harness.embeddings.base import DEFAULT_EMBEDDER_SPEC, Embedder
from harness.embeddings.cache import CachedEmbedder, default_embedding_cache_path
from harness.llm.spec import parse_spec

__all__ = ["DEFAULT_EMBEDDER_SPEC", "build_embedder"]


def build_embedder(spec: str, use_cache: bool = True, cache_path: Path | None = None, **kwargs: object) -> Embedder:
    from harness.plugins import EMBEDDERS

    parsed = parse_spec(spec)
    embedder_class = cast(Any, EMBEDDERS.get(parsed.provider))
    embedder = cast(Embedder, embedder_class(parsed.model, parsed.base_url, **kwargs))
    if not use_cache:
        return embedder
    return CachedEmbedder(embedder, cache_path or default_embedding_cache_path())
