"""GPU check for the Memory-R1 trainers: TRL GRPO steps and one TRL PPO update on a random-weight Qwen2 model.

Made to run on a lent machine that has torch and transformers but no TRL, datasets or network (see
`bench/gpu_check.sh`, which installs the carried wheels and calls this), and with the same settings on a CPU
(`bench/gpu_check_prepare.sh --cpu-figures`), so that the two JSON files compare figure for figure.

Self-contained on purpose: it imports only torch, transformers, trl, datasets and the standard library (not
`harness`/`trainers`, whose pydantic the lent machine lacks). What it measures, in order:

- greedy generation: a batch of `num_generations x prompts_per_step` synthetic prompts, `completion_tokens` new
  tokens each (EOS suppressed so every row makes them all), timed after one short warm-up call;
- `grpo_steps` steps of TRL's `GRPOTrainer` (plain `model.generate` rollouts, no vLLM), one step per
  `prompts_per_step` prompts, timed step by step with a callback;
- one update of TRL 1.12's `trl.experimental.ppo.PPOTrainer` over a batch of as many queries: a fresh policy,
  a value model of the policy's size (as the project's critic is) and a tiny random reward model (the project
  scores PPO rollouts with a rule, so a full-size reward network would bill time the project never spends).

Weights are random (seeded, built from a `Qwen2Config`): speed and memory do not depend on their values, and
nothing is downloaded. The tokenizer comes from a folder (`--tokenizer`; the prepare script extracts
Qwen2.5-Coder-0.5B's from the embedded GGUF). Peak memory is `torch.cuda.max_memory_allocated` per phase on
CUDA and the process's peak RSS on CPU. Asked for `--device cuda` where there is none, it prints
"skipped: no CUDA device (...)" and exits 0.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here needs the hub; the lent machine cannot reach it
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import torch

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_TOKENIZER = BENCH_DIR / "out" / "gpu_check_tokenizer"
SCHEMA = "gpu_check/1"
SKIP_PREFIX = "skipped: no CUDA device"
COMMON = {"tie_word_embeddings": True, "rope_theta": 1e6, "rms_norm_eps": 1e-6, "max_position_embeddings": 32768}
SIZES: dict[str, dict[str, Any]] = {
    # Qwen2.5-0.5B's dimensions (its vocabulary is padded to 151936 rows).
    "0.5b": COMMON
    | {
        "hidden_size": 896,
        "intermediate_size": 4864,
        "num_hidden_layers": 24,
        "num_attention_heads": 14,
        "num_key_value_heads": 2,
        "vocab_size": 151936,
    },
    # For tests: the vocabulary is the tokenizer's.
    "tiny": COMMON
    | {
        "hidden_size": 64,
        "intermediate_size": 256,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
    },
}
REWARD_MODEL_SIZE = "tiny"


@dataclass(frozen=True)
class Settings:
    """What a run measured with; two result files compare only when these agree."""

    size: str
    grpo_steps: int
    num_generations: int
    prompts_per_step: int
    prompt_tokens: int
    completion_tokens: int
    learning_rate: float
    seed: int

    @property
    def batch(self) -> int:
        """Completions per GRPO step, rows of the generation batch, and queries of the PPO update."""
        return self.num_generations * self.prompts_per_step


# --- Models, prompts, reward ------------------------------------------------------------------------------------


def model_config(size: str, tokenizer: Any) -> Any:
    from transformers import Qwen2Config

    dims = dict(SIZES[size])
    dims.setdefault("vocab_size", len(tokenizer))
    if len(tokenizer) > dims["vocab_size"]:
        raise ValueError(f"the tokenizer has {len(tokenizer)} tokens, more than size {size}'s {dims['vocab_size']}")
    ids = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id}
    return Qwen2Config(**dims, **ids, pad_token_id=tokenizer.pad_token_id)


def build_model(config: Any, device: str, *, classifier: bool = False, seed: int = 0) -> Any:
    """A random-weight causal LM (or a one-label sequence classifier), built directly on `device`."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    torch.manual_seed(seed)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    with torch.device(device):
        if classifier:
            config = config.__class__.from_dict({**config.to_dict(), "num_labels": 1})
            return AutoModelForSequenceClassification.from_config(config, dtype=dtype)
        return AutoModelForCausalLM.from_config(config, dtype=dtype)


def parameter_count(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())  # tied embeddings are one Parameter, counted once


