"""`harness calibrate-judge`: how often a judge accepts known-wrong answers and rejects known-right ones.

A judge's score is only as good as its verdicts. The labelled set is built from the task's data alone, so any
judge can be calibrated on any task without human labels:

- known right: the gold answer itself (`gold`), and the gold answer in a sentence (`reworded`: "The answer is:
  <gold>."), which every judge prompt should accept;
- known wrong: the gold answer of another question of the same type in the same history whose gold differs
  after normalization (`other-gold`: on topic, plausible, wrong; where the history has no such question, as in
  LongMemEval's one question per history, another history's; where the task has none of the type, another
  type's: `other-type-gold`), and LoCoMo's `adversarial_answer` where a question with a gold answer carries one
  (`adversarial`).

Each prompt (the task's own judge prompt, `llm_judge`, and the strict one, `llm_judge_strict`, side by side)
grades every labelled answer once. Reported per question type and overall: the false-acceptance rate (wrong
answers labelled correct) and the false-rejection rate (right answers labelled wrong), each with n and a 95 %
Wilson interval; unreadable verdicts are counted apart, not as either. The set is a seeded, type-stratified
sample of questions (`--limit`), so the same seed gives the same set.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from harness.llm import LLMCallFailed
from harness.metrics.base import Metric, MetricContext
from harness.metrics.f1_locomo import normalize_answer
from harness.results import QuestionRecord, RunDir
from harness.selection import allocate, stratified_subset
from harness.stats import Interval, agreement_intervals, cohen_kappa, wilson_interval
from harness.tables import ReportTable
from harness.task import DataOptions
from harness.types import Prediction, Question, Sample, Score

Kind = Literal["gold", "reworded", "other-gold", "other-type-gold", "adversarial"]
RIGHT_KINDS: tuple[Kind, ...] = ("gold", "reworded")
CALIBRATED_PROMPTS = ("llm_judge", "llm_judge_strict")
OVERALL = "overall"


@dataclass(frozen=True)
class LabelledAnswer:
    question: Question
    answer: str
    kind: Kind

    @property
    def correct(self) -> bool:
        return self.kind in RIGHT_KINDS


def reworded(gold: str) -> str:
    """The gold answer in a sentence: the same fact, in words a judge must still accept."""
    return f"The answer is: {gold.strip().rstrip('.')}."


def labelled_set(samples: Sequence[Sample], seed: int = 0, limit: int | None = None) -> list[LabelledAnswer]:
    """The labelled answers of the questions that have a gold answer (a seeded, type-stratified `limit` of
    them), in data order: each question's right answers, then its wrong ones."""
    answerable = [
        sample.model_copy(update={"questions": tuple(q for q in sample.questions if q.answers)}) for sample in samples
    ]
    answerable = [s for s in answerable if s.questions]
    chosen = stratified_subset(answerable, limit, seed) if limit is not None else answerable
    by_type: dict[str, list[Question]] = {}
    for sample in answerable:
        for question in sample.questions:
            by_type.setdefault(question.question_type, []).append(question)
    rng = random.Random(seed)
    labelled: list[LabelledAnswer] = []
    for sample, full in zip(chosen, _matching(answerable, chosen), strict=True):
        own = {q.question_id for q in full.questions}
        for question in sample.questions:
            gold = question.answers[0]
            labelled += [LabelledAnswer(question, gold, "gold"), LabelledAnswer(question, reworded(gold), "reworded")]
            golds = {normalize_answer(a) for a in question.answers}
            others = [
                q.answers[0]
                for q in full.questions
                if q.question_type == question.question_type and normalize_answer(q.answers[0]) not in golds
            ] or [  # one question per history (LongMemEval): another history's question of the type
                q.answers[0]
                for q in by_type[question.question_type]
                if q.question_id not in own and normalize_answer(q.answers[0]) not in golds
            ]
            if others:
                labelled.append(LabelledAnswer(question, rng.choice(others), "other-gold"))
            else:  # alone of its type in the task: a question of another type gives the wrong answer
                elsewhere = [
                    q.answers[0]
                    for kind, questions in sorted(by_type.items())
                    if kind != question.question_type
                    for q in questions
                    if normalize_answer(q.answers[0]) not in golds
                ]
                if elsewhere:
                    labelled.append(LabelledAnswer(question, rng.choice(elsewhere), "other-type-gold"))
            adversarial = question.metadata.get("adversarial_answer")
            if isinstance(adversarial, str) and adversarial.strip():
                labelled.append(LabelledAnswer(question, adversarial, "adversarial"))
    return labelled


