"""`--limit N`: a seeded subset of questions, stratified by question type."""

from __future__ import annotations

import random

from harness.types import Question, Sample


def allocate(counts: dict[str, int], limit: int) -> dict[str, int]:
    """Split `limit` across types in proportion to their counts (largest remainder), at least one per type
    when `limit` allows, never more than a type has."""
    total = sum(counts.values())
    if limit >= total:
        return dict(counts)
    exact = {t: limit * n / total for t, n in counts.items()}
    share = {t: min(counts[t], max(1 if limit >= len(counts) else 0, int(exact[t]))) for t in counts}
    by_remainder = sorted(counts, key=lambda t: (exact[t] - int(exact[t]), counts[t]), reverse=True)
    while sum(share.values()) < limit:
        for t in by_remainder:
            if sum(share.values()) < limit and share[t] < counts[t]:
                share[t] += 1
    while sum(share.values()) > limit:  # the one-per-type floor can overshoot: trim the largest shares
        largest = max(share, key=lambda t: share[t])
        share[largest] -= 1
    return share


def stratified_subset(samples: list[Sample], limit: int, seed: int) -> list[Sample]:
    """Samples restricted to a seeded, type-stratified choice of `limit` questions (samples left empty are
    dropped); the same arguments always give the same subset."""
    by_type: dict[str, list[Question]] = {}
    for sample in samples:
        for question in sample.questions:
            by_type.setdefault(question.question_type, []).append(question)
    share = allocate({t: len(qs) for t, qs in by_type.items()}, limit)
    rng = random.Random(seed)
    chosen = {q.question_id for t in sorted(by_type) for q in rng.sample(by_type[t], share[t])}
    subset = []
    for sample in samples:
        kept = tuple(q for q in sample.questions if q.question_id in chosen)
        if kept:
            subset.append(sample.model_copy(update={"questions": kept}))
    return subset
