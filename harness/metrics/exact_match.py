"""`exact_match`: SQuAD-style normalized exact match, also the Memory-R1 answer reward.

Normalization follows the SQuAD v1.1 evaluation script (lowercase, drop punctuation, drop the articles
a/an/the, collapse whitespace); the two strings must then be equal. Unlike LoCoMo's normalization, "and"
is kept and nothing is stemmed.
"""

from __future__ import annotations

import re
import string

from harness.metrics.base import MetricContext, TextMetric
from harness.types import Question

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match_score(prediction: str, gold: str) -> float:
    return 1.0 if normalize_answer(prediction) == normalize_answer(gold) else 0.0


def exact_match_max(answer: str, question: Question) -> float:
    """1 if the answer matches any gold answer; 0 without gold."""
    return max((exact_match_score(answer, gold) for gold in question.answers), default=0.0)


def exact_match(context: MetricContext) -> TextMetric:
    """Registered as `exact_match`."""
    return TextMetric("exact_match", exact_match_max)
