"""The run directory: `run.json` (spec, status, aggregates, usage) and `samples.jsonl` (one record per question).

Records are appended as each question finishes, so a killed run keeps its work and `--resume` continues it.
Reports, re-scoring and comparisons read these files alone.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
from collections.abc import Iterable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TextIO, TypeVar

from pydantic import BaseModel, Field, ValidationError

from harness.inputs import InputError, read_text, validation_problems
from harness.llm.spec import parse_spec
from harness.llm.structured import StructuredOutputs
from harness.metrics.abstention import AbstentionSummary
from harness.metrics.aggregate import MetricAggregate
from harness.task import DataFileInfo, DataOptions
from harness.types import JSONScalar, MemoryItem, Prediction, Question, ScoreDetail, StageUsage, Usage

if TYPE_CHECKING:
    import pandas as pd

SCHEMA_VERSION = 1
RUN_FILE = "run.json"
SAMPLES_FILE = "samples.jsonl"
INGEST_FILE = "ingest.jsonl"
MEMORY_DIR = "memory"

M = TypeVar("M", bound=BaseModel)

RunStatus = Literal["running", "finished", "interrupted", "failed"]


class RoleInfo(BaseModel):
    spec: str
    provider: str
    model: str
    base_url: str | None = None
    context_window: int | None = None
    price: str | None = None
    """Where its dollar price comes from (`harness.llm.pricing`); None when unknown."""
    structured_outputs: StructuredOutputs | None = None
    """What its backend does with a call's JSON schema: `enforced`, `requested`, `validated` or `unconstrained`
    (`harness.llm.structured`); None in runs made before this was recorded."""
    trained: dict[str, Any] | None = None
    """For a trained checkpoint (`hf:DIR` of `trainers.memr1`): what its train_meta.json says it was trained
    for, reward choice and weights included; None for other models."""


class EndpointChange(BaseModel):
    """A role's server moved when the run was resumed: the same provider and model at another base URL."""

    role: str
    from_url: str | None
    to_url: str | None
    at: str
    """When the resume that moved it started (ISO 8601, UTC)."""


class RunSpec(BaseModel):
    """Everything that decides a run's results; enough to resume it."""

    task: str
    task_version: str
    task_options: dict[str, JSONScalar]
    label_convention: str | None = None
    label_description: str | None = None
    data: DataFileInfo
    data_options: DataOptions
    system: str
    system_options: dict[str, str] = Field(default_factory=dict)
    roles: dict[str, RoleInfo]
    embedder: str | None = None
    """Embedding model spec (used only by systems that retrieve)."""
    prompts: dict[str, str] = Field(default_factory=dict)
    """Fingerprints (sha256 prefixes) of the system's prompts, by name (`harness.system.prompt_fingerprints`)."""
    reads_gold_evidence: bool = False
    """The system was handed each question's gold evidence (a reference ceiling such as `oracle-evidence`, not a
    memory system): marked in every table, warned about in `compare`. Not in the config hash: the system decides it."""
    metrics: list[str]
    judge_style: str = "mem0"
    """Which benchmark's judge prompts `llm_judge` used (the task's)."""
    judge_repeats: int = 1
    judge_temperature: float | None = None
    question_types: list[str]
    limit: int | None = None
    seed: int = 0
    config_hash: str = ""
    """sha256 over the fields above: runs with equal hashes are comparable question for question."""
    harness_version: str = ""
    git_sha: str | None = None
    packages: dict[str, str] = Field(default_factory=dict)
    endpoint_changes: list[EndpointChange] = Field(default_factory=list)
    """Servers that moved on `--resume`, in order; `roles` keeps the specs the run started with. Not in the
    config hash: the models are the same."""

    def current_spec(self, role: str) -> str:
        """The role's backend spec as last resumed: its first spec at the base URL it last moved to."""
        moves = [change for change in self.endpoint_changes if change.role == role]
        spec = self.roles[role].spec
        return str(replace(parse_spec(spec), base_url=moves[-1].to_url)) if moves else spec

    def resumed_as(self, current: RunSpec) -> RunSpec:
        """This spec, continued by a resume built as `current`: roles may name new servers for the same
        provider and model (recorded in `endpoint_changes`); any other difference raises ValueError."""
        same_model = {
            role: info
            for role, info in current.roles.items()
            if role in self.roles and _provider_model(info.spec) == _provider_model(self.roles[role].spec)
        }
        started_as = current.model_copy(update={"roles": {**current.roles, **{r: self.roles[r] for r in same_model}}})
        if started_as.compute_config_hash() != self.config_hash:
            models = ", ".join(
                f"{role} {self.current_spec(role)} -> {info.spec}"
                for role, info in current.roles.items()
                if role in self.roles and role not in same_model
            )
            only_urls = f"; only a role's server URL may change (same provider and model): {models}" if models else ""
            raise ValueError(f"cannot resume, the configuration changed (config hash differs){only_urls}")
        moves = [
            EndpointChange(
                role=role,
                from_url=parse_spec(self.current_spec(role)).base_url,
                to_url=parse_spec(info.spec).base_url,
                at=now_iso(),
            )
            for role, info in same_model.items()
            if info.spec != self.current_spec(role)
        ]
        return self.model_copy(update={"endpoint_changes": [*self.endpoint_changes, *moves]})

    def compute_config_hash(self) -> str:
        decisive = {
            "task": self.task,
            "task_options": self.task_options,
            "data_sha256": self.data.sha256,
            "system": self.system,
            "system_options": self.system_options,
            "roles": {role: info.spec for role, info in self.roles.items()},
            "embedder": self.embedder,
            "prompts": self.prompts,
            "metrics": self.metrics,
            "judge_repeats": self.judge_repeats,
            "judge_temperature": self.judge_temperature,
            "limit": self.limit,
            "seed": self.seed,
        }
        return hashlib.sha256(json.dumps(decisive, sort_keys=True, default=str).encode()).hexdigest()


