"""The runner: tasks x systems x models -> scored, resumable run directories.

For each sample (bounded concurrency) a fresh system ingests the history once, in date order; then its
questions are answered concurrently (over all samples, at most twice as many at once as the widest role has
slots), scored as they finish and appended to `samples.jsonl` at once. A failed
LLM call marks its question failed (recorded, retried on `--resume`), never an answer.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from pydantic import BaseModel, Field, ValidationError

from harness import __version__
from harness.embeddings.base import Embedder
from harness.embeddings.build import DEFAULT_EMBEDDER_SPEC, build_embedder
from harness.llm import Model
from harness.llm.build import build_model
from harness.llm.cache import CallCache, default_cache_path
from harness.llm.spec import DEFAULT_MODEL_SPEC
from harness.metrics.abstention import abstention_summary
from harness.metrics.aggregate import aggregate
from harness.metrics.base import Metric, MetricContext
from harness.plugins import SYSTEMS, TASKS
from harness.progress import RunProgress
from harness.provenance import git_sha, package_versions
from harness.results import (
    Efficiency,
    IngestRecord,
    MemorySummary,
    QuestionRecord,
    RoleInfo,
    RunCounts,
    RunDir,
    RunResult,
    RunSpec,
    SnapshotOutcome,
    now_iso,
    summarize_usage,
)
from harness.scoring import (
    JUDGE_ROLE,
    PUBLISHED_JUDGE,
    build_metric,
    default_metric_names,
    is_judge_role,
    judge_agreement,
    score_record,
)
from harness.selection import stratified_subset
from harness.snapshots import SnapshotStore
from harness.system import (
    MemorySystem,
    Snapshotting,
    SystemContext,
    check_system_options,
    ingest_history,
    prompt_fingerprints,
    reads_gold_evidence,
)
from harness.task import DataOptions, TaskData
from harness.types import MemoryItem, Question, Sample, StageUsage, merge_usage

log = logging.getLogger(__name__)


class RunConfig(BaseModel):
    """One run, as the CLI (or a script) describes it."""

    task: str
    system: str
    task_options: dict[str, str] = Field(default_factory=dict)
    system_options: dict[str, str] = Field(default_factory=dict)
    data: DataOptions = Field(default_factory=DataOptions)
    roles: dict[str, str] = Field(default_factory=lambda: {"model": DEFAULT_MODEL_SPEC})
    """Role -> backend spec. `model` is the system's own LLM; `judge`, `judge_2`, ... (optional) grade answers."""
    embedder: str = DEFAULT_EMBEDDER_SPEC
    """Embedding model for systems that retrieve; built only if a system asks for it."""
    metrics: list[str] | None = None
    """None: the task's default metrics, plus `llm_judge` graded by each judge role."""
    judge_repeats: int = 1
    """Times each judge grades each answer (seeds 0..N-1): the spread across repeats is reported per cell."""
    judge_temperature: float | None = None
    """Overrides the judge prompts' own temperature (0)."""
    limit: int | None = None
    seed: int = 0
    output_dir: Path = Path("results")
    run_id: str | None = None
    use_cache: bool = True
    cache_path: Path | None = None
    max_retries: int = 3
    max_concurrency: int = 8
    """LLM calls in flight per role."""
    timeout_s: float | None = None
    """The most one LLM request may take before it is given up and retried (None: the backend's own limit)."""
    max_samples: int | None = None
    """Histories processed at once; default 1 when a role runs on a single-slot local engine, else 4."""
    snapshot_dir: Path | None = None
    """Where memory snapshots are kept (default: the harness cache's `memory_snapshots/`); off with `use_cache`."""


@dataclass
class _Written:
    """The records of a run directory as this process holds them: those a resumed run kept, then each one appended
    (in file order), so the final summary need not read back and parse thousands of lines it wrote."""

    run_dir: RunDir
    questions: list[QuestionRecord]
    ingests: list[IngestRecord]

    def question(self, record: QuestionRecord) -> None:
        self.run_dir.append_question(record)
        self.questions.append(record)

    def ingest(self, record: IngestRecord) -> None:
        self.run_dir.append_ingest(record)
        self.ingests.append(record)


