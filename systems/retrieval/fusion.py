"""Reciprocal rank fusion (Cormack, Clarke and Büttcher, SIGIR 2009): merge rankings from different
retrievers (e.g. dense and BM25) without calibrating their scores against each other.

An item's fused score is the sum over the rankings that hold it of `1 / (k + rank)`, rank counted from 1.
`k` damps the weight of the top ranks; 60 is the paper's value and the common default (Elasticsearch,
OpenSearch, Weaviate use it too).
"""

from __future__ import annotations

from collections.abc import Sequence

RRF_K = 60


def reciprocal_rank_fusion(rankings: Sequence[Sequence[str]], k: int = RRF_K) -> list[tuple[str, float]]:
    """Keys of all `rankings` (each best first), best fused score first, with that score.

    Ties keep the order in which the keys first appear (the first ranking's order first), so results are
    deterministic.
    """
    if k < 0:
        raise ValueError(f"rrf k must be >= 0, got {k}")
    scores: dict[str, float] = {}
    for ranking in rankings:
        for rank, key in enumerate(dict.fromkeys(ranking), start=1):
            scores[key] = scores.get(key, 0.0) + 1.0 / (k + rank)
    order = {key: i for i, key in enumerate(scores)}
    return sorted(scores.items(), key=lambda item: (-item[1], order[item[0]]))
