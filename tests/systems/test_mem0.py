"""mem0: per-pair, per-speaker extraction; one update decision per fact; answers from 30 memories per speaker."""

from __future__ import annotations

import json
import re

import pytest
from pydantic import ValidationError

from harness.embeddings.hashing import HashingEmbedder
from harness.llm import Message, Model
from harness.llm.providers.mock import MockBackend
from harness.system import SystemContext
from harness.types import Query, Session, Turn
from systems.mem0 import Mem0System, message_pairs
from systems.memory_bank import Operation, Provenance
from systems.memory_ops import EXTRACTION_INSTRUCTIONS, MANAGER_INSTRUCTIONS

SESSIONS = [
    Session(
        session_id="s1",
        date="1 May 2023",
        turns=(
            Turn(turn_id="D1:1", speaker="Alice", text="I adopted a puppy named Biscuit."),
            Turn(turn_id="D1:2", speaker="Bob", text="I play the violin."),
            Turn(turn_id="D1:3", speaker="Alice", text="I live in Porto."),
        ),
    ),
    Session(
        session_id="s2",
        date="9 June 2023",
        turns=(
            Turn(turn_id="D2:1", speaker="Alice", text="Biscuit loves the beach now."),
            Turn(turn_id="D2:2", speaker="Bob", text="I quit the violin."),
        ),
    ),
]
FACTS = {  # (speaker, first line of the pair) -> facts
    ("Alice", "Alice: I adopted a puppy named Biscuit."): ["Alice adopted a puppy named Biscuit"],
    ("Bob", "Alice: I adopted a puppy named Biscuit."): ["Bob plays the violin"],
    ("Alice", "Alice: I live in Porto."): ["Alice lives in Porto"],
    ("Alice", "Alice: Biscuit loves the beach now."): ["Alice's puppy Biscuit loves the beach"],
    ("Bob", "Alice: Biscuit loves the beach now."): ["Bob quit the violin"],
}


def manager_reply(existing: list[dict[str, str]], fact: str) -> str:
    """UPDATE the Biscuit memory, DELETE the violin memory, ADD anything else."""
    biscuit = [m["id"] for m in existing if "Biscuit" in m["text"]]
    violin = [m["id"] for m in existing if "violin" in m["text"]]
    if "beach" in fact and biscuit:
        text = "Alice has a puppy named Biscuit who loves the beach"
        return json.dumps({"memory": [{"id": biscuit[0], "text": text, "event": "UPDATE"}]})
    if "quit" in fact and violin:
        return json.dumps({"memory": [{"id": violin[0], "event": "DELETE"}]})
    return json.dumps({"memory": [{"id": "new", "text": fact, "event": "ADD"}]})


def responder(answer: str = "Biscuit", broken_manager_for: str = "", broken_extraction_for: str = ""):
    def respond(messages: list[Message]) -> str:
        system, user = messages[0]["content"], messages[-1]["content"]
        if system == EXTRACTION_INSTRUCTIONS:
            speaker = re.search(r"Facts about (.+) \(JSON\):", user).group(1)
            first_line = user.split("Conversation:\n", 1)[1].split("\n", 1)[0]
            if broken_extraction_for and broken_extraction_for in first_line and speaker == "Alice":
                return "Alice has a puppy."
            return json.dumps({"facts": FACTS.get((speaker, first_line), [])})
        if system == MANAGER_INSTRUCTIONS:
            existing = json.loads(user.split("Existing memories:\n", 1)[1].split("\n\nNew facts:", 1)[0])
            fact = json.loads(user.split("New facts:\n", 1)[1].split("\n\n", 1)[0])[0]
            return "ADD it!" if broken_manager_for and broken_manager_for in fact else manager_reply(existing, fact)
        return answer

    return respond


def build(backend: MockBackend, **options: str) -> Mem0System:
    context = SystemContext(
        roles={"model": Model(backend, spec="mock")},
        speakers=("Alice", "Bob"),
        embedder_factory=HashingEmbedder,
    )
    return Mem0System(context, **options)


async def ingest_all(system: Mem0System) -> None:
    for session in SESSIONS:
        usage = await system.ingest(session)
        assert usage["ingest"].calls > 0


def test_message_pairs_are_consecutive_turns():
    pairs = message_pairs(SESSIONS[0].turns)
    assert [[t.turn_id for t in pair] for pair in pairs] == [["D1:1", "D1:2"], ["D1:3"]]


