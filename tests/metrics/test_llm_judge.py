"""The LLM judge against the scripted mock backend: prompts sent, verdicts parsed, unreadable replies."""

from __future__ import annotations

import pytest

from harness.llm import LLMCallFailed, LLMError, Model
from harness.llm.providers.mock import MockBackend
from harness.metrics.base import MetricContext
from harness.metrics.llm_judge import (
    ACCURACY_PROMPT,
    MEM0_CONFIG,
    LLMJudge,
    llm_judge,
    llm_judge_strict,
    parse_longmemeval_label,
    parse_mem0_label,
)
from harness.plugins import METRICS
from harness.types import JSONScalar, Prediction, Question


def _judge(style: str, *replies: str | Exception) -> tuple[LLMJudge, MockBackend]:
    backend = MockBackend(replies=replies, validate_schema=False)  # free-text verdicts: the lenient parsers
    judge = Model(backend, spec="mock", max_retries=0)
    metric = llm_judge(MetricContext(judges={"judge": judge}, judge_style=style))
    return metric, backend


def _question(
    question_type: str = "single-hop",
    answers: tuple[str, ...] = ("A shell necklace",),
    question_id: str = "q1",
    metadata: dict[str, JSONScalar] | None = None,
) -> Question:
    return Question(
        question_id=question_id,
        text="What did I get in Hawaii?",
        answers=answers,
        question_type=question_type,
        metadata=metadata or {},
    )


def _prediction(answer: str = "You got a necklace made of shells.") -> Prediction:
    return Prediction(question_id="q1", answer=answer)


def test_factory_needs_a_judge() -> None:
    with pytest.raises(ValueError, match="--judge SPEC"):
        llm_judge(MetricContext())


def test_factory_rejects_unknown_style() -> None:
    with pytest.raises(ValueError, match="unknown judge style"):
        _judge("rubric")


@pytest.mark.parametrize(
    ("reply", "value", "label"),
    [
        ('{"label": "CORRECT"}', 1.0, "CORRECT"),
        ('{"label": "WRONG"}', 0.0, "WRONG"),
        ('The answer names the necklace.\n```json\n{"label": "CORRECT"}\n```', 1.0, "CORRECT"),
        ('Same topic. {"label": "correct"} Done.', 1.0, "CORRECT"),
        ("It refers to a different gift. WRONG", 0.0, "WRONG"),
    ],
)
async def test_mem0_verdicts(reply: str, value: float, label: str) -> None:
    metric, backend = _judge("mem0", reply)
    score = await metric.score(_question(), _prediction())
    assert score.value == value
    assert score.details["label"] == label
    assert score.details["judge_reply"] == reply
    assert score.usage is not None and score.usage.calls == 1
    [messages] = backend.calls
    assert messages == [
        {
            "role": "user",
            "content": ACCURACY_PROMPT.format(
                question="What did I get in Hawaii?",
                gold_answer="A shell necklace",
                generated_answer="You got a necklace made of shells.",
            ),
        }
    ]
    assert "Gold answer: A shell necklace\nGenerated answer: You got a necklace" in messages[0]["content"]


@pytest.mark.parametrize(
    "reply",
    ["I cannot tell.", "CORRECT or WRONG, hard to say", '{"label": "MAYBE"}', "{not json", ""],
)
async def test_mem0_unreadable_reply_is_unjudged(reply: str) -> None:
    metric, _ = _judge("mem0", reply)
    score = await metric.score(_question(), _prediction())
    assert score.value is None
    assert score.details["unjudged"] is True
    assert score.details["judge_reply"] == reply
    assert score.usage is not None


async def test_mem0_skips_questions_without_gold() -> None:
    metric, backend = _judge("mem0", '{"label": "CORRECT"}')
    score = await metric.score(_question(question_type="adversarial", answers=()), _prediction())
    assert score.value is None and score.details["unjudged"] is True
    assert backend.calls == []


async def test_judge_failure_propagates() -> None:
    metric, _ = _judge("mem0", LLMError("bad request"))
    with pytest.raises(LLMCallFailed):
        await metric.score(_question(), _prediction())


LME_CASES = [
    ("single-session-user", {}, "q1", "Please answer yes if the response contains the correct answer."),
    ("multi-session", {}, "q1", "contains all the intermediate steps to get the correct answer"),
    ("temporal-reasoning", {}, "q1", "do not penalize off-by-one errors for the number of days"),
    ("knowledge-update", {}, "q1", "some previous information along with an updated answer"),
    ("single-session-preference", {}, "q1", "a rubric for desired personalized response"),
    ("abstention", {"longmemeval_type": "temporal-reasoning"}, "q1_abs", "an unanswerable question"),
    ("multi-session", {}, "gpt4_123_abs", "Does the model correctly identify the question as unanswerable?"),
]