def synthetic_prompts(tokenizer: Any, count: int, length: int, seed: int) -> list[list[int]]:
    """`count` prompts of at most `length` token ids: random whole words of the tokenizer's own vocabulary, so
    that decoding and re-encoding them (GRPO takes text) keeps close to `length` tokens."""
    rng = random.Random(seed)
    special = set(tokenizer.all_special_ids)
    ids = [i for i in rng.sample(range(len(tokenizer)), min(len(tokenizer), 4000)) if i not in special]
    words = sorted({w for w in (tokenizer.decode([i]).strip() for i in ids) if w.isascii() and w.isalpha()})
    if len(words) < 10:
        raise ValueError(f"found only {len(words)} plain words in the tokenizer's vocabulary")
    prompts = []
    for _ in range(count):
        text = " ".join(rng.choice(words) for _ in range(length))
        prompts.append(tokenizer(text, add_special_tokens=False)["input_ids"][:length])
    return prompts


def letter_share(completions: list[str], **_: object) -> list[float]:
    """GRPO's reward: the share of ASCII letters among a completion's characters (0 for an empty one).

    A rule, like the project's rewards, whose value differs between the samples of one prompt (a random-weight
    model samples near-uniform tokens at temperature 1): a reward constant within a group would give GRPO zero
    advantages and a step with nothing to learn."""
    return [sum(c.isascii() and c.isalpha() for c in text) / len(text) if text else 0.0 for text in completions]


# --- Measurements -----------------------------------------------------------------------------------------------


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def reset_peak(device: str) -> None:
    if device == "cuda":
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_mb(device: str) -> float:
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def measure_generation(model: Any, tokenizer: Any, prompts: list[list[int]], settings: Settings, device: str) -> dict:
    """Greedy generation of the batch: prefill alone (one new token) and the whole `completion_tokens`."""
    tokenizer.padding_side = "left"
    batch = tokenizer.pad({"input_ids": prompts}, return_tensors="pt").to(device)
    model.eval()

    def generate(new_tokens: int) -> float:
        sync(device)
        started = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(
                **batch,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,  # suppresses EOS: every row makes every token
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
            )
        sync(device)
        assert out.shape[1] == batch["input_ids"].shape[1] + new_tokens
        return time.perf_counter() - started

    generate(min(4, settings.completion_tokens))  # warm-up: kernels, allocator, caches
    prefill = generate(1)
    seconds = generate(settings.completion_tokens)
    tokens = len(prompts) * settings.completion_tokens
    decode = seconds - prefill
    return {
        "batch": len(prompts),
        "new_tokens": settings.completion_tokens,
        "seconds": seconds,
        "tokens_per_s": tokens / seconds,
        "prefill_seconds": prefill,
        "decode_tokens_per_s": len(prompts) * (settings.completion_tokens - 1) / decode if decode > 0 else None,
    }


def checkpointing_off() -> dict[str, bool]:
    """Activation checkpointing off (TRL's configs default it on): transformers 5 renamed the argument and warns
    on the old name, which older 5.x releases alone know."""
    import dataclasses

    from transformers import TrainingArguments

    names = {field.name for field in dataclasses.fields(TrainingArguments)}
    return {"activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing": False}


def trainer_arguments(settings: Settings, device: str, output_dir: Path) -> dict[str, Any]:
    """The TrainingArguments fields GRPOConfig and PPOConfig share here."""
    return {
        "output_dir": str(output_dir),
        "per_device_train_batch_size": settings.batch,
        "gradient_accumulation_steps": 1,
        "learning_rate": settings.learning_rate,
        "seed": settings.seed,
        "bf16": device == "cuda",  # TRL's configs default to bf16 on
        "use_cpu": device == "cpu",
        "dataloader_pin_memory": device == "cuda",
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "disable_tqdm": True,
        **checkpointing_off(),
    }


def step_clock(device: str) -> Any:
    """A callback recording each optimizer step's wall seconds (GRPO generates its rollouts inside the step)."""
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):
        def __init__(self) -> None:
            self.seconds: list[float] = []
            self.started = 0.0

        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            sync(device)
            self.started = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            sync(device)
            self.seconds.append(time.perf_counter() - self.started)

    return StepClock()


