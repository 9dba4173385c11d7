"""The command line of trustworthy comparisons: score, compare, report and regress, end to end on run directories."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from support import config, ids, make_spec, mock_model, oracle, toy_questions, write_run

from harness.cli import main
from harness.predictions import write_jsonl_predictions
from harness.results import RunDir
from harness.runner import run

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _toy_run(tmp_path: Path, run_id: str, wrong_types: set[str] = frozenset()) -> Path:
    """A toy run answered by the oracle, wrongly for `wrong_types` (the CLI runs its own event loop: tests are sync)."""
    models = {"model": mock_model(oracle(wrong_types=wrong_types))}
    asyncio.run(run(config(tmp_path, run_id=run_id), models=models))
    return tmp_path / "toy" / "full-context" / run_id


def test_rescore_adds_a_metric_and_keeps_the_others(tmp_path, capsys):
    run_dir = _toy_run(tmp_path, "r1")
    before = RunDir(run_dir).read_result()
    assert main(["score", str(run_dir), "--metric", "bleu1"]) == 0
    after = RunDir(run_dir).read_result()
    assert after.spec.metrics == ["exact_match", "f1", "bleu1"]
    assert after.aggregates["exact_match"] == before.aggregates["exact_match"]
    assert after.aggregates["bleu1"].overall.mean == 1.0  # the oracle answered every gold answer verbatim
    assert after.spec.config_hash != before.spec.config_hash
    assert "bleu1" in capsys.readouterr().out


def test_rescore_with_a_judge_that_never_gives_a_verdict_leaves_answers_unscored(tmp_path):
    run_dir = _toy_run(tmp_path, "r1")
    assert main(["score", str(run_dir), "--judge", "mock"]) == 0  # the mock replies "I don't know"
    result = RunDir(run_dir).read_result()
    assert result.spec.roles["judge"].spec == "mock"
    judge = result.aggregates["llm_judge"].overall
    assert (judge.mean, judge.n, judge.n_unscored) == (None, 0, len(toy_questions()))
    record = RunDir(run_dir).read_questions()[0]
    assert record.score_details["llm_judge"]["judge_reply"] == "I don't know"


def test_predictions_file_of_a_run_scores_the_same_as_the_run(tmp_path):
    original = _toy_run(tmp_path, "r1", wrong_types={"temporal"})
    predictions = tmp_path / "predictions.jsonl"
    write_jsonl_predictions(RunDir(original).read_questions(), predictions)
    argv = ["score", "--task", "toy", "--predictions", str(predictions), "--system-name", "elsewhere"]
    assert main([*argv, "--output", str(tmp_path), "--run-id", "imported"]) == 0
    imported = RunDir(tmp_path / "toy" / "elsewhere" / "imported").read_result()
    ours = RunDir(original).read_result()
    assert imported.spec.system_options["format"] == "jsonl"
    for metric in ("exact_match", "f1"):
        assert imported.aggregates[metric].overall.mean == ours.aggregates[metric].overall.mean
    assert imported.aggregates["exact_match"].by_type["temporal"].mean == 0.0
    assert json.loads((tmp_path / "toy" / "elsewhere" / "imported" / "import.json").read_text())["missing"] == []


def test_compare_and_report_write_markdown_and_a_chart(tmp_path):
    good = _toy_run(tmp_path, "good")
    worse = _toy_run(tmp_path, "worse", wrong_types={"temporal"})
    table_md = tmp_path / "compare.md"
    assert main(["compare", str(good), str(worse), "--format", "md", "--output", str(table_md)]) == 0
    text = table_md.read_text()
    assert "| question type | n | good | worse | Δ vs good |" in text
    # temporal: 100 -> 0 on its questions; the rest unchanged.
    assert "| temporal |" in text and "-100.00" in text
    chart = tmp_path / "chart.png"
    report_md = tmp_path / "report.md"
    assert main(["report", str(good), str(worse), "--output", str(report_md), "--chart", str(chart)]) == 0
    assert chart.read_bytes().startswith(PNG_SIGNATURE)
    assert "exact_match x100 per run" in report_md.read_text()


def test_regress_exits_1_on_a_planted_drop_and_0_on_an_equal_run(tmp_path, capsys):
    scores = dict(zip(ids(100), [1.0] * 70 + [0.0] * 30, strict=True))
    baseline = write_run(tmp_path / "baseline", scores, spec=make_spec())
    equal = write_run(tmp_path / "equal", scores, spec=make_spec("candidate"))
    dropped = write_run(tmp_path / "dropped", {**scores, **dict.fromkeys(ids(20), 0.0)}, spec=make_spec("candidate"))

    assert main(["regress", "--baseline", str(baseline), "--candidate", str(equal)]) == 0
    assert "PASSED" in capsys.readouterr().out
    assert main(["regress", "--baseline", str(baseline), "--candidate", str(dropped), "--max-drop", "5"]) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out and "overall: 70.00 -> 50.00 on 100 questions" in out


def test_regress_expect_better_exits_1_on_an_equal_run_and_0_on_a_planted_gain(tmp_path, capsys):
    scores = dict(zip(ids(100), [1.0] * 70 + [0.0] * 30, strict=True))
    baseline = write_run(tmp_path / "baseline", scores, spec=make_spec())
    equal = write_run(tmp_path / "equal", scores, spec=make_spec("candidate"))
    better = write_run(tmp_path / "better", {**scores, **dict.fromkeys(ids(100)[70:90], 1.0)}, spec=make_spec("c"))

    assert main(["regress", "--baseline", str(baseline), "--candidate", str(equal), "--expect-better"]) == 1
    assert "not significantly better, 70.00 -> 70.00" in capsys.readouterr().out
    assert main(["regress", "--baseline", str(baseline), "--candidate", str(better), "--expect-better"]) == 0
    assert "PASSED" in capsys.readouterr().out


def test_score_needs_a_run_or_a_predictions_file():
    with pytest.raises(SystemExit, match="RUN_DIR"):
        main(["score"])
