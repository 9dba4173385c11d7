"""bench/gpu_check.py end to end on the CPU at its `tiny` size (a word-level tokenizer built here, so nothing is
read from a GGUF), and its clean skip when asked for a CUDA device that is not there."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

for _module in ("torch", "transformers", "trl", "datasets", "tokenizers"):
    pytest.importorskip(_module)

import torch  # noqa: E402

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "gpu_check.py"
WORDS = [
    f"{stem}{suffix}" for stem in ("alpha", "beta", "gamma", "delta", "omega") for suffix in ("", "s", "ed", "ing")
]
SPECIAL = ["<pad>", "<unk>", "<eos>"]
TINY_RUN = ["--size", "tiny", "--grpo-steps", "1", "--num-generations", "2", "--completion-tokens", "4"]
TINY_RUN += ["--prompt-tokens", "16"]


def gpu_check_module():
    """bench/gpu_check.py imported by path (bench/ is no package)."""
    if "gpu_check" not in sys.modules:
        spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
        module = importlib.util.module_from_spec(spec)
        sys.modules["gpu_check"] = module  # its dataclass looks its module up there
        spec.loader.exec_module(module)
    return sys.modules["gpu_check"]


@pytest.fixture(scope="module")
def word_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved fast tokenizer of one token per word: 3 special tokens and 20 words (pad and EOS distinct, as
    TRL's PPO needs)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(SPECIAL + WORDS)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>", eos_token="<eos>", bos_token="<eos>"
    )
    folder = tmp_path_factory.mktemp("word_tokenizer")
    tokenizer.save_pretrained(folder)
    return folder


def tied_qwen2_parameters(dims: dict, vocab: int) -> int:
    """Qwen2's weights from its dimensions: tied embeddings, biased q/k/v, no bias on o and the MLP."""
    hidden, layers = dims["hidden_size"], dims["num_hidden_layers"]
    kv = dims["num_key_value_heads"] * hidden // dims["num_attention_heads"]
    attention = (hidden * hidden + hidden) + 2 * (hidden * kv + kv) + hidden * hidden
    layer = attention + 3 * hidden * dims["intermediate_size"] + 2 * hidden
    return vocab * hidden + layers * layer + hidden


@pytest.mark.slow
def test_tiny_cpu_run_records_every_figure(word_tokenizer: Path, tmp_path: Path) -> None:
    out = tmp_path / "gpu_check_cpu.json"
    command = [sys.executable, str(SCRIPT), "--device", "cpu", "--tokenizer", str(word_tokenizer), "--out", str(out)]
    done = subprocess.run([*command, *TINY_RUN], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "grpo step" in done.stdout and "ppo update" in done.stdout

    result = json.loads(out.read_text())
    assert result["device"] == "cpu" and result["dtype"] == "float32"
    assert result["settings"]["size"] == "tiny" and result["settings"]["num_generations"] == 2
    assert result["parameters"] == tied_qwen2_parameters(gpu_check_module().SIZES["tiny"], len(SPECIAL + WORDS))
    generation = result["generation"]
    assert generation["batch"] == 2 and generation["new_tokens"] == 4 and generation["tokens_per_s"] > 0
    grpo = result["grpo"]
    assert len(grpo["step_seconds"]) == 1 and grpo["step_seconds"][0] > 0
    assert len(grpo["rewards"]) == 1 and 0.0 <= grpo["rewards"][0] <= 1.0
    assert result["ppo"]["updates"] == 1 and result["ppo"]["update_seconds"] > 0
    assert result["peak_memory_mb"]["process"] > 0
    assert result["versions"]["trl"]


def test_letter_share_reward_varies_with_the_text() -> None:
    reward = gpu_check_module().letter_share
    assert reward(["abcd", "ab12", "", "!!"]) == [1.0, 0.5, 0.0, 0.0]


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_cuda_without_a_device_skips_cleanly(tmp_path: Path) -> None:
    out = tmp_path / "never.json"
    command = [sys.executable, str(SCRIPT), "--device", "cuda", "--tokenizer", str(tmp_path), "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-4000:]
    assert done.stdout.startswith("skipped: no CUDA device")
    assert not out.exists()
