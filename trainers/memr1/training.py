"""Plumbing the Memory-R1 trainers share: the TrainingArguments fields of a `TrainConfig`, reading a trainer's log
history into a `TrainResult`, and the `train_meta.json` record of a run."""

from __future__ import annotations

import resource
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.plugins import TASKS
from harness.task import DataFileInfo
from trainers.memr1.config import TrainConfig, cuda_available
from trainers.memr1.evaluation import data_options
from trainers.memr1.result import Agent, Algorithm, LoggedStep, TrainResult, ValPoint

REWARD_KEYS = ("reward", "rewards/answer_reward/mean", "rewards/manager_reward/mean")
SKIPPED_KEYS = {"step", "epoch", "total_flos", "train_runtime", "train_samples_per_second", "train_steps_per_second"}


def trainer_arguments(config: TrainConfig, output_dir: Path) -> dict[str, Any]:
    """The `transformers.TrainingArguments` fields every algorithm shares (also those of TRL's GRPO/SFT configs).
    Intermediate checkpoints go to `output_dir/trainer` only when `save_steps` asks for them."""
    return {
        "output_dir": str(Path(output_dir) / "trainer"),
        "learning_rate": config.learning_rate,
        "per_device_train_batch_size": config.per_device_train_batch_size,
        "gradient_accumulation_steps": config.gradient_accumulation_steps,
        "max_steps": config.max_steps,
        "num_train_epochs": config.num_train_epochs,
        "seed": config.seed,
        "logging_steps": config.logging_steps,
        "save_strategy": "steps" if config.save_steps > 0 else "no",
        "save_steps": config.save_steps if config.save_steps > 0 else 500,
        "bf16": config.resolved_bf16(),
        "report_to": "none",
        "dataloader_pin_memory": cuda_available(),
        "disable_tqdm": False,
        # Always given: TRL's configs default to checkpointing on, which costs a forward pass a step.
        checkpointing_argument(): config.gradient_checkpointing,
    }


def checkpointing_argument() -> str:
    """The TrainingArguments name of activation (gradient) checkpointing: transformers 5 renamed it and warns on
    the old name, which is the only one before."""
    import dataclasses

    from transformers import TrainingArguments

    names = {field.name for field in dataclasses.fields(TrainingArguments)}
    return "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"


def logged_steps(log_history: Sequence[dict[str, Any]]) -> list[LoggedStep]:
    """The trainer's per-logging-step entries (not the final summary) as `LoggedStep`s."""
    steps = []
    for entry in log_history:
        if "loss" not in entry and not any(key in entry for key in REWARD_KEYS):
            continue  # the end-of-training summary
        reward = next((float(entry[key]) for key in REWARD_KEYS if key in entry), None)
        values = {
            key: float(value)
            for key, value in entry.items()
            if key not in SKIPPED_KEYS and key != "loss" and isinstance(value, int | float)
        }
        loss = entry.get("loss")
        steps.append(
            LoggedStep(
                step=int(entry.get("step", 0)), reward=reward, loss=None if loss is None else float(loss), values=values
            )
        )
    return steps


def peak_rss_mb() -> float:
    """Peak resident memory of this process (ru_maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def locomo_file(config: TrainConfig) -> DataFileInfo:
    """Where the LoCoMo file came from, with its sha256."""
    return TASKS.get("locomo").load(data_options(config), split=config.data.train_split).data


def reward_description(agent: Agent, config: TrainConfig) -> str:
    choice = config.reward.describe()
    if agent == "answer":
        return f"{choice} of the Answer Agent's parsed answer against the gold answers (answer_reward)"
    return (
        f"mean {choice} of the frozen Answer Agent {config.frozen_answer_model} on the episode's questions, "
        "answering from the bank the manager's decision leaves (ManagerReward)"
    )


def make_result(
    algorithm: Algorithm,
    agent: Agent,
    state: Any,
    val: list[ValPoint],
    checkpoint: Path,
    train_seconds: float,
) -> TrainResult:
    return TrainResult(
        algorithm=algorithm,
        agent=agent,
        steps=int(state.global_step),
        history=logged_steps(state.log_history),
        val=val,
        val_em_before=val[0].em if val else None,
        val_em_after=val[-1].em if len(val) > 1 else None,
        val_f1_before=val[0].f1 if val else None,
        val_f1_after=val[-1].f1 if len(val) > 1 else None,
        checkpoint=checkpoint,
        train_seconds=train_seconds,
        peak_rss_mb=peak_rss_mb(),
    )


def train_meta(
    config: TrainConfig,
    result: TrainResult,
    model_spec: str,
    resolved: str,
    rows: dict[str, int],
    **extra: object,
) -> dict[str, Any]:
    """The `train_meta.json` record (`save_checkpoint` adds git SHA and versions); `rows` counts the rows used
    (`train`, `val`, and e.g. `teacher_kept`)."""
    locomo = locomo_file(config)
    data = config.data
    return {
        "base_model": {"spec": model_spec, "resolved": resolved},
        "algorithm": result.algorithm,
        "agent": result.agent,
        "steps": result.steps,
        "data": {
            "task": "locomo",
            "train_split": data.train_split,
            "val_split": data.val_split,
            "rows": rows,
            "bank_source": data.bank_source,
            "bank_model": data.bank_model if data.bank_source == "llm" else None,
            "window_turns": data.window_turns,
            "embedder": data.embedder,
            "candidates_per_speaker": data.candidates_per_speaker,
            "locomo_file": locomo.path,
            "locomo_sha256": locomo.sha256,
        },
        "reward": reward_description(result.agent, config),
        "reward_settings": config.reward.model_dump(mode="json"),
        "config": config.model_dump(mode="json"),
        "val_em_before": result.val_em_before,
        "val_em_after": result.val_em_after,
        "val_f1_before": result.val_f1_before,
        "val_f1_after": result.val_f1_after,
        "val": [point.model_dump() for point in result.val],
        "history": [step.model_dump() for step in result.history],
        "train_seconds": round(result.train_seconds, 2),
        "peak_rss_mb": result.peak_rss_mb,
        "lora_merged": config.lora.merge if config.lora.enabled else None,
        **extra,
    }
