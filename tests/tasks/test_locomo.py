"""LoCoMo loader: counts and quirks checked on the real locomo10.json, errors on small broken copies."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from harness.datasets import DataFormatError
from harness.inputs import OptionError
from harness.task import DataOptions, TaskData
from harness.types import count_by_type
from tasks.locomo import TASK, normalize_evidence

REQUIRED_DATA = ["locomo/locomo10.json"]


def load(data_dir: Path, **options: str) -> TaskData:
    return TASK.load(DataOptions(data_dir=str(data_dir)), **options)


def n_questions(data: TaskData) -> int:
    return sum(len(s.questions) for s in data.samples)


def test_counts_with_adversarial(shared_data_dir: Path) -> None:
    data = load(shared_data_dir, include_adversarial="true")
    assert len(data.samples) == 10
    assert sum(len(s.conversation.sessions) for s in data.samples) == 272
    assert sum(s.conversation.n_turns for s in data.samples) == 5882
    assert n_questions(data) == 1986
    categories = [q.metadata["locomo_category"] for s in data.samples for q in s.questions]
    assert [categories.count(c) for c in (1, 2, 3, 4, 5)] == [282, 321, 96, 841, 446]
    assert data.data.origin == "data-dir" and data.data.checksum_verified
    assert data.version == "locomo10@3eb6f2c"
    assert data.options == {"split": "all", "include_adversarial": True, "labels": "locomo", "image_captions": False}
    assert data.question_types == ["single-hop", "multi-hop", "temporal", "open-domain", "adversarial"]
    assert count_by_type(q for s in data.samples for q in s.questions)["single-hop"] == 841


def test_adversarial_excluded_by_default(shared_data_dir: Path) -> None:
    data = load(shared_data_dir)
    assert n_questions(data) == 1540
    assert "adversarial" not in data.question_types
    assert data.default_metrics == ["f1_locomo", "f1", "bleu1", "exact_match"]
    assert data.judge_style == "mem0" and data.label_convention == "locomo"


@pytest.mark.parametrize(("split", "samples", "questions"), [("train", 1, 152), ("val", 1, 81), ("test", 8, 1307)])
def test_memory_r1_split(shared_data_dir: Path, split: str, samples: int, questions: int) -> None:
    data = load(shared_data_dir, split=split)
    assert (len(data.samples), n_questions(data)) == (samples, questions)


def test_conv_26_sessions_and_ids(shared_data_dir: Path) -> None:
    data = load(shared_data_dir, split="train", include_adversarial="1")
    (sample,) = data.samples
    assert sample.sample_id == "conv-26"
    sessions = sample.conversation.sessions
    assert [s.session_id for s in sessions] == [f"session_{n}" for n in range(1, 20)]
    assert sessions[0].date == "1:56 pm on 8 May, 2023"
    assert sessions[0].turns[0].turn_id == "D1:1"
    assert sample.conversation.speakers == ("Caroline", "Melanie")
    assert sample.questions[0].question_id == "conv-26/q0"


def test_answers_are_strings_and_adversarial_items_have_none(shared_data_dir: Path) -> None:
    data = load(shared_data_dir, include_adversarial="true")
    questions = [q for s in data.samples for q in s.questions]
    assert all(isinstance(a, str) for q in questions for a in q.answers)
    raw = json.loads((shared_data_dir / "locomo" / "locomo10.json").read_text())
    integer_answers = {
        f"{item['sample_id']}/q{i}": qa["answer"]
        for item in raw
        for i, qa in enumerate(item["qa"])
        if isinstance(qa.get("answer"), int)
    }
    assert len(integer_answers) == 6
    by_id = {q.question_id: q for q in questions}
    assert all(by_id[qid].answers == (str(value),) for qid, value in integer_answers.items())
    adversarial = [q for q in questions if q.question_type == "adversarial"]
    assert sum(q.answers == () for q in adversarial) == 444
    assert all(isinstance(q.metadata["adversarial_answer"], str) for q in adversarial)


def test_evidence_ids_are_well_formed(shared_data_dir: Path) -> None:
    data = load(shared_data_dir, include_adversarial="true")
    evidence = [e for s in data.samples for q in s.questions for e in q.evidence]
    assert evidence and all(re.fullmatch(r"D\d+:\d+", e) for e in evidence)
    conv_26 = next(s for s in data.samples if s.sample_id == "conv-26")
    assert any(q.evidence[-2:] == ("D8:6", "D9:17") for q in conv_26.questions)


def test_normalize_evidence() -> None:
    assert normalize_evidence("D8:6; D9:17") == ["D8:6", "D9:17"]
    assert normalize_evidence("D9:1 D4:4 D4:6") == ["D9:1", "D4:4", "D4:6"]
    assert normalize_evidence("D30:05") == ["D30:5"]
    assert normalize_evidence("D:11:26") == ["D11:26"]
    assert normalize_evidence("D") == []


def test_mem0_labels(shared_data_dir: Path) -> None:
    data = load(shared_data_dir, labels="mem0")
    assert data.label_convention == "mem0"
    assert data.question_types == ["single-hop", "multi-hop", "open-domain", "temporal"]
    by_category = {q.metadata["locomo_category"]: q.question_type for s in data.samples for q in s.questions}
    assert by_category == {1: "single-hop", 2: "temporal", 3: "multi-hop", 4: "open-domain"}


def test_image_captions_option(shared_data_dir: Path) -> None:
    plain = load(shared_data_dir, split="train")
    captioned = load(shared_data_dir, split="train", image_captions="true")
    pairs = zip(plain.samples[0].conversation.sessions, captioned.samples[0].conversation.sessions, strict=True)
    changed = [(a, b) for sa, sb in pairs for a, b in zip(sa.turns, sb.turns, strict=True) if a.text != b.text]
    assert changed and all(b.text.startswith(a.text + " [shares ") for a, b in changed)


def test_bad_options_are_rejected(shared_data_dir: Path) -> None:
    with pytest.raises(OptionError, match="Valid options: split"):
        load(shared_data_dir, spilt="test")
    with pytest.raises(OptionError, match="split"):
        load(shared_data_dir, split="dev")


def test_format_error_names_sample_and_field(tmp_path: Path) -> None:
    broken = [
        {
            "sample_id": "conv-x",
            "conversation": {"speaker_a": "A", "speaker_b": "B", "session_1": [{"speaker": "A", "dia_id": "D1:1"}]},
            "qa": [],
        }
    ]
    path = tmp_path / "locomo10.json"
    path.write_text(json.dumps(broken))
    with pytest.raises(DataFormatError, match=r"sample #0 \(conv-x\): field 'conversation\.session_1\[0\]\.text'"):
        TASK.load(DataOptions(data_file=str(path)))
