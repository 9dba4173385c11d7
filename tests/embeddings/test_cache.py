"""CachedEmbedder: texts are embedded once per (provider, model, text), in order, across instances."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from harness.embeddings.cache import CachedEmbedder
from harness.embeddings.hashing import HashingEmbedder


async def test_second_call_is_served_from_the_cache(tmp_path: Path) -> None:
    inner = HashingEmbedder()
    cached = CachedEmbedder(inner, tmp_path / "e.sqlite")
    first = await cached.embed(["a red apple", "a blue car"])
    second = await cached.embed(["a red apple", "a blue car"])
    assert inner.calls == 1
    assert (cached.hits, cached.misses) == (2, 2)
    np.testing.assert_array_equal(first, second)
    assert second.dtype == np.float32 and second.shape == (2, 256)


async def test_the_cache_outlives_the_instance(tmp_path: Path) -> None:
    await CachedEmbedder(HashingEmbedder(), tmp_path / "e.sqlite").embed(["kept on disk"])
    inner = HashingEmbedder()
    again = await CachedEmbedder(inner, tmp_path / "e.sqlite").embed(["kept on disk"])
    assert inner.calls == 0
    np.testing.assert_array_equal(again, await HashingEmbedder().embed(["kept on disk"]))


async def test_mixed_hits_and_misses_keep_the_input_order(tmp_path: Path) -> None:
    inner = HashingEmbedder()
    cached = CachedEmbedder(inner, tmp_path / "e.sqlite")
    await cached.embed(["beta words", "delta words"])
    texts = ["alpha words", "beta words", "gamma words", "delta words", "alpha words"]
    vectors = await cached.embed(texts)
    np.testing.assert_allclose(vectors, await HashingEmbedder().embed(texts))
    assert inner.calls == 2
    assert cached.misses == 2 + 2  # alpha and gamma, alpha sent once


async def test_models_do_not_share_entries(tmp_path: Path) -> None:
    path = tmp_path / "e.sqlite"
    small = CachedEmbedder(HashingEmbedder(dim=8), path)
    await small.embed(["same text"])
    other_inner = HashingEmbedder(model="other", dim=8)
    other = CachedEmbedder(other_inner, path)
    await other.embed(["same text"])
    assert other_inner.calls == 1 and other.hits == 0
    wide_inner = HashingEmbedder(dim=16)  # a different model id (bow-16): no collision with bow-8
    assert (await CachedEmbedder(wide_inner, path).embed(["same text"])).shape == (1, 16)
    assert wide_inner.calls == 1


async def test_no_texts_give_an_empty_array(tmp_path: Path) -> None:
    inner = HashingEmbedder(dim=8)
    assert (await CachedEmbedder(inner, tmp_path / "e.sqlite").embed([])).shape == (0, 8)
    assert inner.calls == 0
