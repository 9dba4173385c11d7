"""The configuration of a Memory-R1 training run (`--config FILE`, YAML or JSON; a few CLI flags override it).

Algorithm-independent fields sit at the top level; `grpo`, `ppo` and `sft` hold each algorithm's own. Paper
settings (Memory-R1, arXiv 2508.19828, GPU recipe): batch 128, rollout temperature 1.0, greedy evaluation,
max prompt 4096 / response 2048 tokens, PPO actor lr 1e-6 and critic lr 1e-5. The paper does not state the
GRPO group size, KL coefficient or step count: the defaults below are OUR choices (see `GRPOSettings`).
`auto` for `use_vllm` / `bf16` means: on when CUDA is available (and, for vLLM, the package importable).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from harness.embeddings.base import DEFAULT_EMBEDDER_SPEC
from harness.llm.spec import SMOLLM2_SPEC
from trainers.memr1.banks import BankConfig, BankSource

Auto = Literal["auto"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LoraSettings(_Strict):
    enabled: bool = False
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] | str = "all-linear"
    """peft's `target_modules`: a list of module names, or `all-linear`."""
    merge: bool = True
    """Save merged full weights (True) or the adapter alone, naming its base (False)."""


class DataSettings(_Strict):
    train_split: str = "train"
    val_split: str = "val"
    bank_source: BankSource = "llm"
    """`llm`: banks built by the memr1 ingestion with `bank_model` (the paper's); `turns`: one memory per turn."""
    window_turns: int = Field(50, ge=1)
    bank_model: str | None = SMOLLM2_SPEC
    """Model of the `llm` bank source (roles memory and manager). Memory-R1 builds banks with a strong LLM."""
    embedder: str = DEFAULT_EMBEDDER_SPEC
    candidates_per_speaker: int = Field(30, ge=1)
    """The Answer Agent's retrieval (the memr1 system's `-S memories_per_speaker`): 30 = the paper's 60 in all.
    CPU smoke configs lower it so prompts stay short."""
    limit_train: int | None = None
    """The first N training rows (None: all)."""
    limit_val: int | None = None
    """The first N validation rows used for validation EM (None: all)."""
    data_dir: str | None = None
    """Folder with locomo/locomo10.json-style official files (default: $HARNESS_DATA_DIR, then the cache)."""
    data_file: str | None = None
    """Exactly this LoCoMo file (unchecked)."""

    def bank_config(self) -> BankConfig:
        return BankConfig(
            source=self.bank_source,
            window_turns=self.window_turns,
            model=self.bank_model if self.bank_source == "llm" else None,
            embedder=self.embedder,
        )


class RewardSettings(_Strict):
    """What both agents are rewarded for (`trainers.memr1.rewards`); recorded in `train_meta.json`."""

    score: Literal["em", "f1"] = "em"
    """`em`: exact match (the paper's); `f1`: the harness's set-token F1, which gives a small model partial
    credit (an EM reward a model never earns leaves every GRPO group without variance). The manager reward is the
    frozen Answer Agent's score under the same choice."""
    format_weight: float = Field(0.0, ge=0.0)
    """Added to the reward when the reply keeps its format: the `**Answer:**` marker (answer), a well-formed
    manager JSON (manager). 0: no format term."""
    require_marker: bool = False
    """Answer reward: score 0 when the reply lacks `**Answer:**` (off: the system's parse reads the last line)."""

    def describe(self) -> str:
        score = {"em": "exact match", "f1": "set-token F1"}[self.score]
        parts = [score]
        if self.format_weight:
            parts.append(f"+ {self.format_weight:g} for a well-formed reply")
        if self.require_marker:
            parts.append("(0 without **Answer:**)")
        return " ".join(parts)


class GRPOSettings(_Strict):
    """GRPO (TRL `GRPOConfig`). The paper does not state these: OUR defaults."""

    num_generations: int = 8
    """Group size: completions per prompt (ours; DeepSeekMath-style groups are 8-64)."""
    beta: float = 0.04
    """KL coefficient against the reference model (ours; 0 drops the reference model and saves memory)."""
    epsilon: float = 0.2
    """PPO-style clipping of the importance ratio."""
    loss_type: str = "dapo"
    """TRL's loss aggregation (`grpo`, `dr_grpo`, `dapo`, `bnpo`)."""
    scale_rewards: str = "group"
    """TRL's reward scaling (`group`, `batch`, `none`)."""
    num_iterations: int = 1
    steps_per_generation: int | None = None
    """Micro-batches per generation batch (TRL default: gradient_accumulation_steps); exclusive with the next."""
    generation_batch_size: int | None = None
    """Completions generated at once (TRL default: per-device batch x processes x steps_per_generation). For the
    paper's 128 questions per rollout batch: 128 x num_generations."""
    vllm_mode: Literal["colocate", "server"] = "colocate"
    vllm_gpu_memory_utilization: float = 0.3


