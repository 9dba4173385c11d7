"""The one interface every LLM backend implements, and the errors it may raise."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypedDict

from harness.llm.structured import JSONSchema, StructuredOutputs


class Message(TypedDict):
    role: Literal["system", "user", "assistant"]
    content: str


@dataclass(frozen=True)
class GenerateConfig:
    """Sampling parameters that change what a model returns (all of them enter the cache key)."""

    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    json_mode: bool = False
    """Ask for a JSON object where the backend supports it (OpenAI `response_format`)."""
    json_schema: JSONSchema | None = None
    """A schema the reply must follow; enforced where the backend can (`BackendInfo.structured_outputs`)."""

    def sampling_options(self) -> dict[str, Any]:
        """The OpenAI chat-completions parameters of this config (less the token limit, whose name differs
        between servers), leaving out what is unset so servers use their defaults."""
        options: dict[str, Any] = {"temperature": self.temperature}
        if self.top_p is not None:
            options["top_p"] = self.top_p
        if self.stop:
            options["stop"] = list(self.stop)
        if self.seed is not None:
            options["seed"] = self.seed
        if self.json_schema is not None:
            options["response_format"] = self.json_schema.openai_response_format()
        elif self.json_mode:
            options["response_format"] = {"type": "json_object"}
        return options

    @property
    def deterministic(self) -> bool:
        """Greedy calls, or sampled calls pinned by a seed, may be served from the cache."""
        return self.temperature == 0.0 or self.seed is not None


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    cached: bool = False
    finish_reason: str | None = None
    cost_usd: float | None = None
    """The call's list price in dollars (cached calls included); None when the model has no known price."""
    retries: int = 0
    """Failed attempts before this reply (`Model`'s retries of transient errors); 0 for a cache hit."""


class LLMError(RuntimeError):
    """A call failed in a way retrying will not fix (bad request, auth, unknown model)."""


class TransientLLMError(LLMError):
    """A call failed in a way that may pass: connection, timeout, rate limit, server error, malformed reply."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        """How long the server asked callers to wait before trying again (its `Retry-After`), when it said."""


class LLMCallFailed(LLMError):
    """Raised by `Model.generate` once retries are exhausted; the runner records it as a failed sample."""


@dataclass
class BackendInfo:
    """What a backend tells the harness about itself (recorded in the run spec)."""

    provider: str
    model: str
    base_url: str | None = None
    context_window: int | None = None
    """Tokens the model accepts, prompt + completion, when known."""
    max_concurrency: int | None = None
    """1 for single-slot local engines, which run best fed one history at a time."""
    structured_outputs: StructuredOutputs = "unconstrained"
    """What the backend does with `GenerateConfig.json_schema` (see `harness.llm.structured`)."""
    extra: dict[str, str] = field(default_factory=dict)


class Backend(Protocol):
    """A provider of chat completions (OpenAI-compatible server, litellm, llama.cpp, transformers, mock)."""

    info: BackendInfo

    async def generate(self, messages: list[Message], config: GenerateConfig) -> Completion:
        """One chat completion. Raise `TransientLLMError` for failures worth retrying, `LLMError` otherwise."""
        ...

    def count_tokens(self, text: str) -> int | None:
        """Exact token count with the model's tokenizer, or None if the backend cannot tell."""
        ...

    async def aclose(self) -> None: ...