def run_grpo(model: Any, tokenizer: Any, prompts: list[list[int]], settings: Settings, device: str, work: Path) -> dict:
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    args = GRPOConfig(
        **trainer_arguments(settings, device, work / "grpo"),
        max_steps=settings.grpo_steps,
        num_generations=settings.num_generations,
        max_completion_length=settings.completion_tokens,
        temperature=1.0,
        beta=0.0,
        use_vllm=False,
    )
    texts = [tokenizer.decode(ids) for ids in prompts]
    clock = step_clock(device)
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=letter_share,
        args=args,
        train_dataset=Dataset.from_dict({"prompt": texts}),
        processing_class=tokenizer,
        callbacks=[clock],
    )
    started = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - started
    logged = [entry for entry in trainer.state.log_history if "reward" in entry]
    steps = clock.seconds
    return {
        "step_seconds": steps,
        "step_mean_s": statistics.fmean(steps),
        "step_mean_after_first_s": statistics.fmean(steps[1:]) if len(steps) > 1 else None,
        "train_seconds": train_seconds,
        "rewards": [float(entry["reward"]) for entry in logged],
        "reward_std": [float(entry.get("reward_std", float("nan"))) for entry in logged],
        "completion_mean_length": [float(entry.get("completions/mean_length", float("nan"))) for entry in logged],
        "config": {"beta": args.beta, "loss_type": args.loss_type, "num_iterations": args.num_iterations},
    }


def run_ppo(tokenizer: Any, prompts: list[list[int]], settings: Settings, device: str, work: Path) -> dict:
    """One PPO update: rollouts, reward and value passes, `num_ppo_epochs` optimization passes."""
    from datasets import Dataset
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    if tokenizer.pad_token_id is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        raise ValueError("TRL's PPO finds pads by their id: the tokenizer needs a pad token other than its EOS")
    config = model_config(settings.size, tokenizer)
    policy = build_model(config, device, seed=settings.seed + 1)
    value = build_model(config, device, classifier=True, seed=settings.seed + 2)
    reward = build_model(model_config(REWARD_MODEL_SIZE, tokenizer), device, classifier=True, seed=settings.seed + 3)
    tokenizer.padding_side = "left"
    args = PPOConfig(
        **trainer_arguments(settings, device, work / "ppo"),
        total_episodes=settings.batch,
        local_rollout_forward_batch_size=settings.batch,
        response_length=settings.completion_tokens,
        temperature=1.0,
        stop_token="eos",
        num_sample_generations=0,
    )
    trainer = PPOTrainer(
        args=args,
        processing_class=tokenizer,
        model=policy,
        ref_model=None,  # TRL copies the policy
        reward_model=reward,
        train_dataset=Dataset.from_dict({"input_ids": prompts}),
        value_model=value,
    )
    sync(device)
    started = time.perf_counter()
    trainer.train()
    sync(device)
    seconds = time.perf_counter() - started
    logged = [entry for entry in trainer.state.log_history if "loss/policy_avg" in entry]
    return {
        "update_seconds": seconds,
        "updates": len(logged),
        "value_parameters": parameter_count(value),
        "reward_parameters": parameter_count(reward),
        "config": {"num_ppo_epochs": args.num_ppo_epochs, "num_mini_batches": args.num_mini_batches},
    }


# --- The run ----------------------------------------------------------------------------------------------------


def device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        model = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor() or platform.machine()
    return f"{model} ({os.cpu_count()} CPUs, torch {torch.get_num_threads()} threads)"


def versions() -> dict[str, str | None]:
    import datasets
    import transformers
    import trl

    found = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda}
    return found | {"transformers": transformers.__version__, "trl": trl.__version__, "datasets": datasets.__version__}


def run(settings: Settings, device: str, tokenizer_dir: Path) -> dict[str, Any]:
    from transformers import AutoTokenizer

    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = model_config(settings.size, tokenizer)
    prompts = synthetic_prompts(
        tokenizer, settings.batch * (settings.grpo_steps + 1), settings.prompt_tokens, settings.seed
    )
    model = build_model(config, device, seed=settings.seed)
    parameters = parameter_count(model)
    peaks: dict[str, float] = {}
    reset_peak(device)
    generation = measure_generation(model, tokenizer, prompts[: settings.batch], settings, device)
    peaks["generation"] = peak_mb(device)
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as work:
        reset_peak(device)
        grpo = run_grpo(model, tokenizer, prompts[settings.batch :], settings, device, Path(work))
        peaks["grpo"] = peak_mb(device)
        del model
        reset_peak(device)
        ppo = run_ppo(tokenizer, prompts[: settings.batch], settings, device, Path(work))
        peaks["ppo"] = peak_mb(device)
    return {
        "schema": SCHEMA,
        "device": device,
        "device_name": device_name(device),
        "dtype": "bfloat16" if device == "cuda" else "float32",
        "versions": versions(),
        "settings": asdict(settings),
        "tokenizer": str(tokenizer_dir),
        "parameters": parameters,
        "prompt_tokens_mean": statistics.fmean(len(ids) for ids in prompts),
        "generation": generation,
        "grpo": grpo,
        "ppo": ppo,
        "peak_memory_kind": "torch.cuda.max_memory_allocated" if device == "cuda" else "peak RSS",
        "peak_memory_mb": peaks if device == "cuda" else {"process": max(peaks.values())},
        "total_seconds": time.perf_counter() - started,
    }


