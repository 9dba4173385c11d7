"""full-context: the prompt holds the history (most recent sessions when it must truncate), question last."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from harness.llm import Model
from harness.llm.providers.mock import MockBackend
from harness.system import SystemContext
from harness.types import Query, Session, Turn
from systems.full_context import FullContextSystem
from systems.prompts import clean_short_answer


def session(index: int, words: int) -> Session:
    text = " ".join(f"w{index}x{j}" for j in range(words))
    return Session(
        session_id=f"s{index}", date=f"day {index}", turns=(Turn(turn_id=f"D{index}:1", speaker="Ann", text=text),)
    )


async def build(backend: MockBackend, sessions: list[Session], **options: str) -> FullContextSystem:
    system = FullContextSystem(SystemContext(roles={"model": Model(backend, spec="mock")}), **options)
    for s in sessions:
        assert await system.ingest(s) == {}
    return system


async def test_whole_history_in_date_order_with_the_question_last():
    backend = MockBackend(replies=["Answer: Paris\nbecause..."])
    system = await build(backend, [session(1, 5), session(2, 5)])

    prediction = await system.answer(Query(question_id="q", text="Where?", date="day 3"))

    prompt = backend.calls[0][-1]["content"]
    assert prompt.index("[s1, day 1]") < prompt.index("[s2, day 2]") < prompt.index("Question: Where?")
    assert prompt.rstrip().endswith("Answer:")
    assert "asked on day 3" in prompt
    assert prediction.answer == "Paris"
    assert prediction.metadata["sessions_dropped"] == 0
    assert prediction.usage["answer"].calls == 1


async def test_oldest_sessions_are_dropped_to_fit_the_context_window():
    # mock tokens = words; each session renders to a 3-word header + 1 speaker word + N words
    backend = MockBackend(context_window=32 + 256 + 70)  # answer reserve + prompt reserve + 70 tokens of history
    system = await build(backend, [session(i, 25) for i in range(1, 5)])

    prediction = await system.answer(Query(question_id="q", text="Who?"))

    prompt = backend.calls[0][-1]["content"]
    assert "[s4, day 4]" in prompt and "[s3, day 3]" in prompt
    assert "[s1, day 1]" not in prompt and "[s2, day 2]" not in prompt
    assert prediction.metadata["sessions_kept"] == ["s3", "s4"]
    assert prediction.metadata["sessions_dropped"] == 2
    assert prediction.metadata["history_tokens_exact"] is True


async def test_options_are_validated_and_coerced_from_strings():
    system = await build(MockBackend(), [], max_context_tokens="1000", max_answer_tokens="8")
    assert system.history_budget == 1000 - 8 - 256
    with pytest.raises(ValidationError, match="max_context_token"):
        FullContextSystem(SystemContext(roles={"model": Model(MockBackend(), spec="mock")}), max_context_token="9")


async def test_memory_dump_keeps_every_session_with_its_turn_ids():
    system = await build(MockBackend(), [session(1, 2), session(2, 2)])
    dump = system.memory_dump()
    assert [m.id for m in dump] == ["s1", "s2"]
    assert dump[1].source_turn_ids == ["D2:1"] and dump[1].timestamp == "day 2"


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("Paris", "Paris"),
        ("  \n**Answer:** 7 May 2023\nmore", "7 May 2023"),
        ("answer: Not mentioned", "Not mentioned"),
        ("**Answer**: Jon", "Jon"),
        ("", ""),
    ],
)
def test_clean_short_answer(reply, expected):
    assert clean_short_answer(reply) == expected