@dataclass
class _Run:
    """The pieces of a run once everything is loaded and built."""

    config: RunConfig
    task: TaskData
    samples: list[Sample]
    models: dict[str, Model]
    metrics: list[Metric]
    run_dir: RunDir
    written: _Written
    result: RunResult
    embedder: Callable[[], Embedder]
    snapshots: SnapshotStore | None


async def run(config: RunConfig, models: dict[str, Model] | None = None, resume: bool = False) -> RunResult:
    """Execute (or, with `resume`, continue) a run and return its final `run.json` contents.

    `models` replaces the backends named in `config.roles` (tests pass mock models here).
    """
    state = _prepare(config, models, resume)
    owned = models is None
    try:
        await _execute(state)
    except (asyncio.CancelledError, KeyboardInterrupt):
        _finish(state, "interrupted")
        log.warning("interrupted; continue with: python -m harness run --resume %s", state.run_dir.path)
        raise
    except Exception as error:
        _finish(state, "failed", error=f"{type(error).__name__}: {error}")
        raise
    finally:
        if owned:
            for model in state.models.values():
                await model.aclose()
    return _finish(state, "finished")


def config_of_run(run_dir: Path) -> RunConfig:
    """The configuration a run directory was made with, for `--resume`."""
    spec = RunDir(run_dir).read_result().spec
    return RunConfig(
        task=spec.task,
        system=spec.system,
        task_options={k: str(v) for k, v in spec.task_options.items() if v is not None},
        system_options=spec.system_options,
        data=spec.data_options,
        roles={role: spec.current_spec(role) for role in spec.roles},
        embedder=spec.embedder or DEFAULT_EMBEDDER_SPEC,
        metrics=spec.metrics,
        judge_repeats=spec.judge_repeats,
        judge_temperature=spec.judge_temperature,
        limit=spec.limit,
        seed=spec.seed,
        output_dir=run_dir.parent.parent.parent,
        run_id=run_dir.name,
    )


def _prepare(config: RunConfig, models: dict[str, Model] | None, resume: bool) -> _Run:
    check_system_options(config.system, SYSTEMS.get(config.system), config.system_options)
    task_data = TASKS.get(config.task).load(config.data, **config.task_options)
    samples = task_data.samples
    if config.limit is not None:
        samples = stratified_subset(samples, config.limit, config.seed)
    if models is None:
        cache = CallCache(config.cache_path or default_cache_path()) if config.use_cache else None
        models = {
            role: build_model(
                spec,
                cache=cache,
                max_retries=config.max_retries,
                max_concurrency=config.max_concurrency,
                timeout_s=config.timeout_s,
            )
            for role, spec in config.roles.items()
        }
    metric_names = config.metrics or default_metric_names(task_data.default_metrics, models)
    context = MetricContext(
        judges={role: model for role, model in models.items() if is_judge_role(role)},
        judge_style=task_data.judge_style,
        judge_repeats=config.judge_repeats,
        judge_temperature=config.judge_temperature,
    )
    metrics = [build_metric(name, context) for name in metric_names]
    factory = SYSTEMS.get(config.system)
    spec = build_spec(
        config,
        task_data,
        models,
        metric_names,
        prompt_fingerprints(factory),
        reads_gold_evidence=reads_gold_evidence(factory),
    )
    run_id = config.run_id or f"{time.strftime('%Y%m%d-%H%M%S')}-{spec.config_hash[:6]}"
    run_dir = RunDir(config.output_dir / config.task / config.system / run_id)
    if resume:
        previous = run_dir.read_result()
        try:
            resumed = previous.spec.resumed_as(spec)
        except ValueError as error:
            raise ValueError(f"{run_dir.run_file}: {error}") from None
        result = previous.model_copy(update={"spec": resumed, "status": "running", "finished_at": None, "error": None})
        written = _Written(run_dir, run_dir.keep_finished_questions(), run_dir.read_ingests())
    else:
        if run_dir.run_file.exists():
            raise FileExistsError(f"{run_dir.path} already holds a run; use --resume to continue it")
        planned = sum(len(sample.questions) for sample in samples)
        result = RunResult(run_id=run_id, status="running", created_at=now_iso(), spec=spec, planned_questions=planned)
        written = _Written(run_dir, [], [])
    run_dir.write_result(result)
    embedder = functools.cache(lambda: build_embedder(config.embedder, use_cache=config.use_cache))
    snapshots = SnapshotStore(config.snapshot_dir) if config.use_cache else None
    return _Run(config, task_data, samples, models, metrics, run_dir, written, result, embedder, snapshots)


