"""memr1: the Memory Manager on its own role, and the Answer Agent's distillation prompt and parser."""

from __future__ import annotations

import json

import pytest

from harness.embeddings.hashing import HashingEmbedder
from harness.llm import Message, Model
from harness.llm.providers.mock import MockBackend
from harness.system import SystemContext
from harness.types import MemoryItem, Query, Session, Turn
from systems.memory_bank import Operation, Provenance
from systems.memr1 import build_answer_agent_messages, parse_answer_agent_reply
from systems.memr1.system import MemR1System

CANDIDATES = [
    MemoryItem(id="m4", text="Alice adopted a puppy named Biscuit", timestamp="1 May 2023", speaker="Alice"),
    MemoryItem(id="m9", text="Alice lives in Porto", timestamp="1 May 2023", speaker="Alice"),
    MemoryItem(id="m2", text="Bob plays the violin", timestamp="2 May 2023", speaker="Bob"),
]


def test_answer_agent_prompt_numbers_the_candidates_under_speaker_headers_question_last():
    messages = build_answer_agent_messages(CANDIDATES, Query(question_id="q", text="Who has a puppy?", date="D"))
    user = messages[-1]["content"]
    assert user.startswith(
        "Memories of Alice:\n[1] 1 May 2023: Alice adopted a puppy named Biscuit\n[2] 1 May 2023: Alice lives in Porto"
        "\n\nMemories of Bob:\n[3] 2 May 2023: Bob plays the violin\n\nQuestion: Who has a puppy?"
    )
    assert user.endswith("The question is asked on D.")
    assert "**Answer:**" in messages[0]["content"]


@pytest.mark.parametrize(
    ("reply", "answer", "distilled", "marker_found"),
    [
        ("- [1] 1 May 2023: Alice adopted a puppy named Biscuit\n**Answer:** Biscuit", "Biscuit", ["m4"], True),
        ("Selected:\n- [3]\n- [1]\n- [3] again\n\n**Answer:**\nBiscuit\n", "Biscuit", ["m2", "m4"], True),
        ("[2] Alice lives in Porto\n**answer**: Porto", "Porto", ["m9"], True),
        ("1. Alice lives in Porto\n2. 3\n**Answer:** Porto", "Porto", ["m9", "m2"], True),
        ("- none\n**Answer:** Not mentioned", "Not mentioned", [], True),
        ("**Answer:** Biscuit", "Biscuit", [], True),
        # no marker: the last non-empty line is the answer, the lines before are still read as selections
        ("- [1]\nAlice's puppy is Biscuit\n\n", "Alice's puppy is Biscuit", ["m4"], False),
        ("Answer: Biscuit", "Biscuit", [], False),
        ("", "", [], False),
    ],
)
def test_distillation_parser(reply, answer, distilled, marker_found):
    parsed = parse_answer_agent_reply(reply, CANDIDATES)
    assert (parsed.answer, parsed.distilled, parsed.marker_found) == (answer, distilled, marker_found)


def test_selections_that_name_no_candidate_are_kept_apart():
    parsed = parse_answer_agent_reply("- [7]\n- Alice has a cat\n- [2]\n**Answer:** Porto", CANDIDATES)
    assert parsed.distilled == ["m9"]
    assert parsed.unmatched == ["[7]", "Alice has a cat"]


SESSION = Session(
    session_id="s1",
    date="1 May 2023",
    turns=(
        Turn(turn_id="D1:1", speaker="Alice", text="I adopted a puppy named Biscuit."),
        Turn(turn_id="D1:2", speaker="Bob", text="Cute! I play the violin."),
    ),
)


def extraction(messages: list[Message]) -> str:
    if messages[-1]["content"].endswith("Facts about Alice (JSON):"):
        return json.dumps({"facts": ["Alice adopted a puppy named Biscuit"]})
    return json.dumps({"facts": ["Bob plays the violin", "Bob likes puppies"]})


