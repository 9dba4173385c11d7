"""The metric interface: a named, per-question scorer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field

from harness.llm.model import Model
from harness.types import Prediction, Question, Score


class MetricContext(BaseModel):
    """What a metric may need beyond the question and prediction: the judge role and the task's judge style."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    judges: dict[str, Model] = Field(default_factory=dict)
    """Judge models by role: `judge`, and `judge_2`, `judge_3`, ... when several judges grade a run."""
    judge_style: str = "mem0"
    judge_repeats: int = 1
    """Times each judge grades each answer (seeds 0..N-1); the score is the mean verdict."""
    judge_temperature: float | None = None
    """Overrides the judge prompt's own temperature (0 for every built-in prompt)."""
    argument: str | None = None
    """The part of a metric name after `@`, e.g. `10` in `evidence_recall@10` or `judge_2` in `llm_judge@judge_2`."""


class Metric(Protocol):
    name: str
    higher_is_better: bool

    async def score(self, question: Question, prediction: Prediction) -> Score: ...


class MetricFactory(Protocol):
    """Registered under a metric's name; builds the metric for one run."""

    def __call__(self, context: MetricContext) -> Metric: ...


class TextMetric:
    """A metric that compares answer text with the gold answers and needs no LLM."""

    def __init__(self, name: str, fn: Callable[[str, Question], float], higher_is_better: bool = True) -> None:
        self.name = name
        self.fn = fn
        self.higher_is_better = higher_is_better

    async def score(self, question: Question, prediction: Prediction) -> Score:
        return Score(self.fn(prediction.answer, question))
