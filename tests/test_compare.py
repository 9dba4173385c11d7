"""Comparing runs and the regression gate, on run directories written here record by record."""

from __future__ import annotations

import re

import pytest
from support import ids, make_spec, write_run

from harness.compare import compare_runs, comparison_table, regress, regression_table, spec_mismatches
from harness.task import DataFileInfo

# --- spec_mismatches ---


def test_like_for_like_specs_have_no_mismatch_even_with_other_systems_and_models() -> None:
    assert spec_mismatches(make_spec("rag"), make_spec("mem0")) == []


def test_judge_split_data_and_subset_mismatches_are_named() -> None:
    a = make_spec(limit=50, seed=1)
    b = make_spec(
        judge="gpt-4o",
        split="val",
        limit=50,
        seed=2,
        data=DataFileInfo(path="toy.json", origin="built-in", sha256="def"),
    )
    warnings = spec_mismatches(a, b)
    assert warnings == [
        "data file differs: abc vs def",
        "judge differs: mock-judge vs gpt-4o",
        "seed (question subset) differs: 1 vs 2",
        "task option split differs: test vs val",
    ]
    # The seed picks questions only under --limit: without one it is not a mismatch.
    assert spec_mismatches(make_spec(seed=1), make_spec(seed=2)) == []


def test_prompts_both_systems_have_are_compared_by_fingerprint() -> None:
    rag = make_spec("rag").model_copy(update={"prompts": {"answer": "111"}})
    mem0 = make_spec("mem0").model_copy(update={"prompts": {"extraction": "444", "answer": "111"}})
    edited = make_spec("mem0").model_copy(update={"prompts": {"extraction": "444", "answer": "333"}})
    assert spec_mismatches(rag, mem0) == []  # mem0's extraction prompt has no counterpart in rag: by design
    assert spec_mismatches(rag, edited) == ["answer prompt differs: 111 vs 333"]


# --- compare_runs ---


def test_compare_two_runs_on_shared_questions(tmp_path) -> None:
    # single (q0 q2 q4 q6): ref 1 0 0 1, new 1 1 0 1; multi (q1 q3 q5 q7): ref 1 1 1 0, new 1 1 1 0.
    ref = write_run(tmp_path / "ref", dict(zip(ids(8), [1, 1, 0, 1, 0, 1, 1, 0], strict=True)), spec=make_spec("rag"))
    new = write_run(tmp_path / "new", dict(zip(ids(8), [1, 1, 1, 1, 0, 1, 1, 0], strict=True)), spec=make_spec("mem0"))
    comparison = compare_runs([ref, new])

    assert comparison.metric == "llm_judge"
    assert [run.label for run in comparison.runs] == ["rag · mock:rag", "mem0 · mock:mem0"]
    assert len(comparison.shared) == 8
    single, multi, overall = comparison.groups
    assert (single.question_type, single.n, single.means) == ("single", 4, [0.5, 0.75])
    assert (multi.means, overall.means) == ([0.75, 0.75], [0.625, 0.75])
    # One non-zero difference: its two sign patterns are +1 and -1, both as extreme as the observed, p = 1.
    assert single.tests[0].p_value == 1.0
    assert multi.tests[0].p_value == 1.0 and multi.tests[0].diff == 0.0

    table = comparison_table(comparison)
    assert table.columns == ["question type", "n", "rag · mock:rag", "mem0 · mock:mem0", "Δ vs rag · mock:rag"]
    assert table.rows[0][:4] == ["single", "4", "50.00", "75.00"]
    assert re.fullmatch(r"\+25\.00 \[\+0\.0, \+75\.0\] p=1\.000", table.rows[0][4])
    assert table.rows[2][0] == "overall" and table.emphasized_rows == {2}
    assert "llm_judge; 8 questions answered and scored in every run" in table.notes[0]
    assert not any(note.startswith("warning:") for note in table.notes)


