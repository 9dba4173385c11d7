"""MSC-Self-Instruct loader, on JSONL fixtures written here in the published schema (no real rows exist here)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_hub import FakeHub, serving_fake_hub

from harness.datasets import ChecksumError, DataFormatError
from harness.inputs import OptionError
from harness.task import DataOptions, TaskData
from tasks.msc import REMOTE, REPO, REVISION, TASK


def row(initial_id: str, question: str, answer: str, **extra: object) -> dict[str, object]:
    base: dict[str, object] = {
        "metadata": {"initial_data_id": initial_id, "session_id": 4},
        "personas": [["I like hiking."], ["I have two cats."]],
        "init_personas": [["I like hiking."], ["I have two cats."]],
        "previous_dialogs": [
            {
                "dialog": [{"text": "Hi! I went hiking in Yosemite."}, {"text": "Cool, my cats hate hiking."}],
                "time_num": 7,
                "time_unit": "days",
            },
            {
                "dialog": [{"text": "I bought new boots."}, {"text": "Nice!"}, {"text": "They are red."}],
                "time_num": 2,
                "time_unit": "weeks",
                "time_back": "3 weeks",
            },
        ],
        "dialog": [{"id": "Speaker 1", "text": "Hello again."}, {"id": "Speaker 2", "text": "Hey!"}],
        "self_instruct": {"B": question, "A": answer},
    }
    base.update(extra)
    return base


def write(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "\n")  # trailing blank line is allowed
    return path


def load(path: Path, **options: str) -> TaskData:
    return TASK.load(DataOptions(data_file=str(path)), **options)


def test_parses_published_schema(tmp_path: Path) -> None:
    path = write(
        tmp_path / "msc.jsonl",
        [row("train:ordered_1", "Where did I go hiking?", "Yosemite"), row("train:ordered_2", "Colour?", "red")],
    )
    data = load(path)
    assert [s.sample_id for s in data.samples] == ["train:ordered_1", "train:ordered_2"]
    sample = data.samples[0]
    (question,) = sample.questions
    assert (question.question_id, question.text, question.answers) == (
        "train:ordered_1/q0",
        "Where did I go hiking?",
        ("Yosemite",),
    )
    assert question.question_type == "deep-memory-retrieval"
    sessions = sample.conversation.sessions
    assert [s.session_id for s in sessions] == ["session_1", "session_2"]  # current dialog left out
    assert [t.speaker for t in sessions[1].turns] == ["Speaker 1", "Speaker 2", "Speaker 1"]
    assert sessions[1].turns[2].turn_id == "session_2:2"
    assert sessions[0].date == "7 days before the next session"
    assert sessions[1].date == "3 weeks ago"
    assert sample.conversation.speakers == ("Speaker 1", "Speaker 2")
    assert data.judge_style == "mem0" and data.question_types == ["deep-memory-retrieval"]
    assert data.options == {"include_current_dialog": False}


def test_include_current_dialog(tmp_path: Path) -> None:
    path = write(tmp_path / "msc.jsonl", [row("a", "q?", "a")])
    sessions = load(path, include_current_dialog="true").samples[0].conversation.sessions
    assert [s.session_id for s in sessions] == ["session_1", "session_2", "session_3"]
    assert sessions[-1].date is None and sessions[-1].turns[0].text == "Hello again."


def test_ids_fall_back_to_line_index_when_not_unique(tmp_path: Path) -> None:
    path = write(tmp_path / "msc.jsonl", [row("same", "q1?", "a1"), row("same", "q2?", "a2")])
    assert [s.sample_id for s in load(path).samples] == ["msc-0", "msc-1"]


def test_malformed_line_names_file_line_and_field(tmp_path: Path) -> None:
    bad = row("b", "q?", "a", self_instruct={"B": "q?"})
    path = write(tmp_path / "msc.jsonl", [row("a", "q?", "a"), bad])
    with pytest.raises(DataFormatError) as err:
        load(path)
    assert str(path) in str(err.value) and "line 2" in str(err.value) and "'self_instruct.A'" in str(err.value)

    path.write_text(json.dumps(row("a", "q?", "a")) + "\n{not json\n")
    with pytest.raises(DataFormatError, match="line 2: not valid JSON"):
        load(path)

    bad_turn = row("c", "q?", "a", previous_dialogs=[{"dialog": [{"txt": "typo"}]}])
    write(path, [bad_turn])
    with pytest.raises(DataFormatError, match=r"line 1: field 'previous_dialogs\[0\]\.dialog\[0\]\.text'"):
        load(path)


def test_remote_and_options() -> None:
    assert (REMOTE.repo_id, REMOTE.repo_type) == ("MemGPT/MSC-Self-Instruct", "dataset")
    assert (REMOTE.revision, REMOTE.filename) == ("5138f416f8fa76b75b2e080da87e8a8e346e1500", "msc_self_instruct.jsonl")
    with pytest.raises(OptionError, match="include_current_dialog"):
        TASK.load(DataOptions(data_file="unused.jsonl"), split="test")


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    with serving_fake_hub(monkeypatch) as fake:
        yield fake


def test_load_rejects_a_hub_file_that_is_not_the_pinned_one(
    hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A well-formed file that is not the pinned release (here: one written by the test) is refused, not parsed."""
    monkeypatch.delenv("HARNESS_DATA_DIR", raising=False)
    impostor = (json.dumps(row("a", "Where did I hike?", "Yosemite")) + "\n").encode()
    hub.add(REPO, REVISION, "msc_self_instruct.jsonl", impostor)
    with pytest.raises(ChecksumError) as err:
        TASK.load(DataOptions(cache_dir=str(tmp_path / "hf")))
    message = str(err.value)
    assert "msc_self_instruct.jsonl" in message and REPO in message and REVISION in message
    assert REMOTE.sha256 is not None and REMOTE.sha256 in message and hashlib.sha256(impostor).hexdigest() in message
