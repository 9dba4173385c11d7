"""The memory bank: an ADD / UPDATE / DELETE / NOOP script gives the expected bank, history and search."""

from __future__ import annotations

import pytest

from harness.embeddings.hashing import HashingEmbedder
from systems.memory_bank import MemoryBank, MissingMemory, Operation, Provenance


def said(speaker: str, session: str, *turns: str) -> Provenance:
    return Provenance(speaker=speaker, timestamp=f"date of {session}", session_id=session, source_turn_ids=turns)


async def test_a_script_of_operations_gives_the_expected_bank():
    bank = MemoryBank(HashingEmbedder())
    script = [
        (Operation(event="ADD", text="Alice has a puppy named Biscuit"), said("Alice", "s1", "D1:1", "D1:2")),
        (Operation(event="ADD", text="Bob plays the violin"), said("Bob", "s1", "D1:1", "D1:2")),
        (Operation(event="ADD", text="Alice lives in Porto"), said("Alice", "s1", "D1:3")),
        (Operation(event="NOOP"), said("Alice", "s2", "D2:1")),
        (
            Operation(event="UPDATE", id="alice-1", text="Alice's puppy Biscuit loves the beach", old_memory="x"),
            said("Alice", "s2", "D2:1", "D1:2"),
        ),
        (Operation(event="DELETE", id="bob-1"), said("Bob", "s2", "D2:2")),
    ]
    changes = [await bank.apply(operation, provenance) for operation, provenance in script]

    assert [c.event if c else None for c in changes] == ["ADD", "ADD", "ADD", None, "UPDATE", "DELETE"]
    assert [c.memory_id for c in changes if c] == ["alice-1", "bob-1", "alice-2", "alice-1", "bob-1"]
    dump = bank.dump()
    assert [(m.id, m.speaker, m.text) for m in dump] == [
        ("alice-1", "Alice", "Alice's puppy Biscuit loves the beach"),
        ("alice-2", "Alice", "Alice lives in Porto"),
    ]
    updated = dump[0]
    assert updated.source_turn_ids == ["D1:1", "D1:2", "D2:1"]  # merged, without repeats
    assert updated.timestamp == "date of s2"  # the session that last wrote it
    assert [e.op for e in updated.history] == ["ADD", "UPDATE"]
    assert updated.history[1].previous_text == "Alice has a puppy named Biscuit"
    assert updated.history[1].session_id == "s2" and updated.history[1].source_turn_ids == ["D2:1", "D1:2"]
    assert changes[5] is not None and changes[5].before is not None
    assert changes[5].before.text == "Bob plays the violin" and changes[5].after is None
    assert len(bank) == 2 and "bob-1" not in bank


async def test_search_is_per_speaker_and_forgets_deleted_and_replaced_texts():
    bank = MemoryBank(HashingEmbedder())
    await bank.apply(Operation(event="ADD", text="Alice plays the violin"), said("Alice", "s1", "D1:1"))
    await bank.apply(Operation(event="ADD", text="Bob plays the violin"), said("Bob", "s1", "D1:2"))
    await bank.apply(Operation(event="ADD", text="Alice likes tea"), said("Alice", "s1", "D1:3"))

    alice = await bank.search("who plays the violin", k=5, speaker="Alice")
    assert [m.id for m in alice] == ["alice-1", "alice-2"]
    assert alice[0].score is not None and alice[0].score > (alice[1].score or 0)
    assert alice[0].history == [] and alice[0].source_turn_ids == ["D1:1"]
    assert [m.id for m in await bank.search("violin", k=1, speaker="Bob")] == ["bob-1"]
    assert {m.id for m in await bank.search("violin", k=5, all_speakers=True)} == {"alice-1", "bob-1", "alice-2"}
    assert await bank.search("violin", k=5, speaker="Carol") == []

    await bank.apply(Operation(event="DELETE", id="alice-1"), said("Alice", "s2", "D2:1"))
    await bank.apply(
        Operation(event="UPDATE", id="alice-2", text="Alice drinks coffee now"), said("Alice", "s2", "D2:2")
    )
    found = await bank.search("violin tea", k=5, speaker="Alice")
    assert [(m.id, m.text) for m in found] == [("alice-2", "Alice drinks coffee now")]


async def test_operations_on_missing_ids_or_without_text_raise_for_the_caller_to_record():
    bank = MemoryBank(HashingEmbedder())
    with pytest.raises(MissingMemory):
        await bank.apply(Operation(event="UPDATE", id="m9", text="x"), said("Alice", "s1"))
    with pytest.raises(MissingMemory):
        await bank.apply(Operation(event="DELETE", id=None), said("Alice", "s1"))
    with pytest.raises(ValueError, match="without text"):
        await bank.apply(Operation(event="ADD", text="  "), said("Alice", "s1"))
    assert bank.dump() == []