class QuestionRecord(BaseModel):
    """One line of `samples.jsonl`."""

    sample_id: str
    question_id: str
    question_type: str
    question: str
    gold: list[str]
    evidence: list[str] = Field(default_factory=list)
    question_metadata: dict[str, JSONScalar] = Field(default_factory=dict)
    prediction: Prediction | None = None
    scores: dict[str, float | None] = Field(default_factory=dict)
    repeats: dict[str, list[float | None]] = Field(default_factory=dict)
    """Per metric scored several times (judge repeats): each repeat's value; `scores` holds their mean."""
    score_details: dict[str, dict[str, ScoreDetail]] = Field(default_factory=dict)
    judge_usage: Usage | None = None
    error: str | None = None
    """Set when the system failed on this question (after retries); such a record is retried on resume."""

    @property
    def failed(self) -> bool:
        return self.error is not None

    def to_question(self) -> Question:
        """The question as the metrics see it, rebuilt from the record (for re-scoring without the task)."""
        return Question(
            question_id=self.question_id,
            text=self.question,
            answers=tuple(self.gold),
            question_type=self.question_type,
            evidence=tuple(self.evidence),
            metadata=self.question_metadata,
        )


SnapshotOutcome = Literal["built", "reused", "rebuilt"]


class IngestRecord(BaseModel):
    """One line of `ingest.jsonl`: the cost of ingesting one history."""

    sample_id: str
    usage: StageUsage
    memory_items: int
    memory_words: int = 0
    """Whitespace-separated words over the texts the memory holds: its footprint in any model's prompt."""
    memory_tokens: int | None = None
    """The same texts in tokens of the answering model; None when its backend cannot count (remote APIs)."""
    stats: dict[str, int] = Field(default_factory=dict)
    """The system's `memory_stats()` after ingesting this history."""
    snapshot: SnapshotOutcome | None = None
    """The memory was ingested and stored (`built`), restored without ingesting (`reused`), or ingested again
    because the stored one was stale or corrupt (`rebuilt`); None: the system keeps no snapshots."""
    error: str | None = None


