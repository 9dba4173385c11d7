"""Paired tests and agreement: hand-computed cases, planted effects and nulls, seeded reproducibility."""

from __future__ import annotations

from math import comb

import numpy as np
import pytest

from harness.stats import Interval, bootstrap_mean_ci, cohen_kappa, paired_bootstrap, paired_permutation

# --- Cohen's kappa ---


def test_kappa_of_a_hand_worked_2x2_table() -> None:
    a = ["y"] * 7 + ["n"] * 3
    b = ["y"] * 5 + ["n"] * 2 + ["n", "n", "y"]
    #            b=y  b=n
    #   a=y       5    2     (7)
    #   a=n       1    2     (3)
    #            (6)  (4)
    # p_o = 7/10; p_e = 0.7 * 0.6 + 0.3 * 0.4 = 0.54; kappa = (0.70 - 0.54) / (1 - 0.54) = 0.16 / 0.46
    agreement = cohen_kappa(a, b)
    assert agreement.n == 10
    assert agreement.raw == pytest.approx(0.7)
    assert agreement.kappa == pytest.approx(0.16 / 0.46)
    assert agreement.labels == ("y", "n")
    assert agreement.confusion == ((5, 2), (1, 2))


def test_kappa_of_identical_and_of_opposite_labels() -> None:
    labels = [1, 0, 1, 1, 0, 2]
    assert cohen_kappa(labels, labels).kappa == pytest.approx(1.0)
    assert cohen_kappa(labels, labels).raw == 1.0
    # Always disagreeing on a balanced yes/no: p_o = 0, p_e = 0.5, kappa = -1.
    assert cohen_kappa(["y", "n", "y", "n"], ["n", "y", "n", "y"]).kappa == pytest.approx(-1.0)


def test_kappa_is_undefined_when_both_raters_use_one_label() -> None:
    agreement = cohen_kappa(["y", "y", "y"], ["y", "y", "y"])
    assert (agreement.raw, agreement.kappa) == (1.0, None)


def test_kappa_rejects_unequal_or_empty_input() -> None:
    with pytest.raises(ValueError, match="got 2 and 3"):
        cohen_kappa(["y", "n"], ["y", "n", "y"])
    with pytest.raises(ValueError, match="got none"):
        cohen_kappa([], [])


# --- paired tests ---


def _planted_gain() -> tuple[np.ndarray, np.ndarray]:
    """200 binary scores, half right; b answers 30 more questions right (a 0 -> 1 flip), nothing else."""
    a = (np.random.default_rng(1).random(200) < 0.5).astype(float)
    b = a.copy()
    b[np.flatnonzero(a == 0)[:30]] = 1.0
    return a, b


@pytest.mark.parametrize("test", [paired_bootstrap, paired_permutation])
def test_planted_difference_is_detected(test) -> None:
    a, b = _planted_gain()
    result = test(list(a), list(b), seed=0)
    assert result.n == 200
    assert result.diff == pytest.approx(30 / 200)
    assert result.p_value < 0.01
    assert result.ci is not None and 0 < result.ci.low < 0.15 < result.ci.high
    # One-sided: strong evidence that b > a, none that b < a.
    assert test(list(a), list(b), seed=0, alternative="greater").p_value < 0.01
    assert test(list(a), list(b), seed=0, alternative="less").p_value > 0.99


@pytest.mark.parametrize("test", [paired_bootstrap, paired_permutation])
def test_planted_null_is_not_flagged(test) -> None:
    a, _ = _planted_gain()
    flip = np.random.default_rng(7).random(200) < 0.2  # each question flips either way with the same chance
    b = np.where(flip, 1 - a, a)
    result = test(list(a), list(b), seed=0)
    assert result.p_value > 0.05
    assert result.ci is not None and result.ci.low < 0 < result.ci.high


@pytest.mark.parametrize("test", [paired_bootstrap, paired_permutation])
def test_false_positive_rate_under_the_null_is_near_alpha(test) -> None:
    rng = np.random.default_rng(3)
    rejections = 0
    for repeat in range(200):
        # Correlated pairs (20% of answers change) whose two members a coin assigns to a and b: a true null.
        x = (rng.random(100) < 0.6).astype(float)
        y = np.where(rng.random(100) < 0.2, 1 - x, x)
        swap = rng.random(100) < 0.5
        a, b = np.where(swap, y, x), np.where(swap, x, y)
        rejections += test(list(a), list(b), seed=repeat, resamples=1000).p_value < 0.05
    assert 2 <= rejections <= 20  # expected 10 of 200 at alpha 0.05


def test_exact_permutation_matches_a_hand_enumeration() -> None:
    a = [0.0, 0.0, 1.0, 0.5]
    b = [1.0, 1.0, 0.5, 0.5]
    # Differences 1, 1, -0.5, 0: the zero flips to itself, so 2^3 = 8 sign patterns of (1, 1, -0.5), whose sums
    # are 1.5 (observed), 2.5, -0.5, 0.5, 0.5, -0.5, -2.5, -1.5 (the mean is the sum / 4: same order).
    # >= 1.5: {2.5, 1.5} -> 2/8; <= 1.5: all but 2.5 -> 7/8; |.| >= 1.5: {±2.5, ±1.5} -> 4/8.
    expected = {"greater": 2 / 8, "less": 7 / 8, "two-sided": 4 / 8}
    for alternative, p_value in expected.items():
        result = paired_permutation(a, b, seed=0, alternative=alternative)
        assert result.p_value == pytest.approx(p_value), alternative
        assert result.diff == pytest.approx(1.5 / 4)
        assert result.method == "permutation"
    assert paired_permutation(a, b, seed=0, alternative="greater").min_p == pytest.approx(1 / 8)
    assert paired_permutation(a, b, seed=0).min_p == pytest.approx(2 / 8)


