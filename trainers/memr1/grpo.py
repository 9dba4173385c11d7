"""GRPO for Memory-R1's Answer Agent or Memory Manager, with TRL's `GRPOTrainer`.

Rows: `evaluation.training_rows` (the `memr1` system's own prompts, conversational `prompt` column). Reward:
`answer_reward` (the `reward` settings' score of the parsed answer: EM or F1, with an optional format term) for
`answer`; `ManagerReward` (the same score of a frozen Answer Agent on the bank the decision leaves) for `manager`.
Rollouts are sampled at `config.temperature`; TRL generates with vLLM inside the trainer only where CUDA and vllm
are there (`use_vllm: auto`), else with plain `model.generate`. Validation (EM and F1) is greedy
(`evaluation.val_callback`). TRL counts completions, not prompts, in its batch sizes: a step of
`per_device_train_batch_size` x processes x `gradient_accumulation_steps` completions covers that number divided
by `grpo.num_generations` prompts.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from trainers.memr1.config import TrainConfig
from trainers.memr1.evaluation import RewardFunction, prepare_rows, reward_function
from trainers.memr1.evaluation import val_callback as make_val_callback
from trainers.memr1.model_io import load_policy, peft_config, save_trained
from trainers.memr1.result import Agent, TrainResult
from trainers.memr1.training import make_result, train_meta, trainer_arguments

log = logging.getLogger(__name__)


def grpo_arguments(config: TrainConfig, output_dir: Path) -> Any:
    """TRL's `GRPOConfig` for `config`."""
    from trl import GRPOConfig

    grpo = config.grpo
    use_vllm = config.resolved_use_vllm()
    vllm = {"vllm_mode": grpo.vllm_mode, "vllm_gpu_memory_utilization": grpo.vllm_gpu_memory_utilization}
    batching = {"steps_per_generation": grpo.steps_per_generation, "generation_batch_size": grpo.generation_batch_size}
    return GRPOConfig(
        **trainer_arguments(config, output_dir),
        **{key: value for key, value in batching.items() if value is not None},
        num_generations=grpo.num_generations,
        max_completion_length=config.max_completion_length,
        temperature=config.temperature,
        beta=grpo.beta,
        epsilon=grpo.epsilon,
        loss_type=grpo.loss_type,
        scale_rewards=grpo.scale_rewards,
        num_iterations=grpo.num_iterations,
        use_vllm=use_vllm,
        **(vllm if use_vllm else {}),
        # The reward reads the row columns (gold answers, the episode's bank and questions).
        remove_unused_columns=False,
        # With beta > 0 the reference model is loaded from the policy's path: in the policy's dtype.
        model_init_kwargs={"dtype": "bfloat16" if config.resolved_bf16() else "float32"} if grpo.beta else None,
    )


def train_grpo(
    config: TrainConfig,
    agent: Agent,
    model_spec: str,
    output_dir: Path,
    *,
    reward: RewardFunction | None = None,
    val_reward: RewardFunction | None = None,
) -> TrainResult:
    """Train `agent` from `model_spec` with GRPO and save the checkpoint to `output_dir` (with train_meta.json).

    `reward` replaces the configured reward (tests give the manager a scripted frozen Answer Agent)."""
    from datasets import Dataset
    from trl import GRPOTrainer

    output_dir = Path(output_dir)
    model, tokenizer, resolved = load_policy(model_spec, config)
    train_rows, val_rows = prepare_rows(agent, config, tokenizer)
    scorer = reward or reward_function(agent, config)
    val_scorer = val_reward or scorer
    callback = make_val_callback(tokenizer, val_rows, agent, config, val_scorer)
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=scorer,
        args=grpo_arguments(config, output_dir),
        train_dataset=Dataset.from_list(train_rows),
        processing_class=tokenizer,
        callbacks=[callback],
        peft_config=peft_config(config),
    )
    log.info("GRPO %s: %d train rows, %d val rows, model %s", agent, len(train_rows), len(val_rows), resolved)
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    result = make_result("grpo", agent, trainer.state, callback.points, output_dir, seconds)
    meta = train_meta(config, result, model_spec, resolved, {"train": len(train_rows), "val": len(val_rows)})
    save_trained(trainer, tokenizer, output_dir, meta)
    return result