def test_significant_differences_are_starred(tmp_path) -> None:
    ref = write_run(tmp_path / "ref", dict.fromkeys(ids(40), 0.0))
    new = write_run(tmp_path / "new", dict.fromkeys(ids(40), 1.0))
    overall = comparison_table(compare_runs([ref, new])).rows[-1]
    # 40 flips the same way: Monte Carlo p = 1 / 10001, shown below 0.001.
    assert overall[-1] == "+100.00 [+100.0, +100.0] p<0.001*"


def test_failed_absent_and_unscored_questions_are_left_out_and_named(tmp_path) -> None:
    ref = write_run(tmp_path / "ref", dict.fromkeys(ids(6), 1.0), failed={"q5"})
    new_scores: dict[str, float | None] = {"q0": 1.0, "q1": 0.0, "q2": None, "q3": 1.0, "q5": 1.0, "q6": 0.0}
    new = write_run(tmp_path / "new", new_scores)
    comparison = compare_runs([ref, new])

    assert comparison.shared == ["q0", "q1", "q3"]
    assert comparison.dropped == {"ref": ["q2", "q4"], "new": ["q5", "q6"]}
    notes = comparison_table(comparison).notes
    assert "ref: 2 scored questions left out, not answered and scored in every run: q2, q4" in notes


def test_three_runs_against_the_first_with_spec_warnings(tmp_path) -> None:
    scores = dict.fromkeys(ids(4), 1.0)
    ref = write_run(tmp_path / "a", scores, run_id="same")
    again = write_run(tmp_path / "b", scores, run_id="same")
    other_judge = write_run(tmp_path / "c", scores, spec=make_spec(judge="gpt-4o"))
    comparison = compare_runs([ref, again, other_judge], seed=3, test="bootstrap")

    assert [run.label for run in comparison.runs] == ["same", "same #2", "c"]
    assert all(len(group.tests) == 2 for group in comparison.groups)
    table = comparison_table(comparison)
    assert table.columns[-2:] == ["Δ same #2 vs same", "Δ c vs same"]
    assert "warning: c vs same: judge differs: mock-judge vs gpt-4o" in table.notes
    assert any("paired bootstrap (shifted null) test; 10000 resamples, seed 3" in note for note in table.notes)


def test_metric_choice(tmp_path) -> None:
    judged = write_run(tmp_path / "judged", {"q0": 1.0})
    unjudged = write_run(tmp_path / "plain", {"q0": 1.0}, spec=make_spec(metrics=["f1", "exact_match"]))
    assert compare_runs([judged, judged]).metric == "llm_judge"
    assert compare_runs([judged, unjudged]).metric == "exact_match"  # the first metric both runs scored
    with pytest.raises(ValueError, match=r"metric 'llm_judge' is not scored in run\(s\) plain"):
        compare_runs([judged, unjudged], metric="llm_judge")
    disjoint = write_run(tmp_path / "disjoint", {"q0": 1.0}, spec=make_spec(metrics=["bleu1"]))
    with pytest.raises(ValueError, match="the runs share no metric"):
        compare_runs([judged, disjoint])
    with pytest.raises(ValueError, match="at least two"):
        compare_runs([judged])


def test_comparison_repeats_with_its_seed(tmp_path) -> None:
    ref = write_run(tmp_path / "ref", dict(zip(ids(30), [i % 2 for i in range(30)], strict=True)))
    new = write_run(tmp_path / "new", dict(zip(ids(30), [i % 3 == 0 for i in range(30)], strict=True)))
    assert comparison_table(compare_runs([ref, new], seed=4)) == comparison_table(compare_runs([ref, new], seed=4))


# --- regress ---


def test_identical_run_passes(tmp_path) -> None:
    scores = dict(zip(ids(100), [float(i % 5 != 0) for i in range(100)], strict=True))
    report = regress(write_run(tmp_path / "base", scores), write_run(tmp_path / "cand", scores))
    assert report.passed and report.reasons == []
    assert [cell.verdict for cell in report.cells] == ["ok", "ok", "ok"]
    assert regression_table(report).notes[-1] == "PASSED"


