"""Golden cases for the text metrics: hand-computed values in `golden/<metric>.json`, scored through the
registry so the registered factories are exercised too."""

from __future__ import annotations

import json
from pathlib import Path
from typing import NotRequired, TypedDict

import pytest

from harness.metrics.base import MetricContext
from harness.plugins import METRICS
from harness.types import JSONScalar, Prediction, Question

GOLDEN_DIR = Path(__file__).parent / "golden"


class GoldenCase(TypedDict):
    prediction: str
    gold: str | list[str]
    category: NotRequired[int]
    expected: float
    why: str


def _cases() -> dict[str, tuple[str, GoldenCase]]:
    """Cases by test id, `<metric>-<index in its file>`."""
    return {
        f"{path.stem}-{index}": (path.stem, case)
        for path in sorted(GOLDEN_DIR.glob("*.json"))
        for index, case in enumerate(json.loads(path.read_text()))
    }


CASES = _cases()


def _question(case: GoldenCase) -> Question:
    gold = case["gold"]
    answers = (gold,) if isinstance(gold, str) else tuple(gold)
    metadata: dict[str, JSONScalar] = {"locomo_category": case["category"]} if "category" in case else {}
    return Question(question_id="q", text="?", answers=answers, question_type="t", metadata=metadata)


def test_every_text_metric_has_golden_cases() -> None:
    assert {p.stem for p in GOLDEN_DIR.glob("*.json")} == {"f1_locomo", "f1", "bleu1", "exact_match"}


@pytest.mark.parametrize(("metric_name", "case"), CASES.values(), ids=CASES.keys())
async def test_golden(metric_name: str, case: GoldenCase) -> None:
    metric = METRICS.get(metric_name)(MetricContext())
    assert metric.name == metric_name
    score = await metric.score(_question(case), Prediction(question_id="q", answer=case["prediction"]))
    assert score.value == pytest.approx(case["expected"], abs=1e-4), case["why"]
