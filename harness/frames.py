"""Runs as one tidy pandas DataFrame: a row per question and metric, for notebooks and leaderboards.

Built from the run directories alone (`run.json` and `samples.jsonl`), finished or not: a run still going or
killed contributes the questions it has recorded, and its `status` says so. pandas (the `frames` extra) is
imported by this module only, never by `harness.results` or the CLI's start-up.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from harness.results import RUN_FILE, QuestionRecord, RunDir, RunResult
from harness.types import StageUsage, Usage

try:
    import pandas as pd
except ImportError as error:
    raise ImportError('DataFrames of runs need pandas: pip install "memory-harness[frames]"') from error

if TYPE_CHECKING:
    from datasets import Dataset

INSTALL_DATASETS = 'pip install "memory-harness[train]"'

COLUMNS: dict[str, str] = {
    "run_dir": "string",
    "run_id": "string",
    "status": "string",
    "task": "string",
    "task_version": "string",
    "task_options": "string",
    "label_convention": "string",
    "system": "string",
    "system_options": "string",
    "model": "string",
    "judge": "string",
    "roles": "string",
    "config_hash": "string",
    "seed": "int64",
    "sample_id": "string",
    "question_id": "string",
    "question_type": "string",
    "question": "string",
    "gold": "object",
    "answer": "string",
    "error": "string",
    "failed": "bool",
    "latency_s": "float64",
    "system_calls": "int64",
    "system_prompt_tokens": "int64",
    "system_completion_tokens": "int64",
    "system_cost_usd": "float64",
    "judge_calls": "int64",
    "judge_prompt_tokens": "int64",
    "judge_completion_tokens": "int64",
    "judge_cost_usd": "float64",
    "metric": "string",
    "score": "float64",
    "judge_label": "string",
    "score_error": "string",
}
"""The frame's columns and their dtypes, in order (see `load_runs`)."""

_Row = dict[str, object]


def load_runs(paths: Iterable[Path | str]) -> pd.DataFrame:
    """One row per question and metric of every run directory in `paths` (or below them: any folder holding
    `run.json`), runs in the order of `paths` (those below one folder sorted by path), questions in record order.

    Columns (dtypes in `COLUMNS`; text columns are pandas `string`, missing values `<NA>`):

    - run_dir: the run directory; run_id, status (`finished`, `running`, `interrupted`, `failed`), task,
      task_version, label_convention (how question types are named, e.g. LoCoMo's `mem0` or `locomo`), system;
      task_options and system_options as `key=value, ...`; model and judge: the specs of roles `model` and
      `judge`; roles: every role as `role=spec, ...`; config_hash (equal hashes: the same questions and
      settings); seed.
    - sample_id, question_id, question_type, question, gold (a list of the gold answers: empty for
      adversarial questions), answer (`<NA>` where the question failed), error and failed (the system failed on
      it after retries: no answer, no score).
    - Per question, repeated on each of its metric rows (filter one metric before summing them): latency_s of
      the answer; system_calls, system_prompt_tokens, system_completion_tokens, system_cost_usd: the LLM calls
      that answered it (a history's ingestion is not a question's and is left out); judge_calls, ...: those
      that graded it, over all judge metrics.
    - metric (each of the run's metrics: a failed question has a row per metric too), score (NaN where
      unscored: an unreadable judge reply, a failed question, a metric that does not apply) and judge_label
      (the judge's verdict, e.g. CORRECT; per repeat comma-joined, an unreadable reply's left empty; `<NA>` for
      other metrics), score_error (why a metric could not score an answer, e.g. a judge call that failed).

    A resumed run's question appears once, as last recorded; a torn last line of a killed run is skipped.
    """
    run_dirs = find_run_dirs(paths)
    return runs_frame([(path, RunDir(path).read_result()) for path in run_dirs])


