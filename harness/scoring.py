"""Scoring shared by a run and a re-scoring: which metrics a run computes, and one record's scores.

Judges are LLM roles named `judge`, `judge_2`, `judge_3`, ...: the system under test never sees them, and
`judge_agreement` says how often each pair of judge metrics (including a published system's own grades,
`published_judge`) agree on the questions both scored.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from harness.llm import LLMCallFailed
from harness.metrics.base import Metric, MetricContext
from harness.plugins import METRICS
from harness.results import JudgeAgreement, QuestionRecord
from harness.types import Prediction, Question, Usage

JUDGE_ROLE = "judge"
PUBLISHED_JUDGE = "published_judge"
"""The verdicts a published run's own judge gave (imported with its predictions), as a metric."""
JUDGE_METRICS = ("llm_judge", "llm_judge_strict", PUBLISHED_JUDGE)


def is_judge_role(role: str) -> bool:
    return role == JUDGE_ROLE or role.startswith(JUDGE_ROLE + "_")


def judge_roles(roles: Iterable[str]) -> list[str]:
    """`judge` first, then `judge_2`, `judge_3`, ... in the order given."""
    found = [role for role in roles if is_judge_role(role)]
    return sorted(found, key=lambda role: role != JUDGE_ROLE)


def default_metric_names(task_defaults: Sequence[str], roles: Iterable[str]) -> list[str]:
    """The task's metrics, then `llm_judge` graded by each judge role."""
    judges = [("llm_judge" if role == JUDGE_ROLE else f"llm_judge@{role}") for role in judge_roles(roles)]
    return [*task_defaults, *judges]


def build_metric(name: str, context: MetricContext) -> Metric:
    """`name` or `name@argument` (e.g. `evidence_recall@10`); the metric reports its full name."""
    base, _, argument = name.partition("@")
    return METRICS.get(base)(context.model_copy(update={"argument": argument or None}))


def is_judge_metric(name: str) -> bool:
    return name.partition("@")[0] in JUDGE_METRICS


async def score_record(record: QuestionRecord, metrics: Sequence[Metric], question: Question) -> None:
    """Score `record.prediction` with each metric into the record; a judge that fails after retries leaves
    that metric unscored (with the error), never wrong."""
    prediction: Prediction | None = record.prediction
    if prediction is None:
        raise ValueError(f"question {record.question_id} has no prediction to score")
    judge_usage = record.judge_usage or Usage()
    for metric in metrics:
        record.repeats.pop(metric.name, None)
        record.score_details.pop(metric.name, None)
        try:
            score = await metric.score(question, prediction)
        except LLMCallFailed as error:
            record.scores[metric.name] = None
            record.score_details[metric.name] = {"error": str(error)}
            continue
        record.scores[metric.name] = score.value
        if score.details:
            record.score_details[metric.name] = dict(score.details)
        if score.repeats:
            record.repeats[metric.name] = list(score.repeats)
        if score.usage is not None:
            judge_usage.add(score.usage)
    record.judge_usage = judge_usage if judge_usage.calls else None


def judge_agreement(records: Sequence[QuestionRecord], metrics: Sequence[str]) -> list[JudgeAgreement]:
    from harness.stats import cohen_kappa  # numpy: kept out of `python -m harness ls`

    judges = [m for m in metrics if is_judge_metric(m)]
    result = []
    for i, a in enumerate(judges):
        for b in judges[i + 1 :]:
            pairs = [_verdicts(r.scores, a, b) for r in records]
            both = [p for p in pairs if p is not None]
            if not both:
                continue
            agreement = cohen_kappa([x for x, _ in both], [y for _, y in both])
            result.append(JudgeAgreement(a=a, b=b, n=agreement.n, raw=agreement.raw, kappa=agreement.kappa))
    return result


def _verdicts(scores: Mapping[str, float | None], a: str, b: str) -> tuple[bool, bool] | None:
    x, y = scores.get(a), scores.get(b)
    return None if x is None or y is None else (x >= 0.5, y >= 0.5)
