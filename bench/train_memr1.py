"""Benchmark: a longer CPU GRPO run of Memory-R1's Answer Agent (SmolLM2-135M, converted from the embedded GGUF).

Defaults: 50 GRPO steps over all 152 training questions (conv-26), `turns` banks, 2 candidates per speaker (~380-token
prompts), 4 completions of 32 tokens per prompt, 1 prompt per step, validation EM (greedy) on 20 val questions
before, every 25 steps, and after. Everything else comes from `trainers/memr1/configs/cpu-smollm2.yaml`. Measured
on 2 cores: 25 s a step (max 36 s), 24.5 minutes for the run, 6.1 GB peak memory.

    python bench/train_memr1.py                      # the full run
    python bench/train_memr1.py --steps 2 --limit-val 2

Prints the reward per logging step, the loss, the val EM curve and the step time / peak memory; writes them as
JSON to `--out` (default bench/out/train_memr1.json). The checkpoint goes to `--output` (a temporary directory
by default).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
from pathlib import Path

from trainers.memr1.cli import summary
from trainers.memr1.config import load_train_config
from trainers.memr1.grpo import train_grpo

CONFIG = Path(__file__).resolve().parents[1] / "trainers" / "memr1" / "configs" / "cpu-smollm2.yaml"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--limit-train", type=int, help="training questions (default: all 152)")
    parser.add_argument("--limit-val", type=int, default=20)
    parser.add_argument("--eval-steps", type=int, default=25)
    parser.add_argument("--num-generations", type=int, default=4)
    parser.add_argument("--prompts-per-step", type=int, default=1)
    parser.add_argument("--max-completion-length", type=int, default=32)
    parser.add_argument("--candidates-per-speaker", type=int, default=2)
    parser.add_argument("--model", default="gguf:smollm2-135m")
    parser.add_argument("--data-dir", default=os.environ.get("HARNESS_DATA_DIR"))
    parser.add_argument("--output", help="checkpoint directory (default: a temporary one)")
    parser.add_argument("--out", default="bench/out/train_memr1.json")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    config = load_train_config(
        CONFIG,
        max_steps=args.steps,
        eval_steps=args.eval_steps,
        per_device_train_batch_size=args.prompts_per_step * args.num_generations,
        max_completion_length=args.max_completion_length,
        eval_max_new_tokens=args.max_completion_length,
        **{
            "grpo.num_generations": args.num_generations,
            "data.limit_train": args.limit_train,
            "data.limit_val": args.limit_val,
            "data.candidates_per_speaker": args.candidates_per_speaker,
            "data.data_dir": args.data_dir,
        },
    )
    if args.limit_train is None:
        config = config.model_copy(update={"data": config.data.model_copy(update={"limit_train": None})})
    output = Path(args.output or tempfile.mkdtemp(prefix="memr1-grpo-"))
    result = train_grpo(config, "answer", args.model, output)
    print(summary(result))
    step_times = [step.values["step_time"] for step in result.history if "step_time" in step.values]
    if step_times:
        print(f"step time: mean {sum(step_times) / len(step_times):.1f}s, max {max(step_times):.1f}s")
    print(f"peak RSS: {result.peak_rss_mb:.0f} MB")
    for point in result.val:
        print(f"val at step {point.step}: EM {point.em:.3f}, F1 {point.f1 or 0:.3f} ({point.examples} questions)")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(json.loads(result.model_dump_json()), indent=1) + "\n")


if __name__ == "__main__":
    main()
