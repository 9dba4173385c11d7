"""`harness.results.load_runs`: run directories made by the harness (mock LLMs) as one tidy DataFrame."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from support import as_killed, config, gold_judge, mock_model, oracle, toy_questions, write_run

from harness.results import SAMPLES_FILE, QuestionRecord, RunDir, load_runs
from harness.runner import run

pd = pytest.importorskip("pandas", reason='needs pandas: pip install "memory-harness[frames]"')
from harness.frames import COLUMNS, to_dataset  # noqa: E402 (needs pandas)

METRICS = ["exact_match", "llm_judge"]
QUESTIONS = toy_questions()
FAILING, UNREADABLE, WRONG = QUESTIONS[1], QUESTIONS[0], QUESTIONS[4]
"""The judged run's system fails on one question; the judge cannot grade another; a temporal one is wrong."""


async def judged_run(root: Path) -> Path:
    models = {
        "model": mock_model(oracle(wrong_types={WRONG.question_type}, failing={FAILING.text})),
        "judge": mock_model(gold_judge(unreadable={UNREADABLE.text})),
    }
    settings = {"run_id": "judged", "roles": {"model": "mock", "judge": "mock"}, "metrics": METRICS}
    await run(config(root, **settings), models=models)
    return root / "toy" / "full-context" / "judged"


async def killed_run(root: Path) -> Path:
    """A run killed after the questions of its first history (`toy-1`) were recorded."""
    await run(config(root, run_id="killed"), models={"model": mock_model(oracle())})
    return as_killed(root / "toy" / "full-context" / "killed", keep=lambda r: r.sample_id == "toy-1")


def rows_of(frame: pd.DataFrame, question_id: str) -> pd.DataFrame:
    return frame[frame["question_id"] == question_id].set_index("metric")


async def test_a_row_per_question_and_metric_with_the_records_values(tmp_path):
    run_dir = await judged_run(tmp_path)
    frame = load_runs([run_dir])
    records = RunDir(run_dir).latest_questions()

    assert list(frame.columns) == list(COLUMNS)
    assert {name: str(dtype) for name, dtype in frame.dtypes.items()} == COLUMNS
    assert len(frame) == len(QUESTIONS) * len(METRICS) == len(records) * len(METRICS)
    assert list(frame["metric"][:2]) == METRICS  # a question's rows together, metrics in the run's order
    assert set(frame["run_id"]) == {"judged"} and set(frame["status"]) == {"finished"}
    assert set(frame["model"]) == {"mock"} and set(frame["roles"]) == {"model=mock, judge=mock"}
    for record in records:
        rows = rows_of(frame, record.question_id)
        assert list(rows.index) == METRICS
        assert (rows["question_type"] == record.question_type).all() and (rows["sample_id"] == record.sample_id).all()
        assert all(gold == record.gold for gold in rows["gold"])
        for metric in METRICS:
            expected = None if record.failed else record.scores.get(metric)
            score = rows.loc[metric, "score"]
            assert math.isnan(score) if expected is None else score == expected
        if record.prediction is not None:
            assert (rows["answer"] == record.prediction.answer).all()
            usage = record.prediction.usage["answer"]
            assert (rows["system_prompt_tokens"] == usage.prompt_tokens).all()
            assert (rows["latency_s"] == record.prediction.latency_s).all()
            judge_calls = record.judge_usage.calls if record.judge_usage else 0  # none when the one call failed
            assert (rows["judge_calls"] == judge_calls).all()


async def test_failed_questions_are_rows_with_their_error_and_no_score(tmp_path):
    frame = load_runs([await judged_run(tmp_path)])
    failed = frame[frame["failed"]]

    assert set(failed["question_id"]) == {FAILING.question_id}
    assert list(failed["metric"]) == METRICS
    assert failed["score"].isna().all() and failed["answer"].isna().all()
    assert failed["error"].str.contains("server overloaded").all()
    assert (failed["system_calls"] == 0).all() and (failed["judge_calls"] == 0).all()
    assert frame[~frame["failed"]]["error"].isna().all()


