"""The `openai` and `litellm` backends against a real OpenAI-compatible server on 127.0.0.1.

The server is llama-cpp-python's (`python -m llama_cpp.server`) serving the SmolLM2 GGUF: the session fixture
`llama_server_url` of `tests/conftest.py`. Tests that only need a closed port run without it.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from harness.llm import GenerateConfig, LLMCallFailed, LLMError, Message, TransientLLMError
from harness.llm.build import build_backend, build_model
from harness.llm.cache import CallCache

QUESTION: list[Message] = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
GREEDY = GenerateConfig(max_tokens=16, temperature=0.0)


def closed_port_url() -> str:
    # A port just released by the OS: nothing listens there, so connections are refused at once.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}/v1"


@pytest.mark.slow
@pytest.mark.parametrize("provider_model", ["openai:smollm2", "litellm:openai/smollm2"])
async def test_greedy_call_returns_text_and_usage(llama_server_url: str, provider_model: str) -> None:
    model = build_model(f"{provider_model}@{llama_server_url}", max_retries=0)
    try:
        completion = await model.generate(QUESTION, GREEDY)
    finally:
        await model.aclose()
    assert completion.text.strip()
    assert completion.prompt_tokens > 0
    assert completion.completion_tokens > 0
    assert completion.finish_reason in {"stop", "length"}
    assert model.info.base_url == llama_server_url
    assert model.count_tokens("hello") is None


@pytest.mark.slow
@pytest.mark.parametrize("provider_model", ["openai:smollm2", "litellm:openai/smollm2"])
async def test_repeated_call_is_served_from_cache(
    llama_server_url: str, provider_model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = CallCache(tmp_path / "calls.sqlite")
    model = build_model(f"{provider_model}@{llama_server_url}", cache=cache, max_retries=0)
    first = await model.generate(QUESTION, GREEDY)

    async def must_not_be_called(messages: list[Message], config: GenerateConfig) -> None:
        raise AssertionError("the backend was called for a cached request")

    monkeypatch.setattr(model.backend, "generate", must_not_be_called)
    second = await model.generate(QUESTION, GREEDY)
    await model.aclose()
    assert (first.cached, second.cached) == (False, True)
    assert second.text == first.text
    assert second.prompt_tokens == first.prompt_tokens
    assert cache.hits == 1


@pytest.mark.slow
async def test_openai_json_mode_and_stop_are_accepted(llama_server_url: str) -> None:
    model = build_model(f"openai:smollm2@{llama_server_url}", max_retries=0)
    try:
        reply = await model.generate(
            [{"role": "user", "content": 'Reply with a JSON object with the key "city" for the capital of France.'}],
            GenerateConfig(max_tokens=24, json_mode=True, seed=1, stop=("\n\n",)),
        )
    finally:
        await model.aclose()
    assert reply.text.lstrip().startswith("{")


@pytest.mark.parametrize("provider_model", ["openai:smollm2", "litellm:openai/smollm2"])
async def test_closed_port_is_retried_then_fails(provider_model: str, caplog: pytest.LogCaptureFixture) -> None:
    model = build_model(f"{provider_model}@{closed_port_url()}", max_retries=2, backoff_s=0.01, timeout_s=5.0)
    try:
        with pytest.raises(LLMCallFailed, match="gave up after 3 attempts") as caught:
            await model.generate(QUESTION, GREEDY)
    finally:
        await model.aclose()
    assert isinstance(caught.value.__cause__, TransientLLMError)
    assert sum("retry" in record.getMessage() for record in caplog.records) == 2


async def test_api_key_never_appears_in_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "sk-test-do-not-leak-0123456789"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    backend = build_backend(f"openai:gpt-4o-mini@{closed_port_url()}", timeout_s=5.0)
    try:
        with pytest.raises(TransientLLMError) as caught:
            await backend.generate(QUESTION, GREEDY)
    finally:
        await backend.aclose()
    assert secret not in str(caught.value)
    assert secret not in repr(backend.info)


def test_openai_without_key_or_server_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(LLMError, match="OPENAI_API_KEY"):
        build_backend("openai:gpt-4o-mini")


def test_openai_with_local_server_needs_no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    backend = build_backend("openai:smollm2@http://127.0.0.1:1/v1")
    assert backend.info.base_url == "http://127.0.0.1:1/v1"


def test_openai_needs_a_model_name() -> None:
    with pytest.raises(LLMError, match="needs a model name"):
        build_backend("openai")


def test_litellm_never_sends_the_openai_key_to_a_server_named_in_the_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-real-openai-key")
    monkeypatch.delenv("HARNESS_SERVER_API_KEY", raising=False)
    assert build_backend("litellm:openai/smollm2@http://127.0.0.1:1/v1")._api_key == "EMPTY"


@pytest.mark.slow
async def test_a_json_schema_is_enforced_by_the_llama_cpp_server(llama_server_url: str) -> None:
    from systems.memory_ops import build_manager_messages, manager_config

    messages, id_map = build_manager_messages(["Ann moved to Bergen"], [])
    config = manager_config(id_map, 1)
    model = build_model(f"openai:smollm2@{llama_server_url}", max_retries=0)
    try:
        replies = [(await model.generate(messages, config)).text for _ in range(2)]
    finally:
        await model.aclose()
    assert config.json_schema is not None
    assert [config.json_schema.errors(reply) for reply in replies] == [[], []]
    assert json.loads(replies[0])["memory"][0]["id"] == "new", "the only id the schema allows"
    # llama-cpp-python's server rejects OpenAI's `json_schema` type; the backend switched to its form once
    assert model.info.extra.get("schema_format") == "json_object+schema"
