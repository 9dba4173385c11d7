"""Memory-R1 training data: starting banks (cached), Answer Agent examples and Memory Manager episodes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from harness.embeddings.hashing import HashingEmbedder
from harness.llm import Message, Model
from harness.llm.providers.mock import MockBackend
from harness.task import DataOptions
from harness.types import Conversation, Question, Sample, Session, Turn
from systems.memory_ops import EXTRACTION_INSTRUCTIONS, MANAGER_INSTRUCTIONS
from trainers.memr1.banks import BankBuilder, BankConfig, answering_system, placed_turns, read_items, window_before
from trainers.memr1.data import (
    ManagerEpisode,
    answer_agent_examples,
    build_answer_examples,
    build_manager_episodes,
    evidence_turns,
    load_locomo_split,
    manager_episodes,
)

REQUIRED_DATA = ["locomo/locomo10.json"]
pytestmark = pytest.mark.usefixtures("one_faiss_thread")


def turns_banks(cache_dir: Path, window_turns: int = 50) -> BankBuilder:
    return BankBuilder(
        BankConfig(source="turns", window_turns=window_turns), embedder=HashingEmbedder(), cache_dir=cache_dir
    )


def real(data_dir: Path, split: str) -> list[Sample]:
    return load_locomo_split(split, DataOptions(data_dir=str(data_dir)))


# --- banks ----------------------------------------------------------------------------------------------------

SESSIONS = (
    Session(
        session_id="session_1",
        date="1 May 2023",
        turns=(
            Turn(turn_id="D1:1", speaker="Alice", text="I adopted a puppy named Biscuit."),
            Turn(turn_id="D1:2", speaker="Bob", text="Cute! I play the violin."),
            Turn(turn_id="D1:3", speaker="Alice", text="I live in Porto."),
        ),
    ),
    Session(
        session_id="session_2",
        date="9 June 2023",
        turns=(
            Turn(turn_id="D2:1", speaker="Bob", text="I quit the violin."),
            Turn(turn_id="D2:2", speaker="Alice", text="Biscuit loves the beach."),
            Turn(turn_id="D2:3", speaker="Bob", text="I moved to Lyon."),
        ),
    ),
)
CONVERSATION = Conversation(conversation_id="c1", speakers=("Alice", "Bob"), sessions=SESSIONS)


@pytest.mark.parametrize(
    ("end", "window", "expected"),
    [
        (5, 50, ["D1:1", "D1:2", "D1:3", "D2:1", "D2:2"]),  # across sessions
        (5, 2, ["D2:1", "D2:2"]),
        (5, 3, ["D1:3", "D2:1", "D2:2"]),  # D1:3 is a pair of its own
        (3, 2, ["D1:3"]),  # D1:2 is the second turn of the pair (D1:1, D1:2): the window starts after it
        (5, 1, []),  # likewise D2:2
        (0, 50, []),
    ],
)
def test_windows_hold_the_turns_before_and_start_on_a_pair(end, window, expected):
    turns = placed_turns(CONVERSATION)
    assert [t.turn.turn_id for t in window_before(turns, end, window)] == expected


async def test_turns_bank_is_cached_and_searchable(tmp_path):
    banks = turns_banks(tmp_path, window_turns=4)
    first = await banks.before(CONVERSATION, "D2:3")
    again = await turns_banks(tmp_path, window_turns=4).before(CONVERSATION, "D2:3")
    assert (first.hit, again.hit, again.path) == (False, True, first.path)
    # the 4 turns before D2:3 would start at D1:2, the second turn of a pair
    assert [(m.id, m.text, m.timestamp, m.source_turn_ids, m.speaker) for m in read_items(first.path)] == [
        ("alice-1", "Alice: I live in Porto.", "1 May 2023", ["D1:3"], "Alice"),
        ("bob-1", "Bob: I quit the violin.", "9 June 2023", ["D2:1"], "Bob"),
        ("alice-2", "Alice: Biscuit loves the beach.", "9 June 2023", ["D2:2"], "Alice"),
    ]
    key = json.loads(first.path.with_suffix(".key.json").read_text())
    assert key["window_end"] == "D2:3" and key["window_turns"] == 4 and key["source"] == "turns"
    hits = await again.bank.search("Biscuit on the beach", 1, "Alice")
    assert [m.id for m in hits] == ["alice-2"]
    assert (await turns_banks(tmp_path, window_turns=2).before(CONVERSATION, "D2:3")).path != first.path
    whole = await banks.whole(CONVERSATION)
    assert len(whole.items) == 6 and whole.path != first.path


def extraction_and_manager(messages: list[Message]) -> str:
    """A mock bank-building model: one fact per speaker and pair, every fact ADDed."""
    system, user = messages[0]["content"], messages[-1]["content"]
    if system == EXTRACTION_INSTRUCTIONS:
        speaker = re.search(r"Facts about (.+) \(JSON\):", user).group(1)
        said = [line.split(": ", 1)[1] for line in user.split("Conversation:\n", 1)[1].split("\n\n")[0].splitlines()]
        return json.dumps({"facts": [f"{speaker} heard: {said[0]}"]})
    assert system == MANAGER_INSTRUCTIONS
    fact = json.loads(user.split("New facts:\n", 1)[1].split("\n\n", 1)[0])[0]
    return json.dumps({"memory": [{"id": "new", "text": fact, "event": "ADD"}]})


def llm_banks(tmp_path: Path, backend: MockBackend) -> BankBuilder:
    config = BankConfig(source="llm", window_turns=50, model="mock")
    return BankBuilder(config, model=Model(backend, spec="mock"), embedder=HashingEmbedder(), cache_dir=tmp_path)


async def test_llm_bank_is_the_memr1_ingestion_and_is_cached(tmp_path):
    backend = MockBackend(responder=extraction_and_manager)
    built = await llm_banks(tmp_path, backend).whole(CONVERSATION)
    # 4 pairs ((D1:1, D1:2), (D1:3), (D2:1, D2:2), (D2:3)), 6 (pair, speaker) extractions, one ADD per fact
    assert len(backend.calls) == 12 and not built.hit
    assert [(m.id, m.speaker, m.text, m.source_turn_ids) for m in built.items][:2] == [
        ("alice-1", "Alice", "Alice heard: I adopted a puppy named Biscuit.", ["D1:1", "D1:2"]),
        ("alice-2", "Alice", "Alice heard: I live in Porto.", ["D1:3"]),
    ]
    assert ("bob-1", "Bob", "Bob heard: I adopted a puppy named Biscuit.") in [
        (m.id, m.speaker, m.text) for m in built.items
    ]
    assert built.items[0].history and built.items[0].history[0].op == "ADD"
    fresh = MockBackend(responder=extraction_and_manager)
    again = await llm_banks(tmp_path, fresh).whole(CONVERSATION)
    assert again.hit and fresh.calls == [] and again.items == built.items
    key = json.loads(again.path.with_suffix(".key.json").read_text())
    assert key["model"] == "mock" and key["embedder"] == "hashing:bow-256" and key["window_turns"] == "all"


def test_llm_source_needs_a_model():
    with pytest.raises(ValueError, match="bank-building model"):
        BankBuilder(BankConfig(source="llm"), embedder=HashingEmbedder())


async def test_llm_episode_extracts_the_facts_of_its_turn(tmp_path):
    backend = MockBackend(responder=extraction_and_manager)
    question = Question(question_id="c1/q0", text="Where does Bob live?", answers=("Lyon",), question_type="x")
    sample = Sample(
        sample_id="c1", conversation=CONVERSATION, questions=(question.model_copy(update={"evidence": ("D2:3",)}),)
    )
    (episode,) = await build_manager_episodes([sample], llm_banks(tmp_path, backend))
    assert episode.facts == ["Bob heard: I moved to Lyon."]  # one extraction of the turn alone, about its speaker
    assert {m.speaker for m in episode.related} == {"Bob"} and len(episode.related) == 2
    assert episode.messages()[1]["content"].endswith('["Bob heard: I moved to Lyon."]\n\nReply with the JSON object.')


# --- the real LoCoMo split --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("split", "count"), [("train", 152), ("val", 81), ("test", 1307)])
async def test_answer_examples_per_split(shared_data_dir, tmp_path, split, count):
    examples = await build_answer_examples(real(shared_data_dir, split), turns_banks(tmp_path))
    assert len(examples) == count == len({e.question_id for e in examples})
    assert all(len(e.candidate_ids) == 60 for e in examples)  # 30 per speaker: every conversation has enough turns
    assert "adversarial" not in {e.question_type for e in examples}


async def test_answer_example_prompt_is_what_the_memr1_system_sends(shared_data_dir, tmp_path):
    (sample,) = real(shared_data_dir, "train")
    banks = turns_banks(tmp_path)
    examples = await build_answer_examples([sample.model_copy(update={"questions": sample.questions[:3]})], banks)
    built = await banks.whole(sample.conversation)
    assert built.hit
    for example, question in zip(examples, sample.questions, strict=False):
        backend = MockBackend(default="**Answer:** x")
        system = answering_system(built.bank, sample.conversation.speakers, Model(backend, spec="mock"))
        prediction = await system.answer(question.to_query())
        assert backend.calls == [example.prompt]
        assert [m.id for m in prediction.retrieved or []] != [] and example.answers == list(question.answers)
    first = examples[0].prompt[1]["content"]
    assert first.startswith("Memories of Caroline:\n[1] ") and "\n\nMemories of Melanie:\n[31] " in first
    assert first.endswith("Question: When did Caroline go to the LGBTQ support group?")
    assert examples[0].to_row()["gold"] == ["7 May 2023"]


@pytest.mark.parametrize(
    ("split", "matched", "without_evidence", "naming_no_turn", "episodes"),
    [
        ("train", 150, ["conv-26/q30", "conv-26/q46"], [], 133),
        ("val", 81, [], [], 74),
        ("test", 1305, ["conv-50/q39", "conv-50/q42"], ["conv-42/q58:D10:19", "conv-47/q38:D4:36"], 1221),
    ],
)
def test_evidence_matched_to_turns(shared_data_dir, split, matched, without_evidence, naming_no_turn, episodes):
    _, match = evidence_turns(real(shared_data_dir, split))
    assert (match.matched, match.without_evidence, match.ids_naming_no_turn) == (
        matched,
        without_evidence,
        naming_no_turn,
    )
    assert match.unmatched == [] and match.episodes == episodes


async def test_train_manager_episodes(shared_data_dir, tmp_path):
    (sample,) = real(shared_data_dir, "train")
    episodes = await build_manager_episodes([sample], turns_banks(tmp_path))
    assert len(episodes) == 133
    assert len({q.question_id for e in episodes for q in e.questions}) == 150
    assert all(
        e.turn_id in next(q for q in sample.questions if q.question_id == x.question_id).evidence
        for e in episodes
        for x in e.questions
    )
    by_turn = {e.turn_id: e for e in episodes}
    # Hand-checked in locomo10.json: conv-26 qa[0], "When did Caroline go to the LGBTQ support group?" (7 May 2023),
    # evidence D1:3, Caroline at 1:56 pm on 8 May, 2023: "I went to a LGBTQ support group yesterday and it was so
    # powerful."
    first = by_turn["D1:3"]
    assert first.episode_id == "conv-26/D1:3" and first.speaker == "Caroline"
    assert first.turn_text == "I went to a LGBTQ support group yesterday and it was so powerful."
    assert first.session_date == "1:56 pm on 8 May, 2023"
    assert first.facts == ["Caroline: I went to a LGBTQ support group yesterday and it was so powerful."]
    assert [m.source_turn_ids for m in first.bank] == [["D1:1"], ["D1:2"]]
    assert "conv-26/q0" in {q.question_id for q in first.questions}
    # conv-26 qa[16], "When did Melanie sign up for a pottery class?" (2 July 2023), evidence D5:4, Melanie on 3 July
    # 2023: "... I just signed up for a pottery class yesterday. ...". Turn 80 of the conversation: its 50-turn window
    # would start at D2:12, the second turn of a pair, so it starts at D2:13 (49 turns).
    pottery = by_turn["D5:4"]
    assert pottery.speaker == "Melanie" and "I just signed up for a pottery class yesterday." in pottery.turn_text
    assert pottery.session_date == "1:36 pm on 3 July, 2023"
    assert {q.question_id for q in pottery.questions} == {"conv-26/q15", "conv-26/q16", "conv-26/q24"}
    window = [m.source_turn_ids[0] for m in pottery.bank]
    assert (len(window), window[0], window[-1]) == (49, "D2:13", "D5:3")
    assert all(m.speaker == "Melanie" for m in pottery.related) and len(pottery.related) == 5


async def test_episode_rows_round_trip(shared_data_dir, tmp_path):
    (sample,) = real(shared_data_dir, "train")
    episodes = await build_manager_episodes([sample], turns_banks(tmp_path))
    rows = [e.to_row() for e in episodes[:5]]
    assert [ManagerEpisode.from_row(row) for row in rows] == episodes[:5]
    assert rows[0]["prompt"] == episodes[0].messages() and isinstance(rows[0]["bank"], str)
    datasets = pytest.importorskip("datasets")
    table = datasets.Dataset.from_list(rows)
    assert [ManagerEpisode.from_row(row) for row in table] == episodes[:5]


# --- the sync entry points, on a tiny LoCoMo-format file ------------------------------------------------------


def test_sync_entry_points_on_a_tiny_locomo_file(tmp_path):
    conversation = {"speaker_a": "Alice", "speaker_b": "Bob", "session_1_date_time": "1 May 2023"}
    conversation["session_1"] = [{"speaker": t.speaker, "dia_id": t.turn_id, "text": t.text} for t in SESSIONS[0].turns]
    qa = [
        {"question": "What is Alice's puppy called?", "answer": "Biscuit", "evidence": ["D1:1"], "category": 4},
        {"question": "Where does Alice live?", "answer": "Porto", "evidence": ["D1:3"], "category": 4},
        {"question": "Is Bob a cat?", "adversarial_answer": "yes", "evidence": ["D1:2"], "category": 5},
    ]
    path = tmp_path / "locomo10.json"
    path.write_text(json.dumps([{"sample_id": "conv-26", "conversation": conversation, "qa": qa}]))
    data = DataOptions(data_file=str(path))
    examples = answer_agent_examples("train", turns_banks(tmp_path), data)
    assert [(e.question_id, len(e.candidate_ids)) for e in examples] == [("conv-26/q0", 3), ("conv-26/q1", 3)]
    episodes = manager_episodes("train", turns_banks(tmp_path), data)
    assert [(e.episode_id, len(e.bank), e.related_ids) for e in episodes] == [
        ("conv-26/D1:1", 0, []),
        ("conv-26/D1:3", 2, ["alice-1"]),
    ]
