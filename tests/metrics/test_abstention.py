"""Abstention rates: the stated rule and the per-run summary, pinned by `abstention_golden.json`; the summary in
run.json, `show` and `report`; which real questions count as unanswerable."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from support import make_spec

from harness.metrics.abstention import AbstentionSummary, abstains, abstention_summary, is_unanswerable
from harness.metrics.aggregate import Cell
from harness.metrics.f1_locomo import locomo_f1
from harness.plugins import TASKS
from harness.report import print_run
from harness.reporting import abstention_report_table
from harness.results import QuestionRecord, RunDir, RunResult
from harness.runner import summarize
from harness.task import DataOptions
from harness.types import Prediction

GOLDEN = json.loads((Path(__file__).parent / "abstention_golden.json").read_text())
RULE_CASES = {case["answer"] or "<empty>": case for case in GOLDEN["rule"]}
SUMMARY_CASES = {case["name"]: case for case in GOLDEN["summaries"]}
REQUIRED_DATA = ("locomo/locomo10.json", "longmemeval/longmemeval_oracle_sample_2q.json")


def record(index: int, case: dict[str, Any]) -> QuestionRecord:
    """A `samples.jsonl` record from a golden record: `answer` null is a failed question."""
    question_id = f"q{index}"
    judge = case.get("judge")
    return QuestionRecord(
        sample_id="s",
        question_id=question_id,
        question_type=case["type"],
        question="?",
        gold=[],
        question_metadata={"locomo_category": case["category"]} if "category" in case else {},
        prediction=None if case["answer"] is None else Prediction(question_id=question_id, answer=case["answer"]),
        error="backend down" if case["answer"] is None else None,
        scores={judge["metric"]: judge["score"]} if judge else {},
        score_details={judge["metric"]: {"judge_prompt": judge["prompt"]}} if judge else {},
    )


def records_of(case: dict[str, Any]) -> list[QuestionRecord]:
    return [record(i, r) for i, r in enumerate(case["records"])]


def assert_cell(actual: Cell, expected: dict[str, Any]) -> None:
    assert actual.mean == pytest.approx(expected["mean"], abs=1e-4)
    assert (actual.n, actual.n_unscored) == (expected["n"], expected.get("n_unscored", 0))
    if actual.n > 1 and actual.ci_low is not None and actual.ci_high is not None:
        assert actual.ci_low <= actual.mean <= actual.ci_high


@pytest.mark.parametrize("case", RULE_CASES.values(), ids=RULE_CASES.keys())
def test_rule(case: dict[str, Any]) -> None:
    assert abstains(case["answer"]) is case["abstains"], case["why"]


@pytest.mark.parametrize("case", RULE_CASES.values(), ids=RULE_CASES.keys())
def test_rule_counts_every_answer_that_locomos_category_5_rule_counts(case: dict[str, Any]) -> None:
    if locomo_f1(case["answer"], "", category=5) == 1.0:
        assert abstains(case["answer"])


@pytest.mark.parametrize("case", SUMMARY_CASES.values(), ids=SUMMARY_CASES.keys())
def test_summary(case: dict[str, Any]) -> None:
    summary = abstention_summary(records_of(case), seed=0)
    expected = case["expected"]
    if expected is None:
        assert summary is None, case["why"]
        return
    assert summary is not None, case["why"]
    assert_cell(summary.rule.recall, expected["recall"])
    assert_cell(summary.rule.hallucination, expected["hallucination"])
    assert_cell(summary.false_abstention, expected["false_abstention"])
    assert set(summary.by_judge) == set(expected["by_judge"]), case["why"]
    for judge, rates in expected["by_judge"].items():
        assert_cell(summary.by_judge[judge].recall, rates["recall"])
        assert_cell(summary.by_judge[judge].hallucination, rates["hallucination"])


def test_the_summary_is_in_run_json_and_in_show_and_report(tmp_path: Path) -> None:
    run_dir = RunDir(tmp_path / "run")
    spec = make_spec("rag", metrics=["llm_judge"])
    run_dir.write_result(RunResult(run_id="run", status="finished", created_at="t", spec=spec))
    for item in records_of(SUMMARY_CASES["longmemeval-with-judge"]):
        run_dir.append_question(item)

    written = RunResult(run_id="run", status="finished", created_at="t", spec=spec, **summarize(run_dir, spec))
    result = RunResult.model_validate_json(written.model_dump_json())  # as `report` reads run.json back
    assert isinstance(result.abstention, AbstentionSummary)
    assert result.abstention.rule.recall.mean == pytest.approx(0.25)

    table = abstention_report_table([result])
    assert table is not None
    rows = {row[0]: row[1] for row in table.rows}
    assert rows["abstention recall · rule"].startswith("25.0") and rows["abstention recall · rule"].endswith("(n=4)")
    assert rows["hallucination · llm_judge"].startswith("33.3") and rows["hallucination · llm_judge"].endswith("(n=3)")
    assert rows["false abstention · rule"].startswith("0.0") and "(n=1)" in rows["false abstention · rule"]
    assert any("'unknown'" in note for note in table.notes)

    out = io.StringIO()
    print_run(result, "run", Console(file=out, width=200))
    assert "abstention x100" in out.getvalue() and "false abstention · rule" in out.getvalue()


def test_no_table_when_no_run_has_unanswerable_questions() -> None:
    result = RunResult(run_id="r", status="finished", created_at="t", spec=make_spec())
    assert abstention_report_table([result]) is None


@pytest.mark.parametrize("labels", ["locomo", "mem0"])
def test_every_locomo_adversarial_question_and_no_other_is_unanswerable(shared_data_dir: Path, labels: str) -> None:
    data = DataOptions(data_dir=str(shared_data_dir))
    task = TASKS.get("locomo").load(data, include_adversarial="true", labels=labels)
    questions = [q for s in task.samples for q in s.questions]
    unanswerable = [q for q in questions if is_unanswerable(q.question_type, q.metadata)]
    assert len(unanswerable) == 446  # the release's adversarial count
    assert {q.question_type for q in unanswerable} == {"adversarial"}


def test_longmemeval_abstention_questions_are_unanswerable(shared_data_dir: Path) -> None:
    path = shared_data_dir / "longmemeval" / "longmemeval_oracle_sample_2q.json"
    task = TASKS.get("longmemeval").load(DataOptions(data_file=str(path)))
    verdicts = {q.question_id: is_unanswerable(q.question_type, q.metadata) for s in task.samples for q in s.questions}
    assert verdicts == {"6a1eabeb": False, "gpt4_70e84552_abs": True}
