"""Abstention: does a system say the history does not hold the answer when it does not, and only then?

Unanswerable questions are LoCoMo's adversarial ones (category 5, in a run only with `-T
include_adversarial=true`) and LongMemEval's abstention ones (`_abs` ids, type `abstention`); every other
question is answerable. Per run, over answered questions, reported apart from the headline scores:

- **abstention recall**: unanswerable questions whose answer abstains;
- **hallucination rate**: unanswerable questions answered anyway (1 - recall);
- **false abstention rate**: answerable questions whose answer abstains.

"Abstains" is decided by a stated rule (`abstains`) and, for recall and hallucination, also by each judge
that graded an unanswerable question with an abstention prompt (LongMemEval's "does the model correctly
identify the question as unanswerable?"; Mem0's LoCoMo judge does not grade adversarial questions, so a
LoCoMo run has the rule only). The rule: the answer, lowercased and with typographic apostrophes made
straight, contains LoCoMo's own phrases ("no information available", "not mentioned", as a substring, the
category-5 rule of `f1_locomo`) or one of `EXTRA_PHRASES` as whole words. Each rate carries its n and a seeded
percentile-bootstrap 95% interval (`harness.metrics.aggregate.cell`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Protocol

from pydantic import BaseModel, Field

from harness.metrics.aggregate import Cell, cell
from harness.metrics.f1_locomo import abstains as locomo_abstains
from harness.types import JSONScalar, Prediction, ScoreDetail

EXTRA_PHRASES = (
    "unknown",
    "don't know",
    "do not know",
    "not known",
    "no information",
    "not enough information",
    "insufficient information",
    "not specified",
    "not stated",
    "not provided",
    "no mention",
    "does not mention",
    "doesn't mention",
    "cannot be determined",
    "can't be determined",
    "cannot answer",
    "can't answer",
    "unanswerable",
    "does not contain the answer",
    "doesn't contain the answer",
)
"""Abstentions beyond LoCoMo's two phrases, matched as whole words: the other ways models say it, including
the shared answer prompt's own wording, which Qwen2.5-Coder-0.5B echoes ("The context does not contain the
answer.") instead of replying "Not mentioned"."""

ABSTENTION_JUDGE_PROMPT = "abstention"
"""The `judge_prompt` a judge metric records when it graded whether an answer identifies the question as
unanswerable (`harness.metrics.llm_judge`): only those verdicts are abstention labels."""

_EXTRA = re.compile(r"\b(?:" + "|".join(re.escape(p) for p in EXTRA_PHRASES) + r")\b")
_ADVERSARIAL_CATEGORY = 5


class AbstentionRecord(Protocol):
    """What the summary reads of one answered question (the runner's `QuestionRecord` is one)."""

    @property
    def question_type(self) -> str: ...

    @property
    def question_metadata(self) -> Mapping[str, JSONScalar]: ...

    @property
    def prediction(self) -> Prediction | None: ...

    @property
    def scores(self) -> Mapping[str, float | None]: ...

    @property
    def score_details(self) -> Mapping[str, Mapping[str, ScoreDetail]]: ...


class AbstentionRates(BaseModel):
    """Recall and hallucination on the unanswerable questions, by one way of telling an abstention."""

    recall: Cell
    """Unanswerable questions the system abstained on."""
    hallucination: Cell
    """Unanswerable questions it answered anyway: 1 - recall, on the same questions."""


class AbstentionSummary(BaseModel):
    """A run's abstention rates (x1; reports show them x100)."""

    rule: AbstentionRates
    """By the stated rule (`abstains`)."""
    false_abstention: Cell
    """Answerable questions the system abstained on, by the rule."""
    by_judge: dict[str, AbstentionRates] = Field(default_factory=dict)
    """Per judge metric that graded unanswerable questions with an abstention prompt; its unreadable verdicts
    are counted in the cells' `n_unscored`."""


def abstains(answer: str) -> bool:
    """The stated rule: the answer says the information is not there (see the module docstring)."""
    lowered = answer.lower().replace("\u2019", "'").replace("\u2018", "'")
    return locomo_abstains(lowered) or _EXTRA.search(lowered) is not None


def is_unanswerable(question_type: str, metadata: Mapping[str, JSONScalar]) -> bool:
    """LoCoMo category 5 (under either label convention) or a LongMemEval abstention question."""
    category = metadata.get("locomo_category")
    return question_type == "abstention" or category in (_ADVERSARIAL_CATEGORY, str(_ADVERSARIAL_CATEGORY))


def abstention_summary(records: Sequence[AbstentionRecord], seed: int = 0) -> AbstentionSummary | None:
    """The rates over answered `records` (failed ones have no prediction and are skipped); None when none of
    them is unanswerable."""
    answered = [r for r in records if r.prediction is not None]
    unanswerable = [r for r in answered if is_unanswerable(r.question_type, r.question_metadata)]
    if not unanswerable:
        return None
    answerable = [r for r in answered if not is_unanswerable(r.question_type, r.question_metadata)]
    by_rule = [1.0 if abstains(_answer(r)) else 0.0 for r in unanswerable]
    judges = dict.fromkeys(
        metric
        for r in unanswerable
        for metric, details in r.score_details.items()
        if details.get("judge_prompt") == ABSTENTION_JUDGE_PROMPT
    )
    return AbstentionSummary(
        rule=_rates(by_rule, seed),
        false_abstention=cell([1.0 if abstains(_answer(r)) else 0.0 for r in answerable], seed=seed),
        by_judge={metric: _rates(_judge_verdicts(unanswerable, metric), seed) for metric in judges},
    )


def _answer(record: AbstentionRecord) -> str:
    return record.prediction.answer if record.prediction is not None else ""


def _judge_verdicts(records: Sequence[AbstentionRecord], metric: str) -> list[float | None]:
    """The judge's score (1: identified as unanswerable) per question it graded with the abstention prompt."""
    return [
        r.scores.get(metric)
        for r in records
        if r.score_details.get(metric, {}).get("judge_prompt") == ABSTENTION_JUDGE_PROMPT
    ]


def _rates(recall: Sequence[float | None], seed: int) -> AbstentionRates:
    return AbstentionRates(
        recall=cell(recall, seed=seed), hallucination=cell((None if v is None else 1.0 - v for v in recall), seed=seed)
    )
