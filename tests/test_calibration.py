"""`harness calibrate-judge`: the labelled set built from the data, and the judge's error rates on it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.calibration import (
    OVERALL,
    agree_with_reference,
    calibrate,
    judge_metrics,
    labelled_set,
    reference_records,
    reference_table,
    reworded,
)
from harness.cli import main
from harness.llm import Message, Model
from harness.llm.providers.mock import MockBackend
from harness.metrics.base import MetricContext
from harness.results import QuestionRecord
from harness.stats import wilson_interval
from harness.types import Conversation, Prediction, Question, Sample, Session, Turn

REQUIRED_DATA = ("locomo/locomo10.json",)


def sample(sample_id: str, questions: list[tuple[str, str, str]], **metadata: str) -> Sample:
    """A history with questions given as (id, type, gold); `adversarial_<id>` metadata adds that answer."""
    session = Session(session_id="s1", turns=(Turn(turn_id="D1:1", speaker="A", text="hi"),))
    return Sample(
        sample_id=sample_id,
        conversation=Conversation(conversation_id=sample_id, speakers=("A", "B"), sessions=(session,)),
        questions=tuple(
            Question(
                question_id=f"{sample_id}/{qid}",
                text=f"What is {qid}?",
                answers=(gold,) if gold else (),
                question_type=kind,
                metadata={"adversarial_answer": metadata[f"adversarial_{qid}"]}
                if f"adversarial_{qid}" in metadata
                else {},
            )
            for qid, kind, gold in questions
        ),
    )


SAMPLES = [
    sample(
        "h1",
        [("q1", "single-hop", "Paris"), ("q2", "single-hop", "the Louvre"), ("q3", "single-hop", "paris!")],
        adversarial_q1="Rome",
    ),
    sample("h2", [("q1", "temporal", "May 2023"), ("q2", "single-hop", "a dog"), ("q3", "adversarial", "")]),
]


def by_question(labelled):
    found: dict[str, list[tuple[str, str]]] = {}
    for item in labelled:
        found.setdefault(item.question.question_id, []).append((item.kind, item.answer))
    return found


def test_the_labelled_set_is_built_from_the_data_alone():
    found = by_question(labelled_set(SAMPLES, seed=0))
    assert found["h1/q1"][:2] == [("gold", "Paris"), ("reworded", "The answer is: Paris.")]
    # another single-hop gold of the same history, never one equal after normalization ("paris!")
    assert found["h1/q1"][2] == ("other-gold", "the Louvre")
    assert found["h1/q1"][3] == ("adversarial", "Rome")
    assert ("other-gold", "Paris") not in found["h1/q3"]
    # alone of its type in its history (the only single-hop of h2): another history's single-hop gold
    assert found["h2/q2"][2] in {("other-gold", gold) for gold in ("Paris", "the Louvre", "paris!")}
    # alone of its type in the whole task: another type's gold
    assert found["h2/q1"][2][0] == "other-type-gold" and found["h2/q1"][2][1] != "May 2023"
    assert "h2/q3" not in found  # no gold answer: nothing is known right or wrong


def test_the_labelled_set_is_the_same_for_a_seed_and_a_limit_samples_questions():
    assert labelled_set(SAMPLES, seed=3, limit=3) == labelled_set(SAMPLES, seed=3, limit=3)
    assert len({item.question.question_id for item in labelled_set(SAMPLES, seed=3, limit=3)}) == 3


def test_a_reworded_answer_keeps_the_fact():
    assert reworded(" 7 May 2023. ") == "The answer is: 7 May 2023."


def accepts_when_gold_is_in(messages: list[Message]) -> str:
    """A judge for both prompts: CORRECT when the gold answer's text appears in the generated answer."""
    prompt = messages[-1]["content"]
    gold, generated = (
        prompt.rsplit(f"\n{field}: ", 1)[1].split("\n", 1)[0] for field in ("Gold answer", "Generated answer")
    )
    label = "CORRECT" if gold.lower() in generated.lower() else "WRONG"
    return json.dumps({"reason": "r", "label": label} if "Reply with JSON only" in prompt else {"label": label})


def accepts_everything(messages: list[Message]) -> str:
    prompt = messages[-1]["content"]
    return json.dumps({"reason": "r", "label": "CORRECT"} if "Reply with JSON only" in prompt else {"label": "CORRECT"})


async def report_of(responder):
    judge = Model(MockBackend(responder=responder), spec="mock", max_retries=0)
    labelled = labelled_set(SAMPLES, seed=0)
    metrics = judge_metrics(MetricContext(judges={"judge": judge}, judge_style="mem0"))
    return await calibrate(labelled, metrics, task="t", judge="mock", seed=0, limit=None), labelled


async def test_a_judge_that_accepts_everything_accepts_every_wrong_answer():
    report, labelled = await report_of(accepts_everything)
    wrong = sum(not item.correct for item in labelled)
    for calibration in report.prompts.values():
        assert calibration.false_acceptance[OVERALL].errors == calibration.false_acceptance[OVERALL].n == wrong == 6
        assert calibration.false_rejection[OVERALL].errors == 0
        assert calibration.false_rejection[OVERALL].n == 10
        single = calibration.false_acceptance["single-hop"]
        assert (single.errors, single.n) == (5, 5)
        assert (single.low, single.high) == pytest.approx(tuple(vars(wilson_interval(5, 5)).values()))