def _matching(all_samples: Sequence[Sample], chosen: Sequence[Sample]) -> list[Sample]:
    """The whole sample behind each chosen one: wrong answers are drawn from every question of the history."""
    by_id = {s.sample_id: s for s in all_samples}
    return [by_id[s.sample_id] for s in chosen]


class Rate(BaseModel):
    """Errors among the labelled answers of one kind (right or wrong) that got a readable verdict."""

    errors: int
    n: int
    """Answers with a readable verdict."""
    unjudged: int = 0
    low: float | None = None
    high: float | None = None

    @property
    def rate(self) -> float | None:
        return self.errors / self.n if self.n else None


class PromptCalibration(BaseModel):
    """One judge prompt's false-acceptance and false-rejection rates, overall and per question type."""

    false_acceptance: dict[str, Rate]
    false_rejection: dict[str, Rate]


class CalibrationReport(BaseModel):
    task: str
    judge: str
    seed: int
    limit: int | None
    answers: int
    answers_by_kind: dict[str, int]
    prompts: dict[str, PromptCalibration]
    verdicts: list[dict[str, object]] = []
    """Every graded answer: question id, type, kind, prompt, verdict (1, 0 or None) and the judge's label."""


@dataclass
class _Tally:
    errors: dict[str, int] = field(default_factory=dict)
    judged: dict[str, int] = field(default_factory=dict)
    unjudged: dict[str, int] = field(default_factory=dict)

    def add(self, group: str, error: bool | None) -> None:
        for key in (group, OVERALL):
            if error is None:
                self.unjudged[key] = self.unjudged.get(key, 0) + 1
            else:
                self.judged[key] = self.judged.get(key, 0) + 1
                self.errors[key] = self.errors.get(key, 0) + int(error)

    def rates(self, order: Sequence[str]) -> dict[str, Rate]:
        groups = [g for g in [*order, OVERALL] if g in self.judged or g in self.unjudged]
        rates = {}
        for group in groups:
            errors, n = self.errors.get(group, 0), self.judged.get(group, 0)
            interval: Interval | None = wilson_interval(errors, n) if n else None
            rates[group] = Rate(
                errors=errors,
                n=n,
                unjudged=self.unjudged.get(group, 0),
                low=interval.low if interval else None,
                high=interval.high if interval else None,
            )
        return rates


async def calibrate(
    labelled: Sequence[LabelledAnswer],
    metrics: dict[str, Metric],
    *,
    task: str,
    judge: str,
    seed: int,
    limit: int | None,
    type_order: Sequence[str] = (),
) -> CalibrationReport:
    """Grade every labelled answer with each metric (judge prompt) and tally its errors."""
    verdicts: list[dict[str, object]] = []
    prompts: dict[str, PromptCalibration] = {}
    order = [t for t in type_order if any(a.question.question_type == t for a in labelled)]
    order += sorted({a.question.question_type for a in labelled} - set(order))
    for name, metric in metrics.items():
        scores = await asyncio.gather(*(_graded(metric, item) for item in labelled))
        accepted, rejected = _Tally(), _Tally()
        for item, score in zip(labelled, scores, strict=True):
            value = score.value
            verdict = None if value is None else value >= 0.5
            if item.correct:
                rejected.add(item.question.question_type, None if verdict is None else not verdict)
            else:
                accepted.add(item.question.question_type, verdict)
            verdicts.append(
                {
                    "question_id": item.question.question_id,
                    "question_type": item.question.question_type,
                    "kind": item.kind,
                    "answer": item.answer,
                    "prompt": name,
                    "verdict": value,
                    "label": score.details.get("label"),
                }
            )
        prompts[name] = PromptCalibration(false_acceptance=accepted.rates(order), false_rejection=rejected.rates(order))
    kinds: dict[str, int] = {}
    for item in labelled:
        kinds[item.kind] = kinds.get(item.kind, 0) + 1
    return CalibrationReport(
        task=task,
        judge=judge,
        seed=seed,
        limit=limit,
        answers=len(labelled),
        answers_by_kind=kinds,
        prompts=prompts,
        verdicts=verdicts,
    )


