"""Benchmark: the CPU recipe that learns (`trainers/memr1/configs/cpu-smollm2-learn.yaml`), end to end.

SmolLM2-135M (converted from the embedded GGUF) is warm-started by SFT on the train split's gold answers written in
the Answer Agent's format (teacher `gold`, one epoch), then trained by GRPO with the F1 reward: 2 prompts a step,
4 completions of 24 tokens each, validation EM and F1 (greedy) before, halfway and after. The val split (conv-30)
is only evaluated, never trained on.

    python bench/train_memr1.py                                   # SFT warm start, then 30 GRPO steps
    python bench/train_memr1.py --warm-start checkpoints/sft-gold # GRPO from an existing SFT checkpoint
    python bench/train_memr1.py --warm-start none --steps 2 --limit-val 2

Prints the reward per step with its within-group spread (TRL's `reward_std` and `frac_reward_zero_std`: a group
whose completions all score the same gives GRPO no gradient), the val curve, step time and peak memory; writes
both stages as JSON to `--out`. Evaluate the final checkpoint through the harness with the command it prints.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
from pathlib import Path

from trainers.memr1.cli import summary
from trainers.memr1.config import TrainConfig, load_train_config
from trainers.memr1.grpo import train_grpo
from trainers.memr1.result import TrainResult
from trainers.memr1.sft import train_sft

CONFIG = Path(__file__).resolve().parents[1] / "trainers" / "memr1" / "configs" / "cpu-smollm2-learn.yaml"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="gguf:smollm2-135m", help="the base model")
    parser.add_argument(
        "--warm-start",
        default="gold",
        help="'gold': SFT on the train split's gold answers first; 'none': GRPO from --model; or a checkpoint folder",
    )
    parser.add_argument("--steps", type=int, default=30, help="GRPO steps")
    parser.add_argument("--prompts-per-step", type=int, default=2)
    parser.add_argument("--num-generations", type=int, default=4)
    parser.add_argument("--learning-rate", type=float, help="GRPO learning rate (default: the recipe's)")
    parser.add_argument("--limit-train", type=int, help="training questions (default: all 152)")
    parser.add_argument("--limit-val", type=int, help="val questions scored before, halfway and after (default: all)")
    parser.add_argument("--data-dir", default=os.environ.get("HARNESS_DATA_DIR"))
    parser.add_argument("--output", help="checkpoint folder (default: a temporary one)")
    parser.add_argument("--out", default="bench/out/train_memr1.json")
    return parser.parse_args()


def recipe(args: argparse.Namespace, **overrides: object) -> TrainConfig:
    return load_train_config(
        CONFIG,
        **overrides,
        **{
            "data.limit_train": args.limit_train,
            "data.limit_val": args.limit_val,
            "data.data_dir": args.data_dir,
        },
    )


def report(result: TrainResult) -> dict[str, object]:
    """Print a stage's figures; return the ones the JSON keeps beside the full result."""
    print(summary(result))
    steps = [step.values for step in result.history if "reward_std" in step.values]
    if steps:
        print("step  reward  reward_std  frac_reward_zero_std")
        for number, values in enumerate(steps, start=1):
            print(
                f"{number:4d}  {values.get('reward', 0.0):6.3f}  {values['reward_std']:10.3f}  "
                f"{values.get('frac_reward_zero_std', float('nan')):20.2f}"
            )
    varied = sum(1 for values in steps if values.get("frac_reward_zero_std", 1.0) < 1.0)
    step_times = [step.values["step_time"] for step in result.history if "step_time" in step.values]
    if steps:
        print(f"steps with a group of non-zero reward variance: {varied}/{len(steps)}")
    if step_times:
        print(f"step time: mean {sum(step_times) / len(step_times):.1f}s, max {max(step_times):.1f}s")
    print(f"wall time {result.train_seconds:.0f}s, peak RSS {result.peak_rss_mb or 0:.0f} MB")
    for point in result.val:
        print(f"val at step {point.step}: EM {point.em:.3f}, F1 {point.f1 or 0:.3f} ({point.examples} questions)")
    return {"steps_with_reward_variance": varied, "logged_grpo_steps": len(steps)}


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    output = Path(args.output or tempfile.mkdtemp(prefix="memr1-learn-"))
    stages: dict[str, object] = {}
    start = args.model
    if args.warm_start == "gold":
        sft = train_sft(recipe(args), "answer", args.model, output / "sft-gold", teacher="gold")
        stages["sft"] = {"result": json.loads(sft.model_dump_json()), **report(sft)}
        start = str(sft.checkpoint)
    elif args.warm_start != "none":
        start = args.warm_start
    grpo_overrides: dict[str, object] = {
        "max_steps": args.steps,
        "eval_steps": max(1, args.steps // 2),
        "per_device_train_batch_size": args.prompts_per_step * args.num_generations,
        "grpo.num_generations": args.num_generations,
    }
    if args.learning_rate is not None:
        grpo_overrides["learning_rate"] = args.learning_rate
    grpo = train_grpo(recipe(args, **grpo_overrides), "answer", start, output / "grpo")
    stages["grpo"] = {"result": json.loads(grpo.model_dump_json()), **report(grpo)}
    print(
        "evaluate: python -m harness run --task locomo --split val --system memr1 --model mock "
        "-S memory_source=turns -S memories_per_speaker=5 -S max_answer_tokens=64 "
        f"--answer-model hf:{grpo.checkpoint} --metric exact_match --metric f1 --metric f1_locomo"
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(stages, indent=1) + "\n")


if __name__ == "__main__":
    main()