async def test_a_judge_that_reads_the_gold_makes_no_error_on_this_set():
    report, _ = await report_of(accepts_when_gold_is_in)
    assert set(report.prompts) == {"llm_judge", "llm_judge_strict"}
    for calibration in report.prompts.values():
        assert calibration.false_acceptance[OVERALL].rate == 0.0
        assert calibration.false_rejection[OVERALL].rate == 0.0
    assert report.answers_by_kind == {"gold": 5, "reworded": 5, "other-gold": 4, "other-type-gold": 1, "adversarial": 1}
    assert len(report.verdicts) == 2 * report.answers


def test_wilson_intervals_match_the_textbook_values():
    assert vars(wilson_interval(5, 10)) == pytest.approx({"low": 0.2366, "high": 0.7634}, abs=1e-4)
    assert vars(wilson_interval(0, 10)) == pytest.approx({"low": 0.0, "high": 0.2775}, abs=1e-4)
    with pytest.raises(ValueError, match="n >= 1"):
        wilson_interval(0, 0)


def test_the_command_calibrates_on_real_locomo(tmp_path: Path, shared_data_dir: Path, capsys) -> None:
    report_file = tmp_path / "calibration.json"
    code = main(
        [
            "calibrate-judge",
            "--task",
            "locomo",
            "--data-dir",
            str(shared_data_dir),
            "--judge",
            "mock",
            "--limit",
            "12",
            "--no-cache",
            "--json",
            str(report_file),
            "--format",
            "md",
        ]
    )
    assert code == 0
    table = capsys.readouterr().out
    assert "llm_judge false accept" in table and "| **overall** |" in table
    report = json.loads(report_file.read_text())
    assert report["answers_by_kind"]["gold"] == 12
    assert {v["prompt"] for v in report["verdicts"]} == {"llm_judge", "llm_judge_strict"}
    # the unscripted mock answers "I don't know": no verdict, counted apart from either rate
    overall = report["prompts"]["llm_judge"]["false_acceptance"]["overall"]
    assert overall["n"] == 0 and overall["unjudged"] == report["answers"] - 24


def graded_record(qid: str, kind: str, gold: str, answer: str, published: float) -> QuestionRecord:
    return QuestionRecord(
        sample_id="s",
        question_id=qid,
        question_type=kind,
        question=f"What is {qid}?",
        gold=[gold],
        prediction=Prediction(question_id=qid, answer=answer),
        scores={"published_judge": published},
    )


# (judge's verdict, the reference's): the judge below accepts an answer that contains the gold.
PLANTED = [
    graded_record("a1", "single-hop", "Paris", "Paris", 1.0),  # both correct
    graded_record("a2", "single-hop", "Rome", "Rome it is", 1.0),  # both correct
    graded_record("a3", "single-hop", "Oslo", "Bergen", 1.0),  # judge wrong, reference correct
    graded_record("a4", "single-hop", "Lima", "Quito", 0.0),  # both wrong
    graded_record("b1", "temporal", "May 2023", "May 2023", 1.0),  # both correct
    graded_record("b2", "temporal", "June 2023", "June 2023", 0.0),  # judge correct, reference wrong
    graded_record("b3", "temporal", "July 2023", "2021", 0.0),  # both wrong
    graded_record("b4", "temporal", "1 May", "2 May", 0.0),  # both wrong
]


async def test_reference_mode_measures_agreement_and_kappa_on_a_planted_set():
    judge = Model(MockBackend(responder=accepts_when_gold_is_in), spec="mock", max_retries=0)
    metrics = judge_metrics(MetricContext(judges={"judge": judge}, judge_style="mem0"))
    report = await agree_with_reference(
        PLANTED, metrics, reference="planted", judge="mock", seed=0, limit=None, type_order=["single-hop", "temporal"]
    )
    for by_group in report.prompts.values():
        overall = by_group[OVERALL]
        assert (overall.n, overall.raw) == (8, 0.75)
        assert overall.kappa == pytest.approx(0.5)  # p_o 0.75, p_e 0.5 from the 4/4 marginals of both raters
        assert overall.confusion == {"correct": {"correct": 3, "wrong": 1}, "wrong": {"correct": 1, "wrong": 3}}
        assert overall.kappa_low is not None and overall.kappa_low < 0.5 < overall.kappa_high
        assert (by_group["single-hop"].raw, by_group["temporal"].raw) == (0.75, 0.75)
    table = reference_table(report)
    assert (
        table.rows[-1][0] == OVERALL and table.rows[-1][1].startswith("75.0") and table.rows[-1][2].startswith("50.0")
    )


def test_a_reference_subset_is_seeded_and_stratified():
    chosen = reference_records(PLANTED, "published_judge", seed=1, limit=4)
    assert chosen == reference_records(PLANTED, "published_judge", seed=1, limit=4)
    assert sorted(r.question_type for r in chosen) == ["single-hop", "single-hop", "temporal", "temporal"]


def test_reference_mode_on_the_imported_zep_run(tmp_path: Path, shared_data_dir: Path, capsys) -> None:
    zep = shared_data_dir / "published" / "zep_locomo" / "zep_locomo_grades.json"
    if not zep.is_file():
        pytest.skip(f"needs {zep}")
    out = tmp_path / "runs"
    args = ["score", "--task", "locomo", "--data-dir", str(shared_data_dir), "--predictions", str(zep)]
    assert main([*args, "--system-name", "zep", "--output", str(out), "--run-id", "zep"]) == 0
    capsys.readouterr()
    run_dir = out / "locomo" / "zep" / "zep"
    assert main(["calibrate-judge", "--reference", str(run_dir), "--judge", "mock", "--limit", "6", "--no-cache"]) == 0
    shown = capsys.readouterr().out
    assert "judge agreement: mock vs published_judge" in shown and "6 answers" in shown
