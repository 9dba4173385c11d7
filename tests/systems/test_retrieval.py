"""Retrieval building blocks: chunking with turn ids, BM25 (bm25s), dense search (faiss) and rank fusion."""

from __future__ import annotations

import pytest

from harness.embeddings.hashing import HashingEmbedder
from harness.types import Session, Turn
from systems.retrieval.bm25 import BM25Index
from systems.retrieval.chunking import chunk_by_tokens, chunk_by_turn
from systems.retrieval.fusion import reciprocal_rank_fusion
from systems.retrieval.vector_index import VectorIndex

SESSION = Session(
    session_id="session_1",
    date="3 March 2023",
    turns=(
        Turn(turn_id="D1:1", speaker="Ann", text="one two three four five"),
        Turn(turn_id="D1:2", speaker="Bob", text="six seven"),
        Turn(turn_id="D1:3", speaker="Ann", text="eight nine ten"),
    ),
)

DOCS = {
    "pets": "Alice adopted a puppy named Biscuit.",
    "music": "Bob played the violin at his first concert.",
    "move": "Alice is moving to Lisbon in May.",
    "food": "Carol will cook paella for her sister.",
}


def test_chunk_by_turn_keeps_speaker_date_and_turn_id() -> None:
    chunks = chunk_by_turn(SESSION)
    assert [c.text for c in chunks] == ["Ann: one two three four five", "Bob: six seven", "Ann: eight nine ten"]
    assert [c.source_turn_ids for c in chunks] == [["D1:1"], ["D1:2"], ["D1:3"]]
    assert {c.timestamp for c in chunks} == {"3 March 2023"}
    assert [c.id for c in chunks] == ["D1:1", "D1:2", "D1:3"]


def test_chunk_by_tokens_lists_every_turn_a_window_touches() -> None:
    chunks = chunk_by_tokens([SESSION], size=4)
    assert [c.text for c in chunks] == [
        "Ann: one two three four",
        "Ann: five\nBob: six seven\nAnn: eight",
        "Ann: nine ten",
    ]
    assert [c.source_turn_ids for c in chunks] == [["D1:1"], ["D1:1", "D1:2", "D1:3"], ["D1:3"]]
    assert [c.id for c in chunks] == ["session_1#0", "session_1#1", "session_1#2"]
    assert all(c.timestamp == "3 March 2023" for c in chunks)


def test_chunk_by_tokens_with_overlap_never_repeats_a_whole_window() -> None:
    chunks = chunk_by_tokens([SESSION], size=4, overlap=2)
    words = [c.text.replace("Ann: ", "").replace("Bob: ", "").split() for c in chunks]
    assert words == [
        ["one", "two", "three", "four"],
        ["three", "four", "five", "six"],
        ["five", "six", "seven", "eight"],
        ["seven", "eight", "nine", "ten"],
    ]
    assert chunks[1].source_turn_ids == ["D1:1", "D1:2"]


def test_chunk_by_tokens_does_not_cross_sessions() -> None:
    other = Session(session_id="session_2", date="4 March", turns=(Turn(turn_id="D2:1", speaker="Bob", text="hi"),))
    chunks = chunk_by_tokens([SESSION, other], size=100)
    assert [(c.id, c.source_turn_ids, c.timestamp) for c in chunks] == [
        ("session_1#0", ["D1:1", "D1:2", "D1:3"], "3 March 2023"),
        ("session_2#0", ["D2:1"], "4 March"),
    ]


@pytest.mark.parametrize(("size", "overlap"), [(0, 0), (4, 4), (4, -1)])
def test_chunk_by_tokens_rejects_bad_sizes(size: int, overlap: int) -> None:
    with pytest.raises(ValueError):
        chunk_by_tokens([SESSION], size=size, overlap=overlap)


def test_bm25_ranks_the_chunk_sharing_rare_terms_first_and_stems() -> None:
    index = BM25Index()
    index.add(list(DOCS), list(DOCS.values()))
    assert index.search("What is the name of the puppy?", k=2)[0][0] == "pets"
    assert index.search("Who plays violin?", k=1)[0][0] == "music"  # plays ~ played
    assert index.search("paella", k=10) == [("food", pytest.approx(index.search("paella", k=1)[0][1]))]


def test_bm25_leaves_out_chunks_without_a_shared_term_and_grows() -> None:
    index = BM25Index()
    assert index.search("anything", k=3) == []
    index.add(["a"], ["Alice adopted a puppy."])
    assert index.search("zebra", k=3) == []
    assert index.search("the of and", k=3) == []  # stopwords only
    index.add(["b"], ["The puppy sleeps all day."])
    assert [key for key, _ in index.search("puppy sleeps", k=5)] == ["b", "a"]
    with pytest.raises(ValueError):
        index.add(["c"], [])


async def test_dense_search_over_hashing_vectors() -> None:
    embedder = HashingEmbedder()
    index = VectorIndex(embedder.dim)
    index.upsert(list(DOCS), await embedder.embed(list(DOCS.values())))
    query = (await embedder.embed(["Lisbon May moving"]))[0]
    hits = index.search(query, k=2)
    assert hits[0][0] == "move" and hits[0][1] > hits[1][1]


def test_reciprocal_rank_fusion() -> None:
    fused = reciprocal_rank_fusion([["a", "b", "c"], ["b", "d"]], k=60)
    assert [key for key, _ in fused] == ["b", "a", "d", "c"]
    scores = dict(fused)
    assert scores["b"] == pytest.approx(1 / 62 + 1 / 61)
    assert scores["a"] == pytest.approx(1 / 61)
    assert (scores["d"], scores["c"]) == (pytest.approx(1 / 62), pytest.approx(1 / 63))


def test_fusion_ties_keep_first_seen_order_and_k_matters() -> None:
    assert [key for key, _ in reciprocal_rank_fusion([["x", "y"], ["y", "x"]])] == ["x", "y"]
    assert reciprocal_rank_fusion([["a"], []], k=0) == [("a", 1.0)]
    assert reciprocal_rank_fusion([]) == []
    with pytest.raises(ValueError):
        reciprocal_rank_fusion([["a"]], k=-1)