async def test_judge_labels_beside_their_scores(tmp_path):
    frame = load_runs([await judged_run(tmp_path)])
    judged = frame[(frame["metric"] == "llm_judge") & ~frame["failed"]].set_index("question_id")

    assert judged.loc[WRONG.question_id, "judge_label"] == "WRONG" and judged.loc[WRONG.question_id, "score"] == 0
    unreadable = judged.loc[UNREADABLE.question_id]
    assert math.isnan(unreadable["score"]) and pd.isna(unreadable["judge_label"])  # unscored, never wrong
    assert "does not fit schema 'verdict'" in unreadable["score_error"]  # the mock validates the judge's JSON
    others = judged.drop([WRONG.question_id, UNREADABLE.question_id])
    assert (others["judge_label"] == "CORRECT").all() and (others["score"] == 1.0).all()
    assert frame[frame["metric"] == "exact_match"][["judge_label", "score_error"]].isna().all().all()
    assert set(frame["judge"]) == {"mock"}


async def test_a_killed_run_gives_the_questions_it_recorded(tmp_path):
    run_dir = await killed_run(tmp_path)
    assert RunDir(run_dir).read_result().status == "running"
    assert (run_dir / SAMPLES_FILE).read_text().endswith('"toy-2/q')  # the torn line a kill leaves

    frame = load_runs([run_dir])

    assert set(frame["status"]) == {"running"}
    assert list(frame["question_id"].drop_duplicates()) == ["toy-1/q0", "toy-1/q1", "toy-1/q2"]
    assert list(frame["metric"].drop_duplicates()) == ["exact_match", "f1"]
    assert len(frame) == 3 * 2 and (frame["score"] == 1.0).all()


async def test_folders_are_searched_for_run_directories(tmp_path):
    judged, killed = await judged_run(tmp_path), await killed_run(tmp_path)

    below = load_runs([tmp_path])
    assert list(below["run_id"].drop_duplicates()) == ["judged", "killed"]  # found in path order
    assert list(below["run_dir"].drop_duplicates()) == [str(judged), str(killed)]
    assert len(below) == len(load_runs([judged])) + len(load_runs([killed]))
    given_first = load_runs([killed, tmp_path / "toy"])  # a run given and found again is read once
    assert list(given_first["run_id"].drop_duplicates()) == ["killed", "judged"]


def test_bad_paths_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere: no such run directory or folder"):
        load_runs([tmp_path / "nowhere"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty: holds no run directory \(no run.json below it\)"):
        load_runs([tmp_path / "empty"])


def test_a_run_with_no_record_yet_gives_an_empty_frame_of_the_same_columns(tmp_path):
    frame = load_runs([write_run(tmp_path / "new", {})])

    assert frame.empty and list(frame.columns) == list(COLUMNS)
    assert {name: str(dtype) for name, dtype in frame.dtypes.items()} == COLUMNS


def test_a_resumed_question_appears_once_as_last_recorded(tmp_path):
    run_dir = write_run(tmp_path / "r", {"q0": 1.0, "q1": None}, failed={"q1"})
    retried = QuestionRecord(
        sample_id="s", question_id="q1", question_type="multi", question="?", gold=["x"], scores={"exact_match": 0.5}
    )
    RunDir(run_dir).append_question(retried)

    frame = load_runs([run_dir]).set_index(["question_id", "metric"])

    assert len(frame) == 2 * 2
    assert not frame.loc[("q1", "exact_match"), "failed"] and frame.loc[("q1", "exact_match"), "score"] == 0.5
    assert math.isnan(frame.loc[("q1", "llm_judge"), "score"])  # not scored by that metric


def test_importing_results_or_the_cli_leaves_pandas_out():
    code = "import sys, harness.results, harness.cli; print(sorted({'pandas', 'harness.frames'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out.replace("'", '"')) == []


def test_without_pandas_the_frame_and_the_leaderboard_say_what_to_install(tmp_path):
    code = (
        "import sys\n"
        "sys.modules['pandas'] = None  # as if not installed: importing it raises ImportError\n"
        "from harness.cli import main\n"
        f"sys.exit(main(['leaderboard', {str(tmp_path)!r}]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr == 'error: DataFrames of runs need pandas: pip install "memory-harness[frames]"\n'


async def test_the_frame_as_a_hugging_face_dataset(tmp_path):
    pytest.importorskip("datasets", reason='needs datasets: pip install "memory-harness[train]"')
    frame = load_runs([await judged_run(tmp_path)])

    dataset = to_dataset(frame)

    assert dataset.num_rows == len(frame) and dataset.column_names == list(COLUMNS)
    first = dataset[0]
    assert first["question_id"] == frame["question_id"][0] and first["gold"] == list(frame["gold"][0])
    failed = dataset.filter(lambda row: row["failed"])
    assert failed.num_rows == len(METRICS) and failed[0]["answer"] is None and failed[0]["score"] is None