def role_info(model: Model) -> RoleInfo:
    return RoleInfo(
        spec=model.spec,
        provider=model.info.provider,
        model=model.info.model,
        base_url=model.info.base_url,
        context_window=model.info.context_window,
        price=model.price.source if model.price else None,
        structured_outputs=model.info.structured_outputs,
        trained=model.info.extra.get("trained"),
    )


def build_spec(
    config: RunConfig,
    task: TaskData,
    models: dict[str, Model],
    metric_names: list[str],
    prompts: dict[str, str],
    *,
    reads_gold_evidence: bool = False,
) -> RunSpec:
    """The run spec of `config` on a loaded task, with its config hash."""
    spec = RunSpec(
        task=config.task,
        task_version=task.version,
        task_options=task.options,
        label_convention=task.label_convention,
        label_description=task.label_description,
        data=task.data,
        data_options=config.data,
        system=config.system,
        system_options=config.system_options,
        roles={role: role_info(model) for role, model in models.items()},
        embedder=config.embedder,
        prompts=prompts,
        reads_gold_evidence=reads_gold_evidence,
        metrics=metric_names,
        judge_style=task.judge_style,
        judge_repeats=config.judge_repeats,
        judge_temperature=config.judge_temperature,
        question_types=task.question_types,
        limit=config.limit,
        seed=config.seed,
        harness_version=__version__,
        git_sha=git_sha(),
        packages=package_versions(),
    )
    return spec.model_copy(update={"config_hash": spec.compute_config_hash()})


async def _execute(state: _Run) -> None:
    done = {r.question_id for r in state.written.questions}
    pending = [
        (sample, [q for q in sample.questions if q.question_id not in done])
        for sample in state.samples
        if any(q.question_id not in done for q in sample.questions)
    ]
    single_slot = any(m.info.max_concurrency == 1 for m in state.models.values())
    limit = state.config.max_samples or (1 if single_slot else 4)
    gate = asyncio.Semaphore(limit)
    # Questions in answering at once, over all histories: every slot busy and as many prepared behind them.
    # Unbounded, each history would build all of its ~200 prompts (100 KB each for full-context) before the
    # first call returned, a burst of CPU and memory that kept the slots idle meanwhile.
    questions_gate = asyncio.Semaphore(2 * max(m.max_concurrency for m in state.models.values()))
    total = sum(len(qs) for _, qs in pending)
    with RunProgress(total=total, skipped=len(done)) as progress, state.run_dir.appending():

        async def one(sample: Sample, questions: list[Question]) -> None:
            async with gate:
                await _run_sample(state, sample, questions, progress, questions_gate)

        await asyncio.gather(*(one(sample, questions) for sample, questions in pending))


def _build_system(state: _Run, sample: Sample) -> tuple[MemorySystem, SystemContext]:
    system_roles = {role: m for role, m in state.models.items() if not is_judge_role(role)}
    context = SystemContext(roles=system_roles, speakers=sample.conversation.speakers, embedder_factory=state.embedder)
    return SYSTEMS.get(state.config.system)(context, **state.config.system_options), context


