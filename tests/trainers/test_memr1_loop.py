"""The loop a user runs after training (README, "The loop: train, evaluate, gate"), command for command: train a
checkpoint with `python -m trainers.memr1`, evaluate it with `python -m harness run --answer-model hf:DIR`, and
gate it with `python -m harness regress` against the committed baseline of the untrained model (slow).

Training is the CPU recipe that learns (`cpu-smollm2-learn.yaml`: SFT on the train split's gold answers, F1
reward) shrunk to one step on 2 questions so the loop fits in CI; the evaluation and the regress call are the
README's, on the baseline's questions (LoCoMo val, `--limit 10`, seed 0)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")
pytestmark = pytest.mark.usefixtures("one_faiss_thread")

REPO_ROOT = Path(__file__).resolve().parents[2]
CPU_CONFIG = REPO_ROOT / "trainers" / "memr1" / "configs" / "cpu-smollm2-learn.yaml"
BASELINE = REPO_ROOT / "results" / "baselines" / "locomo-val-memr1-turns-smollm2"
REQUIRED_DATA = ["locomo/locomo10.json"]
EVALUATION = ["--task", "locomo", "--split", "val", "--limit", "10", "--system", "memr1", "--model", "mock"]
EVALUATION += ["-S", "memory_source=turns", "-S", "memories_per_speaker=2", "-S", "max_answer_tokens=64"]
EVALUATION += ["--metric", "exact_match", "--metric", "f1"]


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *command], cwd=REPO_ROOT, capture_output=True, text=True, env=dict(os.environ)
    )


def one_step_config(path: Path, data_dir: Path) -> Path:
    """cpu-smollm2-learn.yaml cut to one step on 2 train and 2 val questions, with 8-token completions."""
    config = yaml.safe_load(CPU_CONFIG.read_text())
    config.update(max_steps=1, per_device_train_batch_size=2, max_completion_length=8, eval_max_new_tokens=8)
    config["data"].update(limit_train=2, limit_val=2, data_dir=str(data_dir))
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.slow
def test_train_evaluate_and_gate_a_checkpoint(smollm2_hf_dir, shared_data_dir, tmp_path, monkeypatch):
    for module in ("trl", "datasets"):
        pytest.importorskip(module)
    # The subprocesses find the converted SmolLM2 in the session's private cache.
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(smollm2_hf_dir.parents[1]))
    checkpoint = tmp_path / "checkpoint"
    config = one_step_config(tmp_path / "config.yaml", shared_data_dir)

    trained = run(
        *["trainers.memr1", "sft", "--agent", "answer", "--model", "llamacpp:smollm2-135m", "--teacher", "gold"],
        *["--config", str(config), "--output", str(checkpoint)],
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "sft answer: 1 steps" in trained.stdout and f"hf:{checkpoint}" in trained.stdout
    meta = json.loads((checkpoint / "train_meta.json").read_text())
    assert (meta["algorithm"], meta["agent"], meta["steps"]) == ("sft", "answer", 1)
    assert meta["teacher"]["spec"] == "gold" and meta["reward_settings"]["score"] == "f1"
    assert meta["base_model"] == {"spec": "llamacpp:smollm2-135m", "resolved": str(smollm2_hf_dir)}

    evaluated = run(
        *["harness", "run", *EVALUATION, "--answer-model", f"hf:{checkpoint}", "--data-dir", str(shared_data_dir)],
        *["--output", str(tmp_path / "results"), "--run-id", "candidate", "--no-cache"],
    )
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    candidate = tmp_path / "results" / "locomo" / "memr1" / "candidate"
    records = [json.loads(line) for line in (candidate / "samples.jsonl").read_text().splitlines()]
    baseline = [json.loads(line) for line in (BASELINE / "samples.jsonl").read_text().splitlines()]
    assert sorted(r["question_id"] for r in records) == sorted(r["question_id"] for r in baseline)
    assert all(r.get("error") is None and r["prediction"]["retrieved"] for r in records)  # answered from memories
    spec = json.loads((candidate / "run.json").read_text())["spec"]
    assert spec["roles"]["answer"]["trained"]["reward_settings"] == meta["reward_settings"]

    gated = run("harness", "regress", "--baseline", str(BASELINE), "--candidate", str(candidate), "--metric", "f1")
    assert gated.returncode == 0, gated.stdout[-3000:] + gated.stderr[-3000:]
    assert "overall" in gated.stdout

    # The same gate fails a candidate that lacks baseline questions.
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "run.json").write_text((candidate / "run.json").read_text())
    (partial / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records[:5]))
    gated = run("harness", "regress", "--baseline", str(BASELINE), "--candidate", str(partial), "--metric", "f1")
    assert gated.returncode == 1
