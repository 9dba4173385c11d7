"""The extraction and update (Memory Manager) contracts: prompts with small ids, and tolerant parsers whose
every malformed reply becomes a recorded NOOP."""

from __future__ import annotations

import json

import pytest

from harness.types import MemoryItem, Turn
from systems.memory_ops import (
    Operation,
    build_extraction_messages,
    build_manager_messages,
    load_json_reply,
    manager_schema,
    parse_extraction_reply,
    parse_manager_reply,
)

NOOP = Operation(event="NOOP")
ID_MAP = {"0": "m7", "1": "m12"}


def related() -> list[MemoryItem]:
    return [MemoryItem(id="m7", text="Ann likes tea"), MemoryItem(id="m12", text="Ann lives in Oslo")]


def test_manager_prompt_shows_small_ids_only_and_the_reply_maps_back_to_bank_ids():
    messages, id_map = build_manager_messages(["Ann moved to Bergen"], related())

    assert id_map == ID_MAP
    user = messages[-1]["content"]
    assert '{"id": "0", "text": "Ann likes tea"}' in user and '{"id": "1", "text": "Ann lives in Oslo"}' in user
    assert "m7" not in user and "m12" not in user
    assert '["Ann moved to Bergen"]' in user
    reply = json.dumps(
        {
            "memory": [
                {"id": "1", "text": "Ann lives in Bergen", "event": "UPDATE", "old_memory": "Ann lives in Oslo"},
                {"id": "0", "text": "Ann likes tea", "event": "NONE"},
                {"id": "new", "text": "Ann moved in May", "event": "ADD"},
            ]
        }
    )
    decision = parse_manager_reply(reply, id_map)

    assert decision.invalid == []
    assert decision.operations == [
        Operation(event="UPDATE", id="m12", text="Ann lives in Bergen", old_memory="Ann lives in Oslo"),
        NOOP,
        Operation(event="ADD", text="Ann moved in May"),
    ]


def test_manager_prompt_with_no_related_memories_lists_an_empty_bank():
    messages, id_map = build_manager_messages(["Ann has a cat"], [])
    assert id_map == {}
    assert "Existing memories:\n[]" in messages[-1]["content"]


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        ("I think we should add it", "invalid JSON"),
        ('{"memory": [{"id": "0", "event": "ADD", "text": "x"', "invalid JSON"),
        ('{"facts": ["x"]}', "no 'memory' list"),
        ('{"memory": [{"id": "5", "text": "x", "event": "UPDATE"}]}', "UPDATE of unknown id '5'"),
        ('{"memory": [{"id": "m7", "event": "DELETE"}]}', "DELETE of unknown id 'm7'"),  # real ids are not shown
        ('{"memory": [{"id": "0", "text": "x", "event": "MERGE"}]}', "unknown event 'MERGE'"),
        ('{"memory": [{"id": "0", "event": "UPDATE"}]}', "UPDATE without text"),
        ('{"memory": [{"event": "ADD", "text": ""}]}', "ADD without text"),
        ('{"memory": ["ADD Ann likes tea"]}', "not a JSON object"),
    ],
)
def test_a_malformed_manager_reply_is_a_recorded_noop(reply, reason):
    decision = parse_manager_reply(reply, ID_MAP)
    assert decision.operations == [NOOP]
    assert len(decision.invalid) == 1 and reason in decision.invalid[0]


def test_only_the_malformed_operations_of_a_reply_become_noops():
    reply = '{"memory": [{"id": "9", "event": "DELETE"}, {"id": "0", "event": "DELETE"}]}'
    decision = parse_manager_reply(reply, ID_MAP)
    assert decision.operations == [NOOP, Operation(event="DELETE", id="m7")]
    assert decision.invalid == ["DELETE of unknown id '9'"]


