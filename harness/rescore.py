"""`harness score`: score a finished run again, or answers produced elsewhere, without running a system.

Re-scoring reads `samples.jsonl`, recomputes the chosen metrics (judge calls come from the call cache when
they were made before) and rewrites the run directory in place. Importing reads a predictions file
(`harness.predictions`), matches it to the task's questions and writes a new run directory that `show`,
`compare`, `report` and `regress` treat like any other; questions the file does not answer are recorded as
failed, so the denominator stays honest.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel, Field

from harness.llm import Model
from harness.llm.build import build_model
from harness.llm.cache import CallCache, default_cache_path
from harness.metrics.base import MetricContext
from harness.plugins import TASKS
from harness.predictions import Format, PredictionImport, read_predictions
from harness.progress import RunProgress
from harness.results import QuestionRecord, RunDir, RunResult, now_iso
from harness.runner import RunConfig, build_spec, role_info, summarize
from harness.scoring import (
    JUDGE_ROLE,
    PUBLISHED_JUDGE,
    build_metric,
    default_metric_names,
    is_judge_metric,
    is_judge_role,
    score_record,
)
from harness.task import DataOptions, TaskData
from harness.types import Prediction, Question, Sample

IMPORT_FILE = "import.json"
"""What reading the predictions file gave (matched, unmatched, ambiguous, missing), kept with the run."""


class ScoreOptions(BaseModel):
    """Which metrics to compute and with which judges."""

    metrics: list[str] | None = None
    """None: every metric of the run (re-scoring), or the task's defaults plus the judges' (importing)."""
    judges: list[str] = Field(default_factory=list)
    """Judge model specs, given to roles `judge`, `judge_2`, ...; they replace a run's earlier judges."""
    judge_repeats: int | None = None
    """None: keep the run's own (1 when importing)."""
    judge_temperature: float | None = None
    use_cache: bool = True
    cache_path: Path | None = None
    max_retries: int = 3
    max_concurrency: int = 8
    timeout_s: float | None = None
    """The most one judge request may take before it is given up and retried (None: the backend's own limit)."""


class ImportConfig(BaseModel):
    """Where answers made elsewhere come from and where their run directory goes."""

    task: str
    task_options: dict[str, str] = Field(default_factory=dict)
    data: DataOptions = Field(default_factory=DataOptions)
    predictions: Path
    format: Format | None = None
    """None: detected from the file's layout."""
    system: str = "imported"
    """The name the run is filed under (`results/<task>/<system>/<run_id>`), e.g. the published system's."""
    output_dir: Path = Path("results")
    run_id: str | None = None


def judge_role_specs(judges: Sequence[str]) -> dict[str, str]:
    """`["a", "b"]` -> `{"judge": "a", "judge_2": "b"}`."""
    return {(JUDGE_ROLE if i == 0 else f"{JUDGE_ROLE}_{i + 1}"): spec for i, spec in enumerate(judges)}


async def rescore_run(path: Path, options: ScoreOptions) -> RunResult:
    """Recompute metrics of the run at `path` in place and return its updated `run.json` contents."""
    run_dir = RunDir(path)
    result = run_dir.read_result()
    spec = result.spec
    keep = {role: info for role, info in spec.roles.items() if not (options.judges and is_judge_role(role))}
    judge_specs = judge_role_specs(options.judges) or {
        role: spec.current_spec(role) for role in spec.roles if is_judge_role(role)
    }
    judges = _build_judges(judge_specs, options)
    kept_metrics = [m for m in spec.metrics if not (options.judges and is_judge_metric(m) and m != PUBLISHED_JUDGE)]
    if options.metrics:
        to_score = options.metrics
    elif options.judges:
        to_score = default_metric_names([], judges)
    else:
        to_score = spec.metrics
    repeats = options.judge_repeats or spec.judge_repeats
    temperature = options.judge_temperature if options.judge_temperature is not None else spec.judge_temperature
    records = run_dir.latest_questions()
    dropped = set(spec.metrics) - set(kept_metrics)
    for record in records:
        for name in dropped:
            record.scores.pop(name, None)
            record.score_details.pop(name, None)
            record.repeats.pop(name, None)
    try:
        await _score_all(records, to_score, judges, spec.judge_style, repeats, temperature)
    finally:
        await _close(judges)
    new_spec = spec.model_copy(
        update={
            "roles": {**keep, **{role: role_info(model) for role, model in judges.items()}},
            "metrics": list(dict.fromkeys([*kept_metrics, *to_score])),
            "judge_repeats": repeats,
            "judge_temperature": temperature,
        }
    )
    new_spec.config_hash = new_spec.compute_config_hash()
    run_dir.rewrite_questions(records)
    return _write_result(run_dir, result.model_copy(update={"spec": new_spec}))


