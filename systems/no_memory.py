"""`no-memory`: the shared answer prompt with no history at all, the floor of every memory system.

It ingests nothing and answers each question from an empty context, so its scores are what the answer model
guesses (or abstains on) from the question alone: a memory system that does not beat it has not helped. Its
prompt is the one every system uses (`systems.prompts.answer_messages`) with the context left empty.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from harness.llm import GenerateConfig, usage_of
from harness.system import SystemContext
from harness.types import MemoryItem, Prediction, Query, Session, StageUsage
from systems.prompts import ANSWER_INSTRUCTIONS, answer_messages, clean_short_answer

NO_CONTEXT = ""
"""The context the answer prompt gets: nothing (the prompt still says "Context:" and the question)."""


class NoMemoryOptions(BaseModel):
    """Options of `no-memory` (`-S KEY=VALUE` on the command line)."""

    model_config = ConfigDict(extra="forbid")

    max_answer_tokens: int = Field(default=32, gt=0)


class NoMemorySystem:
    """Answers every question without any history."""

    options_model: ClassVar[type[NoMemoryOptions]] = NoMemoryOptions
    prompts: ClassVar[dict[str, str]] = {"answer": ANSWER_INSTRUCTIONS}

    def __init__(self, context: SystemContext, **options: str) -> None:
        self.options = self.options_model.model_validate(options)
        self.model = context.role("answer")
        self.generate_config = GenerateConfig(max_tokens=self.options.max_answer_tokens)

    async def ingest(self, session: Session) -> StageUsage:
        return {}

    async def answer(self, query: Query) -> Prediction:
        completion = await self.model.generate(answer_messages(NO_CONTEXT, query), self.generate_config)
        return Prediction(
            question_id=query.question_id,
            answer=clean_short_answer(completion.text),
            usage={"answer": usage_of(completion)},
            latency_s=completion.latency_s,
            metadata={"raw_answer": completion.text},
        )

    def memory_dump(self) -> list[MemoryItem]:
        return []

    def memory_stats(self) -> dict[str, int]:
        return {}
