"""`python -m trainers.memr1 {grpo,ppo,sft}`: train Memory-R1's Answer Agent or Memory Manager.

Examples:
    python -m trainers.memr1 grpo --agent answer --model gguf:smollm2-135m \\
        --config trainers/memr1/configs/cpu-smollm2.yaml --output checkpoints/smollm2-grpo-answer
    python -m trainers.memr1 sft --agent answer --model gguf:smollm2-135m --teacher openai:gpt-4o-mini \\
        --config trainers/memr1/configs/cpu-smollm2.yaml --output checkpoints/smollm2-sft-answer
    accelerate launch --config_file trainers/memr1/configs/accelerate-zero3.yaml -m trainers.memr1 grpo \\
        --agent answer --model hf:Qwen/Qwen2.5-7B-Instruct \\
        --config trainers/memr1/configs/qwen2.5-7b-instruct.yaml --output checkpoints/qwen7b-grpo-answer

Then evaluate the checkpoint: `python -m harness run --system memr1 --answer-model hf:CHECKPOINT ...`
(`--manager-model hf:CHECKPOINT` for a trained Memory Manager).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from trainers.memr1.config import TrainConfig, load_train_config
from trainers.memr1.result import TrainResult

ALGORITHMS = ("grpo", "ppo", "sft")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m trainers.memr1",
        description="Train Memory-R1's Answer Agent or Memory Manager (TRL GRPO / PPO, or SFT from a teacher).",
        epilog=__doc__.split("Examples:", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("algorithm", choices=ALGORITHMS)
    parser.add_argument("--agent", choices=["answer", "manager"], required=True)
    parser.add_argument("--model", required=True, help="policy to train: hf:DIR, DIR, hub id, gguf:smollm2-135m")
    parser.add_argument("--config", help="TrainConfig YAML or JSON (default: TrainConfig's defaults)")
    parser.add_argument("--output", required=True, help="checkpoint directory to write")
    parser.add_argument("--max-steps", type=int, help="override max_steps")
    parser.add_argument("--limit-train", type=int, help="override data.limit_train")
    parser.add_argument("--limit-val", type=int, help="override data.limit_val")
    parser.add_argument(
        "--teacher", help="sft: the teacher's model spec, or gold (the train answers; overrides sft.teacher)"
    )
    parser.add_argument("--frozen-answer-model", help="manager: the frozen Answer Agent's spec")
    parser.add_argument("--data-dir", help="folder holding locomo/locomo10.json (default: $HARNESS_DATA_DIR)")
    parser.add_argument("--data-file", help="use exactly this LoCoMo file")
    parser.add_argument("--seed", type=int, help="override seed")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def config_of(args: argparse.Namespace) -> TrainConfig:
    return load_train_config(
        args.config,
        max_steps=args.max_steps,
        seed=args.seed,
        frozen_answer_model=args.frozen_answer_model,
        **{
            "data.limit_train": args.limit_train,
            "data.limit_val": args.limit_val,
            "data.data_dir": args.data_dir or os.environ.get("HARNESS_DATA_DIR"),
            "data.data_file": args.data_file,
            "sft.teacher": args.teacher,
        },
    )


def train(algorithm: str, config: TrainConfig, agent: str, model: str, output: Path) -> TrainResult:
    """Run one algorithm (imported only when chosen: each pulls in torch and TRL)."""
    if agent not in ("answer", "manager"):
        raise ValueError(f"unknown agent {agent!r}")
    if algorithm == "grpo":
        from trainers.memr1.grpo import train_grpo

        return train_grpo(config, agent, model, output)  # type: ignore[arg-type]
    if algorithm == "ppo":
        from trainers.memr1.ppo import train_ppo

        return train_ppo(config, agent, model, output)  # type: ignore[arg-type]
    if algorithm == "sft":
        from trainers.memr1.sft import train_sft

        return train_sft(config, agent, model, output)  # type: ignore[arg-type]
    raise ValueError(f"unknown algorithm {algorithm!r}; choose from {', '.join(ALGORITHMS)}")


def _score(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def summary(result: TrainResult) -> str:
    rewards = [f"{r:.3f}" for r in result.reward_history if r is not None]
    losses = [f"{loss:.4f}" for loss in result.loss_history if loss is not None]
    lines = [
        f"{result.algorithm} {result.agent}: {result.steps} steps in {result.train_seconds:.1f}s",
        f"reward per logging step: {' '.join(rewards) or 'n/a'}",
        f"loss per logging step: {' '.join(losses) or 'n/a'}",
        f"val EM: before {_score(result.val_em_before)}, after {_score(result.val_em_after)}",
        f"val F1: before {_score(result.val_f1_before)}, after {_score(result.val_f1_after)}",
        f"checkpoint: {result.checkpoint} (evaluate with --answer-model / --manager-model hf:{result.checkpoint})",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("faiss.loader", "sentence_transformers", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        config = config_of(args)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    result = train(args.algorithm, config, args.agent, args.model, Path(args.output))
    print(summary(result))
    return 0