async def calibrate_judge(
    task_name: str,
    judge_spec: str,
    data: DataOptions,
    task_options: dict[str, str],
    *,
    seed: int = 0,
    limit: int | None = None,
    use_cache: bool = True,
    max_concurrency: int = 8,
) -> CalibrationReport:
    """Load the task, build the judge and calibrate the task's judge prompt and the strict one."""
    from harness.plugins import TASKS

    task = TASKS.get(task_name).load(data, **task_options)
    async with _judge_metrics(judge_spec, task.judge_style, use_cache, max_concurrency) as metrics:
        return await calibrate(
            labelled_set(task.samples, seed, limit),
            metrics,
            task=task_name,
            judge=judge_spec,
            seed=seed,
            limit=limit,
            type_order=task.question_types,
        )


@contextlib.asynccontextmanager
async def _judge_metrics(
    judge_spec: str, judge_style: str, use_cache: bool, max_concurrency: int
) -> AsyncIterator[dict[str, Metric]]:
    """The calibrated prompts on the judge `judge_spec` names, which is closed afterwards."""
    from harness.llm.build import build_model
    from harness.llm.cache import CallCache, default_cache_path

    cache = CallCache(default_cache_path()) if use_cache else None
    judge = build_model(judge_spec, cache=cache, max_concurrency=max_concurrency)
    try:
        yield judge_metrics(MetricContext(judges={"judge": judge}, judge_style=judge_style))
    finally:
        await judge.aclose()


def calibration_table(report: CalibrationReport) -> ReportTable:
    """Per question type: each prompt's false-acceptance and false-rejection rates, x100, with intervals."""
    columns = ["question type"]
    for name in report.prompts:
        columns += [f"{name} false accept", f"{name} false reject"]
    table = ReportTable(f"judge calibration: {report.judge} on {report.task}", columns)
    first = next(iter(report.prompts.values()), None)
    groups = list(first.false_acceptance) if first else []
    groups += [g for g in (first.false_rejection if first else {}) if g not in groups]
    groups = [g for g in groups if g != OVERALL] + [OVERALL]
    for group in groups:
        cells = [group]
        for calibration in report.prompts.values():
            cells += [
                _rate_cell(calibration.false_acceptance.get(group)),
                _rate_cell(calibration.false_rejection.get(group)),
            ]
        table.add_row(*cells, emphasized=group == OVERALL)
    kinds = ", ".join(f"{kind} {n}" for kind, n in report.answers_by_kind.items())
    table.notes += [
        f"{report.answers} labelled answers ({kinds}); seed {report.seed}"
        + (f", {report.limit} questions" if report.limit else ", every question with a gold answer"),
        "false accept: known-wrong answers (another question's gold, adversarial answers) labelled correct; "
        "false reject: known-right answers (the gold, reworded) labelled wrong; x100 [95% Wilson interval] "
        "(n judged; unreadable verdicts counted apart)",
    ]
    return table


def _rate_cell(rate: Rate | None) -> str:
    if rate is None or rate.rate is None:
        return "-" if rate is None or not rate.unjudged else f"- ({rate.unjudged} unjudged)"
    text = f"{100 * rate.rate:.1f}"
    if rate.low is not None and rate.high is not None:
        text += f" [{100 * rate.low:.1f}, {100 * rate.high:.1f}]"
    text += f" (n={rate.n}"
    return text + (f", {rate.unjudged} unjudged)" if rate.unjudged else ")")


async def _graded(metric: Metric, item: LabelledAnswer) -> Score:
    """The metric's score of the labelled answer; a judge call that fails after its retries is no verdict."""
    try:
        return await metric.score(item.question, Prediction(question_id=item.question.question_id, answer=item.answer))
    except LLMCallFailed as error:
        return Score(None, {"unjudged": True, "error": str(error)})


def judge_metrics(context: MetricContext) -> dict[str, Metric]:
    """The task's own judge prompt and the strict one, on the context's `judge` role."""
    from harness.scoring import build_metric

    return {name: build_metric(name, context) for name in CALIBRATED_PROMPTS}


