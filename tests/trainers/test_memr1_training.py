"""Memory-R1 training: configs, and real tiny GRPO / SFT runs on CPU with the converted SmolLM2 (slow).

The tiny runs use the real LoCoMo split with `turns` banks, the hashing embedder, 2 candidates per speaker and
16-token completions, so a step takes seconds. A 135M model almost never answers a LoCoMo question exactly, so
the Answer Agent GRPO run trains on EM plus a small brevity term (rewards that vary within a group, hence a
non-zero update); validation still scores plain EM. test_memr1_loop.py evaluates a checkpoint through the
harness CLI and gates it.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.embeddings.hashing import HashingEmbedder
from harness.llm import GenerateConfig, Message, Model
from harness.llm.providers.hf import HFBackend
from harness.llm.providers.mock import MockBackend
from trainers.memr1.cli import build_parser, config_of, summary
from trainers.memr1.config import TrainConfig, load_train_config
from trainers.memr1.model_io import META_FILE, model_location
from trainers.memr1.rewards import ManagerReward, answer_reward, completion_text
from trainers.memr1.training import logged_steps

yaml = pytest.importorskip("yaml")
pytestmark = pytest.mark.usefixtures("one_faiss_thread")

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIGS = REPO_ROOT / "trainers" / "memr1" / "configs"
LOCOMO_SHA256 = "79fa87e90f04081343b8c8debecb80a9a6842b76a7aa537dc9fdf651ea698ff4"


# --- configs --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(p.name for p in CONFIGS.glob("*.yaml") if not p.name.startswith("accelerate")))
def test_every_training_config_parses(path):
    config = load_train_config(CONFIGS / path)
    assert isinstance(config, TrainConfig)
    if path.startswith(("qwen", "llama")):  # the GPU recipes carry the paper's settings
        assert config.per_device_train_batch_size * config.gradient_accumulation_steps * 8 == 128
        assert (config.learning_rate, config.ppo.critic_learning_rate, config.temperature) == (1e-6, 1e-5, 1.0)
        assert (config.max_prompt_length, config.max_completion_length) == (4096, 2048)
        assert config.data.candidates_per_speaker == 30 and config.data.bank_source == "llm"
        launch = re.search(r"--config_file trainers/memr1/configs/(\S+)", (CONFIGS / path).read_text())
        assert launch and (CONFIGS / launch.group(1)).is_file()


@pytest.mark.parametrize("path", ["accelerate-zero2.yaml", "accelerate-zero3.yaml"])
def test_accelerate_configs_are_deepspeed(path):
    config = yaml.safe_load((CONFIGS / path).read_text())
    assert config["distributed_type"] == "DEEPSPEED" and config["num_processes"] == 8
    assert config["deepspeed_config"]["zero_stage"] == int(path[-6])


def test_overrides_and_unknown_keys(tmp_path):
    config = load_train_config(CONFIGS / "cpu-smollm2.yaml", max_steps=7, **{"data.limit_train": 3, "seed": None})
    assert (config.max_steps, config.data.limit_train, config.seed) == (7, 3, 0)
    (tmp_path / "bad.json").write_text(json.dumps({"learning_rate": 1e-5, "lora": {"rank": 4}}))
    with pytest.raises(ValueError, match=r"bad.json: lora.rank: Extra inputs are not permitted \(got 4\)"):
        load_train_config(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="no such file"):
        load_train_config(tmp_path / "missing.yaml")
    assert TrainConfig(use_vllm=True).resolved_use_vllm()


def test_cli_flags_override_the_config():
    flags = ["--output", "out", "--max-steps", "5", "--limit-val", "2", "--teacher", "mock", "--seed", "3"]
    config_file = str(CONFIGS / "cpu-smollm2.yaml")
    args = build_parser().parse_args(["sft", "--agent", "answer", "--model", "hf:x", "--config", config_file, *flags])
    config = config_of(args)
    assert (config.max_steps, config.data.limit_val, config.sft.teacher, config.seed) == (5, 2, "mock", 3)
    assert config.data.limit_train == 8  # from the file


def test_cli_names_the_bad_config_field(tmp_path, capsys):
    from trainers.memr1.cli import main

    (tmp_path / "bad.yaml").write_text("learning_rate: fast\n")
    assert (
        main(["grpo", "--agent", "answer", "--model", "x", "--config", str(tmp_path / "bad.yaml"), "--output", "o"])
        == 2
    )
    assert "bad.yaml: learning_rate: Input should be a valid number" in capsys.readouterr().err


def test_model_specs_resolve(monkeypatch):
    monkeypatch.setattr("trainers.memr1.model_io.resolve_hf_model", lambda name: f"<{name}>")
    assert model_location("hf:/ckpt/dir") == "</ckpt/dir>"
    assert model_location("llamacpp:smollm2-135m") == model_location("gguf:smollm2-135m") == "<gguf:smollm2-135m>"
    assert model_location("llamacpp-gguf:smollm2-135m") == "<gguf:smollm2-135m>"
    assert model_location("hf") == "<gguf:smollm2-135m>"


def test_checkpointing_follows_the_config_not_trls_default(tmp_path):
    pytest.importorskip("trl")
    from trainers.memr1.grpo import grpo_arguments

    for wanted in (False, True):
        args = grpo_arguments(TrainConfig(bf16=False, use_vllm=False, gradient_checkpointing=wanted), tmp_path)
        assert args.gradient_checkpointing is wanted  # TRL's GRPOConfig defaults it to True


def test_logged_steps_read_trl_history():
    history = [
        {"loss": 0.5, "reward": 0.25, "grad_norm": 1.0, "step": 1, "epoch": 0.5},
        {"loss": 0.0, "rewards/answer_reward/mean": 1.0, "step": 2},
        {"train_runtime": 3.0, "train_loss": 0.25, "step": 2},
    ]
    steps = logged_steps(history)
    assert [(s.step, s.reward, s.loss) for s in steps] == [(1, 0.25, 0.5), (2, 1.0, 0.0)]
    assert steps[0].values["grad_norm"] == 1.0 and "epoch" not in steps[0].values


# --- real tiny runs (slow) ------------------------------------------------------------------------------------


def data_dir() -> Path:
    root = Path(os.environ.get("HARNESS_DATA_DIR") or REPO_ROOT.parent / "shared" / "data")
    if not (root / "locomo" / "locomo10.json").is_file():
        pytest.skip(f"real data file {root / 'locomo/locomo10.json'} is absent (set HARNESS_DATA_DIR)")
    return root


def tiny_config(**overrides: object) -> TrainConfig:
    """cpu-smollm2.yaml made tinier: 2 rows, 2 completions of 16 tokens per step, 2 candidates per speaker."""
    for module in ("trl", "datasets"):
        pytest.importorskip(module)
    settings: dict[str, object] = {
        "max_steps": 2,
        "per_device_train_batch_size": 2,
        "max_completion_length": 16,
        "eval_max_new_tokens": 16,
        "data.limit_train": 2,
        "data.limit_val": 2,
        "data.candidates_per_speaker": 2,
        "data.embedder": "hashing",
        "data.data_dir": str(data_dir()),
    }
    return load_train_config(CONFIGS / "cpu-smollm2.yaml", **{**settings, **overrides})


@pytest.fixture(scope="module")
def cache_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The session's private harness cache (conftest's autouse fixture is function-scoped; module fixtures run
    before it), where the session fixture `smollm2_hf_dir` put SmolLM2: `gguf:smollm2-135m` finds it there."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HARNESS_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "harness-cache"))
        yield tmp_path_factory.getbasetemp() / "harness-cache"


def em_plus_brevity(prompts, completions, gold, **columns) -> list[float]:
    """EM, minus a small length term: varies within every group, so a 135M model gets non-zero advantages."""
    em = answer_reward(prompts, completions, gold)
    return [e - len(completion_text(c)) / 1000 for e, c in zip(em, completions, strict=True)]


def changed_tensors(before: Path, after: Path) -> list[str]:
    from safetensors.torch import load_file

    old, new = load_file(before / "model.safetensors"), load_file(after / "model.safetensors")
    assert old.keys() == new.keys()
    return [name for name in old if not (old[name] == new[name]).all()]


@pytest.fixture(scope="module")
def grpo_answer(smollm2_hf_dir, cache_env, tmp_path_factory):
    from trainers.memr1.grpo import train_grpo

    output = tmp_path_factory.mktemp("grpo-answer") / "checkpoint"
    result = train_grpo(
        tiny_config(), "answer", "gguf:smollm2-135m", output, reward=em_plus_brevity, val_reward=answer_reward
    )
    return result, output


@pytest.mark.slow
def test_grpo_answer_agent_trains_and_saves(grpo_answer, smollm2_hf_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    result, output = grpo_answer
    assert result.steps == 2 and len(result.history) == 2
    assert all(step.loss is not None and math.isfinite(step.loss) for step in result.history)
    assert all(step.reward is not None for step in result.history)
    assert [point.step for point in result.val] == [0, 2] and result.val[0].examples == 2
    assert result.val_em_before == result.val[0].em and result.val_em_after == result.val[1].em
    assert changed_tensors(smollm2_hf_dir, output), "GRPO left every weight unchanged"
    model = AutoModelForCausalLM.from_pretrained(output)
    assert model.num_parameters() > 100e6
    assert "<|im_start|>" in AutoTokenizer.from_pretrained(output).chat_template
    assert "val EM: before" in summary(result)


@pytest.mark.slow
def test_train_meta_records_the_run(grpo_answer, smollm2_hf_dir):
    result, output = grpo_answer
    meta = json.loads((output / META_FILE).read_text())
    assert (meta["algorithm"], meta["agent"], meta["steps"]) == ("grpo", "answer", 2)
    assert meta["base_model"] == {"spec": "gguf:smollm2-135m", "resolved": str(smollm2_hf_dir)}
    data = meta["data"]
    assert data["rows"] == {"train": 2, "val": 2} and data["bank_source"] == "turns"
    assert (data["candidates_per_speaker"], data["locomo_sha256"]) == (2, LOCOMO_SHA256)
    assert (data["train_split"], data["val_split"]) == ("train", "val")
    assert "exact match" in meta["reward"]
    assert meta["config"]["grpo"]["num_generations"] == 2
    assert (meta["val_em_before"], meta["val_em_after"]) == (result.val_em_before, result.val_em_after)
    assert len(meta["history"]) == 2 and "git_sha" in meta
    assert {"torch", "transformers", "trl", "peft"} <= set(meta["versions"])
    assert meta["reward_settings"] == {"score": "em", "format_weight": 0.0, "require_marker": False}
    # What an evaluation of the checkpoint records in its run spec (`roles.<role>.trained`).
    trained = HFBackend(str(output)).info.extra["trained"]
    assert (trained["algorithm"], trained["agent"], trained["steps"]) == ("grpo", "answer", 2)
    assert trained["reward_settings"] == meta["reward_settings"] and trained["reward"] == meta["reward"]


def test_the_gold_teacher_writes_the_answers_in_the_agents_format():
    from trainers.memr1.sft import teacher_replies

    rows = [{"prompt": [], "gold": ["7 May 2023", "May 7"]}, {"prompt": [], "gold": ["Oslo"]}]
    replies = teacher_replies("gold", "answer", rows)
    assert replies == ["**Answer:** 7 May 2023", "**Answer:** Oslo"]
    completions = [[{"role": "assistant", "content": reply}] for reply in replies]
    assert answer_reward([[], []], completions, [row["gold"] for row in rows], require_marker=True) == [1.0, 1.0]
    with pytest.raises(ValueError, match="manager has no gold reply"):
        teacher_replies("gold", "manager", rows)


def question_of(messages: list[Message]) -> str:
    return re.search(r"Question: (.+)", messages[-1]["content"]).group(1)


@pytest.mark.slow
@pytest.mark.train
def test_grpo_memory_manager_with_a_frozen_mock_answer_agent(smollm2_hf_dir, cache_env, tmp_path):
    """The frozen Answer Agent (a mock) answers right only when the episode's turn is in the candidates, i.e.
    when the manager's decision put it in the bank: the reward depends on the decision, as in the paper."""
    from trainers.memr1.evaluation import training_rows
    from trainers.memr1.grpo import train_grpo

    config = tiny_config(max_steps=1, **{"data.limit_train": 1, "data.limit_val": 1})
    rows = training_rows("manager", "train", config) + training_rows("manager", "val", config)
    expected = {q["text"]: (row["turn_text"], q["answers"][0]) for row in rows for q in row["questions"]}

    def frozen_answer_agent(messages: list[Message]) -> str:
        turn_text, gold = expected[question_of(messages)]
        return f"**Answer:** {gold if turn_text in messages[-1]['content'] else 'Not mentioned'}"

    backend = MockBackend(responder=frozen_answer_agent)
    reward = ManagerReward(Model(backend, spec="mock"), HashingEmbedder(), memories_per_speaker=2)
    result = train_grpo(config, "manager", "gguf:smollm2-135m", tmp_path / "manager", reward=reward)
    assert result.steps == 1 and result.history[0].loss is not None and math.isfinite(result.history[0].loss)
    assert 0.0 <= result.history[0].reward <= 1.0
    assert [point.step for point in result.val] == [0, 1] and result.val[0].examples == 1
    assert len(backend.calls) >= 2  # 2 completions x the episode's questions, plus validation
    meta = json.loads((tmp_path / "manager" / META_FILE).read_text())
    assert meta["agent"] == "manager" and "frozen Answer Agent" in meta["reward"]


