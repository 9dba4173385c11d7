"""`llm_judge`: an LLM grades each answer with the benchmark's own judge prompt, through the `judge` role.

Two styles, picked by the task (`MetricContext.judge_style`):

- `mem0` (LoCoMo, MSC): the CORRECT/WRONG `ACCURACY_PROMPT` of mem0ai/mem0,
  `evaluation/metrics/llm_judge.py`; the judge is asked for JSON with key "label". Questions without a
  gold answer (LoCoMo adversarial items) are not sent; Mem0's evaluation skips them too.
- `longmemeval`: the per-type yes/no prompts of xiaowu0162/LongMemEval,
  `src/evaluation/evaluate_qa.py` (`get_anscheck_prompt`, called with temperature 0 and max_tokens 10).
  Abstention questions (type `abstention`, or `_abs` in the question id as the official script checks)
  get the unanswerable prompt whatever their original type.

`llm_judge_strict` grades any task with `STRICT_PROMPT`, ours: the same CORRECT/WRONG verdict as Mem0's, but
asking for the same fact rather than the same topic, with a one-sentence rationale that is kept per question.
Several judges grade one run as roles `judge`, `judge_2`, ... (`llm_judge@judge_2`); `--judge-repeats N` has
each grade every answer N times.

A reply that cannot be read as a verdict scores None ("unjudged"), never right or wrong. LongMemEval's
script counts a reply as correct when it contains "yes" (we keep that, "yesterday" included) and wrong
otherwise; we call it wrong only when "no" appears as a word, and unjudged when neither does.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel

from harness.llm import Completion, GenerateConfig, Message, Model, usage_of
from harness.llm.structured import JSONSchema
from harness.metrics.base import MetricContext
from harness.types import Prediction, Question, Score, ScoreDetail, Usage

JUDGE_ROLE = "judge"

# Verbatim from Mem0, trailing spaces and typographic quotes included (they are part of the cache key).
ACCURACY_PROMPT = """
Your task is to label an answer to a question as ’CORRECT’ or ’WRONG’. You will be given the following data:
    (1) a question (posed by one user to another user),\x20
    (2) a ’gold’ (ground truth) answer,\x20
    (3) a generated answer
which you will score as CORRECT/WRONG.

The point of the question is to ask about something one user should know about the other user based on their prior conversations.
The gold answer will usually be a concise and short answer that includes the referenced topic, for example:
Question: Do you remember what I got the last time I went to Hawaii?
Gold answer: A shell necklace
The generated answer might be much longer, but you should be generous with your grading - as long as it touches on the same topic as the gold answer, it should be counted as CORRECT.\x20

For time related questions, the gold answer will be a specific date, month, year, etc. The generated answer might be much longer or use relative time references (like "last Tuesday" or "next month"), but you should be generous with your grading - as long as it refers to the same date or time period as the gold answer, it should be counted as CORRECT. Even if the format differs (e.g., "May 7th" vs "7 May"), consider it CORRECT if it's the same date.

Now it's time for the real question:
Question: {question}
Gold answer: {gold_answer}
Generated answer: {generated_answer}

First, provide a short (one sentence) explanation of your reasoning, then finish with CORRECT or WRONG.\x20
Do NOT include both CORRECT and WRONG in your response, or it will break the evaluation script.

Just return the label CORRECT or WRONG in a json format with the key as "label".
"""  # noqa: E501

# Ours, not from any benchmark: Mem0's prompt asks the judge to be "generous" and to accept any answer that
# "touches on the same topic", which lets vague or hedged answers pass. This one asks for the same fact.
STRICT_PROMPT = """You are grading an answer to a question about a past conversation, against the gold answer.

Question: {question}
Gold answer: {gold_answer}
Generated answer: {generated_answer}

Label the generated answer CORRECT only if it states the same fact as the gold answer:
- every essential part of the gold answer is there (a list must be complete; names, numbers and places must match);
- a date or time names the same day or period, at least as precisely as the gold answer does;
- it adds no claim that contradicts the gold answer and does not hedge between several answers.
An answer that only touches on the same topic, says it does not know, or refuses is WRONG.

