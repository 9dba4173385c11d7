"""mem0: per-pair, per-speaker extraction; one update decision per fact; answers from 30 memories per speaker."""

from __future__ import annotations

import asyncio
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
        return json.dumps({"memory": [{"event": "UPDATE", "id": biscuit[0], "text": text}]})
    if "quit" in fact and violin:
        return json.dumps({"memory": [{"event": "DELETE", "id": violin[0], "text": ""}]})
    return json.dumps({"memory": [{"event": "ADD", "id": "new", "text": fact}]})


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
        ("alice-1", "Alice", "Alice has a puppy named Biscuit who loves the beach"),
        ("alice-2", "Alice", "Alice lives in Porto"),
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
    backend = MockBackend(
        responder=responder(broken_manager_for="Porto", broken_extraction_for="beach"), validate_schema=False
    )
    system = build(backend)
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
    assert prediction.retrieved is not None and prediction.retrieved[0].id == "alice-1"
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
    by_speaker = sorted((t for s in SESSIONS for t in s.turns), key=lambda t: t.speaker)  # dump(): per speaker
    assert [m.text for m in memories] == [f"{t.speaker}: {t.text}" for t in by_speaker]
    assert [(m.speaker, m.timestamp, m.source_turn_ids) for m in memories[::3]] == [
        ("Alice", "1 May 2023", ["D1:1"]),
        ("Bob", "1 May 2023", ["D1:2"]),
    ]
    assert system.memory_stats()["ADD"] == 5