class UsageSummary(BaseModel):
    calls: int
    cache_hits: int
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    latency_p50_s: float | None
    latency_p95_s: float | None
    latency_p99_s: float | None = None
    cost_usd: float = 0.0
    unpriced_calls: int = 0
    """Calls with no known price: when non-zero, `cost_usd` is a lower bound."""
    retries: int = 0
    """Transient failures retried before the calls succeeded (absent from runs made before it was counted)."""


class MemorySummary(BaseModel):
    """The memory systems built, over all histories of a run."""

    histories: int
    items_total: int
    items_per_history: float
    words_total: int = 0
    words_per_history: float = 0.0
    tokens_total: int | None = None
    """Tokens of the answering model over all histories' memories; None unless every history was counted."""
    stats: dict[str, int] = Field(default_factory=dict)
    """The systems' counters summed over histories (e.g. ADD/UPDATE/DELETE/NOOP, invalid outputs)."""
    snapshots: dict[str, int] = Field(default_factory=dict)
    """Histories per snapshot outcome (`built`, `reused`, `rebuilt`); empty for systems without snapshots."""


class JudgeAgreement(BaseModel):
    """How two judge metrics agree on the questions both scored (verdicts: score >= 0.5 is correct)."""

    a: str
    b: str
    n: int
    raw: float
    """Fraction of questions with the same verdict."""
    kappa: float | None
    """Cohen's kappa; None when undefined (both judges gave one and the same verdict throughout)."""


class Efficiency(BaseModel):
    """What a run's answers cost the system under test (the judge's calls are left out)."""

    system_tokens: int
    """Prompt + completion tokens of every stage but `judge`."""
    system_cost_usd: float
    unpriced_calls: int
    """System calls of models with no known price: when non-zero, `system_cost_usd` is a lower bound."""
    tokens_per_correct: dict[str, float | None] = Field(default_factory=dict)
    """Per metric: system tokens / the sum of its scores over answered questions (correct answers for 0/1
    metrics); None when nothing scored above 0."""


class RunCounts(BaseModel):
    samples: int
    questions: int
    answered: int
    failed: int


class RunResult(BaseModel):
    """The contents of `run.json`."""

    schema_version: int = SCHEMA_VERSION
    run_id: str
    status: RunStatus
    created_at: str
    finished_at: str | None = None
    spec: RunSpec
    planned_questions: int | None = None
    """Questions the run set out to answer; more than `counts.questions` while it is incomplete."""
    counts: RunCounts | None = None
    aggregates: dict[str, MetricAggregate] = Field(default_factory=dict)
    usage: dict[str, UsageSummary] = Field(default_factory=dict)
    memory: MemorySummary | None = None
    efficiency: Efficiency | None = None
    judge_agreement: list[JudgeAgreement] = Field(default_factory=list)
    """Per pair of judge metrics (several judges, or ours vs a published run's own grades)."""
    abstention: AbstentionSummary | None = None
    """Abstention recall, hallucination and false abstention rates, apart from the headline scores; None when the
    run holds no unanswerable question (`harness.metrics.abstention`)."""
    error: str | None = None


def _provider_model(spec: str) -> tuple[str, str | None]:
    parsed = parse_spec(spec)
    return parsed.provider, parsed.model


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def summarize_usage(usage: Usage) -> UsageSummary:
    ordered = sorted(usage.latencies_s)

    def pct(q: float) -> float | None:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else None

    return UsageSummary(
        calls=usage.calls,
        cache_hits=usage.cache_hits,
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        latency_s=round(usage.latency_s, 3),
        latency_p50_s=pct(0.5),
        latency_p95_s=pct(0.95),
        latency_p99_s=pct(0.99),
        cost_usd=round(usage.cost_usd, 6),
        unpriced_calls=usage.unpriced_calls,
        retries=usage.retries,
    )