def manager(messages: list[Message]) -> str:
    """One operation per new fact: ADD, except an UPDATE of an id that was never shown for "likes puppies"."""
    facts = json.loads(messages[-1]["content"].split("New facts:\n", 1)[1].split("\n\n", 1)[0])
    bad = {"event": "UPDATE", "id": "3", "text": "x"}
    operations = [bad if "likes puppies" in f else {"event": "ADD", "id": "new", "text": f} for f in facts]
    return json.dumps({"memory": operations})


def build(answer_backend: MockBackend, manager_backend: MockBackend, memory_backend: MockBackend) -> MemR1System:
    roles = {
        "model": Model(MockBackend(default="the model role must not be used"), spec="mock"),
        "memory": Model(memory_backend, spec="mock"),
        "manager": Model(manager_backend, spec="mock"),
        "answer": Model(answer_backend, spec="mock"),
    }
    context = SystemContext(roles=roles, speakers=("Alice", "Bob"), embedder_factory=HashingEmbedder)
    return MemR1System(context)


async def test_ingest_and_answer_use_their_own_roles_and_record_the_distillation():
    memory = MockBackend(responder=extraction)
    manager_backend = MockBackend(responder=manager, validate_schema=False)  # its id "3" is outside the schema
    answer = MockBackend(default="- [1] Alice adopted a puppy named Biscuit\n**Answer:** Biscuit")
    system = build(answer, manager_backend, memory)

    await system.ingest(SESSION)
    prediction = await system.answer(Query(question_id="q", text="What is the name of Alice's puppy?"))

    # Memory-R1's algorithm: one manager call per extraction unit, with all its facts
    assert len(memory.calls) == 2 and len(manager_backend.calls) == 2 and len(answer.calls) == 1
    assert '["Bob plays the violin", "Bob likes puppies"]' in manager_backend.calls[1][-1]["content"]
    assert [(m.id, m.speaker, m.text) for m in system.memory_dump()] == [
        ("alice-1", "Alice", "Alice adopted a puppy named Biscuit"),
        ("bob-1", "Bob", "Bob plays the violin"),
    ]
    stats = system.memory_stats()
    assert (stats["ADD"], stats["NOOP"], stats["invalid_manager_output"], stats["facts_extracted"]) == (2, 1, 1, 3)
    assert prediction.answer == "Biscuit"
    assert prediction.metadata["distilled"] == ["alice-1"] and prediction.metadata["marker_found"] is True
    assert prediction.retrieved is not None and {m.id for m in prediction.retrieved} == {"alice-1", "bob-1"}
    assert "[1] 1 May 2023: Alice adopted a puppy named Biscuit" in answer.calls[0][-1]["content"]


async def test_a_reply_without_marker_is_answered_by_its_last_line_and_flagged():
    system = build(MockBackend(default="I think it is\nBiscuit"), MockBackend(), MockBackend())
    prediction = await system.answer(Query(question_id="q", text="Puppy?"))
    assert prediction.answer == "Biscuit" and prediction.metadata["marker_found"] is False


async def test_the_answer_agent_gets_30_candidates_per_speaker():
    answer = MockBackend(default="- [31]\n**Answer:** city 3")
    system = build(answer, MockBackend(), MockBackend())
    for speaker in ("Alice", "Bob"):
        for n in range(35):
            provenance = Provenance(speaker=speaker, timestamp="day 2", session_id="s1", source_turn_ids=(f"D1:{n}",))
            await system.bank.apply(Operation(event="ADD", text=f"{speaker} visited city {n}"), provenance)

    prediction = await system.answer(Query(question_id="q", text="Which city did Bob visit?"))

    prompt = answer.calls[0][-1]["content"]
    assert prompt.count("day 2: Alice visited") == 30 and prompt.count("day 2: Bob visited") == 30
    assert "[60] day 2:" in prompt and "[61]" not in prompt
    assert prompt.index("Memories of Alice:") < prompt.index("[30]") < prompt.index("Memories of Bob:\n[31]")
    assert prediction.retrieved is not None and len(prediction.retrieved) == 60
    (chosen,) = prediction.metadata["distilled"]
    assert system.bank.get(chosen).speaker == "Bob"
