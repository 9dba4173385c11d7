"""`bleu1`: sentence BLEU-1 as in the Mem0 / A-Mem LoCoMo evaluations.

Source: mem0ai/mem0, `evaluation/metrics/utils.py` (`calculate_bleu_scores`): nltk `sentence_bleu` with
weights (1, 0, 0, 0) and `SmoothingFunction().method1` on lowercased `word_tokenize` tokens. We tokenize
with `preserve_line=True`, which skips nltk's sentence splitter and so needs no downloaded `punkt` data;
the one difference is that a period ending an inner sentence stays attached to its word.

This is a per-question (sentence) score; its mean is not corpus BLEU.
"""

from __future__ import annotations

from nltk.tokenize import word_tokenize
from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

from harness.metrics.base import MetricContext, TextMetric
from harness.types import Question

_SMOOTHING = SmoothingFunction().method1


def bleu_tokens(text: str) -> list[str]:
    return word_tokenize(text.lower(), preserve_line=True)


def bleu1_score(prediction: str, gold: str) -> float:
    """BLEU-1 of one prediction against one reference; 0 for an empty prediction or reference."""
    hypothesis = bleu_tokens(prediction.strip())
    reference = bleu_tokens(gold.strip())
    if not hypothesis or not reference:
        return 0.0
    return float(sentence_bleu([reference], hypothesis, weights=(1, 0, 0, 0), smoothing_function=_SMOOTHING))


def bleu1_max(answer: str, question: Question) -> float:
    """Best BLEU-1 over the gold answers; 0 without gold."""
    return max((bleu1_score(answer, gold) for gold in question.answers), default=0.0)


def bleu1(context: MetricContext) -> TextMetric:
    """Registered as `bleu1`."""
    return TextMetric("bleu1", bleu1_max)