Reply with JSON only: {{"reason": "<one sentence>", "label": "CORRECT" or "WRONG"}}"""

_LME_INTRO = (
    "I will give you a question, a correct answer, and a response from a model. Please answer yes if the "
    "response contains the correct answer. Otherwise, answer no."
)
_LME_STEPS = (
    " If the response is equivalent to the correct answer or contains all the intermediate steps to get the "
    "correct answer, you should also answer yes. If the response only contains a subset of the information "
    "required by the answer, answer no."
)
_LME_TAIL = (
    "\n\nQuestion: {question}\n\nCorrect Answer: {answer}\n\nModel Response: {response}\n\n"
    "Is the model response correct? Answer yes or no only."
)
LONGMEMEVAL_DEFAULT_PROMPT = _LME_INTRO + _LME_STEPS + " " + _LME_TAIL
LONGMEMEVAL_TEMPORAL_PROMPT = (
    _LME_INTRO
    + _LME_STEPS
    + " In addition, do not penalize off-by-one errors for the number of days. If the question asks for the "
    "number of days/weeks/months, etc., and the model makes off-by-one errors (e.g., predicting 19 days when "
    "the answer is 18), the model's response is still correct. " + _LME_TAIL
)
LONGMEMEVAL_KNOWLEDGE_UPDATE_PROMPT = (
    _LME_INTRO
    + " If the response contains some previous information along with an updated answer, the response should "
    "be considered as correct as long as the updated answer is the required answer." + _LME_TAIL
)
LONGMEMEVAL_PREFERENCE_PROMPT = (
    "I will give you a question, a rubric for desired personalized response, and a response from a model. "
    "Please answer yes if the response satisfies the desired response. Otherwise, answer no. The model does "
    "not need to reflect all the points in the rubric. The response is correct as long as it recalls and "
    "utilizes the user's personal information correctly."
    "\n\nQuestion: {question}\n\nRubric: {answer}\n\nModel Response: {response}\n\n"
    "Is the model response correct? Answer yes or no only."
)
LONGMEMEVAL_ABSTENTION_PROMPT = (
    "I will give you an unanswerable question, an explanation, and a response from a model. Please answer yes "
    "if the model correctly identifies the question as unanswerable. The model could say that the information "
    "is incomplete, or some other information is given but the asked information is not."
    "\n\nQuestion: {question}\n\nExplanation: {answer}\n\nModel Response: {response}\n\n"
    "Does the model correctly identify the question as unanswerable? Answer yes or no only."
)
LONGMEMEVAL_PROMPTS: dict[str, str] = {
    "single-session-user": LONGMEMEVAL_DEFAULT_PROMPT,
    "single-session-assistant": LONGMEMEVAL_DEFAULT_PROMPT,
    "multi-session": LONGMEMEVAL_DEFAULT_PROMPT,
    "temporal-reasoning": LONGMEMEVAL_TEMPORAL_PROMPT,
    "knowledge-update": LONGMEMEVAL_KNOWLEDGE_UPDATE_PROMPT,
    "single-session-preference": LONGMEMEVAL_PREFERENCE_PROMPT,
    "abstention": LONGMEMEVAL_ABSTENTION_PROMPT,
}


class _Mem0Verdict(BaseModel):
    label: Literal["CORRECT", "WRONG"]


class _StrictVerdict(BaseModel):
    reason: str
    label: Literal["CORRECT", "WRONG"]


class _YesNoVerdict(BaseModel):
    answer: Literal["yes", "no"]


# The schemas hold each prompt's own reply format, so an enforcing backend cannot write an unreadable verdict;
# the parsers below still read free text from backends that cannot constrain. LongMemEval's prompts ask for a
# bare yes/no: its schema wraps that word in an object (strict servers want an object at the root), which the
# official rule ("yes" anywhere in the reply) reads unchanged.
MEM0_CONFIG = GenerateConfig(
    max_tokens=256, temperature=0.0, json_mode=True, json_schema=JSONSchema.of(_Mem0Verdict, name="verdict")
)
STRICT_CONFIG = GenerateConfig(
    max_tokens=256, temperature=0.0, json_mode=True, json_schema=JSONSchema.of(_StrictVerdict, name="verdict")
)
LONGMEMEVAL_CONFIG = GenerateConfig(
    max_tokens=10, temperature=0.0, json_schema=JSONSchema.of(_YesNoVerdict, name="verdict")
)

_VERDICT_WORD = re.compile(r"\b(CORRECT|WRONG)\b")
_NO_WORD = re.compile(r"\bno\b")


def gold_text(question: Question) -> str:
    """The gold answers as the judge sees them (benchmarks give one; several are offered as alternatives)."""
    return " OR ".join(question.answers)


def mem0_prompt(question: Question, answer: str) -> tuple[str, str] | None:
    """The judge prompt and its template name, or None when there is no gold answer to judge against."""
    if not question.answers:
        return None
    text = ACCURACY_PROMPT.format(question=question.text, gold_answer=gold_text(question), generated_answer=answer)
    return text, "mem0"


def longmemeval_template(question: Question) -> str:
    """Which of LongMemEval's prompts grades this question."""
    if question.question_type == "abstention" or "_abs" in question.question_id:
        return "abstention"
    original = question.metadata.get("longmemeval_type")
    kind = original if isinstance(original, str) else question.question_type
    if kind not in LONGMEMEVAL_PROMPTS:
        raise ValueError(f"no LongMemEval judge prompt for question type {kind!r} ({question.question_id})")
    return kind