def test_planted_drop_fails(tmp_path) -> None:
    base_scores = dict.fromkeys(ids(100), 1.0)
    cand_scores = {q: 0.0 if i < 20 else 1.0 for i, q in enumerate(ids(100))}  # 20 of 100 right answers lost
    report = regress(write_run(tmp_path / "base", base_scores), write_run(tmp_path / "cand", cand_scores))

    assert not report.passed
    single, multi, overall = report.cells
    assert (overall.n, overall.drop, overall.verdict) == (100, pytest.approx(20.0), "FAIL")
    assert (single.drop, single.verdict) == (multi.drop, multi.verdict) == (pytest.approx(20.0), "FAIL")
    assert overall.p_value < 0.001
    assert report.reasons[-1].startswith("overall: 100.00 -> 80.00 on 100 questions, a drop of 20.00 points")
    table = regression_table(report)
    assert table.rows[-1][:5] == ["overall", "100", "100.00", "80.00", "+20.00"]
    assert table.emphasized_rows == {2}
    assert table.notes[0] == (
        "a cell fails when it drops by more than 1 point and p < 0.05, one-sided paired permutation test "
        "(exact up to 16 changed answers, else 10000 resamples, seed 0)"
    )
    assert table.notes[-1].startswith("FAILED: single: ")


def test_a_drop_within_the_allowed_points_passes(tmp_path) -> None:
    base_scores = dict.fromkeys(ids(100), 1.0)
    cand_scores = {q: 0.0 if i < 20 else 1.0 for i, q in enumerate(ids(100))}
    report = regress(write_run(tmp_path / "base", base_scores), write_run(tmp_path / "cand", cand_scores), max_drop=25)
    assert report.passed


def test_small_drops_are_worse_but_not_failures(tmp_path) -> None:
    # single (even ids) loses q0, q2, q4 and gains q6, q8: 5 changed answers, a 5-point drop on 20 questions,
    # p = P(B <= 2), B ~ Bin(5, 1/2) = 16/32.  multi (odd ids) loses all four it has: every answer changed
    # the same way, yet 4 changes cannot give p < 0.05 (the smallest is 1/16).
    base = {f"q{i}": 1.0 for i in range(0, 40, 2)} | {"q6": 0.0, "q8": 0.0} | {f"q{i}": 1.0 for i in (1, 3, 5, 7)}
    cand = base | {"q0": 0.0, "q2": 0.0, "q4": 0.0, "q6": 1.0, "q8": 1.0} | {f"q{i}": 0.0 for i in (1, 3, 5, 7)}
    report = regress(write_run(tmp_path / "base", base), write_run(tmp_path / "cand", cand))

    single, multi, _ = report.cells
    assert (single.n, single.drop, single.p_value) == (20, pytest.approx(5.0), pytest.approx(0.5))
    assert single.verdict == "worse, not significant"
    assert (multi.n, multi.drop, multi.p_value) == (4, pytest.approx(100.0), pytest.approx(1 / 16))
    assert multi.verdict == "worse, too few to test"
    assert "worse, too few to test: so few answers changed that no p-value below 0.05 is possible" in (
        regression_table(report).notes
    )


def test_every_answer_lost_fails_from_five_questions_on(tmp_path) -> None:
    # All 5 answers lost: the exact one-sided p is 1/2^5 = 0.031 < 0.05.
    base = write_run(tmp_path / "base", dict.fromkeys(ids(5), 1.0))
    cand = write_run(tmp_path / "cand", dict.fromkeys(ids(5), 0.0))
    overall = regress(base, cand).cells[-1]
    assert (overall.p_value, overall.verdict) == (pytest.approx(1 / 32), "FAIL")


def test_expect_better_passes_a_planted_improvement(tmp_path) -> None:
    # 15 of 100 wrong answers fixed, none lost: the exact one-sided sign-flip p is 1/2^15.
    base_scores = {q: 0.0 if i < 40 else 1.0 for i, q in enumerate(ids(100))}
    cand_scores = base_scores | dict.fromkeys(ids(15), 1.0)
    report = regress(
        write_run(tmp_path / "base", base_scores), write_run(tmp_path / "cand", cand_scores), expect_better=True
    )
    assert report.passed and report.reasons == []
    assert report.improvement is not None
    assert (report.improvement.n, report.improvement.diff) == (100, pytest.approx(0.15))
    assert report.improvement.p_value == pytest.approx(1 / 2**15)
    assert regression_table(report).notes[-2] == (
        "expected better: overall 60.00 -> 75.00 (+15.00 points), one-sided paired permutation test of "
        "candidate > baseline: p<0.001"
    )


