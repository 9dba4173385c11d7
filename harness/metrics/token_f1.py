"""`f1`: the set-based token F1 of the Mem0 and Memory-R1 LoCoMo evaluations.

Source: mem0ai/mem0, `evaluation/metrics/utils.py` (`simple_tokenize` and the F1 in `calculate_metrics`),
itself taken from A-Mem. Text is lowercased, `.`, `,`, `!`, `?` become spaces, tokens are whitespace-split
and compared as sets, so repeated words count once (unlike `f1_locomo`, which counts them as a multiset
and also stems and drops articles). Empty prediction or gold, or no overlap, gives 0.
"""

from __future__ import annotations

from harness.metrics.base import MetricContext, TextMetric
from harness.types import Question

_SEPARATORS = str.maketrans({".": " ", ",": " ", "!": " ", "?": " "})


def simple_tokenize(text: str) -> list[str]:
    return text.lower().translate(_SEPARATORS).split()


def token_set_f1(prediction: str, gold: str) -> float:
    pred = set(simple_tokenize(prediction.strip()))
    ref = set(simple_tokenize(gold.strip()))
    common = len(pred & ref)
    if common == 0:
        return 0.0
    precision = common / len(pred)
    recall = common / len(ref)
    return 2 * precision * recall / (precision + recall)


def f1_score(answer: str, question: Question) -> float:
    """Best set F1 over the gold answers; 0 without gold."""
    return max((token_set_f1(answer, gold) for gold in question.answers), default=0.0)


def f1(context: MetricContext) -> TextMetric:
    """Registered as `f1`."""
    return TextMetric("f1", f1_score)
