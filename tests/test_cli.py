"""The command line: ls, describe, run, show and its errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from harness.cli import main


def test_ls_lists_every_kind_without_importing_heavy_packages():
    code = (
        "import sys; from harness.cli import main; main(['ls']);"
        "heavy = [m for m in ('torch', 'faiss', 'numpy', 'llama_cpp', 'litellm', 'openai', 'transformers')"
        " if m in sys.modules];"
        "print('HEAVY', heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    for name in ("locomo", "longmemeval", "msc", "toy", "full-context", "llamacpp", "openai", "f1_locomo", "llm_judge"):
        assert name in out
    assert "HEAVY []" in out


def test_describe_counts_questions_per_type(capsys):
    assert main(["describe", "toy"]) == 0
    out = capsys.readouterr().out
    assert "2 samples · 4 sessions" in out
    assert "6 questions" in out


def test_run_then_show_prints_the_per_type_table(tmp_path, capsys):
    code = main(
        [
            "run",
            "--task",
            "toy",
            "--system",
            "full-context",
            "--model",
            "mock",
            "--output",
            str(tmp_path),
            "--run-id",
            "r",
            "--no-cache",
        ]
    )
    assert code == 0
    run_dir = tmp_path / "toy" / "full-context" / "r"
    spec = json.loads((run_dir / "run.json").read_text())["spec"]
    assert spec["roles"]["model"]["spec"] == "mock"
    assert spec["metrics"] == ["f1", "bleu1", "exact_match"]  # no judge given: no llm_judge
    capsys.readouterr()

    assert main(["show", str(run_dir)]) == 0
    out = capsys.readouterr().out
    for row in ("single-hop", "multi-hop", "temporal", "overall"):
        assert row in out
    assert "6/6 questions answered" in out


def test_unknown_names_suggest_the_closest(capsys):
    assert main(["run", "--task", "locomoo", "--system", "full-context", "--model", "mock"]) == 2
    assert "Did you mean 'locomo'" in capsys.readouterr().err
    assert main(["run", "--task", "toy", "--system", "full_context", "--model", "mock", "--no-cache"]) == 2
    assert "Did you mean 'full-context'" in capsys.readouterr().err


def test_bad_task_option_is_a_clear_error(capsys):
    assert main(["describe", "toy", "-T", "colour=blue"]) == 2
    assert "colour" in capsys.readouterr().err


def test_show_of_a_folder_without_a_run_says_so(tmp_path: Path, capsys):
    assert main(["show", str(tmp_path)]) == 2
    assert "no run.json" in capsys.readouterr().err


def test_show_counts_what_a_killed_run_has_finished(tmp_path, capsys):
    args = ["run", "--task", "toy", "--system", "full-context", "--model", "mock", "--output", str(tmp_path)]
    assert main([*args, "--run-id", "r", "--no-cache"]) == 0
    samples = tmp_path / "toy" / "full-context" / "r" / "samples.jsonl"
    samples.write_text("".join(samples.read_text().splitlines(keepends=True)[:4]))  # as if killed after 4
    capsys.readouterr()

    assert main(["show", str(samples.parent)]) == 0
    out = capsys.readouterr().out
    assert "4/4 questions answered" in out
    assert "incomplete: 4 of 6 planned" in out