def test_expect_better_fails_a_planted_null_that_the_plain_gate_passes(tmp_path) -> None:
    # 3 answers fixed and 3 lost: no change on average, p = P(B >= 3), B ~ Bin(6, 1/2) = 42/64.
    base_scores = {q: 0.0 if i < 40 else 1.0 for i, q in enumerate(ids(100))}
    cand_scores = base_scores | dict.fromkeys(ids(3), 1.0) | {q: 0.0 for q in ids(100)[50:53]}
    base, cand = write_run(tmp_path / "base", base_scores), write_run(tmp_path / "cand", cand_scores)
    assert regress(base, cand).passed

    report = regress(base, cand, expect_better=True)
    assert not report.passed
    assert report.improvement is not None and report.improvement.p_value == pytest.approx(42 / 64)
    assert report.reasons == [
        "overall: not significantly better, 60.00 -> 60.00 on 100 questions (p=0.656, alpha 0.05)"
    ]
    assert [cell.verdict for cell in report.cells] == ["ok", "ok", "ok"]


def test_expect_better_says_when_too_few_answers_changed_to_tell(tmp_path) -> None:
    base = write_run(tmp_path / "base", dict.fromkeys(ids(10), 0.0))
    cand = write_run(tmp_path / "cand", dict.fromkeys(ids(10), 0.0) | dict.fromkeys(ids(3), 1.0))
    (reason,) = regress(base, cand, expect_better=True).reasons
    assert reason.endswith("(p=0.125, alpha 0.05); too few answers changed for any p below 0.05")


def test_missing_candidate_questions_fail_unless_allowed(tmp_path) -> None:
    base = write_run(tmp_path / "base", dict.fromkeys(ids(10), 1.0))
    cand = write_run(tmp_path / "cand", dict.fromkeys(ids(8), 1.0), failed={"q7"})
    report = regress(base, cand)
    assert report.missing == ["q7", "q8", "q9"]
    assert not report.passed
    assert report.reasons == ["the candidate lacks 3 baseline questions (absent or failed): q7, q8, q9"]
    assert [cell.verdict for cell in report.cells] == ["ok", "ok", "ok"]

    allowed = regress(base, cand, allow_missing=True)
    assert allowed.passed
    assert "the candidate lacks 3 baseline questions, left out (allowed): q7, q8, q9" in regression_table(allowed).notes


def test_unscored_candidate_questions_are_reported(tmp_path) -> None:
    base = write_run(tmp_path / "base", dict.fromkeys(ids(4), 1.0))
    cand = write_run(tmp_path / "cand", {"q0": 1.0, "q1": 1.0, "q2": None, "q3": 1.0})
    report = regress(base, cand)
    assert report.passed and report.unscored == ["q2"] and report.cells[-1].n == 3
    assert "1 questions answered in both runs but unscored in one, left out: q2" in regression_table(report).notes


def test_spec_mismatch_is_a_warning_not_a_failure(tmp_path) -> None:
    scores = dict.fromkeys(ids(4), 1.0)
    base = write_run(tmp_path / "base", scores)
    cand = write_run(tmp_path / "cand", scores, spec=make_spec(split="val"))
    report = regress(base, cand)
    assert report.passed and report.warnings == ["task option split differs: test vs val"]
    assert "warning: task option split differs: test vs val" in regression_table(report).notes


def test_no_shared_question_is_an_error(tmp_path) -> None:
    base = write_run(tmp_path / "base", {"q0": 1.0, "q1": 1.0})
    cand = write_run(tmp_path / "cand", {"q2": 1.0, "q3": 1.0})
    with pytest.raises(ValueError, match="share no question answered and scored by llm_judge"):
        regress(base, cand)
