"""lm-evaluation-harness tasks that run the harness's benchmarks with its `full-context` prompts and metrics.

This folder is an `lm_eval --include_path`: `python -m harness.lm_eval_tasks` prints it. Its YAML files
(`memory_locomo`, `memory_longmemeval`) name `harness.lm_eval_tasks.bridge.FullContextTask`, which only
lm-eval imports; importing this package needs no lm-eval.
"""

from __future__ import annotations

from pathlib import Path


def include_path() -> Path:
    """The folder holding the task YAML files, for `lm_eval --include_path`."""
    return Path(__file__).resolve().parent
