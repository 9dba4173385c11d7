"""Memory-R1 training data and rewards (the pure-Python layer under the TRL trainers; imports no torch or TRL).

- `banks`: the starting memory banks, built with the `memr1` system's ingestion (or one memory per turn) and
  cached on disk.
- `data`: Answer Agent examples and Memory Manager episodes on LoCoMo's Memory-R1 split, as TRL rows.
- `rewards`: exact-match rewards in TRL's reward-function convention.

The training layer (torch, transformers, TRL and peft, imported only when a trainer runs; not re-exported here):
- `config`: `TrainConfig` (YAML / JSON, `configs/`); `result`: `TrainResult`;
- `model_io`: `load_policy`, `peft_config`, `save_checkpoint` / `save_trained` (+ `train_meta.json`);
- `evaluation`: dataset rows, the reward function, greedy validation EM and its `TrainerCallback`;
- `training`: TrainingArguments fields, log history, the train_meta record;
- `grpo`, `ppo`, `sft`: `train_grpo`, `train_ppo`, `train_sft`; `cli` / `__main__`: `python -m trainers.memr1`.
"""

from trainers.memr1.banks import BankBuilder, BankConfig, BankSource, BuiltBank, load_bank
from trainers.memr1.data import (
    AnswerExample,
    EvidenceMatch,
    ManagerEpisode,
    answer_agent_examples,
    build_answer_examples,
    build_manager_episodes,
    evidence_turns,
    load_locomo_split,
    manager_episodes,
)
from trainers.memr1.rewards import ManagerReward, answer_reward, completion_text, exact_match_any
from trainers.memr1.sync import run_sync

__all__ = [
    "AnswerExample",
    "BankBuilder",
    "BankConfig",
    "BankSource",
    "BuiltBank",
    "EvidenceMatch",
    "ManagerEpisode",
    "ManagerReward",
    "answer_agent_examples",
    "answer_reward",
    "build_answer_examples",
    "build_manager_episodes",
    "completion_text",
    "evidence_turns",
    "exact_match_any",
    "load_bank",
    "load_locomo_split",
    "manager_episodes",
    "run_sync",
]