def find_run_dirs(paths: Iterable[Path | str]) -> list[Path]:
    """Each path that is a run directory, else the run directories below it (sorted); an error names a path
    that does not exist or holds none."""
    found: list[Path] = []
    for given in paths:
        path = Path(given)
        if (path / RUN_FILE).is_file():
            found.append(path)
        elif not path.is_dir():
            raise FileNotFoundError(f"{path}: no such run directory or folder")
        else:
            below = sorted(run_file.parent for run_file in path.rglob(RUN_FILE))
            if not below:
                raise FileNotFoundError(f"{path}: holds no run directory (no {RUN_FILE} below it)")
            found += below
    return list(dict.fromkeys(found))


def runs_frame(runs: Sequence[tuple[Path, RunResult]]) -> pd.DataFrame:
    """The frame of `load_runs` for run directories whose `run.json` is already read."""
    rows = [row for path, result in runs for row in _run_rows(path, result)]
    columns = {name: [row[name] for row in rows] for name in COLUMNS}
    return pd.DataFrame(columns, columns=list(COLUMNS)).astype(COLUMNS)


def to_dataset(frame: pd.DataFrame) -> Dataset:
    """The frame as a Hugging Face `datasets.Dataset` (the `train` extra), e.g. to push a run to the Hub."""
    try:
        from datasets import Dataset
    except ImportError as error:
        raise ImportError(f"a Dataset needs the datasets package: {INSTALL_DATASETS}") from error
    return Dataset.from_pandas(frame, preserve_index=False)


def _run_rows(path: Path, result: RunResult) -> list[_Row]:
    spec = result.spec
    roles = spec.roles
    run: _Row = {
        "run_dir": str(path),
        "run_id": result.run_id,
        "status": result.status,
        "task": spec.task,
        "task_version": spec.task_version,
        "task_options": _pairs(spec.task_options),
        "label_convention": spec.label_convention,
        "system": spec.system,
        "system_options": _pairs(spec.system_options),
        "model": roles["model"].spec if "model" in roles else None,
        "judge": roles["judge"].spec if "judge" in roles else None,
        "roles": _pairs({role: info.spec for role, info in roles.items()}),
        "config_hash": spec.config_hash,
        "seed": spec.seed,
    }
    rows = []
    for record in RunDir(path).latest_questions():
        question = run | _question_fields(record)
        rows += [question | _metric_fields(record, metric) for metric in spec.metrics]
    return rows


def _question_fields(record: QuestionRecord) -> _Row:
    prediction = record.prediction
    system = _total(prediction.usage if prediction else {})
    judge = record.judge_usage or Usage()
    return {
        "sample_id": record.sample_id,
        "question_id": record.question_id,
        "question_type": record.question_type,
        "question": record.question,
        "gold": list(record.gold),
        "answer": prediction.answer if prediction and not record.failed else None,
        "error": record.error,
        "failed": record.failed,
        "latency_s": prediction.latency_s if prediction else None,
        "system_calls": system.calls,
        "system_prompt_tokens": system.prompt_tokens,
        "system_completion_tokens": system.completion_tokens,
        "system_cost_usd": system.cost_usd,
        "judge_calls": judge.calls,
        "judge_prompt_tokens": judge.prompt_tokens,
        "judge_completion_tokens": judge.completion_tokens,
        "judge_cost_usd": judge.cost_usd,
    }


def _metric_fields(record: QuestionRecord, metric: str) -> _Row:
    details = record.score_details.get(metric, {})
    labels = details.get("labels", details.get("label"))
    if isinstance(labels, list):
        labels = ",".join("" if label is None else str(label) for label in labels)
    error = details.get("error")
    return {
        "metric": metric,
        "score": None if record.failed else record.scores.get(metric),
        "judge_label": None if labels is None else str(labels),
        "score_error": None if error is None else str(error),
    }


def _total(usage: StageUsage) -> Usage:
    total = Usage()
    for stage in usage.values():
        total.add(stage)
    return total


def _pairs(options: Mapping[str, object]) -> str:
    return ", ".join(f"{key}={value}" for key, value in options.items())
