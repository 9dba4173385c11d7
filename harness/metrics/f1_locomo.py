"""`f1_locomo`: the official LoCoMo QA scorer, a Porter-stemmed multiset token F1 with per-category rules.

Source: snap-research/locomo, `task_eval/evaluation.py` (`normalize_answer`, `f1_score`, `f1` and the
category branches of `eval_question_answering`). Category rules, read from `metadata["locomo_category"]`:

- 1 (multi-hop): prediction and gold are split on commas; each gold part takes its best F1 over the
  prediction parts, and the parts' scores are averaged.
- 2, 4: plain F1.
- 3: plain F1 against the gold's text before its first `;`.
- 5 (adversarial): 1 if the lowercased prediction contains "no information available" or "not mentioned",
  else 0 (the gold is not used).

Questions without a category get plain F1. With several gold answers the best one counts.
"""

from __future__ import annotations

import re
import string
from collections import Counter

from harness.metrics.base import MetricContext, TextMetric
from harness.stemming import load_porter, porter_stem
from harness.types import Question

_PUNCTUATION = frozenset(string.punctuation)
# LoCoMo drops "and" along with the articles.
_STOP_WORDS = re.compile(r"\b(a|an|the|and)\b")
_ABSTAIN_PHRASES = ("no information available", "not mentioned")


def normalize_answer(text: str) -> str:
    """LoCoMo's normalization, in its order: drop commas, lowercase, drop punctuation, drop a/an/the/and,
    collapse whitespace."""
    text = text.replace(",", "").lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _STOP_WORDS.sub(" ", text)
    return " ".join(text.split())


def stemmed_tokens(text: str) -> list[str]:
    return [porter_stem(w) for w in normalize_answer(text).split()]


def token_f1(prediction: str, gold: str) -> float:
    """Multiset F1 over stemmed tokens (LoCoMo's `f1_score`); 0 when nothing overlaps."""
    pred = stemmed_tokens(prediction)
    ref = stemmed_tokens(gold)
    same = sum((Counter(pred) & Counter(ref)).values())
    if same == 0:
        return 0.0
    precision = same / len(pred)
    recall = same / len(ref)
    return 2 * precision * recall / (precision + recall)


def multi_answer_f1(prediction: str, gold: str) -> float:
    """LoCoMo's `f1`: mean over comma-separated gold parts of the best F1 over prediction parts."""
    preds = [p.strip() for p in prediction.split(",")]
    golds = [g.strip() for g in gold.split(",")]
    return sum(max(token_f1(p, g) for p in preds) for g in golds) / len(golds)


def abstains(prediction: str) -> bool:
    """The category-5 rule: the prediction says the information is not there."""
    lowered = prediction.lower()
    return any(phrase in lowered for phrase in _ABSTAIN_PHRASES)


def locomo_f1(prediction: str, gold: str, category: int | None = None) -> float:
    """Score one prediction against one gold answer under the rule of its LoCoMo category."""
    if category == 5:
        return 1.0 if abstains(prediction) else 0.0
    if category == 1:
        return multi_answer_f1(prediction, gold)
    if category == 3:
        gold = gold.split(";")[0].strip()
    return token_f1(prediction, gold)


def locomo_category(question: Question) -> int | None:
    """The question's LoCoMo category (1..5), or None for questions from other benchmarks."""
    value = question.metadata.get("locomo_category")
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def f1_locomo_score(answer: str, question: Question) -> float:
    """Best category-rule score over the gold answers; 0 without gold unless the category is 5."""
    category = locomo_category(question)
    if category == 5:
        return locomo_f1(answer, "", category)
    return max((locomo_f1(answer, gold, category) for gold in question.answers), default=0.0)


def f1_locomo(context: MetricContext) -> TextMetric:
    """Registered as `f1_locomo`. Imports the stemmer now, as a run sets up: on the first score it would stall
    the event loop, and every call in flight, for the second nltk takes to import."""
    load_porter()
    return TextMetric("f1_locomo", f1_locomo_score)