# --- Reporting --------------------------------------------------------------------------------------------------


def summary(result: dict[str, Any]) -> str:
    gen, grpo, ppo = result["generation"], result["grpo"], result["ppo"]
    memory = ", ".join(f"{name} {mb / 1024:.2f} GiB" for name, mb in result["peak_memory_mb"].items())
    return "\n".join(
        [
            f"gpu_check  {result['device']} ({result['device_name']})  size {result['settings']['size']}  "
            f"{result['parameters'] / 1e6:.1f}M parameters  {result['dtype']}",
            f"generation   {gen['batch']} x {gen['new_tokens']} tokens  {gen['tokens_per_s']:10.1f} tok/s  "
            f"({gen['seconds']:.2f} s, prefill {gen['prefill_seconds']:.2f} s)",
            f"grpo step    mean {grpo['step_mean_s']:.2f} s  each {' '.join(f'{s:.2f}' for s in grpo['step_seconds'])}"
            f"  rewards {' '.join(f'{r:.3f}' for r in grpo['rewards'])}",
            f"ppo update   {ppo['update_seconds']:.2f} s",
            f"peak memory  {memory} ({result['peak_memory_kind']})",
        ]
    )


def figures(result: dict[str, Any]) -> dict[str, float]:
    """The figures two runs compare, named with their unit; larger is better only for tok/s."""
    return {
        "generation tok/s": result["generation"]["tokens_per_s"],
        "generation s": result["generation"]["seconds"],
        "grpo step s (mean)": result["grpo"]["step_mean_s"],
        "grpo step s (after first)": result["grpo"]["step_mean_after_first_s"] or result["grpo"]["step_mean_s"],
        "ppo update s": result["ppo"]["update_seconds"],
    }


def comparison(baseline: dict[str, Any], result: dict[str, Any]) -> str:
    """`result` beside `baseline` (e.g. the GPU beside the CPU), with the speed-up of `result` per figure."""
    left, right = baseline["device"], result["device"]
    lines = [f"{'figure':<28}{left:>12}{right:>12}{'speed-up':>10}"]
    for name, base in figures(baseline).items():
        value = figures(result)[name]
        speedup = value / base if name.endswith("tok/s") else base / value
        lines.append(f"{name:<28}{base:>12.2f}{value:>12.2f}{speedup:>9.1f}x")
    if baseline["settings"] != result["settings"]:
        lines.append(f"WARNING: settings differ: {baseline['settings']} vs {result['settings']}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto", help="auto: cuda if available")
    parser.add_argument("--size", choices=tuple(SIZES), default="0.5b")
    parser.add_argument("--tokenizer", type=Path, default=DEFAULT_TOKENIZER, help="a saved tokenizer's folder")
    parser.add_argument("--grpo-steps", type=int, default=3)
    parser.add_argument("--num-generations", type=int, default=8, help="GRPO completions per prompt")
    parser.add_argument("--prompts-per-step", type=int, default=1, help="GRPO prompts per step")
    parser.add_argument("--prompt-tokens", type=int, default=256)
    parser.add_argument("--completion-tokens", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=1e-6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="the JSON file; default $OUT/ or bench/out/gpu_check_DEVICE.json")
    parser.add_argument("--compare", type=Path, help="a result file (e.g. the CPU's) to print this run beside")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    device = options.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        print(
            f"{SKIP_PREFIX} (torch {torch.__version__}, CUDA build {torch.version.cuda}, "
            f"{torch.cuda.device_count()} devices visible)"
        )
        return 0
    if not (options.tokenizer / "tokenizer_config.json").is_file():
        print(f"no tokenizer at {options.tokenizer}: run bench/gpu_check_prepare.sh first", file=sys.stderr)
        return 2
    settings = Settings(**{field.name: getattr(options, field.name) for field in fields(Settings)})
    result = run(settings, device, options.tokenizer)
    out = options.out or Path(os.environ.get("OUT") or BENCH_DIR / "out") / f"gpu_check_{device}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(summary(result))
    print(f"wrote {out}")
    if options.compare is not None:
        print(comparison(json.loads(options.compare.read_text()), result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
