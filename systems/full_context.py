"""`full-context`: the whole history in the prompt, the baseline every memory system must beat.

When the history does not fit the model's context window, the oldest sessions are dropped until it fits
(the most recent ones are kept, whole), and every prediction records how many were kept. The token count
uses the backend's tokenizer when it has one, else an estimate of 4 characters per token (recorded).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from pydantic import BaseModel, ConfigDict

from harness.llm import GenerateConfig, Message, usage_of
from harness.system import SystemContext
from harness.types import MemoryItem, Prediction, Query, Session, StageUsage
from systems.prompts import ANSWER_INSTRUCTIONS, answer_messages, clean_short_answer

PROMPT_RESERVE_TOKENS = 256
"""Room kept for the instructions and the question beside the history."""


def render_session(session: Session) -> str:
    header = f"[{session.session_id}" + (f", {session.date}]" if session.date else "]")
    return "\n".join([header, *(f"{t.speaker}: {t.text}" for t in session.turns)])


@dataclass(frozen=True)
class FittedHistory:
    text: str
    kept_session_ids: list[str]
    dropped_sessions: int
    history_tokens: int
    token_count_exact: bool


class FullContextOptions(BaseModel):
    """Options of `full-context` (`-S KEY=VALUE` on the command line)."""

    model_config = ConfigDict(extra="forbid")

    max_context_tokens: int | None = None
    """Context window to fit the history into; default: the answer model's own window (none: no limit)."""
    max_answer_tokens: int = 32


class FullContextSystem:
    """Answers each question with every ingested session (or the most recent ones that fit) in the prompt."""

    options_model: ClassVar[type[FullContextOptions]] = FullContextOptions
    prompts: ClassVar[dict[str, str]] = {"answer": ANSWER_INSTRUCTIONS}

    def __init__(self, context: SystemContext, **options: str) -> None:
        self.options = self.options_model.model_validate(options)
        self.model = context.role("answer")
        window = self.options.max_context_tokens or self.model.info.context_window
        reserve = self.options.max_answer_tokens + PROMPT_RESERVE_TOKENS
        self.history_budget = None if window is None else window - reserve
        self.generate_config = GenerateConfig(max_tokens=self.options.max_answer_tokens)
        self.sessions: list[Session] = []
        self._fitted: FittedHistory | None = None

    async def ingest(self, session: Session) -> StageUsage:
        self.sessions.append(session)
        self._fitted = None
        return {}

    def _count(self, text: str) -> tuple[int, bool]:
        exact = self.model.count_tokens(text)
        return (exact, True) if exact is not None else (len(text) // 4 + 1, False)

    def fitted_history(self) -> FittedHistory:
        """The most recent sessions that fit the budget, oldest first; computed once per history."""
        if self._fitted is None:
            kept: list[str] = []
            total, exact = 0, True
            for session in reversed(self.sessions):
                rendered = render_session(session)
                tokens, exact = self._count(rendered + "\n\n")
                if self.history_budget is not None and total + tokens > self.history_budget:
                    break
                kept.insert(0, rendered)
                total += tokens
            kept_ids = [s.session_id for s in self.sessions[len(self.sessions) - len(kept) :]]
            self._fitted = FittedHistory(
                text="\n\n".join(kept),
                kept_session_ids=kept_ids,
                dropped_sessions=len(self.sessions) - len(kept),
                history_tokens=total,
                token_count_exact=exact,
            )
        return self._fitted

    def prompt(self, query: Query) -> list[Message]:
        """The messages `answer` sends for `query` (the lm-eval bridge, `harness.lm_eval_tasks`, renders them too)."""
        return answer_messages(self.fitted_history().text, query)

    async def answer(self, query: Query) -> Prediction:
        history = self.fitted_history()
        completion = await self.model.generate(self.prompt(query), self.generate_config)
        return Prediction(
            question_id=query.question_id,
            answer=clean_short_answer(completion.text),
            usage={"answer": usage_of(completion)},
            latency_s=completion.latency_s,
            metadata={
                "raw_answer": completion.text,
                "sessions_kept": history.kept_session_ids,
                "sessions_dropped": history.dropped_sessions,
                "history_tokens": history.history_tokens,
                "history_tokens_exact": history.token_count_exact,
            },
        )

    def memory_dump(self) -> list[MemoryItem]:
        return [
            MemoryItem(
                id=s.session_id, text=render_session(s), timestamp=s.date, source_turn_ids=[t.turn_id for t in s.turns]
            )
            for s in self.sessions
        ]

    def memory_stats(self) -> dict[str, int]:
        return {"sessions": len(self.sessions), "sessions_dropped": self.fitted_history().dropped_sessions}
