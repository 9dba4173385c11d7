"""The metric interface: a named, per-question scorer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from pydantic import BaseModel, ConfigDict

from harness.llm.model import Model
from harness.types import Prediction, Question, Score


class MetricContext(BaseModel):
    """What a metric may need beyond the question and prediction: the judge role and the task's judge style."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    judge: Model | None = None
    judge_style: str = "mem0"
    argument: str | None = None
    """The part of a metric name after `@`, e.g. `10` in `evidence_recall@10`."""


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
