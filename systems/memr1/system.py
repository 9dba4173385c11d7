"""`memr1`: the Memory-R1 pipeline (arXiv 2508.19828) over the Mem0-style bank of `systems.mem0`.

- Ingestion is Mem0's (fact extraction with role `memory`), except that the decisions come from the Memory
  Manager, role `manager` (`--manager-model`), once per extraction unit over all of its facts, as in
  Memory-R1's algorithm (`-S manager_unit=fact` decides per fact, as Mem0 does).
- Answering retrieves the same candidates as `mem0` (30 per speaker, 60 in all) and hands them to the Answer
  Agent, role `answer` (`--answer-model`), which first distils the relevant memories and then answers after
  `**Answer:**`. The prediction records the distilled memory ids and whether the marker was found;
  `retrieved` holds all candidates, best first.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Literal

from harness.llm import usage_of
from harness.types import Prediction, Query
from systems.mem0 import Mem0Options, Mem0System, best_first
from systems.memory_ops import EXTRACTION_INSTRUCTIONS, MANAGER_INSTRUCTIONS
from systems.memr1.answer_agent import (
    ANSWER_AGENT_CONFIG,
    ANSWER_AGENT_INSTRUCTIONS,
    build_answer_agent_messages,
    parse_answer_agent_reply,
)
from systems.memr1.manager import MANAGER_ROLE


class MemR1Options(Mem0Options):
    """Options of `memr1` (`-S KEY=VALUE`): those of `mem0`, with Memory-R1's manager granularity (one decision
    per extraction unit over all its facts) and room for the distilled list in the answer."""

    manager_unit: Literal["fact", "turn"] = "turn"
    max_answer_tokens: int = ANSWER_AGENT_CONFIG.max_tokens


class MemR1System(Mem0System):
    options_model = MemR1Options
    prompts: ClassVar[dict[str, str]] = {
        "extraction": EXTRACTION_INSTRUCTIONS,
        "manager": MANAGER_INSTRUCTIONS,
        "answer": ANSWER_AGENT_INSTRUCTIONS,
    }
    manager_role = MANAGER_ROLE

    async def answer(self, query: Query) -> Prediction:
        groups, search_usage = await self.candidates(query)
        candidates = [item for _, items in groups for item in items]
        config = dataclasses.replace(ANSWER_AGENT_CONFIG, max_tokens=self.options.max_answer_tokens)
        completion = await self.answer_model.generate(build_answer_agent_messages(candidates, query), config)
        reply = parse_answer_agent_reply(completion.text, candidates)
        return Prediction(
            question_id=query.question_id,
            answer=reply.answer,
            retrieved=best_first(groups),
            usage={"search": search_usage, "answer": usage_of(completion)},
            metadata={
                "raw_answer": completion.text,
                "distilled": reply.distilled,
                "marker_found": reply.marker_found,
                "unmatched_selections": reply.unmatched,
            },
        )