class PPOSettings(BaseModel):
    """PPO (TRL 1.12 `trl.experimental.ppo`). Paper: actor lr = `learning_rate` (1e-6), critic lr 1e-5; the rest
    TRL's defaults. Extra keys are kept and passed through to the PPO trainer."""

    model_config = ConfigDict(extra="allow")

    critic_learning_rate: float = 1e-5
    kl_coef: float = 0.05
    vf_coef: float = 0.1
    cliprange: float = 0.2
    cliprange_value: float = 0.2
    num_ppo_epochs: int = 4
    num_mini_batches: int = 1
    gamma: float = 1.0
    lam: float = 0.95
    whiten_rewards: bool = False


class SFTSettings(_Strict):
    """Memory-SFT: behaviour cloning of a teacher's replies (generated with the system's own settings for the
    agent's prompt: greedy, `ANSWER_AGENT_CONFIG` / `MANAGER_CONFIG`)."""

    teacher: str | None = None
    """The teacher's model spec (e.g. `openai:gpt-4o-mini`), or `gold` (Answer Agent: the gold answers of the
    train split in the agent's format, a warm start); `--teacher` overrides it."""
    min_reward: float | None = 1.0
    """Keep only replies whose reward reaches this (1.0: the paper's rejection step; None keeps every reply)."""
    completion_only_loss: bool = True
    """Loss on the reply tokens only (not the prompt)."""


class TrainConfig(_Strict):
    learning_rate: float = 1e-6
    per_device_train_batch_size: int = 8
    gradient_accumulation_steps: int = 16
    """With per_device_train_batch_size and the process count: the batch (the paper's 128)."""
    max_steps: int = -1
    """-1: run `num_train_epochs`."""
    num_train_epochs: float = 1.0
    seed: int = 0
    max_prompt_length: int = 4096
    max_completion_length: int = 2048
    temperature: float = 1.0
    """Rollout temperature (the paper's 1.0); evaluation is greedy."""
    logging_steps: int = 1
    eval_steps: int = 0
    """Validation (EM and F1) every N steps (0: only before and after training)."""
    save_steps: int = 0
    """Intermediate checkpoints every N steps (0: only the final one)."""
    eval_max_new_tokens: int | None = None
    """Greedy validation length (None: `max_completion_length`)."""
    eval_batch_size: int = 8
    """Prompts per greedy validation batch."""
    gradient_checkpointing: bool = False
    lora: LoraSettings = Field(default_factory=LoraSettings)
    use_vllm: bool | Auto = "auto"
    bf16: bool | Auto = "auto"
    data: DataSettings = Field(default_factory=DataSettings)
    reward: RewardSettings = Field(default_factory=RewardSettings)
    frozen_answer_model: str = SMOLLM2_SPEC
    """Model spec of the frozen Answer Agent that scores Memory Manager decisions (the manager reward)."""
    grpo: GRPOSettings = Field(default_factory=GRPOSettings)
    ppo: PPOSettings = Field(default_factory=PPOSettings)
    sft: SFTSettings = Field(default_factory=SFTSettings)

    def resolved_use_vllm(self) -> bool:
        if self.use_vllm != "auto":
            return bool(self.use_vllm)
        return cuda_available() and importlib.util.find_spec("vllm") is not None

    def resolved_bf16(self) -> bool:
        return cuda_available() if self.bf16 == "auto" else bool(self.bf16)

    @property
    def eval_tokens(self) -> int:
        return self.eval_max_new_tokens or self.max_completion_length


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def load_train_config(path: str | Path | None = None, **overrides: object) -> TrainConfig:
    """The config in `path` (YAML or JSON; None: the defaults), with `overrides` (dotted keys for nested fields,
    e.g. `data.limit_train=4`; None values are ignored) applied."""
    raw: dict[str, object] = {}
    if path is not None:
        if not Path(path).is_file():
            raise ValueError(f"training config {path}: no such file (see trainers/memr1/configs/ for examples)")
        text = Path(path).read_text()
        if str(path).endswith(".json"):
            raw = dict(json.loads(text))
        else:
            import yaml

            raw = dict(yaml.safe_load(text) or {})
    for key, value in overrides.items():
        if value is None:
            continue
        *parents, leaf = key.split(".")
        node = raw
        for parent in parents:
            child = node.setdefault(parent, {})
            if not isinstance(child, dict):
                raise ValueError(f"cannot override {key}: {parent} is not a section")
            node = child
        node[leaf] = value
    try:
        return TrainConfig.model_validate(raw)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in issue['loc'])}: {issue['msg']} (got {issue.get('input')!r})"
            for issue in error.errors()
        )
        raise ValueError(f"training config {path or '(defaults)'}: {problems}") from error
