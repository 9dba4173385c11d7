"""What every Memory-R1 trainer shares: the dataset rows of a split, the reward function, greedy validation,
and a `TrainerCallback` that logs validation scores before training, every `eval_steps`, and at the end.

Validation generates greedily (`model.generate`, no sampling) with the tokenizer's chat template, exactly the
prompt the `memr1` system sends, and gives both scores the reward can be built on, without its format term: for
`answer`, EM and F1 of the parsed answer; for `manager`, the mean EM and F1 of the frozen Answer Agent on the bank
the decision leaves.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
from collections.abc import Callable, Sequence
from typing import Any, Literal

from harness.task import DataOptions
from harness.types import Sample
from trainers.memr1.banks import BankBuilder
from trainers.memr1.config import TrainConfig
from trainers.memr1.data import ManagerEpisode, build_answer_examples, build_manager_episodes, load_locomo_split
from trainers.memr1.result import Agent, ValPoint
from trainers.memr1.rewards import AnswerScores, ManagerReward, answer_reward, reply_scores
from trainers.memr1.sync import run_sync

log = logging.getLogger(__name__)

Role = Literal["train", "val"]
RewardFunction = Callable[..., list[float]]
Row = dict[str, Any]


def data_options(config: TrainConfig) -> DataOptions:
    return DataOptions(data_file=config.data.data_file, data_dir=config.data.data_dir)


def question_subset(samples: Sequence[Sample], limit: int | None, seed: int) -> list[Sample]:
    """The samples with a seeded random `limit` of their questions (all types mixed), in their original order."""
    if limit is None:
        return list(samples)
    ids = [q.question_id for s in samples for q in s.questions]
    kept = set(random.Random(seed).sample(ids, min(limit, len(ids))))
    subset = [
        s.model_copy(update={"questions": tuple(q for q in s.questions if q.question_id in kept)}) for s in samples
    ]
    return [s for s in subset if s.questions]


def training_rows(agent: Agent, split: Role, config: TrainConfig, banks: BankBuilder | None = None) -> list[Row]:
    """The TRL rows (`prompt` + the reward's columns) of the `train` or `val` role: LoCoMo split
    `config.data.train_split` / `val_split`, limited to `limit_train` / `limit_val` questions (a seeded subset;
    for `manager`, the episodes of those questions, at most that many)."""
    data = config.data
    limit = data.limit_train if split == "train" else data.limit_val
    locomo_split = data.train_split if split == "train" else data.val_split
    samples = question_subset(load_locomo_split(locomo_split, data_options(config)), limit, config.seed)
    banks = banks or BankBuilder(data.bank_config())
    if agent == "answer":
        examples = run_sync(build_answer_examples(samples, banks, data.candidates_per_speaker))
        return [example.to_row() for example in examples]
    episodes = run_sync(build_manager_episodes(samples, banks))
    return [episode.to_row() for episode in episodes[:limit]]


def reward_function(agent: Agent, config: TrainConfig) -> RewardFunction:
    """The training reward in TRL's convention, as `config.reward` chooses: `answer_reward` for `answer`, a
    `ManagerReward` over the frozen Answer Agent `config.frozen_answer_model` for `manager`."""
    choice = config.reward
    if agent == "answer":
        reward = functools.partial(
            answer_reward,
            score=choice.score,
            format_weight=choice.format_weight,
            require_marker=choice.require_marker,
        )
        functools.update_wrapper(reward, answer_reward)
        return reward
    return ManagerReward.from_specs(
        config.frozen_answer_model,
        config.data.embedder,
        memories_per_speaker=config.data.candidates_per_speaker,
        score=choice.score,
        format_weight=choice.format_weight,
    )


def query_ids(tokenizer: Any, messages: Sequence[dict[str, str]]) -> list[int]:
    """The token ids of a chat prompt with the generation prompt, as `greedy_completions` encodes it. (Templating
    to text first: `apply_chat_template(tokenize=True)` returns a dict of encodings in transformers 5.)"""
    text = tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def prompt_lengths(rows: Sequence[Row], tokenizer: Any) -> list[int]:
    return [len(query_ids(tokenizer, row["prompt"])) for row in rows]


def drop_long_prompts(rows: list[Row], tokenizer: Any, max_prompt_length: int) -> list[Row]:
    """The rows whose templated prompt fits `max_prompt_length` tokens (TRL's GRPO no longer truncates prompts,
    and a cut chat prompt would lose its question, which comes last)."""
    lengths = prompt_lengths(rows, tokenizer)
    kept = [row for row, n in zip(rows, lengths, strict=True) if n <= max_prompt_length]
    if len(kept) < len(rows):
        log.warning(
            "dropped %d of %d rows longer than max_prompt_length=%d tokens (longest %d)",
            len(rows) - len(kept),
            len(rows),
            max_prompt_length,
            max(lengths),
        )
    return kept


def prepare_rows(agent: Agent, config: TrainConfig, tokenizer: Any) -> tuple[list[Row], list[Row]]:
    """Train and val rows whose prompts fit `max_prompt_length`."""
    train = drop_long_prompts(training_rows(agent, "train", config), tokenizer, config.max_prompt_length)
    val = drop_long_prompts(training_rows(agent, "val", config), tokenizer, config.max_prompt_length)
    if not train:
        raise ValueError(f"no {agent} training rows fit max_prompt_length={config.max_prompt_length}")
    return train, val


def greedy_completions(model: Any, tokenizer: Any, rows: Sequence[Row], max_new_tokens: int, batch: int) -> list[str]:
    """Each row's greedy reply, through the chat template, `batch` prompts at a time (left-padded)."""
    import torch

    texts = [tokenizer.apply_chat_template(r["prompt"], add_generation_prompt=True, tokenize=False) for r in rows]
    replies: list[str] = []
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(texts), batch):
            encoded = tokenizer(
                texts[start : start + batch], return_tensors="pt", padding=True, add_special_tokens=False
            )
            encoded = encoded.to(model.device)
            with torch.no_grad():
                output = model.generate(
                    **encoded, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
                )
            new = output[:, encoded["input_ids"].shape[1] :]
            replies.extend(tokenizer.batch_decode(new, skip_special_tokens=True))
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return replies