# Reference mode: agreement with a judge whose verdicts are known (a published run's own grades).

REFERENCE_METRIC = "published_judge"


class ReferenceAgreement(BaseModel):
    """One prompt's agreement with the reference verdicts on one group of questions."""

    n: int
    """Answers both the reference and the judge gave a verdict on."""
    unjudged: int
    raw: float | None
    raw_low: float | None = None
    raw_high: float | None = None
    kappa: float | None = None
    kappa_low: float | None = None
    kappa_high: float | None = None
    confusion: dict[str, dict[str, int]]
    """Reference verdict -> judge verdict -> answers (`correct` / `wrong`)."""


class ReferenceReport(BaseModel):
    reference: str
    """The run directory whose verdicts are the reference."""
    reference_metric: str
    judge: str
    seed: int
    limit: int | None
    answers: int
    prompts: dict[str, dict[str, ReferenceAgreement]]
    """Prompt -> question type (and `overall`) -> agreement."""
    verdicts: list[dict[str, object]] = []


def reference_records(
    records: Sequence[QuestionRecord], metric: str, seed: int, limit: int | None
) -> list[QuestionRecord]:
    """The answered records with a reference verdict, or a seeded, type-stratified `limit` of them (data order)."""
    graded = [r for r in records if not r.failed and r.prediction is not None and r.scores.get(metric) is not None]
    if limit is None or limit >= len(graded):
        return graded
    by_type: dict[str, list[QuestionRecord]] = {}
    for record in graded:
        by_type.setdefault(record.question_type, []).append(record)
    share = allocate({t: len(rs) for t, rs in by_type.items()}, limit)
    rng = random.Random(seed)
    chosen = {r.question_id for t in sorted(by_type) for r in rng.sample(by_type[t], share[t])}
    return [r for r in graded if r.question_id in chosen]


async def agree_with_reference(
    records: Sequence[QuestionRecord],
    metrics: dict[str, Metric],
    *,
    reference: str,
    judge: str,
    seed: int,
    limit: int | None,
    reference_metric: str = REFERENCE_METRIC,
    type_order: Sequence[str] = (),
) -> ReferenceReport:
    """Grade each record's answer with every metric (judge prompt) and compare with its reference verdict."""
    chosen = reference_records(records, reference_metric, seed, limit)
    order = [t for t in type_order if any(r.question_type == t for r in chosen)]
    order += sorted({r.question_type for r in chosen} - set(order))
    prompts: dict[str, dict[str, ReferenceAgreement]] = {}
    verdicts: list[dict[str, object]] = []
    for name, metric in metrics.items():
        items = [LabelledAnswer(r.to_question(), r.prediction.answer if r.prediction else "", "gold") for r in chosen]
        scores = await asyncio.gather(*(_graded(metric, item) for item in items))
        pairs: dict[str, tuple[list[str], list[str]]] = {}
        unjudged: dict[str, int] = {}
        for record, score in zip(chosen, scores, strict=True):
            reference_label = _verdict_label(record.scores[reference_metric])
            judge_label = None if score.value is None else _verdict_label(score.value)
            verdicts.append(
                {
                    "question_id": record.question_id,
                    "question_type": record.question_type,
                    "prompt": name,
                    "reference": reference_label,
                    "judge": judge_label,
                    "label": score.details.get("label"),
                }
            )
            for group in (record.question_type, OVERALL):
                if judge_label is None:
                    unjudged[group] = unjudged.get(group, 0) + 1
                    continue
                ours, theirs = pairs.setdefault(group, ([], []))
                theirs.append(reference_label)
                ours.append(judge_label)
        groups = [g for g in [*order, OVERALL] if g in pairs or g in unjudged]
        prompts[name] = {g: _agreement(*pairs.get(g, ([], [])), unjudged.get(g, 0), seed) for g in groups}
    return ReferenceReport(
        reference=reference,
        reference_metric=reference_metric,
        judge=judge,
        seed=seed,
        limit=limit,
        answers=len(chosen),
        prompts=prompts,
        verdicts=verdicts,
    )


def _verdict_label(value: float | None) -> str:
    return "correct" if value is not None and value >= 0.5 else "wrong"