async def import_predictions(config: ImportConfig, options: ScoreOptions) -> tuple[RunResult, PredictionImport, Path]:
    """Score a predictions file made elsewhere as a run of system `config.system` on `config.task`."""
    task = TASKS.get(config.task).load(config.data, **config.task_options)
    imported = read_predictions(config.predictions, _matching_samples(config, task), config.format or "auto")
    judges = _build_judges(judge_role_specs(options.judges), options)
    published = sorted({name for answer in imported.answers.values() for name in answer.published})
    to_score = options.metrics or default_metric_names(task.default_metrics, judges)
    metric_names = list(dict.fromkeys([*to_score, *published]))
    run_config = RunConfig(
        task=config.task,
        system=config.system,
        task_options=config.task_options,
        system_options={
            "predictions": str(config.predictions),
            "format": imported.format,
            "sha256": hashlib.sha256(config.predictions.read_bytes()).hexdigest(),
        },
        data=config.data,
        roles=judge_role_specs(options.judges),
        metrics=metric_names,
        judge_repeats=options.judge_repeats or 1,
        judge_temperature=options.judge_temperature,
    )
    spec = build_spec(run_config, task, judges, metric_names, prompts={})
    run_id = config.run_id or f"{now_iso().replace(':', '').replace('-', '')[:15]}-{spec.config_hash[:6]}"
    run_dir = RunDir(config.output_dir / config.task / config.system / run_id)
    if run_dir.run_file.exists():
        raise FileExistsError(f"{run_dir.path} already holds a run; pick another --run-id")
    records = [_imported_record(sample.sample_id, q, imported) for sample in task.samples for q in sample.questions]
    run_dir.path.mkdir(parents=True)
    (run_dir.path / IMPORT_FILE).write_text(imported.model_dump_json(indent=2, exclude={"answers"}) + "\n")
    try:
        await _score_all(records, to_score, judges, task.judge_style, spec.judge_repeats, spec.judge_temperature)
    finally:
        await _close(judges)
    run_dir.rewrite_questions(records)
    planned = len(records)
    result = RunResult(run_id=run_id, status="finished", created_at=now_iso(), spec=spec, planned_questions=planned)
    return _write_result(run_dir, result), imported, run_dir.path


def _matching_samples(config: ImportConfig, task: TaskData) -> list[Sample]:
    """Mem0 and Zep files name conversations by position in the whole dataset, whatever split is asked for."""
    split = task.options.get("split")
    if split in (None, "all"):
        return task.samples
    whole = TASKS.get(config.task).load(config.data, **{**config.task_options, "split": "all"})
    return whole.samples


def _imported_record(sample_id: str, question: Question, imported: PredictionImport) -> QuestionRecord:
    answer = imported.answers.get(question.question_id)
    record = QuestionRecord(
        sample_id=sample_id,
        question_id=question.question_id,
        question_type=question.question_type,
        question=question.text,
        gold=list(question.answers),
        evidence=list(question.evidence),
        question_metadata=question.metadata,
    )
    if answer is None:
        record.error = f"no answer for this question in {Path(imported.path).name}"
        return record
    record.prediction = Prediction(
        question_id=question.question_id,
        answer=answer.answer,
        latency_s=answer.latency_s or 0.0,
        metadata={"source_row": answer.source_row},
    )
    record.scores.update(answer.published)
    return record


def _build_judges(specs: dict[str, str], options: ScoreOptions) -> dict[str, Model]:
    cache = CallCache(options.cache_path or default_cache_path()) if options.use_cache else None
    return {
        role: build_model(
            spec,
            cache=cache,
            max_retries=options.max_retries,
            max_concurrency=options.max_concurrency,
            timeout_s=options.timeout_s,
        )
        for role, spec in specs.items()
    }


async def _close(models: dict[str, Model]) -> None:
    for model in models.values():
        await model.aclose()


async def _score_all(
    records: Sequence[QuestionRecord],
    metric_names: Sequence[str],
    judges: dict[str, Model],
    judge_style: str,
    judge_repeats: int,
    judge_temperature: float | None,
) -> None:
    """Score every answered record with `metric_names`, concurrently (each judge bounds its own calls)."""
    context = MetricContext(
        judges=judges, judge_style=judge_style, judge_repeats=judge_repeats, judge_temperature=judge_temperature
    )
    metrics = [build_metric(name, context) for name in metric_names]
    answered = [r for r in records if not r.failed]
    with RunProgress(total=len(answered)) as progress:

        async def one(record: QuestionRecord) -> None:
            await score_record(record, metrics, record.to_question())
            progress.advance()

        await asyncio.gather(*(one(record) for record in answered))


def _write_result(run_dir: RunDir, result: RunResult) -> RunResult:
    summary = summarize(run_dir, result.spec)
    updated = result.model_copy(update={"finished_at": result.finished_at or now_iso(), **summary})
    run_dir.write_result(updated)
    return updated


__all__ = ["ImportConfig", "ScoreOptions", "import_predictions", "judge_role_specs", "rescore_run"]
