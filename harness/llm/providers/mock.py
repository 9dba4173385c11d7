"""A scripted backend for tests: replies from a list, a function, or a fixed default; can fail on cue."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from functools import lru_cache

from harness.llm.base import BackendInfo, Completion, GenerateConfig, LLMError, Message, TransientLLMError
from harness.llm.cache import BLOCK_SEPARATOR

Reply = str | Exception
Responder = Callable[[list[Message]], Reply]


@lru_cache(maxsize=4096)
def _word_count(block: str) -> int:
    """Words of one block of a prompt: a history's blocks recur in every prompt of its questions, and counting
    a 100 KB prompt's words afresh per call would make the mock, not the harness, the slow part of a run.
    Blocks are separated by whitespace, so their counts sum to the prompt's `len(text.split())`."""
    return len(block.split())


class MockBackend:
    """Answers each call with the next scripted reply (or `responder(messages)`, or `default`).

    A reply that is an exception is raised instead, so tests can script transient and permanent failures.
    Every call's messages are kept in `calls` for assertions, and its configs in `configs`.

    The mock stands for a backend that enforces structured outputs: a scripted reply to a call with a JSON
    schema that does not fit it fails the call with `LLMError` (a scripting mistake in the test); the unscripted
    `default` is returned as is. With
    `validate_schema=False` it stands for an unconstrained backend and returns any reply as is, so tests can
    exercise the lenient parsers.

    With `latency_s` each call sleeps that long (without holding the event loop) before it replies, so a run
    on the mock shows the harness's own throughput ceiling against a server of fixed latency.
    """

    def __init__(
        self,
        model: str | None = None,
        base_url: str | None = None,
        *,
        replies: Sequence[Reply] = (),
        responder: Responder | None = None,
        default: str = "I don't know",
        context_window: int | None = None,
        validate_schema: bool = True,
        latency_s: float = 0.0,
    ) -> None:
        self.info = BackendInfo(
            provider="mock",
            model=model or "mock",
            base_url=base_url,
            context_window=context_window,
            structured_outputs="validated" if validate_schema else "unconstrained",
        )
        self._validate_schema = validate_schema
        self._replies = list(replies)
        self._responder = responder
        self._default = default
        self._latency_s = latency_s
        self.calls: list[list[Message]] = []
        self.configs: list[GenerateConfig] = []

    async def generate(self, messages: list[Message], config: GenerateConfig) -> Completion:
        self.calls.append(messages)
        self.configs.append(config)
        if self._latency_s:
            await asyncio.sleep(self._latency_s)
        scripted = bool(self._replies) or self._responder is not None
        if self._replies:
            reply: Reply = self._replies.pop(0)
        elif self._responder is not None:
            reply = self._responder(messages)
        else:
            reply = self._default
        if isinstance(reply, Exception):
            raise reply
        if scripted and self._validate_schema and config.json_schema is not None:
            errors = config.json_schema.errors(reply)
            if errors:
                raise LLMError(f"mock: the scripted reply does not fit schema {config.json_schema.name!r}: {errors}")
        prompt_tokens = sum(_word_count(block) for m in messages for block in m["content"].split(BLOCK_SEPARATOR))
        return Completion(
            text=reply, prompt_tokens=prompt_tokens, completion_tokens=len(reply.split()), finish_reason="stop"
        )

    def count_tokens(self, text: str) -> int | None:
        return len(text.split())

    async def aclose(self) -> None:
        return None


__all__ = ["LLMError", "MockBackend", "TransientLLMError"]
