"""LongMemEval loader, on the real 2-question fragment in the official schema (and broken copies of it)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_hub import FakeHub, serving_fake_hub

from harness.datasets import DataFormatError
from harness.inputs import OptionError
from harness.task import DataOptions, TaskData
from tasks.longmemeval import REMOTES, REPO, REVISION, TASK, parse_date

SAMPLE = "longmemeval/longmemeval_oracle_sample_2q.json"
SAMPLE_SHA256 = "8a977cc188314da6e74a49c76b4539006296ea7f28da95005e9d294624e8316b"  # ../shared/data's README
REQUIRED_DATA = [SAMPLE]


def load_file(path: Path, **options: str) -> TaskData:
    return TASK.load(DataOptions(data_file=str(path)), **options)


def test_two_questions(shared_data_dir: Path) -> None:
    data = load_file(shared_data_dir / SAMPLE)
    assert [s.sample_id for s in data.samples] == ["6a1eabeb", "gpt4_70e84552_abs"]
    first, second = (s.questions[0] for s in data.samples)
    assert (first.question_type, first.metadata) == ("knowledge-update", {"longmemeval_type": "knowledge-update"})
    assert (second.question_type, second.metadata) == ("abstention", {"longmemeval_type": "temporal-reasoning"})
    assert first.answers == ("25 minutes and 50 seconds (or 25:50)",)
    assert first.date == "2023/06/01 (Thu) 00:58"
    assert first.to_query().date == first.date
    assert data.data.origin == "data-file" and not data.data.checksum_verified
    assert data.judge_style == "longmemeval"
    assert data.question_types[-1] == "abstention" and len(data.question_types) == 7
    assert data.options == {"variant": "oracle"}


def test_sessions_turns_and_evidence(shared_data_dir: Path) -> None:
    raw = json.loads((shared_data_dir / SAMPLE).read_text())
    data = load_file(shared_data_dir / SAMPLE)
    for item, sample in zip(raw, data.samples, strict=True):
        conversation = sample.conversation
        assert conversation.speakers == ("user", "assistant")
        assert [len(s.turns) for s in conversation.sessions] == [12, 12]
        assert {s.session_id for s in conversation.sessions} == set(item["haystack_session_ids"])
        dates = [parse_date(s.date or "") for s in conversation.sessions]
        assert dates == sorted(dates)  # type: ignore[type-var]
        evidence = sample.questions[0].evidence
        assert set(item["answer_session_ids"]) <= set(evidence)
        marked = {
            f"{sid}:{j}"
            for sid, turns in zip(item["haystack_session_ids"], item["haystack_sessions"], strict=True)
            for j, turn in enumerate(turns)
            if turn.get("has_answer")
        }
        assert marked and marked <= set(evidence)
        turn_ids = {t.turn_id for s in conversation.sessions for t in s.turns}
        assert marked <= turn_ids


def test_sessions_are_sorted_by_date(shared_data_dir: Path, tmp_path: Path) -> None:
    raw = json.loads((shared_data_dir / SAMPLE).read_text())
    item = raw[0]
    for key in ("haystack_session_ids", "haystack_dates", "haystack_sessions"):
        item[key] = item[key][::-1]
    path = tmp_path / "reversed.json"
    path.write_text(json.dumps([item]))
    (sample,) = load_file(path).samples
    assert [s.session_id for s in sample.conversation.sessions] == ["answer_a25d4a91_1", "answer_a25d4a91_2"]
    assert sample.conversation.sessions[0].turns[0].turn_id == "answer_a25d4a91_1:0"


def test_integer_answer_becomes_string(shared_data_dir: Path, tmp_path: Path) -> None:
    raw = json.loads((shared_data_dir / SAMPLE).read_text())
    raw[0]["answer"] = 3
    path = tmp_path / "int.json"
    path.write_text(json.dumps(raw[:1]))
    assert load_file(path).samples[0].questions[0].answers == ("3",)


def test_format_errors_name_question_and_field(shared_data_dir: Path, tmp_path: Path) -> None:
    raw = json.loads((shared_data_dir / SAMPLE).read_text())
    raw[1]["haystack_dates"] = raw[1]["haystack_dates"][:1]
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(DataFormatError, match=r"question #1 \(gpt4_70e84552_abs\): field 'haystack_sessions'"):
        load_file(path)
    raw = json.loads((shared_data_dir / SAMPLE).read_text())
    del raw[1]["question"]
    path.write_text(json.dumps(raw))
    with pytest.raises(DataFormatError, match="field 'question'"):
        load_file(path)


def test_variants_and_options() -> None:
    assert REMOTES["s"].sha256 == "d6f21ea9d60a0d56f34a05b609c79c88a451d2ae03597821ea3d5a9678c3a442"
    assert REMOTES["m"].filename == "longmemeval_m_cleaned.json"
    oracle = REMOTES["oracle"]
    assert (oracle.repo_id, oracle.repo_type) == ("xiaowu0162/longmemeval-cleaned", "dataset")
    assert {r.revision for r in REMOTES.values()} == {"98d7416c24c778c2fee6e6f3006e7a073259d48f"}
    with pytest.raises(OptionError, match="variant"):
        TASK.load(DataOptions(data_file="unused.json"), variant="xl")


def test_parse_date() -> None:
    assert parse_date("2023/05/20 (Sat) 02:21") is not None
    assert parse_date("20 May 2023") is None


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    with serving_fake_hub(monkeypatch) as fake:
        yield fake


def test_load_downloads_from_the_hub_then_reads_the_hf_cache(
    hub: FakeHub,
    shared_data_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The real fragment served as the oracle file of the pinned revision, fetched by the real hub client."""
    monkeypatch.delenv("HARNESS_DATA_DIR", raising=False)  # the fragment's folder must not be found first
    hub.add(REPO, REVISION, "longmemeval_oracle.json", (shared_data_dir / SAMPLE).read_bytes())
    options = DataOptions(cache_dir=str(tmp_path / "hf"))
    with caplog.at_level(logging.WARNING, logger="harness.datasets"):
        data = TASK.load(options)
    assert [s.sample_id for s in data.samples] == ["6a1eabeb", "gpt4_70e84552_abs"]
    assert (data.data.origin, data.data.sha256, data.data.revision) == ("download", SAMPLE_SHA256, REVISION)
    assert not data.data.checksum_verified and "No sha256 is pinned" in caplog.text  # none is pinned for oracle
    assert data.data.path.endswith(
        f"datasets--xiaowu0162--longmemeval-cleaned/snapshots/{REVISION}/longmemeval_oracle.json"
    )

    hub.files.clear()
    again = TASK.load(options)
    assert (again.data.origin, again.data.path, again.data.sha256) == ("hf-cache", data.data.path, SAMPLE_SHA256)
