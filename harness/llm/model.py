"""`Model`: a backend plus the cache, bounded retries and a concurrency limit. Systems and the judge call this."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import time

from harness.llm.base import Backend, Completion, GenerateConfig, Message, TransientLLMError
from harness.llm.cache import CallCache, request_document
from harness.llm.pricing import Price, price_of
from harness.llm.retry import RateLimitHold, call_with_retries
from harness.llm.slots import CallSlots
from harness.types import Usage


class Model:
    """Calls one backend for one role (`model`, `judge`, ...).

    Transient errors are retried `max_retries` times with exponential backoff and jitter (or after the
    server's `Retry-After`, which holds back every caller of this model); then, or on any other backend error,
    `LLMCallFailed` is raised. A failure never turns into answer text. A request that takes over `timeout_s`
    is cancelled and retried, so a hung server costs at most `timeout_s` per attempt.
    """

    def __init__(
        self,
        backend: Backend,
        spec: str,
        cache: CallCache | None = None,
        max_retries: int = 3,
        backoff_s: float = 1.0,
        max_concurrency: int = 8,
        timeout_s: float | None = None,
    ) -> None:
        self.backend = backend
        self.spec = spec
        self.cache = cache
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.timeout_s = timeout_s
        self.rate_limit = RateLimitHold()
        """Shared by this model's callers: a `Retry-After` one of them gets holds back all of them."""
        slots = backend.info.max_concurrency or max_concurrency
        self.max_concurrency = min(slots, max_concurrency)
        """Calls this model runs at once (1 on single-slot local engines)."""
        self.slots = CallSlots(self.max_concurrency)
        """Calls in flight; chains on the critical path can reserve slots and go before background calls."""

    @property
    def info(self):
        return self.backend.info

    @functools.cached_property
    def price(self) -> Price | None:
        info = self.backend.info
        return price_of(info.provider, info.model, info.base_url)

    @property
    def identity(self) -> dict[str, str | None]:
        """What decides this model's replies to a request: the cache key's backend part."""
        info = self.backend.info
        return {"provider": info.provider, "model": info.model, "base_url": info.base_url}

    async def generate(
        self, messages: list[Message], config: GenerateConfig | None = None, *, background: bool = False
    ) -> Completion:
        """One completion. A `background` call may wait: it runs only when no other call waits for a slot and
        no reserved slot is idle (see `CallSlots`)."""
        config = config or GenerateConfig()
        if self.cache is None or not config.deterministic:
            return self._priced(await self._call_with_retries(messages, config, background))
        identity = self.identity
        if config.json_schema is not None:
            # Whether the backend enforced the schema decides the reply too (hf enforces only with xgrammar).
            identity = {**identity, "structured_outputs": self.info.structured_outputs}
        request = request_document(identity, messages, config)
        hit = self.cache.get(request)
        if hit is not None:
            return self._priced(hit)
        completion = await self._call_with_retries(messages, config, background)
        self.cache.put(request, completion)
        return self._priced(completion)

    def _priced(self, completion: Completion) -> Completion:
        """A cache hit is priced too: cost describes the method, as token counts do, not this run's bill."""
        if self.price is None:
            return completion
        return dataclasses.replace(
            completion, cost_usd=self.price.cost(completion.prompt_tokens, completion.completion_tokens)
        )

    async def _call_with_retries(self, messages: list[Message], config: GenerateConfig, background: bool) -> Completion:
        attempts = 0

        async def attempt() -> Completion:
            nonlocal attempts
            attempts += 1
            async with self.slots.slot(background=background):
                start = time.perf_counter()
                completion = await self._generate_in_time(messages, config)
                latency = time.perf_counter() - start
            return Completion(
                text=completion.text,
                prompt_tokens=completion.prompt_tokens,
                completion_tokens=completion.completion_tokens,
                latency_s=latency,
                finish_reason=completion.finish_reason,
                retries=attempts - 1,
            )

        return await call_with_retries(
            attempt, where=self.spec, max_retries=self.max_retries, backoff_s=self.backoff_s, hold=self.rate_limit
        )

    async def _generate_in_time(self, messages: list[Message], config: GenerateConfig) -> Completion:
        try:
            async with asyncio.timeout(self.timeout_s):
                return await self.backend.generate(messages, config)
        except TimeoutError as error:
            if self.timeout_s is None:
                raise
            raise TransientLLMError(f"no reply within timeout_s={self.timeout_s:g}") from error

    def count_tokens(self, text: str) -> int | None:
        return self.backend.count_tokens(text)

    async def aclose(self) -> None:
        if self.cache is not None:
            self.cache.flush()
        await self.backend.aclose()


def usage_of(completion: Completion) -> Usage:
    """The usage one completion adds to its stage. Tokens count whether or not the cache served the call
    (they are the method's cost); latency is what this run waited."""
    return Usage(
        calls=1,
        cache_hits=1 if completion.cached else 0,
        prompt_tokens=completion.prompt_tokens,
        completion_tokens=completion.completion_tokens,
        latency_s=completion.latency_s,
        latencies_s=[completion.latency_s],
        cost_usd=completion.cost_usd or 0.0,
        unpriced_calls=0 if completion.cost_usd is not None else 1,
        retries=completion.retries,
    )