async def _memory_of(
    state: _Run, sample: Sample, usage: StageUsage
) -> tuple[MemorySystem, SystemContext, SnapshotOutcome | None]:
    """A system holding the sample's memory: restored from a snapshot where one fits, else ingested (and then
    stored). Returns the system, its context and what happened to the snapshot (None: the system has none)."""
    system, context = _build_system(state, sample)
    store = state.snapshots
    if store is None or not isinstance(system, Snapshotting):
        merge_usage(usage, await ingest_history(system, sample.conversation.sessions))
        return system, context, None
    identity = store.identity(state.config.system, system.snapshot_identity(), sample.conversation)
    loaded = store.load(identity)
    problem = loaded.problem
    if loaded.payload is not None:
        try:
            system.restore(loaded.payload)
            return system, context, "reused"
        except (ValueError, ValidationError) as error:
            problem = f"{store.path(identity)}: does not restore: {error}"
            system, context = _build_system(state, sample)  # nothing half-restored is kept
    if problem:
        log.warning("memory snapshot not used, ingesting again: %s", problem)
    merge_usage(usage, await ingest_history(system, sample.conversation.sessions))
    store.save(identity, cast(Snapshotting, system).snapshot())
    return system, context, "rebuilt" if problem else "built"


async def _run_sample(
    state: _Run, sample: Sample, questions: list[Question], progress: RunProgress, questions_gate: asyncio.Semaphore
) -> None:
    progress.start_sample(sample.sample_id, len(questions))
    ingest_usage: StageUsage = {}
    try:
        system, context, snapshot = await _memory_of(state, sample, ingest_usage)
    except Exception as error:  # an exhausted LLM call or a system bug: this history's questions are recorded failed
        log.debug("ingest of %s failed", sample.sample_id, exc_info=True)
        message = f"ingest failed: {type(error).__name__}: {error}"
        state.written.ingest(
            IngestRecord(sample_id=sample.sample_id, usage=ingest_usage, memory_items=0, error=message)
        )
        for question in questions:
            state.written.question(_record(sample, question, error=message))
            progress.advance(failed=True)
        return
    memory = system.memory_dump()
    state.written.ingest(
        IngestRecord(
            sample_id=sample.sample_id,
            usage=ingest_usage,
            memory_items=len(memory),
            memory_words=sum(len(item.text.split()) for item in memory),
            memory_tokens=_token_count(context.role("answer"), memory),
            stats=system.memory_stats(),
            snapshot=snapshot,
        )
    )
    state.run_dir.write_memory(sample.sample_id, memory)

    async def answer_and_score(question: Question) -> None:
        async with questions_gate:
            record = await _answer_and_score(state, system, sample, question)
        state.written.question(record)
        progress.advance(failed=record.failed)

    await asyncio.gather(*(answer_and_score(q) for q in questions))
    progress.finish_sample(sample.sample_id)


async def _answer_and_score(state: _Run, system: MemorySystem, sample: Sample, question: Question) -> QuestionRecord:
    started = time.perf_counter()
    try:
        prediction = await system.answer(question.to_query(with_evidence=state.result.spec.reads_gold_evidence))
    except Exception as error:  # a system bug or an exhausted LLM call: recorded, the run goes on
        log.debug("question %s failed", question.question_id, exc_info=True)
        return _record(sample, question, error=f"{type(error).__name__}: {error}")
    prediction.latency_s = time.perf_counter() - started
    record = _record(sample, question)
    record.prediction = prediction
    await score_record(record, state.metrics, question)
    return record


def _record(sample: Sample, question: Question, error: str | None = None) -> QuestionRecord:
    return QuestionRecord(
        sample_id=sample.sample_id,
        question_id=question.question_id,
        question_type=question.question_type,
        question=question.text,
        gold=list(question.answers),
        evidence=list(question.evidence),
        question_metadata=question.metadata,
        error=error,
    )