class TimedBackend(MockBackend):
    """The scripted replies after a short wait, recording when each kind of call starts and ends."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.events: list[tuple[str, str]] = []
        self.in_flight = {"extraction": 0, "manager": 0}
        self.peak = {"extraction": 0, "manager": 0}

    async def generate(self, messages, config):  # type: ignore[no-untyped-def]
        kind = "extraction" if messages[0]["content"] == EXTRACTION_INSTRUCTIONS else "manager"
        self.in_flight[kind] += 1
        self.peak[kind] = max(self.peak[kind], self.in_flight[kind])
        self.events.append((kind, "start"))
        await asyncio.sleep(0.01)
        self.in_flight[kind] -= 1
        self.events.append((kind, "end"))
        return await super().generate(messages, config)


def bank_by_speaker(system: Mem0System) -> dict[str | None, list[tuple[str, str, list[str]]]]:
    banks: dict[str | None, list[tuple[str, str, list[str]]]] = {}
    for item in system.memory_dump():
        banks.setdefault(item.speaker, []).append((item.id, item.text, item.source_turn_ids))
    return banks


async def test_whole_history_ingestion_overlaps_the_speakers_and_runs_extraction_ahead():
    concurrent = TimedBackend(responder=responder())
    system = build(concurrent)
    usage = await system.ingest_history(SESSIONS)

    reference = build(MockBackend(responder=responder()))
    await ingest_all(reference)  # one session at a time
    assert bank_by_speaker(system) == bank_by_speaker(reference)
    assert system.memory_stats() == reference.memory_stats()
    assert concurrent.peak["manager"] == 2, "the two speakers' update chains ran side by side"
    last_extraction_start = max(i for i, event in enumerate(concurrent.events) if event == ("extraction", "start"))
    assert last_extraction_start < concurrent.events.index(("manager", "end")), (
        "the second session's extraction did not wait for the first session's updates"
    )
    assert usage["ingest"].calls == 5 + 5


async def test_one_manager_call_per_unit_with_all_its_facts():
    backend = MockBackend(responder=lambda messages: many_facts_reply(messages))
    system = build(backend, manager_unit="turn")
    await system.ingest_history(SESSIONS[:1])
    manager_prompts = [m[-1]["content"] for m in backend.calls if m[0]["content"] == MANAGER_INSTRUCTIONS]
    assert len(manager_prompts) == 3  # (D1:1, D1:2) for Alice and for Bob, (D1:3) for Alice
    assert '["Alice fact 1", "Alice fact 2"]' in manager_prompts[0]
    schemas = [c.json_schema.schema for c in backend.configs if c.json_schema and c.json_schema.name != "facts"]
    assert [s["properties"]["memory"]["minItems"] for s in schemas] == [2, 2, 2]
    assert {item.text for item in system.memory_dump()} == {"Alice fact 1", "Alice fact 2", "Bob fact 1", "Bob fact 2"}
    assert system.memory_stats()["manager_calls"] == 3


def many_facts_reply(messages: list[Message]) -> str:
    """Two facts per speaker and unit; the manager ADDs every fact it is shown."""
    system, user = messages[0]["content"], messages[-1]["content"]
    if system == EXTRACTION_INSTRUCTIONS:
        speaker = re.search(r"Facts about (.+) \(JSON\):", user).group(1)
        return json.dumps({"facts": [f"{speaker} fact 1", f"{speaker} fact 2"]})
    facts = json.loads(user.split("New facts:\n", 1)[1].split("\n\n", 1)[0])
    return json.dumps({"memory": [{"event": "ADD", "id": "new", "text": fact} for fact in facts]})


async def test_session_extraction_unit_reads_a_whole_session_per_speaker():
    backend = MockBackend(responder=many_facts_reply)
    system = build(backend, extraction_unit="session")
    await system.ingest_history(SESSIONS)
    extraction_prompts = [m[-1]["content"] for m in backend.calls if m[0]["content"] == EXTRACTION_INSTRUCTIONS]
    assert len(extraction_prompts) == 4  # two sessions, two speakers each
    assert "I adopted a puppy" in extraction_prompts[0] and "I live in Porto" in extraction_prompts[0]
    alice = [item for item in system.memory_dump() if item.speaker == "Alice"]
    assert alice[0].source_turn_ids == ["D1:1", "D1:2", "D1:3"]


async def test_schema_options_reach_the_extraction_call_and_structured_false_sends_none():
    backend = MockBackend(responder=responder())
    await build(backend, min_facts="1", max_facts="3", max_fact_chars="40").ingest_history(SESSIONS[:1])
    facts_schema = backend.configs[0].json_schema
    assert facts_schema is not None and facts_schema.schema["properties"]["facts"] == {
        "type": "array",
        "items": {"type": "string", "maxLength": 40},
        "minItems": 1,
        "maxItems": 3,
    }
    assert backend.configs[0].max_tokens >= 3 * 40 // 4, "room for the longest reply the schema allows"
    plain = MockBackend(responder=responder())
    await build(plain, structured="false").ingest_history(SESSIONS[:1])
    assert all(c.json_schema is None and c.json_mode for c in plain.configs)


async def test_snapshot_round_trip_gives_the_same_searchable_bank():
    system = build(MockBackend(responder=responder()))
    await system.ingest_history(SESSIONS)
    payload = json.loads(json.dumps(system.snapshot()))
    restored = build(MockBackend())
    restored.restore(payload)
    assert bank_by_speaker(restored) == bank_by_speaker(system)
    assert restored.memory_stats() == system.memory_stats()
    hits = await restored.bank.search("puppy Biscuit beach", 1, "Alice")
    assert [h.id for h in hits] == ["alice-1"]
    provenance = Provenance(speaker="Alice", timestamp="d", session_id="s3", source_turn_ids=("D3:1",))
    change = await restored.bank.apply(Operation(event="ADD", text="Alice got a cat"), provenance)
    assert change is not None and change.memory_id == "alice-3", "numbering goes on after the restored ids"
    with pytest.raises(ValidationError):
        restored.restore({"items": "nope"})


async def test_speakers_option_keeps_the_memories_of_those_speakers_only():
    backend = MockBackend(responder=responder(answer="Biscuit"))
    system = build(backend, speakers="Alice")
    await system.ingest_history(SESSIONS)
    prompts = [m[-1]["content"] for m in backend.calls if m[0]["content"] == EXTRACTION_INSTRUCTIONS]
    assert prompts and all(p.endswith("Facts about Alice (JSON):") for p in prompts)
    assert {item.speaker for item in system.memory_dump()} == {"Alice"}
    await system.answer(Query(question_id="q", text="Puppy?"))
    assert "Memories of Bob" not in backend.calls[-1][-1]["content"]
