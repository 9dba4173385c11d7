"""A leaderboard of many runs: a row per run, its overall score and one per question type, best first.

Built on the DataFrame of `harness.frames`, so a run still going or killed ranks on the questions it has
recorded (and a note says it is incomplete). Cells are those of reports, `mean [low, high] (n=scored)` x100
with the seeded bootstrap 95% interval the aggregation computes, and render to any format of `harness.export`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from harness.frames import find_run_dirs, runs_frame
from harness.metrics.aggregate import Cell, cell
from harness.reporting import (
    OVERALL,
    format_cell,
    label_notes,
    metric_note,
    resolve_metric,
    run_description,
    run_labels,
    task_notes,
)
from harness.results import RunDir, RunResult
from harness.tables import ReportTable

if TYPE_CHECKING:  # harness.frames imports pandas, or says how to install it
    import pandas as pd


@dataclass(frozen=True)
class Standing:
    """One run's row: its overall cell and a cell per question type."""

    label: str
    result: RunResult
    overall: Cell
    by_type: dict[str, Cell]
    questions: int
    """Questions recorded, failed ones included."""
    failed: int


def leaderboard_table(paths: Iterable[Path | str], metric: str | None = None) -> ReportTable:
    """Every run directory in (or below) `paths`, ranked by its overall `metric` (by default llm_judge when
    every run has it, else the first metric all share; see `harness.reporting.resolve_metric`)."""
    run_dirs = find_run_dirs(paths)
    results = [RunDir(path).read_result() for path in run_dirs]
    metric = resolve_metric(results, metric)
    frame = runs_frame(list(zip(run_dirs, results, strict=True)))
    types = _question_types(frame, results)
    standings = sorted(
        (
            _standing(frame[frame["run_dir"] == str(path)], label, result, metric, types)
            for path, label, result in zip(run_dirs, run_labels(results), results, strict=True)
        ),
        key=_rank_key,
    )
    tasks = " / ".join(dict.fromkeys(r.spec.task for r in results))
    table = ReportTable(title=f"{tasks} · {metric} x100 · leaderboard", columns=["run", OVERALL, *types])
    for standing in standings:
        cells = [standing.overall, *(standing.by_type[t] for t in types)]
        table.add_row(standing.label, *(format_cell(c, with_n=True) for c in cells))
    table.notes = _notes(standings, metric)
    return table


def _standing(rows: pd.DataFrame, label: str, result: RunResult, metric: str, types: Sequence[str]) -> Standing:
    answered = rows[(rows["metric"] == metric) & ~rows["failed"]]
    seed = result.spec.seed
    questions = rows.drop_duplicates("question_id")
    return Standing(
        label=label,
        result=result,
        overall=_cell(answered, seed),
        by_type={t: _cell(answered[answered["question_type"] == t], seed) for t in types},
        questions=len(questions),
        failed=int(questions["failed"].sum()),
    )


def _cell(rows: pd.DataFrame, seed: int) -> Cell:
    """As the run's aggregation computes it: NaN scores are unscored, left out of the mean."""
    return cell((None if math.isnan(score) else float(score) for score in rows["score"]), seed=seed)


def _rank_key(standing: Standing) -> float:
    """Best overall mean first; runs with nothing scored last (sorted() keeps ties in input order)."""
    mean = standing.overall.mean
    return math.inf if mean is None else -mean


def _question_types(frame: pd.DataFrame, results: Sequence[RunResult]) -> list[str]:
    """Types recorded in any run: in the tasks' display order, then the others as first seen."""
    present = dict.fromkeys(frame["question_type"])
    order = [t for r in results for t in r.spec.question_types]
    return [t for t in dict.fromkeys([*order, *present]) if t in present]


def _notes(standings: Sequence[Standing], metric: str) -> list[str]:
    results = [s.result for s in standings]
    seeds = ", ".join(str(s) for s in dict.fromkeys(r.spec.seed for r in results))
    labels = label_notes(results) or ["question types: as the task names them (no label convention recorded)"]
    notes = [
        *task_notes(results),
        *labels,
        metric_note(metric, results),
        f"cells x100: mean [low, high] (n=scored), percentile 95% bootstrap interval of the mean (seed {seeds}); "
        "unscored and failed questions are left out, never counted as 0",
        "rows sorted by the overall mean, best first",
    ]
    for standing in standings:
        notes.append(f"{standing.label}: {run_description(standing.result)}")
        notes += _state_notes(standing)
    return notes


def _state_notes(standing: Standing) -> list[str]:
    result, notes = standing.result, []
    planned = result.planned_questions
    if result.status != "finished":
        of_planned = f" of {planned} planned" if planned is not None else ""
        notes.append(f"{standing.label}: incomplete ({result.status}), {standing.questions}{of_planned} questions")
    if standing.failed:
        notes.append(f"{standing.label}: {standing.failed} of its questions failed (no answer), left out of the cells")
    return notes
