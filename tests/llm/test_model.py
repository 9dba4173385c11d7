"""Model: bounded retries, error wrapping and the concurrency limit, against scripted backends."""

from __future__ import annotations

import asyncio

import pytest

from harness.llm import (
    BackendInfo,
    Completion,
    GenerateConfig,
    LLMCallFailed,
    LLMError,
    Message,
    Model,
    TransientLLMError,
)
from harness.llm.model import usage_of
from harness.llm.providers.mock import MockBackend

QUESTION: list[Message] = [{"role": "user", "content": "What is the capital of France?"}]


def model_over(backend: MockBackend, max_retries: int = 3) -> Model:
    return Model(backend, spec="mock", max_retries=max_retries, backoff_s=0.0)


async def test_transient_errors_are_retried_until_success() -> None:
    backend = MockBackend(replies=[TransientLLMError("connection reset"), TransientLLMError("503"), "Paris"])
    completion = await model_over(backend).generate(QUESTION)
    assert completion.text == "Paris"
    assert len(backend.calls) == 3
    assert not completion.cached
    assert completion.latency_s >= 0.0


async def test_gives_up_after_max_retries() -> None:
    backend = MockBackend(replies=[TransientLLMError("timeout")] * 10)
    with pytest.raises(LLMCallFailed, match="gave up after 3 attempts"):
        await model_over(backend, max_retries=2).generate(QUESTION)
    assert len(backend.calls) == 3


async def test_permanent_error_is_not_retried() -> None:
    backend = MockBackend(replies=[LLMError("401 invalid key"), "never reached"])
    with pytest.raises(LLMCallFailed, match="401 invalid key"):
        await model_over(backend).generate(QUESTION)
    assert len(backend.calls) == 1


async def test_failure_never_becomes_answer_text() -> None:
    backend = MockBackend(replies=[TransientLLMError("down")] * 5)
    with pytest.raises(LLMCallFailed) as caught:
        await model_over(backend, max_retries=0).generate(QUESTION)
    assert isinstance(caught.value.__cause__, TransientLLMError)


async def test_usage_of_a_completion() -> None:
    completion = await model_over(MockBackend(default="Paris is the capital")).generate(QUESTION)
    usage = usage_of(completion)
    assert usage.calls == 1
    assert usage.cache_hits == 0
    assert usage.completion_tokens == 4
    assert usage.prompt_tokens == 6


class CountingBackend:
    """Async replies that take a moment, recording how many calls were in flight at once."""

    def __init__(self, max_concurrency: int | None = None) -> None:
        self.info = BackendInfo(provider="counting", model="counting", max_concurrency=max_concurrency)
        self.in_flight = 0
        self.peak = 0
        self.calls = 0

    async def generate(self, messages: list[Message], config: GenerateConfig) -> Completion:
        self.calls += 1
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        await asyncio.sleep(0.01)
        self.in_flight -= 1
        return Completion(text="ok")

    def count_tokens(self, text: str) -> int | None:
        return None

    async def aclose(self) -> None:
        return None


async def test_concurrency_limit_is_respected() -> None:
    backend = CountingBackend()
    model = Model(backend, spec="counting", max_concurrency=2)
    await asyncio.gather(*(model.generate(QUESTION) for _ in range(10)))
    assert backend.calls == 10
    assert backend.peak == 2


async def test_single_slot_backend_limits_concurrency() -> None:
    backend = CountingBackend(max_concurrency=1)
    model = Model(backend, spec="counting", max_concurrency=8)
    await asyncio.gather(*(model.generate(QUESTION) for _ in range(5)))
    assert backend.peak == 1


async def test_mock_latency_waits_without_holding_the_event_loop() -> None:
    order: list[str] = []

    async def call(backend: MockBackend, name: str) -> None:
        await backend.generate(QUESTION, GenerateConfig())
        order.append(name)

    async def other() -> None:
        order.append("other")

    await asyncio.gather(call(MockBackend(), "instant"), other())
    await asyncio.gather(call(MockBackend(latency_s=0.01), "slow"), other())
    assert order == ["instant", "other", "other", "slow"]


async def test_mock_counts_prompt_words_across_blocks_as_one_split_would() -> None:
    content = "Context:\n[S1]\nA: one two\n\n\n\n[S2]  B: three\n\nQuestion: four?"
    messages: list[Message] = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": content}]
    for _ in range(2):  # the second time from the remembered block counts
        completion = await MockBackend(default="x").generate(messages, GenerateConfig())
        assert completion.prompt_tokens == 2 + len(content.split()) == 12
