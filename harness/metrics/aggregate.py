"""Aggregate per-question scores into the overall and per-question-type means of each metric.

Means are question-weighted and taken over scored questions only: a None score (an unjudged reply, a
question the metric cannot score) or a missing one is counted in `n_unscored` and left out of the mean,
never read as 0.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from pydantic import BaseModel, Field


class ScoredRecord(Protocol):
    """Anything that carries one question's type and its scores (e.g. the runner's sample record)."""

    @property
    def question_type(self) -> str: ...

    @property
    def scores(self) -> Mapping[str, float | None]: ...


class QuestionScores(BaseModel):
    """A minimal `ScoredRecord`, for re-scoring and tests."""

    question_type: str
    scores: dict[str, float | None] = Field(default_factory=dict)


class Cell(BaseModel):
    """One metric over one group of questions."""

    mean: float | None
    """Mean over the scored questions; None when none was scored."""
    n: int
    """Questions that were scored (the mean's denominator)."""
    n_unscored: int = 0
    """Questions in the group whose score is None or missing."""


class MetricAggregate(BaseModel):
    overall: Cell
    by_type: dict[str, Cell]
    """Per question type, in the task's type order, then types the order does not list."""


def cell(values: Iterable[float | None]) -> Cell:
    scored: list[float] = []
    unscored = 0
    for value in values:
        if value is None:
            unscored += 1
        else:
            scored.append(value)
    mean = sum(scored) / len(scored) if scored else None
    return Cell(mean=mean, n=len(scored), n_unscored=unscored)


def ordered_types(records: Sequence[ScoredRecord], type_order: Sequence[str]) -> list[str]:
    """Types present in `records`: those in `type_order` first, in that order, then the rest as first seen."""
    present = dict.fromkeys(r.question_type for r in records)
    return [t for t in type_order if t in present] + [t for t in present if t not in type_order]


def aggregate(
    records: Sequence[ScoredRecord], metric_names: Sequence[str], type_order: Sequence[str] = ()
) -> dict[str, MetricAggregate]:
    """Overall and per-type cells for each metric in `metric_names`."""
    types = ordered_types(records, type_order)
    result: dict[str, MetricAggregate] = {}
    for name in metric_names:
        grouped: dict[str, list[float | None]] = {t: [] for t in types}
        for record in records:
            grouped[record.question_type].append(record.scores.get(name))
        overall = cell(value for values in grouped.values() for value in values)
        result[name] = MetricAggregate(overall=overall, by_type={t: cell(v) for t, v in grouped.items()})
    return result
