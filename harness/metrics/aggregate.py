"""Aggregate per-question scores into the overall and per-question-type means of each metric.

Means are question-weighted and taken over scored questions only: a None score (an unjudged reply, a
question the metric cannot score) or a missing one is counted in `n_unscored` and left out of the mean,
never read as 0. Each cell carries a seeded percentile-bootstrap 95% interval of its mean and, for a metric
scored several times per question (`--judge-repeats`), the standard deviation of the cell mean across repeats.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from pydantic import BaseModel, Field


class ScoredRecord(Protocol):
    """Anything that carries one question's type and its scores (e.g. the runner's sample record)."""

    @property
    def question_type(self) -> str: ...

    @property
    def scores(self) -> Mapping[str, float | None]: ...

    @property
    def repeats(self) -> Mapping[str, Sequence[float | None]]: ...


class QuestionScores(BaseModel):
    """A minimal `ScoredRecord`, for re-scoring and tests."""

    question_type: str
    scores: dict[str, float | None] = Field(default_factory=dict)
    repeats: dict[str, list[float | None]] = Field(default_factory=dict)


class Cell(BaseModel):
    """One metric over one group of questions."""

    mean: float | None
    """Mean over the scored questions; None when none was scored."""
    n: int
    """Questions that were scored (the mean's denominator)."""
    n_unscored: int = 0
    """Questions in the group whose score is None or missing."""
    ci_low: float | None = None
    ci_high: float | None = None
    """Bootstrap 95% interval of the mean (seeded); None with fewer than two scored questions."""
    repeats: int = 1
    """How many times each question was scored (judge repeats); the score is their mean."""
    sd_repeats: float | None = None
    """Standard deviation of the cell mean across repeats; None with a single repeat."""


class MetricAggregate(BaseModel):
    overall: Cell
    by_type: dict[str, Cell]
    """Per question type, in the task's type order, then types the order does not list."""


def cell(values: Iterable[float | None], *, seed: int = 0, repeats: Sequence[Sequence[float | None]] = ()) -> Cell:
    """One cell from per-question scores and, optionally, the per-question scores of each repeat."""
    from harness.stats import bootstrap_mean_ci  # numpy: kept out of `python -m harness ls`

    scored: list[float] = []
    unscored = 0
    for value in values:
        if value is None:
            unscored += 1
        else:
            scored.append(value)
    mean = sum(scored) / len(scored) if scored else None
    # Sorted: the interval depends on the scores alone, not on the order concurrent answers were recorded in.
    interval = bootstrap_mean_ci(sorted(scored), seed=seed)
    repeat_means = [m for m in (_mean(r) for r in repeats) if m is not None]
    return Cell(
        mean=mean,
        n=len(scored),
        n_unscored=unscored,
        ci_low=interval.low if interval else None,
        ci_high=interval.high if interval else None,
        repeats=max(1, len(repeats)),
        sd_repeats=statistics.stdev(repeat_means) if len(repeat_means) > 1 else None,
    )


def _mean(values: Sequence[float | None]) -> float | None:
    scored = [v for v in values if v is not None]
    return sum(scored) / len(scored) if scored else None


def ordered_types(records: Sequence[ScoredRecord], type_order: Sequence[str]) -> list[str]:
    """Types present in `records`: those in `type_order` first, in that order, then the rest as first seen."""
    present = dict.fromkeys(r.question_type for r in records)
    return [t for t in type_order if t in present] + [t for t in present if t not in type_order]


def aggregate(
    records: Sequence[ScoredRecord], metric_names: Sequence[str], type_order: Sequence[str] = (), seed: int = 0
) -> dict[str, MetricAggregate]:
    """Overall and per-type cells for each metric in `metric_names`; `seed` seeds the bootstrap intervals."""
    types = ordered_types(records, type_order)
    result: dict[str, MetricAggregate] = {}
    for name in metric_names:
        by_type = {t: _cell_of([r for r in records if r.question_type == t], name, seed) for t in types}
        result[name] = MetricAggregate(overall=_cell_of(records, name, seed), by_type=by_type)
    return result


def _cell_of(records: Sequence[ScoredRecord], name: str, seed: int) -> Cell:
    count = max((len(r.repeats.get(name, ())) for r in records), default=0)
    repeats = [[_nth(r.repeats.get(name, ()), i) for r in records] for i in range(count)] if count > 1 else []
    return cell((r.scores.get(name) for r in records), seed=seed, repeats=repeats)


def _nth(values: Sequence[float | None], index: int) -> float | None:
    return values[index] if index < len(values) else None
