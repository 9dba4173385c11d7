"""Resampling statistics for comparisons people can trust: seeded bootstrap intervals, paired tests, agreement.

Every function takes an explicit `seed`, so a report printed twice gives the same intervals and p-values.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 2000
TEST_RESAMPLES = 10_000
EXACT_PERMUTATION_MAX = 16
"""Up to this many non-zero differences the sign-flip test enumerates all 2^k patterns instead of sampling."""

Alternative = Literal["two-sided", "less", "greater"]
"""The alternative hypothesis about mean(b - a): it differs from 0, is below 0, is above 0."""


@dataclass(frozen=True)
class Interval:
    low: float
    high: float


@dataclass(frozen=True)
class PairedTest:
    """A paired comparison of two runs' scores on the same questions."""

    n: int
    """Pairs (questions scored in both)."""
    mean_a: float
    mean_b: float
    diff: float
    """mean_b - mean_a."""
    ci: Interval | None
    """Paired percentile-bootstrap interval of `diff`; None for a single pair (no spread to resample)."""
    p_value: float
    method: Literal["bootstrap", "permutation"]
    alternative: Alternative
    min_p: float
    """The smallest p-value this test can give on these data (1/2^k for an exact one-sided sign-flip test over
    k non-zero differences): when it is not below alpha, no difference, however large, can be significant."""


@dataclass(frozen=True)
class Agreement:
    """How often two raters (e.g. two judges) give the same label to the same items."""

    n: int
    raw: float
    """Fraction of items with identical labels."""
    kappa: float | None
    """Cohen's kappa; None when undefined (both raters use one and the same label throughout)."""
    labels: tuple[Hashable, ...]
    """The labels seen, in order of first appearance: the rows and columns of `confusion`."""
    confusion: tuple[tuple[int, ...], ...]
    """confusion[i][j]: items rater a labelled labels[i] and rater b labelled labels[j]."""


def wilson_interval(successes: int, n: int, confidence: float = CONFIDENCE) -> Interval:
    """Wilson's score interval of a proportion: unlike a bootstrap of 0/1 values it does not collapse to a point
    at 0 or n successes, where judge error rates often sit on small samples."""
    if n <= 0:
        raise ValueError(f"a proportion needs n >= 1, got {n}")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be within 0..{n}, got {successes}")
    z = statistics.NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return Interval(low, high)


def bootstrap_mean_ci(
    values: Sequence[float], *, seed: int, resamples: int = BOOTSTRAP_RESAMPLES, confidence: float = CONFIDENCE
) -> Interval | None:
    """Percentile bootstrap interval of the mean; None for fewer than two values (no spread to resample)."""
    return _bootstrap_interval(np.asarray(values, dtype=float), seed, resamples, confidence)


def paired_bootstrap(
    a: Sequence[float],
    b: Sequence[float],
    *,
    seed: int,
    resamples: int = TEST_RESAMPLES,
    confidence: float = CONFIDENCE,
    alternative: Alternative = "two-sided",
) -> PairedTest:
    """Paired bootstrap of mean(b - a): questions are resampled, each keeping its pair of scores.

    The p-value comes from the shifted null: the same resampled means, centred on 0, are counted when at least
    as extreme as the observed difference. It is anti-conservative on few questions (two questions that both
    flip look certain), so prefer `paired_permutation` for small groups.
    """
    diffs = _differences(a, b)
    observed = float(diffs.mean())
    if diffs.size < 2:
        return _paired_result(a, b, None, 1.0, "bootstrap", alternative, min_p=1.0)
    means = _resampled_means(diffs, np.random.default_rng(seed), resamples)
    count = _count_extreme(means - observed, observed, alternative, _tolerance(diffs))
    p_value = (count + 1) / (resamples + 1)
    ci = _percentile_interval(means, confidence)
    return _paired_result(a, b, ci, p_value, "bootstrap", alternative, min_p=1 / (resamples + 1))


def paired_permutation(
    a: Sequence[float],
    b: Sequence[float],
    *,
    seed: int,
    resamples: int = TEST_RESAMPLES,
    confidence: float = CONFIDENCE,
    alternative: Alternative = "two-sided",
) -> PairedTest:
    """Sign-flip permutation test of mean(b - a) = 0: under the null each difference is as likely negated.

    Exact over all 2^k sign patterns of the k non-zero differences when k <= EXACT_PERMUTATION_MAX (zero
    differences flip to themselves), Monte Carlo with the (count + 1) / (resamples + 1) convention above that.
    The interval is the paired bootstrap interval with the same seed.
    """
    diffs = _differences(a, b)
    nonzero = diffs[diffs != 0]
    observed = float(diffs.mean())
    tolerance = _tolerance(diffs)
    if nonzero.size <= EXACT_PERMUTATION_MAX:
        stats = _all_sign_patterns(nonzero.size) @ nonzero / diffs.size
        p_value = _count_extreme(stats, observed, alternative, tolerance) / stats.size
        min_p = min(1.0, (2 if alternative == "two-sided" else 1) / stats.size)
    else:
        count = _count_random_flips(nonzero, diffs.size, observed, alternative, tolerance, seed, resamples)
        p_value = (count + 1) / (resamples + 1)
        min_p = 1 / (resamples + 1)
    ci = _bootstrap_interval(diffs, seed, resamples, confidence)
    return _paired_result(a, b, ci, p_value, "permutation", alternative, min_p=min_p)