def summarize(
    run_dir: RunDir,
    spec: RunSpec,
    records: Sequence[QuestionRecord] | None = None,
    ingest_records: Sequence[IngestRecord] | None = None,
) -> dict[str, object]:
    """Counts, aggregates, usage and memory summary of a run directory's records: the `run.json` fields
    that `show`, `score` and resumed runs recompute from the files alone. `records` and `ingest_records` are
    the directory's question and ingest records when the caller holds them already (else they are read)."""
    records = run_dir.read_questions() if records is None else records
    answered = [r for r in records if not r.failed]
    usage: StageUsage = {}
    ingest_records = run_dir.read_ingests() if ingest_records is None else ingest_records
    ingests = list({r.sample_id: r for r in ingest_records}.values())  # the latest per history
    stats: dict[str, int] = {}
    for ingest in ingests:
        merge_usage(usage, ingest.usage)
        for key, value in ingest.stats.items():
            stats[key] = stats.get(key, 0) + value
    for record in answered:
        merge_usage(usage, record.prediction.usage if record.prediction else {})
        if record.judge_usage:
            merge_usage(usage, {JUDGE_ROLE: record.judge_usage})
    snapshots: Counter[str] = Counter(i.snapshot for i in ingests if i.snapshot)
    items = sum(i.memory_items for i in ingests)
    words = sum(i.memory_words for i in ingests)
    token_counts = [i.memory_tokens for i in ingests]
    return {
        "counts": RunCounts(
            samples=len({r.sample_id for r in records}),
            questions=len(records),
            answered=len(answered),
            failed=len(records) - len(answered),
        ),
        "aggregates": aggregate(answered, metric_names=spec.metrics, type_order=spec.question_types, seed=spec.seed),
        "usage": {stage: summarize_usage(u) for stage, u in usage.items()},
        "memory": MemorySummary(
            histories=len(ingests),
            items_total=items,
            items_per_history=round(items / len(ingests), 2) if ingests else 0.0,
            words_total=words,
            words_per_history=round(words / len(ingests), 2) if ingests else 0.0,
            tokens_total=None if None in token_counts or not ingests else sum(t for t in token_counts if t is not None),
            stats=stats,
            snapshots=dict(snapshots),
        ),
        "efficiency": _efficiency(usage, answered, spec.metrics),
        "judge_agreement": judge_agreement(answered, spec.metrics),
        "abstention": abstention_summary(answered, seed=spec.seed),
    }


def _token_count(model: Model, memory: Sequence[MemoryItem]) -> int | None:
    counts = [model.count_tokens(item.text) for item in memory]
    return None if None in counts else sum(c for c in counts if c is not None)


def _efficiency(usage: StageUsage, answered: Sequence[QuestionRecord], metrics: Sequence[str]) -> Efficiency | None:
    """None when the run holds no usage of the system (e.g. answers imported from elsewhere)."""
    system = [u for stage, u in usage.items() if stage != JUDGE_ROLE]
    if not system:
        return None
    tokens = sum(u.prompt_tokens + u.completion_tokens for u in system)
    per_correct: dict[str, float | None] = {}
    for metric in (m for m in metrics if m != PUBLISHED_JUDGE):  # a published run's tokens are not ours
        correct = sum(r.scores.get(metric) or 0.0 for r in answered)
        per_correct[metric] = round(tokens / correct, 1) if correct > 0 else None
    return Efficiency(
        system_tokens=tokens,
        system_cost_usd=round(sum(u.cost_usd for u in system), 6),
        unpriced_calls=sum(u.unpriced_calls for u in system),
        tokens_per_correct=per_correct,
    )


def _finish(state: _Run, status: str, error: str | None = None) -> RunResult:
    summary = summarize(state.run_dir, state.result.spec, state.written.questions, state.written.ingests)
    result = state.result.model_copy(update={"status": status, "finished_at": now_iso(), "error": error, **summary})
    state.run_dir.write_result(result)
    state.result = result
    return result


__all__: Sequence[str] = ["RunConfig", "config_of_run", "run", "summarize"]
