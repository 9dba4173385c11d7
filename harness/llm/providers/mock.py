"""A scripted backend for tests: replies from a list, a function, or a fixed default; can fail on cue."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from harness.llm.base import BackendInfo, Completion, GenerateConfig, LLMError, Message, TransientLLMError

Reply = str | Exception
Responder = Callable[[list[Message]], Reply]


class MockBackend:
    """Answers each call with the next scripted reply (or `responder(messages)`, or `default`).

    A reply that is an exception is raised instead, so tests can script transient and permanent failures.
    Every call's messages are kept in `calls` for assertions.
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
    ) -> None:
        self.info = BackendInfo(
            provider="mock", model=model or "mock", base_url=base_url, context_window=context_window
        )
        self._replies = list(replies)
        self._responder = responder
        self._default = default
        self.calls: list[list[Message]] = []

    async def generate(self, messages: list[Message], config: GenerateConfig) -> Completion:
        self.calls.append(messages)
        if self._replies:
            reply: Reply = self._replies.pop(0)
        elif self._responder is not None:
            reply = self._responder(messages)
        else:
            reply = self._default
        if isinstance(reply, Exception):
            raise reply
        prompt_tokens = sum(len(m["content"].split()) for m in messages)
        return Completion(
            text=reply, prompt_tokens=prompt_tokens, completion_tokens=len(reply.split()), finish_reason="stop"
        )

    def count_tokens(self, text: str) -> int | None:
        return len(text.split())

    async def aclose(self) -> None:
        return None


__all__ = ["LLMError", "MockBackend", "TransientLLMError"]
