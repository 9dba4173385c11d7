"""Reading answers produced elsewhere: Zep's published LoCoMo run, mem0 and jsonl round trips, hand-made
files with every kind of leftover row, and broken files."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Literal

import pytest

from harness.datasets import DataFormatError
from harness.plugins import TASKS
from harness.predictions import (
    PUBLISHED_JUDGE,
    detect_format,
    read_predictions,
    write_jsonl_predictions,
    write_mem0_predictions,
)
from harness.results import QuestionRecord
from harness.task import DataOptions
from harness.types import Conversation, Prediction, Question, Sample

ZEP = "published/zep_locomo"
LONGMEMEVAL_SAMPLE = "longmemeval/longmemeval_oracle_sample_2q.json"
REQUIRED_DATA = [
    "locomo/locomo10.json",
    f"{ZEP}/zep_locomo_responses.json",
    f"{ZEP}/zep_locomo_grades.json",
    LONGMEMEVAL_SAMPLE,
]


def locomo(data_dir: Path, **options: str) -> list[Sample]:
    return TASKS.get("locomo").load(DataOptions(data_dir=str(data_dir)), **options).samples


def records_for(samples: list[Sample], sample_ids: set[str]) -> list[QuestionRecord]:
    """Records as the runner writes them, with a made-up answer naming the question."""
    return [
        QuestionRecord(
            sample_id=s.sample_id,
            question_id=q.question_id,
            question_type=q.question_type,
            question=q.text,
            gold=list(q.answers),
            question_metadata=q.metadata,
            prediction=Prediction(question_id=q.question_id, answer=f"answer to {q.question_id}"),
        )
        for s in samples
        if s.sample_id in sample_ids
        for q in s.questions
    ]


# --- Zep's published run ---------------------------------------------------------------------------------------


def test_zep_responses_match_every_question_in_file_order(shared_data_dir: Path) -> None:
    samples = locomo(shared_data_dir)
    path = shared_data_dir / ZEP / "zep_locomo_responses.json"
    assert detect_format(path) == "zep"
    result = read_predictions(path, samples)
    # All 1,540 rows fit a question: their texts are locomo10.json's verbatim (no normalisation needed) and
    # every gold answer agrees, the 6 integer golds (e.g. 2022) included.
    assert (result.rows, result.questions, len(result.answers)) == (1540, 1540, 1540)
    assert result.complete
    assert result.unmatched == result.excluded == result.ambiguous == result.duplicates == result.missing == []
    assert result.gold_mismatches == [] and result.category_mismatches == []
    # Zep answered the non-adversarial questions in locomo10.json order, so row i of conversation k is the
    # i-th such question of the k-th sample. That includes conv-48's 11 questions asked twice with the same
    # gold (q16/q89, q25/q90, ...), which order of appearance assigns. conv-30's rows shift by one after its
    # adversarial q79, which sits among the others.
    for k, sample in enumerate(samples):
        for i, question in enumerate(sample.questions):
            assert result.answers[question.question_id].source_row == f"locomo_experiment_user_{k}[{i}]"
    raw = json.loads(path.read_text())
    first = raw["locomo_experiment_user_0"][1]
    answer = result.answers["conv-26/q1"]
    assert answer.answer == first["answer"] and first["golden_answer"] == 2022
    assert answer.latency_s == pytest.approx(first["duration_ms"] / 1000)
    assert all(a.latency_s is not None for a in result.answers.values())
    assert result.summary() == ["zep_locomo_responses.json (zep): 1540 rows, answers for 1540 of 1540 questions"]


def test_zep_grades_give_the_published_judge(shared_data_dir: Path) -> None:
    path = shared_data_dir / ZEP / "zep_locomo_grades.json"
    result = read_predictions(path, locomo(shared_data_dir))
    assert result.complete and len(result.answers) == 1540
    assert result.category_mismatches == []  # the grades file's categories agree with locomo10.json's
    grades = [row["grade"] for rows in json.loads(path.read_text()).values() for row in rows]
    by_hand = sum(grades) / len(grades)
    # 1,157 of 1,540 graded correct: 75.13%, in line with the ~75% Zep's paper reports for gpt-4o-mini.
    assert (sum(grades), len(grades)) == (1157, 1540)
    judged = [a.published[PUBLISHED_JUDGE] for a in result.answers.values()]
    assert sum(judged) / len(judged) == pytest.approx(by_hand) == pytest.approx(0.7513, abs=1e-4)
    assert all(a.latency_s is None for a in result.answers.values())  # this file has no duration_ms


def test_zep_with_adversarial_questions_in_the_task(shared_data_dir: Path) -> None:
    samples = locomo(shared_data_dir, include_adversarial="true")
    result = read_predictions(shared_data_dir / ZEP / "zep_locomo_grades.json", samples)
    # conv-30 asks "What did Gina receive from a dance contest?" as q61 (category 4) and q95 (category 5):
    # the row's gold and category pick q61, so Zep's rows still all match, and only category 5 is missing.
    assert len(result.answers) == 1540 and not result.ambiguous and not result.duplicates
    categories = {q.question_id: q.metadata["locomo_category"] for s in samples for q in s.questions}
    assert len(result.missing) == 446 and {categories[q] for q in result.missing} == {5}


# --- round trips ----------------------------------------------------------------------------------------------


def test_mem0_round_trip_on_locomo(shared_data_dir: Path, tmp_path: Path) -> None:
    samples = locomo(shared_data_dir)
    # conv-48 repeats 11 questions; conv-26 holds integer gold answers.
    records = records_for(samples, {"conv-26", "conv-48", "conv-50"})
    path = tmp_path / "mem0.json"
    assert write_mem0_predictions(records, samples, path) == len(records) == 152 + 191 + 158
    raw = json.loads(path.read_text())
    assert list(raw) == ["0", "7", "9"]
    assert raw["0"][1] == {
        "question": "When did Melanie paint a sunrise?",
        "answer": "2022",
        "response": "answer to conv-26/q1",
        "category": 2,
    }
    assert detect_format(path) == "mem0"
    result = read_predictions(path, samples)
    assert {qid: a.answer for qid, a in result.answers.items()} == {
        r.question_id: f"answer to {r.question_id}" for r in records
    }
    assert not (result.unmatched or result.ambiguous or result.duplicates or result.category_mismatches)
    assert not result.gold_mismatches
    assert len(result.missing) == 1540 - len(records)


def test_mem0_file_of_all_questions_read_without_adversarial(shared_data_dir: Path, tmp_path: Path) -> None:
    # Mem0's search scripts answer all 1,986 questions; with category 5 left out of the task, its 446 rows are
    # set aside as excluded, among them conv-30's category-5 twin of q61.
    everything = locomo(shared_data_dir, include_adversarial="true")
    path = tmp_path / "mem0.json"
    write_mem0_predictions(records_for(everything, {s.sample_id for s in everything}), everything, path)
    raw = json.loads(path.read_text())
    assert raw["1"][95]["answer"] == "" and raw["1"][95]["category"] == 5
    round_trip = read_predictions(path, everything)
    assert round_trip.complete and len(round_trip.answers) == 1986
    result = read_predictions(path, locomo(shared_data_dir))
    assert result.complete and len(result.answers) == 1540
    assert len(result.excluded) == 446 and result.rows == 1986
    assert result.answers["conv-30/q61"].answer == "answer to conv-30/q61"
    assert "rows of category 5 (adversarial) outside the task, skipped: 446" in result.summary()


def test_jsonl_round_trip_on_longmemeval(shared_data_dir: Path, tmp_path: Path) -> None:
    data = TASKS.get("longmemeval").load(DataOptions(data_file=str(shared_data_dir / LONGMEMEVAL_SAMPLE)))
    records = records_for(data.samples, {s.sample_id for s in data.samples})
    path = tmp_path / "hypotheses.jsonl"
    assert write_jsonl_predictions(records, path) == 2
    assert json.loads(path.read_text().splitlines()[0]) == {
        "question_id": "6a1eabeb",
        "hypothesis": "answer to 6a1eabeb",
    }
    assert detect_format(path) == "jsonl"
    result = read_predictions(path, data.samples)
    assert result.complete and {q: a.answer for q, a in result.answers.items()} == {
        "6a1eabeb": "answer to 6a1eabeb",
        "gpt4_70e84552_abs": "answer to gpt4_70e84552_abs",
    }
    assert result.answers["6a1eabeb"].source_row == "line 1"


def test_jsonl_round_trip_on_locomo_ids(shared_data_dir: Path, tmp_path: Path) -> None:
    samples = locomo(shared_data_dir)
    records = records_for(samples, {"conv-30"})
    path = tmp_path / "locomo.jsonl"
    write_jsonl_predictions(records, path)
    result = read_predictions(path, samples, format="jsonl")
    assert result.answers["conv-30/q0"].answer == "answer to conv-30/q0"
    assert len(result.answers) == 81 and len(result.missing) == 1540 - 81


# --- hand-made files (no real data needed) ----------------------------------------------------------------------


def question(sample_id: str, index: int, text: str, gold: str, category: int = 4) -> Question:
    return Question(
        question_id=f"{sample_id}/q{index}",
        text=text,
        answers=(gold,),
        question_type=f"type-{category}",
        metadata={"locomo_category": category},
    )


def sample(sample_id: str, *questions: Question) -> Sample:
    conversation = Conversation(conversation_id=sample_id, speakers=("A", "B"), sessions=())
    return Sample(sample_id=sample_id, conversation=conversation, questions=questions)


SAMPLES = [
    sample(
        "c0",
        question("c0", 0, "What is X?", "a", 1),
        question("c0", 1, "What is Y?", "b"),
        question("c0", 2, "What is Y?", "c"),  # asked twice, with different answers
        question("c0", 3, "Where?", "d"),
        question("c0", 4, "Where?", "d"),  # asked twice, interchangeably
    ),
    sample("c1", question("c1", 0, "Who?", "e")),
]


def row(
    text: str, response: str, gold: str | int | None = None, category: int | str | None = None
) -> dict[str, object]:
    fields: dict[str, object] = {"question": text, "response": response}
    if gold is not None:
        fields["answer"] = gold
    if category is not None:
        fields["category"] = category
    return fields


def write_json(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data))
    return path


def test_hand_made_mem0_file_reports_every_leftover(tmp_path: Path) -> None:
    rows = [
        row("  WHAT is   x?", "x1", "not a", category="2"),  # 0: q0, with a wrong gold and category
        row("What is Y?", "y-c", "C"),  # 1: gold picks q2
        row("What is Y?", "y-?", "zzz"),  # 2: ambiguous between q1 and q2
        row("Where?", "w1", "d"),  # 3: q3
        row("Where?", "w2"),  # 4: q4, in order of appearance
        row("Where?", "w3", "d"),  # 5: duplicate, both taken
        row("What is X?", "x2", "a"),  # 6: duplicate of q0
        row("What is Z?", "z", "f", 2),  # 7: unmatched
        row("Is this adversarial?", "no", "", 5),  # 8: excluded
    ]
    path = write_json(tmp_path / "mem0.json", {"0": rows, "1": []})
    assert detect_format(path) == "mem0"
    result = read_predictions(path, SAMPLES)
    assert result.rows == 9 and result.questions == 6
    assert {q: (a.answer, a.source_row) for q, a in result.answers.items()} == {
        "c0/q0": ("x1", "0[0]"),
        "c0/q2": ("y-c", "0[1]"),
        "c0/q3": ("w1", "0[3]"),
        "c0/q4": ("w2", "0[4]"),
    }
    assert result.ambiguous == ["0[2]: 'What is Y?' fits c0/q1, c0/q2, with different answers"]
    assert [d.split(":")[0] for d in result.duplicates] == ["0[5]", "0[6]"]
    assert "c0/q0 by 0[0]" in result.duplicates[1]
    assert result.unmatched == ["0[7]: 'What is Z?' is not a question of c0"]
    assert result.excluded == ["0[8]: 'Is this adversarial?' (category 5) is not a question of c0"]
    assert result.missing == ["c0/q1", "c1/q0"]
    assert result.category_mismatches == ["0[0]: category 2, c0/q0 has 1"]
    assert result.gold_mismatches == ["0[0]: gold 'not a', c0/q0 has 'a'"]
    assert not result.complete
    summary = result.summary(examples=1)
    assert summary[0] == "mem0.json (mem0): 9 rows, answers for 4 of 6 questions"
    assert "duplicate rows, left out (the first row for a question is kept): 2" in summary
    assert "  ... and 1 more" in summary


def test_mem0_latency_and_published_scores(tmp_path: Path) -> None:
    evaluated = row("Who?", "Bob", "e", "4") | {"llm_score": 1, "f1_score": 0.5, "bleu_score": 0.25}
    timed = evaluated | {"speaker_1_memory_time": 0.5, "speaker_2_memory_time": 0.25, "response_time": 1.0}
    path = write_json(tmp_path / "mem0.json", {"1": [timed]})
    answer = read_predictions(path, SAMPLES).answers["c1/q0"]
    assert answer.published == {PUBLISHED_JUDGE: 1.0, "published_f1": 0.5, "published_bleu1": 0.25}
    assert answer.latency_s == 1.75


def test_zep_layout_by_hand(tmp_path: Path) -> None:
    rows = [{"question": "who?", "answer": "Bob", "golden_answer": "e", "duration_ms": 1500, "grade": False}]
    path = write_json(tmp_path / "zep.json", {"locomo_experiment_user_1": rows})
    assert detect_format(path) == "zep"
    answer = read_predictions(path, SAMPLES).answers["c1/q0"]
    assert (answer.answer, answer.latency_s, answer.published) == ("Bob", 1.5, {PUBLISHED_JUDGE: 0.0})


def test_jsonl_leftovers_and_list_form(tmp_path: Path) -> None:
    lines = [
        {"question_id": "c0/q0", "hypothesis": "x"},
        {"question_id": "c0/q0", "hypothesis": "again"},
        {"question_id": "nope", "hypothesis": "?"},
    ]
    path = tmp_path / "h.jsonl"
    path.write_text("".join(json.dumps(line) + "\n\n" for line in lines))
    result = read_predictions(path, SAMPLES)
    assert result.answers["c0/q0"].answer == "x" and result.answers["c0/q0"].source_row == "line 1"
    assert result.duplicates == ["line 3: c0/q0 is already answered by line 1"]
    assert result.unmatched == ["line 5: question_id 'nope' is not a question of the task"]
    as_list = write_json(tmp_path / "h.json", lines[:1])
    assert detect_format(as_list) == "jsonl"
    assert read_predictions(as_list, SAMPLES).answers["c0/q0"].source_row == "item 0"
    one_line = write_json(tmp_path / "one.jsonl", lines[0])
    assert detect_format(one_line) == "jsonl" and read_predictions(one_line, SAMPLES).rows == 1


def test_writers_leave_out_failed_records_and_refuse_unknown_questions(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def record(question_id: str, answer: str | None) -> QuestionRecord:
        prediction = None if answer is None else Prediction(question_id=question_id, answer=answer)
        error = "boom" if answer is None else None
        return QuestionRecord(
            sample_id=question_id.split("/")[0],
            question_id=question_id,
            question_type="t",
            question="Who?",
            gold=["e"],
            prediction=prediction,
            error=error,
        )

    records = [record("c1/q0", None), record("c0/q0", "x"), record("c1/q0", "later")]
    with caplog.at_level(logging.WARNING):
        assert write_mem0_predictions([*records, record("c0/q1", None)], SAMPLES, tmp_path / "m.json") == 2
    assert "1 questions have no prediction" in caplog.text
    written = json.loads((tmp_path / "m.json").read_text())
    assert written["1"][0]["response"] == "later" and written["1"][0]["category"] == 4  # from the sample
    assert write_jsonl_predictions(records, tmp_path / "h.jsonl") == 2
    with pytest.raises(ValueError, match="c9/q0: not a question"):
        write_mem0_predictions([record("c9/q0", "x")], SAMPLES, tmp_path / "bad.json")


# --- broken files ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "format", "expected"),
    [
        ("{not json", "auto", "neither JSON nor JSONL"),
        ("", "auto", "neither JSON nor JSONL"),
        ('"just a string"', "auto", "expected a JSON object of conversations or JSONL rows, got str"),
        ('{"a": []}', "auto", "top-level keys ('a', ...)"),
        ('{"0": [], "locomo_experiment_user_1": []}', "auto", "top-level keys"),
        ('{"0": {"question": "Who?"}}', "auto", "conversation '0': field '(rows)': expected a list"),
        ('{"0": [{"question": "Who?", "answer": "e"}]}', "auto", "row 0[0]: field 'response': expected a string"),
        ('{"0": [{"response": "x"}]}', "auto", "row 0[0]: field 'question': expected a string"),
        ('{"0": [{"question": "Who?", "response": null}]}', "auto", "field 'response'"),
        ('{"0": [{"question": "Who?", "response": "x", "category": "five"}]}', "auto", "field 'category'"),
        ('{"0": ["Who?"]}', "auto", "row 0[0]: field '(row)': expected an object"),
        ('{"2": []}', "auto", "key '2': expected a conversation like '0'"),
        ('{"locomo_experiment_user_7": []}', "auto", "key 'locomo_experiment_user_7'"),
        ('{"locomo_experiment_user_0": [{"question": "Who?"}]}', "auto", "field 'answer'"),
        ('{"locomo_experiment_user_0": [{"question": "Who?", "answer": "x", "grade": "yes"}]}', "auto", "'grade'"),
        ('{"locomo_experiment_user_0": [{"question": "q", "answer": "x", "duration_ms": "1"}]}', "auto", "a number"),
        ('{"locomo_experiment_user_0": []}', "mem0", "key 'locomo_experiment_user_0'"),
        ('{"question_id": "c0/q0"}', "auto", "line 1: field 'hypothesis'"),
        ('{"question_id": "c0/q0", "hypothesis": "x"}\n{"question_id": 3}', "auto", "line 2: field 'question_id'"),
        ('{"question_id": "c0/q0", "hypothesis": "x"}\n{"question_id"', "auto", "line 2: not valid JSON"),
        ("[1]", "auto", "item 0: field '(row)': expected an object"),
        ('{"question_id": "c0/q0", "hypothesis": "x"}', "zep", "key 'question_id': expected a conversation like"),
        ("[]", "mem0", "expected a JSON object of conversations (mem0 layout), got list"),
        ('{"question_id": "c0/q0", "hypothesis": "x"}\n{}', "zep", "not valid JSON (line 2, column 1"),
        ("{}", "auto", "expected a JSON object of conversations or JSONL rows, got an empty object"),
    ],
)
def test_bad_files_name_file_row_and_field(
    tmp_path: Path, content: str, format: Literal["auto", "jsonl", "mem0", "zep"], expected: str
) -> None:
    path = tmp_path / "predictions.json"
    path.write_text(content)
    with pytest.raises(DataFormatError) as caught:
        read_predictions(path, SAMPLES, format=format)
    assert str(caught.value).startswith(f"{path}: ")
    assert expected in str(caught.value)
