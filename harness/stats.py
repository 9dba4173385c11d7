"""Resampling statistics for comparisons people can trust: seeded bootstrap intervals, paired tests, agreement.

Every function takes an explicit `seed`, so a report printed twice gives the same intervals and p-values.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 2000


@dataclass(frozen=True)
class Interval:
    low: float
    high: float


def bootstrap_mean_ci(
    values: Sequence[float], *, seed: int, resamples: int = BOOTSTRAP_RESAMPLES, confidence: float = CONFIDENCE
) -> Interval | None:
    """Percentile bootstrap interval of the mean; None for fewer than two values (no spread to resample)."""
    data = np.asarray(values, dtype=float)
    if data.size < 2:
        return None
    rng = np.random.default_rng(seed)
    means = _resampled_means(data, rng, resamples)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return Interval(float(low), float(high))


def _resampled_means(data: np.ndarray, rng: np.random.Generator, resamples: int) -> np.ndarray:
    """Means of `resamples` resamples with replacement, drawn in chunks to bound memory on large runs."""
    chunk = max(1, 2_000_000 // data.size)
    means = np.empty(resamples)
    for start in range(0, resamples, chunk):
        stop = min(resamples, start + chunk)
        means[start:stop] = data[rng.integers(0, data.size, size=(stop - start, data.size))].mean(axis=1)
    return means