async def test_ingest_extracts_per_speaker_and_applies_one_decision_per_fact():
    backend = MockBackend(responder=responder())
    system = build(backend)
    await ingest_all(system)

    dump = system.memory_dump()
    assert [(m.id, m.speaker, m.text) for m in dump] == [
        ("m1", "Alice", "Alice has a puppy named Biscuit who loves the beach"),
        ("m3", "Alice", "Alice lives in Porto"),
    ]
    assert dump[0].source_turn_ids == ["D1:1", "D1:2", "D2:1", "D2:2"]
    assert dump[0].timestamp == "9 June 2023"
    assert [e.op for e in dump[0].history] == ["ADD", "UPDATE"]
    assert dump[1].source_turn_ids == ["D1:3"] and dump[1].timestamp == "1 May 2023"
    assert system.memory_stats() == {
        "ADD": 3,
        "UPDATE": 1,
        "DELETE": 1,
        "NOOP": 0,
        "invalid_manager_output": 0,
        "facts_extracted": 5,
        "memories": 2,
        "extraction_calls": 5,
        "invalid_extraction_output": 0,
        "manager_calls": 5,
    }
    # Bob's facts were decided against Bob's memories only
    bob_manager_prompts = [m[-1]["content"] for m in backend.calls if "Bob quit" in m[-1]["content"]]
    assert "Bob plays the violin" in bob_manager_prompts[0] and "Biscuit" not in bob_manager_prompts[0]


async def test_usage_counts_every_call_of_a_session():
    system = build(MockBackend(responder=responder()))
    usage = await system.ingest(SESSIONS[0])
    assert usage["ingest"].calls == 3 + 3  # three extractions (Alice, Bob; Alice), three facts decided
    assert usage["ingest_search"].calls == 3


async def test_malformed_replies_are_counted_recorded_and_change_nothing():
    system = build(MockBackend(responder=responder(broken_manager_for="Porto", broken_extraction_for="beach")))
    await ingest_all(system)

    assert [m.text for m in system.memory_dump()] == ["Alice adopted a puppy named Biscuit"]
    stats = system.memory_stats()
    assert stats["invalid_manager_output"] == 1 and stats["invalid_extraction_output"] == 1
    assert stats["NOOP"] == 1 and stats["ADD"] == 2 and stats["DELETE"] == 1
    assert stats["facts_extracted"] == 4
    steps = {(o.step, o.source_turn_ids) for o in system.invalid_outputs}
    assert steps == {("manager", ("D1:3",)), ("extraction", ("D2:1", "D2:2"))}
    manager_failure = next(o for o in system.invalid_outputs if o.step == "manager")
    assert manager_failure.fact == "Alice lives in Porto" and manager_failure.reply == "ADD it!"


async def test_answer_shows_dated_memories_grouped_by_speaker_then_the_question():
    backend = MockBackend(responder=responder(answer="Answer: Biscuit"))
    system = build(backend)
    await ingest_all(system)

    prediction = await system.answer(Query(question_id="q1", text="What is the name of Alice's puppy?"))

    prompt = backend.calls[-1][-1]["content"]
    assert "Memories of Alice:\n9 June 2023: Alice has a puppy named Biscuit who loves the beach" in prompt
    assert "1 May 2023: Alice lives in Porto" in prompt
    assert "Memories of Bob:\n(none)" in prompt
    assert prompt.index("Memories of Alice") < prompt.index("Question: What is the name")
    assert prediction.answer == "Biscuit"
    assert prediction.retrieved is not None and prediction.retrieved[0].id == "m1"
    assert prediction.retrieved[0].source_turn_ids == ["D1:1", "D1:2", "D2:1", "D2:2"]
    assert prediction.usage["search"].calls == 1 and prediction.usage["answer"].calls == 1


async def test_answer_takes_the_top_memories_of_each_speaker():
    backend = MockBackend(default="Paris")
    system = build(backend)
    for speaker in ("Alice", "Bob"):
        for n in range(40):
            provenance = Provenance(speaker=speaker, timestamp="day 1", session_id="s1", source_turn_ids=(f"D1:{n}",))
            await system.bank.apply(Operation(event="ADD", text=f"{speaker} visited city {n}"), provenance)

    prediction = await system.answer(Query(question_id="q", text="Which city did Alice visit?"))

    assert prediction.retrieved is not None and len(prediction.retrieved) == 60
    assert sum(m.speaker == "Alice" for m in prediction.retrieved) == 30
    prompt = backend.calls[-1][-1]["content"]
    assert prompt.count("day 1: Alice visited") == 30 and prompt.count("day 1: Bob visited") == 30


async def test_options_are_coerced_from_strings_and_validated():
    system = build(MockBackend(), top_k_related="3", memories_per_speaker="10")
    assert system.options.top_k_related == 3 and system.options.memories_per_speaker == 10
    with pytest.raises(ValidationError):
        build(MockBackend(), top_k="3")


async def test_turns_source_keeps_one_dated_memory_per_turn_without_any_llm_call():
    backend = MockBackend(responder=responder())
    system = build(backend, memory_source="turns")
    for session in SESSIONS:
        assert await system.ingest(session) == {}
    memories = system.memory_dump()
    assert backend.calls == []
    assert [m.text for m in memories] == [f"{t.speaker}: {t.text}" for s in SESSIONS for t in s.turns]
    assert [(m.speaker, m.timestamp, m.source_turn_ids) for m in memories[:2]] == [
        ("Alice", "1 May 2023", ["D1:1"]),
        ("Bob", "1 May 2023", ["D1:2"]),
    ]
    assert system.memory_stats()["ADD"] == 5