def _agreement(ours: list[str], theirs: list[str], unjudged: int, seed: int) -> ReferenceAgreement:
    labels = ("correct", "wrong")
    confusion = {ref: {mine: 0 for mine in labels} for ref in labels}
    for mine, ref in zip(ours, theirs, strict=True):
        confusion[ref][mine] += 1
    if not ours:
        return ReferenceAgreement(n=0, unjudged=unjudged, raw=None, confusion=confusion)
    agreement = cohen_kappa(theirs, ours)
    raw, kappa = agreement_intervals(theirs, ours, seed=seed)
    return ReferenceAgreement(
        n=len(ours),
        unjudged=unjudged,
        raw=agreement.raw,
        raw_low=raw.low if raw else None,
        raw_high=raw.high if raw else None,
        kappa=agreement.kappa,
        kappa_low=kappa.low if kappa else None,
        kappa_high=kappa.high if kappa else None,
        confusion=confusion,
    )


async def calibrate_against_reference(
    run_dir: Path,
    judge_spec: str,
    *,
    seed: int = 0,
    limit: int | None = None,
    use_cache: bool = True,
    max_concurrency: int = 8,
) -> ReferenceReport:
    """Grade a run's answers (one whose records carry reference verdicts, e.g. an imported published run) with
    the run's task's judge prompt and the strict one, and measure agreement with the reference."""
    directory = RunDir(run_dir)
    spec = directory.read_result().spec
    records = directory.latest_questions()
    if not any(r.scores.get(REFERENCE_METRIC) is not None for r in records):
        raise ValueError(f"{run_dir}: no record carries a {REFERENCE_METRIC} verdict to compare with")
    async with _judge_metrics(judge_spec, spec.judge_style, use_cache, max_concurrency) as metrics:
        return await agree_with_reference(
            records,
            metrics,
            reference=str(run_dir),
            judge=judge_spec,
            seed=seed,
            limit=limit,
            type_order=spec.question_types,
        )


def reference_table(report: ReferenceReport) -> ReportTable:
    """Per question type: each prompt's raw agreement and Cohen's kappa with the reference, with intervals."""
    columns = ["question type"]
    for name in report.prompts:
        columns += [f"{name} agreement", f"{name} kappa"]
    table = ReportTable(f"judge agreement: {report.judge} vs {report.reference_metric} of {report.reference}", columns)
    first = next(iter(report.prompts.values()), {})
    for group in first:
        cells = [group]
        for by_group in report.prompts.values():
            part = by_group.get(group)
            cells += [_agreement_cell(part, "raw"), _agreement_cell(part, "kappa")]
        table.add_row(*cells, emphasized=group == OVERALL)
    for name, by_group in report.prompts.items():
        overall = by_group.get(OVERALL)
        if overall is not None:
            matrix = "; ".join(
                f"reference {ref}: judge correct {row['correct']}, wrong {row['wrong']}"
                for ref, row in overall.confusion.items()
            )
            table.notes.append(f"{name}, overall confusion: {matrix}; {overall.unjudged} unreadable verdicts")
    table.notes.append(
        f"{report.answers} answers (seed {report.seed}"
        + (f", a type-stratified {report.limit}" if report.limit else ", all graded")
        + "); agreement and kappa x100 [95% bootstrap interval] (n judged)"
    )
    return table


def _agreement_cell(part: ReferenceAgreement | None, which: str) -> str:
    if part is None or part.raw is None:
        return "-"
    value, low, high = (
        (part.raw, part.raw_low, part.raw_high) if which == "raw" else (part.kappa, part.kappa_low, part.kappa_high)
    )
    if value is None:
        return f"- (n={part.n})"
    text = f"{100 * value:.1f}"
    if low is not None and high is not None:
        text += f" [{100 * low:.1f}, {100 * high:.1f}]"
    return text + f" (n={part.n})"


__all__ = [
    "CalibrationReport",
    "LabelledAnswer",
    "ReferenceReport",
    "agree_with_reference",
    "calibrate",
    "calibrate_against_reference",
    "calibrate_judge",
    "calibration_table",
    "judge_metrics",
    "labelled_set",
    "reference_table",
    "reworded",
]