def _sign_test_data(plus: int, minus: int) -> tuple[list[float], list[float]]:
    return [0.0] * (plus + minus), [1.0] * plus + [-1.0] * minus


def _binomial_upper_tail(k: int, at_least: int) -> float:
    return sum(comb(k, j) for j in range(at_least, k + 1)) / 2**k


def test_permutation_on_plus_minus_one_differences_is_the_sign_test() -> None:
    # 16 non-zero differences: exact. The sum is 2B - 16 for B positive signs, so p = P(B >= 12), B ~ Bin(16, 1/2).
    a, b = _sign_test_data(12, 4)
    exact = paired_permutation(a, b, seed=0, alternative="greater")
    assert exact.p_value == pytest.approx(_binomial_upper_tail(16, 12))
    # 17: Monte Carlo, within sampling error of P(B >= 13), B ~ Bin(17, 1/2) (about 0.025).
    a, b = _sign_test_data(13, 4)
    sampled = paired_permutation(a, b, seed=0, alternative="greater", resamples=20_000)
    assert sampled.p_value == pytest.approx(_binomial_upper_tail(17, 13), abs=0.005)
    assert sampled.min_p == pytest.approx(1 / 20_001)


def test_no_difference_at_all_gives_p_one() -> None:
    scores = [1.0, 0.0, 0.5]
    for test in (paired_bootstrap, paired_permutation):
        result = test(scores, scores, seed=0)
        assert (result.diff, result.p_value) == (0.0, 1.0)


def test_every_question_flipping_on_four_questions_cannot_be_significant() -> None:
    # The smallest one-sided exact p over 4 non-zero differences is 1/2^4 = 0.0625; five make 1/32 < 0.05.
    four = paired_permutation([1.0] * 4, [0.0] * 4, seed=0, alternative="less")
    assert four.p_value == four.min_p == pytest.approx(1 / 16)
    five = paired_permutation([1.0] * 5, [0.0] * 5, seed=0, alternative="less")
    assert five.p_value == pytest.approx(1 / 32)


def test_intervals_are_the_paired_bootstrap_of_the_differences() -> None:
    a, b = _planted_gain()
    expected = bootstrap_mean_ci(list(b - a), seed=5, resamples=3000)
    assert paired_bootstrap(list(a), list(b), seed=5, resamples=3000).ci == expected
    assert paired_permutation(list(a), list(b), seed=5, resamples=3000).ci == expected


def test_seeded_results_repeat_and_seeds_differ() -> None:
    rng = np.random.default_rng(11)
    a, b = list(rng.random(60)), list(rng.random(60))
    for test in (paired_bootstrap, paired_permutation):
        assert test(a, b, seed=1) == test(a, b, seed=1)
        assert test(a, b, seed=1).p_value != test(a, b, seed=2).p_value


def test_a_single_pair_has_no_interval() -> None:
    assert paired_permutation([0.0], [1.0], seed=0).ci is None
    result = paired_bootstrap([0.0], [1.0], seed=0)
    assert (result.ci, result.p_value) == (None, 1.0)


@pytest.mark.parametrize("test", [paired_bootstrap, paired_permutation])
def test_paired_tests_reject_bad_input(test) -> None:
    with pytest.raises(ValueError, match="got 2 and 3"):
        test([1.0, 0.0], [1.0, 0.0, 1.0], seed=0)
    with pytest.raises(ValueError, match="got none"):
        test([], [], seed=0)
    with pytest.raises(ValueError, match="NaN"):
        test([1.0, float("nan")], [1.0, 0.0], seed=0)


def test_bootstrap_interval_of_a_hand_made_sample() -> None:
    # 40 questions, 10 of them correct: mean 0.25, standard error sqrt(0.25 * 0.75 / 40) = 0.0685.
    values = [1.0] * 10 + [0.0] * 30
    interval = bootstrap_mean_ci(values, seed=3)
    assert interval is not None
    assert interval == bootstrap_mean_ci(values, seed=3)
    # The percentile interval of a bootstrap mean lands close to the normal one, 0.25 +- 1.96 * 0.0685.
    assert interval.low == pytest.approx(0.25 - 1.96 * 0.0685, abs=0.03)
    assert interval.high == pytest.approx(0.25 + 1.96 * 0.0685, abs=0.03)
    # Means of resampled 0/1 values are multiples of 1/40.
    assert (40 * interval.low) == pytest.approx(round(40 * interval.low))
    assert bootstrap_mean_ci([0.5] * 7, seed=0) == Interval(0.5, 0.5)
    assert bootstrap_mean_ci([1.0], seed=0) is None