def longmemeval_prompt(question: Question, answer: str) -> tuple[str, str]:
    template = longmemeval_template(question)
    text = LONGMEMEVAL_PROMPTS[template].format(question=question.text, answer=gold_text(question), response=answer)
    return text, template


def parse_mem0_label(reply: str) -> str | None:
    """CORRECT or WRONG from a JSON object's "label" (fenced or amid text), else from a lone verdict word."""
    decoder = json.JSONDecoder()
    for start in (i for i, ch in enumerate(reply) if ch == "{"):
        try:
            obj, _ = decoder.raw_decode(reply, start)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict) and "label" in obj:
            label = str(obj["label"]).strip().strip("'\"’‘").upper()
            return label if label in ("CORRECT", "WRONG") else None
    words = set(_VERDICT_WORD.findall(reply))
    return words.pop() if len(words) == 1 else None


def parse_longmemeval_label(reply: str) -> str | None:
    """yes or no by the official rule ("yes" anywhere wins), None when neither word is there."""
    lowered = reply.lower()
    if "yes" in lowered:
        return "yes"
    return "no" if _NO_WORD.search(lowered) else None


def strict_prompt(question: Question, answer: str) -> tuple[str, str] | None:
    if not question.answers:
        return None
    text = STRICT_PROMPT.format(question=question.text, gold_answer=gold_text(question), generated_answer=answer)
    return text, "strict"


def rationale_of(reply: str) -> str | None:
    """The one-sentence "reason" a JSON verdict gives (the strict prompt asks for one), if any."""
    decoder = json.JSONDecoder()
    for start in (i for i, ch in enumerate(reply) if ch == "{"):
        try:
            obj, _ = decoder.raw_decode(reply, start)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict) and isinstance(obj.get("reason"), str):
            return obj["reason"]
    return None


@dataclass(frozen=True)
class JudgeStyle:
    """How one benchmark family asks its judge and reads the verdict."""

    prompt: Callable[[Question, str], tuple[str, str] | None]
    parse: Callable[[str], str | None]
    correct_label: str
    config: GenerateConfig


JUDGE_STYLES: dict[str, JudgeStyle] = {
    "mem0": JudgeStyle(mem0_prompt, parse_mem0_label, "CORRECT", MEM0_CONFIG),
    "longmemeval": JudgeStyle(longmemeval_prompt, parse_longmemeval_label, "yes", LONGMEMEVAL_CONFIG),
    "strict": JudgeStyle(strict_prompt, parse_mem0_label, "CORRECT", STRICT_CONFIG),
}


@dataclass(frozen=True)
class Verdict:
    value: float | None
    """1 correct, 0 wrong, None unreadable."""
    label: str | None
    reply: str
    usage: Usage


