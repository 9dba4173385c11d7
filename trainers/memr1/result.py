"""What a Memory-R1 training run returns (GRPO, PPO and SFT alike), and what its `train_meta.json` records."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

Algorithm = Literal["grpo", "ppo", "sft"]
Agent = Literal["answer", "manager"]


class LoggedStep(BaseModel):
    """One logging step of the trainer (`logging_steps` apart)."""

    step: int
    reward: float | None = None
    """Mean reward of the step's completions (None where the algorithm logs none, e.g. SFT)."""
    loss: float | None = None
    values: dict[str, float] = Field(default_factory=dict)
    """Everything else the trainer logged at that step (KL, learning rate, completion length, ...)."""


class ValPoint(BaseModel):
    """Validation scores at one step (step 0: before training), without the reward's format term."""

    step: int
    em: float
    f1: float | None = None
    """Set-token F1 (None in records written before F1 was recorded)."""
    examples: int


class TrainResult(BaseModel):
    algorithm: Algorithm
    agent: Agent
    steps: int
    """Optimizer steps taken."""
    history: list[LoggedStep] = Field(default_factory=list)
    """Per logging step: reward and loss, in order."""
    val: list[ValPoint] = Field(default_factory=list)
    """Validation EM and F1 before training, every `eval_steps`, and at the end."""
    val_em_before: float | None = None
    val_em_after: float | None = None
    val_f1_before: float | None = None
    val_f1_after: float | None = None
    checkpoint: Path
    """The saved model directory (`hf:<checkpoint>` evaluates it)."""
    train_seconds: float = 0.0
    peak_rss_mb: float | None = None
    """Peak resident memory of the process (CPU) or None where unknown."""

    @property
    def reward_history(self) -> list[float | None]:
        return [step.reward for step in self.history]

    @property
    def loss_history(self) -> list[float | None]:
        return [step.loss for step in self.history]
