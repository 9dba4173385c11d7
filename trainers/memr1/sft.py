"""Memory-SFT, the paper's supervised baseline: behaviour cloning of a teacher model's trajectories.

The teacher (any harness model spec: `openai:gpt-4o-mini`, `hf:DIR`, ...) answers every training prompt with the
system's own generation settings for that agent (`ANSWER_AGENT_CONFIG` / `MANAGER_CONFIG`: greedy); its replies
are scored with the training reward and, by default, only those with reward 1 are kept (the rejection step;
`sft.min_reward: null` keeps all). The teacher `gold` (Answer Agent only; ours, not the paper's) writes each
training question's gold answer after the marker, `**Answer:** <first gold answer>`: a warm start on the
train split's answers in the agent's output format, for a model too weak to earn a reward on its own. TRL's
`SFTTrainer` then trains on the conversational prompt + completion,
with the loss on the completion only. Validation (EM and F1) is greedy, as for GRPO.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

from harness.llm import Model
from harness.llm.build import build_model
from harness.llm.cache import CallCache, default_cache_path
from systems.memr1 import ANSWER_AGENT_CONFIG, ANSWER_MARKER, MANAGER_CONFIG
from trainers.memr1.config import TrainConfig
from trainers.memr1.data import MAX_CONCURRENT_BANKS
from trainers.memr1.evaluation import RewardFunction, Row, prepare_rows, reward_function, score_replies
from trainers.memr1.evaluation import val_callback as make_val_callback
from trainers.memr1.model_io import load_policy, peft_config, save_trained
from trainers.memr1.result import Agent, TrainResult
from trainers.memr1.sync import gather_bounded, run_sync
from trainers.memr1.training import make_result, train_meta, trainer_arguments

log = logging.getLogger(__name__)


GOLD_TEACHER = "gold"


def gold_reply(row: Row) -> str:
    """The Answer Agent's reply format around the row's first gold answer."""
    return f"{ANSWER_MARKER} {row['gold'][0]}"


def teacher_replies(teacher: Model | str, agent: Agent, rows: Sequence[Row]) -> list[str]:
    """The teacher's reply to each row's prompt, with the system's settings for `agent` (a failed call raises);
    for the `gold` teacher, the gold-formatted answer."""
    if teacher == GOLD_TEACHER:
        if agent != "answer":
            raise ValueError("the gold teacher writes Answer Agent replies only; the manager has no gold reply")
        return [gold_reply(row) for row in rows]
    if isinstance(teacher, str):
        raise TypeError(f"teacher_replies needs a Model or {GOLD_TEACHER!r}, got the spec {teacher!r}")
    config = ANSWER_AGENT_CONFIG if agent == "answer" else MANAGER_CONFIG
    jobs = [teacher.generate(list(row["prompt"]), config) for row in rows]
    return [completion.text for completion in run_sync(gather_bounded(jobs, MAX_CONCURRENT_BANKS))]


def teacher_examples(
    teacher: Model | str, agent: Agent, rows: Sequence[Row], reward: RewardFunction, min_reward: float | None
) -> tuple[list[Row], list[float]]:
    """Prompt + completion rows of the teacher's replies that reach `min_reward` (all when None), and every
    reply's reward."""
    replies = teacher_replies(teacher, agent, rows)
    rewards = score_replies(rows, replies, reward)
    kept = [
        {"prompt": row["prompt"], "completion": [{"role": "assistant", "content": reply}]}
        for row, reply, score in zip(rows, replies, rewards, strict=True)
        if min_reward is None or score >= min_reward
    ]
    return kept, rewards


def sft_arguments(config: TrainConfig, output_dir: Path) -> object:
    from trl import SFTConfig

    return SFTConfig(
        **trainer_arguments(config, output_dir),
        max_length=config.max_prompt_length + config.max_completion_length,
        completion_only_loss=config.sft.completion_only_loss,
    )


def train_sft(
    config: TrainConfig,
    agent: Agent,
    model_spec: str,
    output_dir: Path,
    *,
    teacher: str | Model | None = None,
    reward: RewardFunction | None = None,
    val_reward: RewardFunction | None = None,
) -> TrainResult:
    """Clone `teacher`'s (a spec or a `Model`; default `config.sft.teacher`) rewarded replies into `model_spec`
    and save the checkpoint to `output_dir`."""
    from datasets import Dataset
    from trl import SFTTrainer

    teacher = teacher or config.sft.teacher
    if teacher is None:
        raise ValueError("SFT needs a teacher model: --teacher SPEC or sft.teacher in the config")
    teacher_model: Model | str = (
        teacher
        if isinstance(teacher, Model) or teacher == GOLD_TEACHER
        else build_model(teacher, cache=CallCache(default_cache_path()))
    )
    teacher_spec = teacher_model.spec if isinstance(teacher_model, Model) else teacher_model
    output_dir = Path(output_dir)
    model, tokenizer, resolved = load_policy(model_spec, config)
    train_rows, val_rows = prepare_rows(agent, config, tokenizer)
    scorer = reward or reward_function(agent, config)
    val_scorer = val_reward or scorer
    examples, rewards = teacher_examples(teacher_model, agent, train_rows, scorer, config.sft.min_reward)
    log.info(
        "teacher %s: %d of %d replies kept (mean reward %.3f)",
        teacher_spec,
        len(examples),
        len(rewards),
        sum(rewards) / len(rewards),
    )
    if not examples:
        raise ValueError(f"none of the teacher's {len(rewards)} replies reached min_reward={config.sft.min_reward}")
    callback = make_val_callback(tokenizer, val_rows, agent, config, val_scorer)
    trainer = SFTTrainer(
        model=model,
        args=sft_arguments(config, output_dir),
        train_dataset=Dataset.from_list(examples),
        processing_class=tokenizer,
        callbacks=[callback],
        peft_config=peft_config(config),
    )
    started = time.perf_counter()
    trainer.train()
    result = make_result("sft", agent, trainer.state, callback.points, output_dir, time.perf_counter() - started)
    rows = {"train": len(train_rows), "val": len(val_rows), "teacher_kept": len(examples)}
    teacher_record = {
        "spec": teacher_spec,
        "mean_reward": sum(rewards) / len(rewards),
        "min_reward": config.sft.min_reward,
    }
    meta = train_meta(config, result, model_spec, resolved, rows, teacher=teacher_record)
    save_trained(trainer, tokenizer, output_dir, meta)
    return result