class LLMJudge:
    """Scores 1 for a correct verdict, 0 for a wrong one, None when the reply is unreadable.

    With `repeats` > 1 the judge grades each answer that many times, with seeds 0..N-1 (at the prompt's
    temperature unless `temperature` overrides it: at temperature 0 repeats measure only the server's own
    nondeterminism); the score is the mean of the readable verdicts and each verdict is kept.
    `LLMCallFailed` from the judge propagates; the runner records the failure.
    """

    higher_is_better = True

    def __init__(
        self,
        judge: Model,
        style: JudgeStyle,
        name: str = "llm_judge",
        repeats: int = 1,
        temperature: float | None = None,
    ) -> None:
        if repeats < 1:
            raise ValueError(f"judge repeats must be at least 1, got {repeats}")
        self.name = name
        self.judge = judge
        self.style = style
        config = style.config if temperature is None else dataclasses.replace(style.config, temperature=temperature)
        # A single grading keeps the prompt's own config (and cache key); repeats differ by seed.
        self.configs = [config] if repeats == 1 else [dataclasses.replace(config, seed=i) for i in range(repeats)]

    async def score(self, question: Question, prediction: Prediction) -> Score:
        built = self.style.prompt(question, prediction.answer)
        if built is None:
            return Score(None, {"unjudged": True, "reason": "no gold answer"})
        prompt, template = built
        verdicts = await asyncio.gather(*(self._verdict(prompt, config) for config in self.configs))
        usage = Usage()
        for verdict in verdicts:
            usage.add(verdict.usage)
        values = [v.value for v in verdicts if v.value is not None]
        value = sum(values) / len(values) if values else None
        details: dict[str, ScoreDetail] = {"judge_prompt": template}
        if len(verdicts) == 1:
            details |= {"judge_reply": verdicts[0].reply, "label": verdicts[0].label}
        else:
            details |= {"judge_replies": [v.reply for v in verdicts], "labels": [v.label for v in verdicts]}
        rationale = next((r for r in (rationale_of(v.reply) for v in verdicts) if r), None)
        if rationale:
            details["rationale"] = rationale
        if value is None:
            details["unjudged"] = True
        repeats = tuple(v.value for v in verdicts) if len(verdicts) > 1 else ()
        return Score(value, details, usage, repeats)

    async def _verdict(self, prompt: str, config: GenerateConfig) -> Verdict:
        messages: list[Message] = [{"role": "user", "content": prompt}]
        completion: Completion = await self.judge.generate(messages, config)
        label = self.style.parse(completion.text)
        value = None if label is None else float(label == self.style.correct_label)
        return Verdict(value, label, completion.text, usage_of(completion))


def llm_judge(context: MetricContext) -> LLMJudge:
    """Registered as `llm_judge`: the task's own judge prompt. `llm_judge@ROLE` grades with judge role ROLE."""
    style = JUDGE_STYLES.get(context.judge_style)
    if style is None:
        raise ValueError(f"unknown judge style {context.judge_style!r}; known: {', '.join(JUDGE_STYLES)}")
    return _judge_metric("llm_judge", style, context)


def llm_judge_strict(context: MetricContext) -> LLMJudge:
    """Registered as `llm_judge_strict`: our stricter prompt, for any task (see STRICT_PROMPT)."""
    return _judge_metric("llm_judge_strict", JUDGE_STYLES["strict"], context)


def _judge_metric(base: str, style: JudgeStyle, context: MetricContext) -> LLMJudge:
    role = context.argument or JUDGE_ROLE
    judge = context.judges.get(role)
    if judge is None:
        if role == JUDGE_ROLE:
            raise ValueError(
                f"the {base} metric needs a judge model: pass --judge SPEC (e.g. --judge openai:gpt-4o-mini)"
            )
        raise ValueError(f"{base}@{role}: no judge role {role!r}; this run has {', '.join(context.judges) or 'none'}")
    name = base if context.argument is None else f"{base}@{role}"
    return LLMJudge(judge, style, name, context.judge_repeats, context.judge_temperature)