@pytest.mark.parametrize(("question_type", "metadata", "question_id", "marker"), LME_CASES)
async def test_longmemeval_prompt_per_type(
    question_type: str, metadata: dict[str, JSONScalar], question_id: str, marker: str
) -> None:
    metric, backend = _judge("longmemeval", "Yes.")
    question = _question(question_type, ("18 days",), question_id, metadata)
    score = await metric.score(question, _prediction("19 days"))
    assert score.value == 1.0 and score.details["label"] == "yes"
    [messages] = backend.calls
    prompt = messages[0]["content"]
    assert marker in prompt
    assert "\n\nModel Response: 19 days\n\n" in prompt
    off_by_one = "off-by-one" in prompt
    assert off_by_one == (question_type == "temporal-reasoning")
    label = "Rubric" if question_type == "single-session-preference" else "Correct Answer"
    if "_abs" in question_id:
        label = "Explanation"
    assert f"\n\n{label}: 18 days\n\n" in prompt


@pytest.mark.parametrize(
    ("reply", "value"),
    [("yes", 1.0), ("No.", 0.0), ("no, it is not", 0.0), ("Yes, although no date is given", 1.0), ("Maybe", None)],
)
async def test_longmemeval_verdicts(reply: str, value: float | None) -> None:
    metric, _ = _judge("longmemeval", reply)
    score = await metric.score(_question("multi-session"), _prediction())
    assert score.value == value
    assert score.details["judge_reply"] == reply
    assert score.details.get("unjudged", False) is (value is None)


async def test_longmemeval_unknown_type_is_an_error() -> None:
    metric, _ = _judge("longmemeval", "yes")
    with pytest.raises(ValueError, match="no LongMemEval judge prompt"):
        await metric.score(_question("single-hop"), _prediction())


def test_parsers() -> None:
    assert parse_mem0_label('{"reason": "same gift", "label": "WRONG"}') == "WRONG"
    assert parse_mem0_label('{"other": 1} then {"label": "CORRECT"}') == "CORRECT"
    assert parse_mem0_label("INCORRECT") is None
    assert parse_longmemeval_label("I don't know") is None
    assert parse_longmemeval_label("NO") == "no"


def test_generation_settings() -> None:
    mem0, _ = _judge("mem0")
    lme, _ = _judge("longmemeval")
    assert mem0.style.config.json_mode and mem0.style.config.temperature == 0
    assert lme.style.config.max_tokens == 10 and lme.style.config.temperature == 0


async def test_repeats_grade_with_distinct_seeds_and_score_the_mean_verdict() -> None:
    backend = MockBackend(
        replies=['{"label": "CORRECT"}', '{"label": "WRONG"}', "no verdict here"], validate_schema=False
    )
    context = MetricContext(
        judges={"judge": Model(backend, spec="mock", max_retries=0)}, judge_repeats=3, judge_temperature=0.7
    )
    score = await llm_judge(context).score(_question(), _prediction())
    assert sorted(c.seed for c in backend.configs) == [0, 1, 2]
    assert {c.temperature for c in backend.configs} == {0.7}
    # Verdicts 1, 0 and unreadable: the mean of the readable ones; each repeat kept in order of the seeds.
    assert score.value == 0.5
    assert score.repeats == (1.0, 0.0, None)
    assert score.details["labels"] == ["CORRECT", "WRONG", None]
    assert score.usage is not None and score.usage.calls == 3


async def test_a_single_grading_keeps_the_prompts_own_config() -> None:
    backend = MockBackend(replies=['{"label": "CORRECT"}'])
    await llm_judge(MetricContext(judges={"judge": Model(backend, spec="mock")})).score(_question(), _prediction())
    assert backend.configs == [MEM0_CONFIG]  # same cache key as before repeats existed


async def test_strict_prompt_asks_for_the_same_fact_and_keeps_the_rationale() -> None:
    reply = '{"reason": "The answer names a different gift.", "label": "WRONG"}'
    backend = MockBackend(replies=[reply], validate_schema=False)
    metric = llm_judge_strict(MetricContext(judges={"judge": Model(backend, spec="mock")}, judge_style="longmemeval"))
    score = await metric.score(_question(), _prediction("A hat"))
    prompt = backend.calls[0][0]["content"]
    assert "only touches on the same topic" in prompt and "be generous" not in prompt
    assert "Gold answer: A shell necklace" in prompt and "Generated answer: A hat" in prompt
    assert (score.value, score.details["rationale"], metric.name) == (
        0.0,
        "The answer names a different gift.",
        "llm_judge_strict",
    )


async def test_a_second_judge_is_named_by_its_role() -> None:
    first, second = MockBackend(replies=['{"label": "WRONG"}']), MockBackend(replies=['{"label": "CORRECT"}'])
    judges = {"judge": Model(first, spec="mock"), "judge_2": Model(second, spec="mock")}
    metric = METRICS.get("llm_judge")(MetricContext(judges=judges, argument="judge_2"))
    score = await metric.score(_question(), _prediction())
    assert (metric.name, score.value, len(first.calls), len(second.calls)) == ("llm_judge@judge_2", 1.0, 0, 1)
    with pytest.raises(ValueError, match="no judge role 'judge_3'"):
        METRICS.get("llm_judge")(MetricContext(judges=judges, argument="judge_3"))