class RunDir:
    """Reads and writes one run directory; appends are thread-safe and flushed line by line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._open_files: dict[str, TextIO] | None = None
        """Files kept open for appending inside `appending()`; None outside it (each append opens its file)."""

    @property
    def run_file(self) -> Path:
        return self.path / RUN_FILE

    def write_result(self, result: RunResult) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        tmp = self.run_file.with_suffix(".json.tmp")
        tmp.write_text(result.model_dump_json(indent=2) + "\n")
        os.replace(tmp, self.run_file)

    def read_result(self) -> RunResult:
        if not self.run_file.exists():
            raise FileNotFoundError(f"{self.run_file}: no run.json here; is {self.path} a run directory?")
        try:
            return RunResult.model_validate_json(read_text(self.run_file))
        except ValidationError as error:
            raise InputError(f"{self.run_file}: not a valid run.json: {validation_problems(error)}.") from None

    def append_question(self, record: QuestionRecord) -> None:
        self._append(SAMPLES_FILE, record)

    def append_ingest(self, record: IngestRecord) -> None:
        self._append(INGEST_FILE, record)

    @contextlib.contextmanager
    def appending(self) -> Iterator[None]:
        """Keep the record files open between appends (a run's thousands of appends each paid an open and a
        close); every line is still flushed as it is written, so a killed run keeps it."""
        with self._lock:
            self._open_files = {}
        try:
            yield
        finally:
            with self._lock:
                for handle in self._open_files.values():
                    handle.close()
                self._open_files = None

    def _append(self, name: str, record: BaseModel) -> None:
        line = record.model_dump_json() + "\n"
        with self._lock:
            if self._open_files is None:
                with (self.path / name).open("a", encoding="utf-8") as f:
                    f.write(line)
                return
            handle = self._open_files.get(name)
            if handle is None:
                handle = self._open_files[name] = (self.path / name).open("a", encoding="utf-8")
            handle.write(line)
            handle.flush()

    def read_questions(self) -> list[QuestionRecord]:
        return _read_jsonl(self.path / SAMPLES_FILE, QuestionRecord)

    def read_ingests(self) -> list[IngestRecord]:
        return _read_jsonl(self.path / INGEST_FILE, IngestRecord)

    def keep_finished_questions(self) -> list[QuestionRecord]:
        """Drop failed records (and a torn last line) so a resumed run retries them; returns the kept ones."""
        kept = [r for r in self.latest_questions() if not r.failed]
        self.rewrite_questions(kept)
        return kept

    def latest_questions(self) -> list[QuestionRecord]:
        """One record per question: the last one written (a resumed run may have rewritten a question)."""
        return list({r.question_id: r for r in self.read_questions()}.values())

    def rewrite_questions(self, records: list[QuestionRecord]) -> None:
        """Replace `samples.jsonl` atomically (re-scoring, resuming)."""
        self.path.mkdir(parents=True, exist_ok=True)
        tmp = self.path / (SAMPLES_FILE + ".tmp")
        tmp.write_text("".join(r.model_dump_json() + "\n" for r in records), encoding="utf-8")
        with self._lock:
            if self._open_files is not None and SAMPLES_FILE in self._open_files:  # appends go to the new file
                self._open_files.pop(SAMPLES_FILE).close()
            os.replace(tmp, self.path / SAMPLES_FILE)

    def write_memory(self, sample_id: str, items: list[MemoryItem]) -> None:
        folder = self.path / MEMORY_DIR
        folder.mkdir(exist_ok=True)
        safe = sample_id.replace("/", "_")
        (folder / f"{safe}.jsonl").write_text("".join(i.model_dump_json() + "\n" for i in items), encoding="utf-8")


def load_runs(paths: Iterable[Path | str]) -> pd.DataFrame:
    """Runs (run directories, or folders holding them) as a pandas DataFrame, a row per question and metric:
    `harness.frames.load_runs`, where the columns are described. pandas is imported on the first call only."""
    from harness.frames import load_runs as frame_of_runs

    return frame_of_runs(paths)


def _read_jsonl(path: Path, model: type[M]) -> list[M]:
    if not path.exists():
        return []
    records: list[M] = []
    # Split on newlines only: str.splitlines would also break inside answers holding U+2028 or U+0085.
    lines = read_text(path).removesuffix("\n").split("\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(model.model_validate_json(line))
        except ValidationError as error:
            if number == len(lines):  # a run killed mid-write leaves a torn last line: that record is redone
                break
            raise InputError(
                f"{path}: line {number}: not a valid {model.__name__} record: {validation_problems(error)}."
            ) from None
    return records
