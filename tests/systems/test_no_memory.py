"""no-memory: the shared answer prompt with an empty context, whatever the history held."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from support import config, question_of, toy_questions

from harness.llm import Message, Model
from harness.llm.providers.mock import MockBackend
from harness.runner import run
from harness.system import SystemContext
from harness.types import Query, Session, Turn
from systems.no_memory import NoMemorySystem
from systems.prompts import answer_messages

SESSION = Session(session_id="s1", date="day 1", turns=(Turn(turn_id="D1:1", speaker="Ann", text="I live in Oslo."),))


def build(backend: MockBackend, **options: str) -> NoMemorySystem:
    return NoMemorySystem(SystemContext(roles={"model": Model(backend, spec="mock")}), **options)


async def test_the_prompt_is_the_shared_one_with_nothing_of_the_history():
    backend = MockBackend(replies=["Answer: Bergen\nbecause"])
    system = build(backend)
    assert await system.ingest(SESSION) == {}

    query = Query(question_id="q", text="Where does Ann live?", date="day 2")
    prediction = await system.answer(query)

    assert backend.calls[0] == answer_messages("", query)
    assert "Oslo" not in backend.calls[0][-1]["content"]
    assert prediction.answer == "Bergen"
    assert prediction.metadata["raw_answer"] == "Answer: Bergen\nbecause"
    assert prediction.retrieved is None and prediction.usage["answer"].calls == 1
    assert system.memory_dump() == [] and system.memory_stats() == {}


def test_options_are_checked():
    assert build(MockBackend(), max_answer_tokens="8").generate_config.max_tokens == 8
    with pytest.raises(ValidationError, match="top_k"):
        build(MockBackend(), top_k="3")


async def test_a_run_scores_what_the_model_can_guess_without_the_history(tmp_path):
    """A model that answers from the context it sees: with none, every toy question is missed."""
    gold = {q.text: q.answers[0] for q in toy_questions()}

    def answer_from_context(messages: list[Message]) -> str:
        answer = gold[question_of(messages)]
        return answer if answer in messages[-1]["content"].split("Question:")[0] else "Not mentioned"

    backend = MockBackend(responder=answer_from_context)
    result = await run(config(tmp_path, system="no-memory"), models={"model": Model(backend, spec="mock")})

    assert result.spec.reads_gold_evidence is False
    assert result.aggregates["exact_match"].overall.mean == 0.0
    assert len(backend.calls) == len(gold)
    assert result.abstention is None  # the toy task has no unanswerable question