@pytest.mark.slow
@pytest.mark.train
def test_sft_clones_the_teachers_rewarded_replies(smollm2_hf_dir, cache_env, tmp_path):
    from trainers.memr1.evaluation import training_rows
    from trainers.memr1.sft import train_sft

    lora = {"lora.enabled": True, "lora.merge": False, "lora.r": 4, "learning_rate": 1e-3}
    config = tiny_config(per_device_train_batch_size=1, **{"data.limit_train": 3, "data.limit_val": 1, **lora})
    rows = training_rows("answer", "train", config)
    gold = {question_of(row["prompt"]): row["gold"][0] for row in rows}
    wrong = sorted(gold)[0]

    def teacher(messages: list[Message]) -> str:
        question = question_of(messages)
        return "- none\n**Answer:** " + ("no idea at all" if question == wrong else gold[question])

    result = train_sft(
        config,
        "answer",
        "gguf:smollm2-135m",
        tmp_path / "sft",
        teacher=Model(MockBackend(responder=teacher), spec="mock"),
    )
    assert result.steps == 2 and all(math.isfinite(step.loss) for step in result.history)
    adapter = json.loads((tmp_path / "sft" / "adapter_config.json").read_text())  # lora.merge false: the adapter
    assert adapter["base_model_name_or_path"] == str(smollm2_hf_dir) and adapter["r"] == 4
    backend = HFBackend(f"{tmp_path / 'sft'}")  # what `--answer-model hf:DIR` runs: the base with the adapter merged
    reply = asyncio.run(backend.generate(rows[0]["prompt"], GenerateConfig(max_tokens=8)))
    assert reply.completion_tokens > 0 and backend.info.extra["adapter_base"] == str(smollm2_hf_dir)
    meta = json.loads((tmp_path / "sft" / META_FILE).read_text())
    assert meta["lora_merged"] is False
    assert meta["algorithm"] == "sft" and meta["data"]["rows"] == {"train": 3, "val": 1, "teacher_kept": 2}
    assert meta["teacher"]["spec"] == "mock" and meta["teacher"]["min_reward"] == 1.0
    assert meta["val_em_before"] is not None and meta["val_em_after"] is not None
