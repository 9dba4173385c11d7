"""What a task (benchmark) gives the runner: samples, question types, and how to score them."""

from __future__ import annotations

from typing import Literal, Protocol

from pydantic import BaseModel, Field

from harness.types import Sample

JudgeStyle = Literal["mem0", "longmemeval"]


class DataFileInfo(BaseModel):
    """Where a task's data came from, recorded in the run spec."""

    path: str
    origin: Literal["data-file", "data-dir", "cache", "hf-cache", "download", "built-in"]
    """`cache`: the harness's download cache; `hf-cache`: the user's Hugging Face cache (see `harness.datasets`)."""
    sha256: str | None = None
    checksum_verified: bool = False
    """False for `--data-file` (a subset or local copy is taken as is) and for files with no pinned checksum."""
    revision: str | None = None


class TaskData(BaseModel):
    """A loaded task: the samples to run and the facts the runner and the report need."""

    task: str
    version: str
    """The benchmark release the loader implements (e.g. `locomo10@3eb6f2c`)."""
    options: dict[str, str | int | float | bool | None] = Field(default_factory=dict)
    """The task options in effect (split, variant, label convention, ...), as recorded in the run spec."""
    samples: list[Sample]
    question_types: list[str]
    """Display order of the per-type table."""
    label_convention: str | None = None
    """Which naming of question types the table uses, e.g. `locomo` or `mem0` for LoCoMo."""
    label_description: str | None = None
    """That naming in words, for the notes under a report's tables."""
    judge_style: JudgeStyle = "mem0"
    """Which judge prompts `llm_judge` uses for this task's questions."""
    default_metrics: list[str] = Field(default_factory=lambda: ["f1", "bleu1", "exact_match"])
    data: DataFileInfo


class DataOptions(BaseModel):
    """Where to look for a task's data file (see `harness.datasets.resolve_data_file`)."""

    data_file: str | None = None
    data_dir: str | None = None
    cache_dir: str | None = None


class Task(Protocol):
    """A benchmark loader. `load` takes the task's own keyword options (strings from the CLI are coerced)."""

    name: str
    description: str

    def load(self, data: DataOptions, **options: str) -> TaskData: ...