def score_replies(rows: Sequence[Row], replies: Sequence[str], reward: RewardFunction) -> list[float]:
    """The reward of each reply, called as TRL calls it (conversational completions, every column but `prompt`)."""
    columns = {key: [row[key] for row in rows] for key in rows[0] if key != "prompt"} if rows else {}
    completions = [[{"role": "assistant", "content": reply}] for reply in replies]
    return list(reward(prompts=[row["prompt"] for row in rows], completions=completions, **columns))


def reply_answer_scores(
    agent: Agent, rows: Sequence[Row], replies: Sequence[str], config: TrainConfig, reward: RewardFunction
) -> list[AnswerScores]:
    """EM and F1 of each reply, without the reward's format term: of the parsed answer (`answer`), or of the
    frozen Answer Agent on the bank the decision leaves (`manager`, through the `ManagerReward` `reward`)."""
    if agent == "answer":
        return [
            reply_scores(reply, row["gold"], config.reward.require_marker)[0]
            for row, reply in zip(rows, replies, strict=True)
        ]
    if not isinstance(reward, ManagerReward):
        raise TypeError(f"scoring manager replies needs a ManagerReward, got {reward!r}")
    columns = [{key: value for key, value in row.items() if key != "prompt"} for row in rows]
    episodes = [ManagerEpisode.from_row(row) for row in columns]

    async def all_scores() -> list[AnswerScores]:
        scored = await asyncio.gather(*(reward.answer_scores(e, r) for e, r in zip(episodes, replies, strict=True)))
        return [scores for scores, _ in scored]

    return run_sync(all_scores())


def evaluate(
    model: Any,
    tokenizer: Any,
    rows: list[Row],
    agent: Agent,
    config: TrainConfig,
    reward: RewardFunction | None = None,
) -> AnswerScores:
    """Mean greedy EM and F1 on `rows` (0 for no rows)."""
    if not rows:
        return AnswerScores(0.0, 0.0)
    replies = greedy_completions(model, tokenizer, rows, config.eval_tokens, config.eval_batch_size)
    return AnswerScores.mean(
        reply_answer_scores(agent, rows, replies, config, reward or reward_function(agent, config))
    )


def val_callback(
    tokenizer: Any, rows: list[Row], agent: Agent, config: TrainConfig, reward: RewardFunction | None = None
) -> Any:
    """A `transformers.TrainerCallback` recording validation EM and F1 (its `points`): before training (step 0),
    every `config.eval_steps` steps, and at the end."""
    from transformers import TrainerCallback

    scorer = reward or reward_function(agent, config)

    class ValCallback(TrainerCallback):
        def __init__(self) -> None:
            self.points: list[ValPoint] = []

        def evaluate(self, model: Any, step: int) -> None:
            if not rows or (self.points and self.points[-1].step == step):
                return
            scores = evaluate(model, tokenizer, rows, agent, config, scorer)
            self.points.append(ValPoint(step=step, em=scores.em, f1=scores.f1, examples=len(rows)))
            log.info("val at step %d: EM %.3f, F1 %.3f (%d %s examples)", step, scores.em, scores.f1, len(rows), agent)

        def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
            self.evaluate(model, state.global_step)

        def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
            if config.eval_steps > 0 and state.global_step % config.eval_steps == 0:
                self.evaluate(model, state.global_step)

        def on_train_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
            self.evaluate(model, state.global_step)

    return ValCallback()