def cohen_kappa(labels_a: Sequence[Hashable], labels_b: Sequence[Hashable]) -> Agreement:
    """Raw agreement and Cohen's kappa, (p_o - p_e) / (1 - p_e), with p_e from the two raters' marginals."""
    if len(labels_a) != len(labels_b):
        raise ValueError(
            f"cohen_kappa needs one label per item from each rater; got {len(labels_a)} and {len(labels_b)}"
        )
    if not labels_a:
        raise ValueError("cohen_kappa needs at least one labelled item; got none")
    labels = tuple(dict.fromkeys([*labels_a, *labels_b]))
    pairs = Counter(zip(labels_a, labels_b, strict=True))
    confusion = tuple(tuple(pairs[(x, y)] for y in labels) for x in labels)
    n = len(labels_a)
    observed = sum(confusion[i][i] for i in range(len(labels))) / n
    expected = sum(sum(confusion[i]) * sum(row[i] for row in confusion) for i in range(len(labels))) / n**2
    kappa = None if len(labels) == 1 else (observed - expected) / (1 - expected)
    return Agreement(n=n, raw=observed, kappa=kappa, labels=labels, confusion=confusion)


def agreement_intervals(
    labels_a: Sequence[Hashable],
    labels_b: Sequence[Hashable],
    seed: int = 0,
    resamples: int = BOOTSTRAP_RESAMPLES,
    confidence: float = CONFIDENCE,
) -> tuple[Interval | None, Interval | None]:
    """Percentile-bootstrap intervals of raw agreement and of Cohen's kappa, resampling the rated items (a
    resample where kappa is undefined is left out); None for fewer than two items or no defined kappa."""
    n = len(labels_a)
    if n < 2:
        return None, None
    rng = np.random.default_rng(seed)
    raws, kappas = [], []
    for _ in range(resamples):
        picks = rng.integers(0, n, size=n)
        agreement = cohen_kappa([labels_a[i] for i in picks], [labels_b[i] for i in picks])
        raws.append(agreement.raw)
        if agreement.kappa is not None:
            kappas.append(agreement.kappa)
    raw = _percentile_interval(np.array(raws), confidence)
    kappa = _percentile_interval(np.array(kappas), confidence) if kappas else None
    return raw, kappa


def _differences(a: Sequence[float], b: Sequence[float]) -> np.ndarray:
    if len(a) != len(b):
        raise ValueError(f"a paired test needs one score per question in each run; got {len(a)} and {len(b)}")
    if len(a) == 0:
        raise ValueError("a paired test needs at least one pair of scores; got none")
    diffs = np.asarray(b, dtype=float) - np.asarray(a, dtype=float)
    if not np.isfinite(diffs).all():
        raise ValueError("a paired test needs finite scores; got NaN or infinity")
    return diffs


def _paired_result(
    a: Sequence[float],
    b: Sequence[float],
    ci: Interval | None,
    p_value: float,
    method: Literal["bootstrap", "permutation"],
    alternative: Alternative,
    *,
    min_p: float,
) -> PairedTest:
    mean_a, mean_b = float(np.mean(a)), float(np.mean(b))
    return PairedTest(
        n=len(a),
        mean_a=mean_a,
        mean_b=mean_b,
        diff=mean_b - mean_a,
        ci=ci,
        p_value=p_value,
        method=method,
        alternative=alternative,
        min_p=min_p,
    )


def _tolerance(diffs: np.ndarray) -> float:
    """Slack for ties: a resampled mean equal to the observed one must count, whatever the summation order."""
    return 1e-9 * float(np.abs(diffs).mean())


def _count_extreme(stats: np.ndarray, observed: float, alternative: Alternative, tolerance: float) -> int:
    """How many null statistics are at least as extreme as the observed one, in the alternative's direction."""
    if alternative == "less":
        return int((stats <= observed + tolerance).sum())
    if alternative == "greater":
        return int((stats >= observed - tolerance).sum())
    return int((np.abs(stats) >= abs(observed) - tolerance).sum())


def _all_sign_patterns(k: int) -> np.ndarray:
    """The 2^k rows of +1/-1 signs (one row, of no columns, for k = 0)."""
    bits = (np.arange(2**k)[:, None] >> np.arange(k)) & 1
    return 1.0 - 2.0 * bits


def _count_random_flips(
    nonzero: np.ndarray,
    n: int,
    observed: float,
    alternative: Alternative,
    tolerance: float,
    seed: int,
    resamples: int,
) -> int:
    rng = np.random.default_rng(seed)
    chunk = max(1, 2_000_000 // nonzero.size)
    count = 0
    for start in range(0, resamples, chunk):
        signs = rng.choice([-1.0, 1.0], size=(min(chunk, resamples - start), nonzero.size))
        count += _count_extreme(signs @ nonzero / n, observed, alternative, tolerance)
    return count


def _bootstrap_interval(data: np.ndarray, seed: int, resamples: int, confidence: float) -> Interval | None:
    if data.size < 2:
        return None
    return _percentile_interval(_resampled_means(data, np.random.default_rng(seed), resamples), confidence)


def _percentile_interval(means: np.ndarray, confidence: float) -> Interval:
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