@pytest.mark.parametrize(
    "reply",
    [
        '```json\n{"memory": [{"id": "0", "event": "delete"}]}\n```',
        'Here is my decision:\n{"memory": [{"id": 0, "event": "DELETE"}]}\nDone.',
        '[{"id": "0", "event": "DELETE"}]',
        '{"id": "0", "event": "DELETE", "text": ""}',
    ],
)
def test_fenced_wrapped_bare_and_numeric_forms_are_accepted(reply):
    decision = parse_manager_reply(reply, ID_MAP)
    assert decision.invalid == []
    assert decision.operations == [Operation(event="DELETE", id="m7")]


@pytest.mark.parametrize("reply", ['{"memory": []}', '{"memory": [{"event": "NOOP"}]}', '{"event": "NONE"}'])
def test_nothing_to_do_is_one_valid_noop(reply):
    decision = parse_manager_reply(reply, ID_MAP)
    assert decision.operations == [NOOP] and decision.invalid == []


def test_extraction_prompt_names_the_speaker_and_the_session_date():
    turns = [Turn(turn_id="D1:1", speaker="Ann", text="I got a cat."), Turn(turn_id="D1:2", speaker="Bo", text="Nice!")]
    messages = build_extraction_messages(turns, "Ann", "8 May 2023")
    user = messages[-1]["content"]
    assert "Session date: 8 May 2023" in user and "Ann: I got a cat.\nBo: Nice!" in user
    assert user.endswith("Facts about Ann (JSON):")
    # the system text is the same for every speaker, so local engines reuse its cached prefix
    assert messages[0] == build_extraction_messages(turns, "Bo", None)[0]


@pytest.mark.parametrize(
    ("reply", "facts", "invalid"),
    [
        ('{"facts": ["Ann got a cat", " Ann got a cat ", ""]}', ["Ann got a cat"], None),
        ('```json\n{"facts": []}\n```', [], None),
        ('["Ann got a cat"]', ["Ann got a cat"], None),
        ("Ann got a cat.", [], "invalid JSON"),
        ('{"facts": "Ann got a cat"}', [], "no 'facts' list"),
        ('{"facts": [{"fact": "Ann got a cat"}]}', [], "not a string"),
    ],
)
def test_extraction_parser(reply, facts, invalid):
    parsed = parse_extraction_reply(reply)
    assert parsed.facts == facts
    assert (parsed.invalid is None) if invalid is None else (invalid in (parsed.invalid or ""))


def test_load_json_reply_raises_when_nothing_parses():
    assert load_json_reply('noise {"a": 1} noise') == {"a": 1}
    with pytest.raises(ValueError):
        load_json_reply("{not json}")


def test_manager_schema_ties_each_event_to_the_ids_it_may_name():
    schema = manager_schema(["0", "1"], 2)

    def reply(*operations: tuple[str, str]) -> str:
        return json.dumps({"memory": [{"event": e, "id": i, "text": "Ann lives in Bergen"} for e, i in operations]})

    assert schema.errors(reply(("ADD", "new"), ("UPDATE", "1"))) == []
    assert schema.errors(reply(("ADD", "new"), ("NONE", "0"))) == []
    assert schema.errors(reply(("UPDATE", "new"), ("ADD", "new")))  # an UPDATE must name a shown memory
    assert schema.errors(reply(("ADD", "0"), ("ADD", "new")))  # an ADD names "new"
    assert schema.errors(reply(("DELETE", "7"), ("ADD", "new")))  # an id that was never shown
    assert schema.errors(reply(("ADD", "new")))  # one operation per new fact
    long_text = json.dumps({"memory": [{"event": "ADD", "id": "new", "text": "x" * 201}]})
    assert manager_schema([], 1).errors(long_text) == ["$.memory[0].text: longer than 200 characters"]
    empty_bank = manager_schema([], 1)
    assert empty_bank.errors(json.dumps({"memory": [{"event": "NONE", "id": "new", "text": ""}]})) == []
    assert empty_bank.errors(json.dumps({"memory": [{"event": "UPDATE", "id": "new", "text": "x"}]}))
