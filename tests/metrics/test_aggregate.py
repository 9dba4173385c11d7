"""Aggregation of per-question scores: question-weighted means, per-type cells, unscored counts, order."""

from __future__ import annotations

import pytest

from harness.metrics.aggregate import Cell, QuestionScores, aggregate


def _records() -> list[QuestionScores]:
    return [
        QuestionScores(question_type="temporal", scores={"f1": 0.5, "llm_judge": 1.0}),
        QuestionScores(question_type="single-hop", scores={"f1": 1.0, "llm_judge": None}),
        QuestionScores(question_type="single-hop", scores={"f1": 0.0, "llm_judge": 0.0}),
        QuestionScores(question_type="single-hop", scores={"f1": 0.5, "llm_judge": 1.0}),
        QuestionScores(question_type="odd", scores={"f1": 0.25}),
    ]


def test_overall_is_question_weighted_over_scored_questions() -> None:
    result = aggregate(_records(), ["f1", "llm_judge"])
    # f1: (0.5 + 1 + 0 + 0.5 + 0.25) / 5 = 0.45, not the mean of the type means.
    f1 = result["f1"].overall
    assert (f1.mean, f1.n, f1.n_unscored) == (pytest.approx(0.45), 5, 0)
    # llm_judge: None and the missing score are unscored; (1 + 0 + 1) / 3.
    judge = result["llm_judge"].overall
    assert (judge.mean, judge.n, judge.n_unscored) == (pytest.approx(2 / 3), 3, 2)


def test_per_type_cells() -> None:
    by_type = aggregate(_records(), ["f1", "llm_judge"])["llm_judge"].by_type
    # Two scored values 0 and 1: every bootstrap mean lies in {0, 0.5, 1}, so the interval spans [0, 1].
    assert by_type["single-hop"] == Cell(mean=0.5, n=2, n_unscored=1, ci_low=0.0, ci_high=1.0)
    assert by_type["temporal"] == Cell(mean=1.0, n=1, n_unscored=0)
    assert by_type["odd"] == Cell(mean=None, n=0, n_unscored=1)


def test_type_order_then_unlisted_types_as_seen() -> None:
    result = aggregate(_records(), ["f1"], type_order=["single-hop", "multi-hop", "temporal"])
    # "multi-hop" has no questions and is left out; "odd" is not in the order and comes last.
    assert list(result["f1"].by_type) == ["single-hop", "temporal", "odd"]
    assert list(aggregate(_records(), ["f1"])["f1"].by_type) == ["temporal", "single-hop", "odd"]


def test_empty_and_unknown_metric() -> None:
    assert aggregate([], ["f1"])["f1"].overall == Cell(mean=None, n=0, n_unscored=0)
    assert aggregate([], ["f1"])["f1"].by_type == {}
    assert aggregate(_records(), ["bleu1"])["bleu1"].overall == Cell(mean=None, n=0, n_unscored=5)


def test_serializes() -> None:
    dumped = aggregate(_records(), ["f1"])["f1"].model_dump()
    assert dumped["by_type"]["temporal"] == {
        "mean": 0.5,
        "n": 1,
        "n_unscored": 0,
        "ci_low": None,
        "ci_high": None,
        "repeats": 1,
        "sd_repeats": None,
    }


def test_bootstrap_interval_is_seeded_and_brackets_the_mean() -> None:
    records = [QuestionScores(question_type="t", scores={"em": float(i % 3 == 0)}) for i in range(60)]
    first = aggregate(records, ["em"], seed=7)["em"].overall
    assert first == aggregate(records, ["em"], seed=7)["em"].overall
    assert first.ci_low is not None and first.ci_high is not None
    assert first.mean == pytest.approx(1 / 3)
    assert first.ci_low < first.mean < first.ci_high
    # Binomial standard error sqrt(p(1-p)/n) = 0.061; a 95% interval is about +-0.12 wide.
    assert first.ci_high - first.ci_low == pytest.approx(2 * 1.96 * 0.0609, abs=0.03)
    graded = [QuestionScores(question_type="t", scores={"f1": (i * 37 % 101) / 100}) for i in range(60)]
    seeded = [aggregate(graded, ["f1"], seed=seed)["f1"].overall for seed in (7, 8)]
    assert (seeded[0].ci_low, seeded[0].ci_high) != (seeded[1].ci_low, seeded[1].ci_high)


def test_repeats_give_the_sd_of_the_cell_mean_across_repeats() -> None:
    records = [
        QuestionScores(question_type="t", scores={"j": 2 / 3}, repeats={"j": [1.0, 1.0, 0.0]}),
        QuestionScores(question_type="t", scores={"j": 0.5}, repeats={"j": [0.0, None, 1.0]}),
    ]
    overall = aggregate(records, ["j"])["j"].overall
    # Repeat means: (1+0)/2 = 0.5, 1.0 (the None is unscored), (0+1)/2 = 0.5 -> sd 0.2887.
    assert overall.repeats == 3
    assert overall.sd_repeats == pytest.approx(0.288675, abs=1e-6)
    assert overall.mean == pytest.approx((2 / 3 + 0.5) / 2)
