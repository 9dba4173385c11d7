"""The loopback server (`harness.loopback`) behind the harness's `openai` backend: scripted replies, latency,
overlap of concurrent calls, its bounds, and the JSON schema reaching the responder.

Timings are checked on the server's own monotonic records, never against the wall clock of the test.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from pydantic import BaseModel

from harness.llm import GenerateConfig, LLMCallFailed, Message, Model, TransientLLMError
from harness.llm.build import build_model
from harness.llm.structured import JSONSchema
from harness.loopback import JSONObject, LoopbackProcess, LoopbackServer

QUESTION: list[Message] = [
    {"role": "system", "content": "Answer in one word."},
    {"role": "user", "content": "What is the capital of France?"},
]


def paris(messages: list[Message], schema: JSONObject | None) -> str:
    return "Paris"


def model_on(server: LoopbackServer, max_concurrency: int = 8) -> Model:
    return build_model(f"openai:loopback@{server.base_url}", max_retries=0, max_concurrency=max_concurrency)


async def test_the_openai_backend_gets_the_scripted_reply_and_token_estimates() -> None:
    with LoopbackServer(paris, latency_s=0.0) as server:
        model = model_on(server)
        try:
            completion = await model.generate(QUESTION)
        finally:
            await model.aclose()
    assert completion.text == "Paris"
    assert completion.finish_reason == "stop"
    assert (completion.prompt_tokens, completion.completion_tokens) == (5 + 8, 2)  # 4 characters a token
    [record] = server.requests
    assert record.status == 200
    assert record.model == "loopback"
    assert record.body_bytes > len("What is the capital of France?")


async def test_each_request_lasts_at_least_the_latency_and_reuses_one_connection() -> None:
    with LoopbackServer(latency_s=0.05, jitter_s=0.01) as server:
        model = model_on(server)
        try:
            replies = [await model.generate(QUESTION) for _ in range(3)]
        finally:
            await model.aclose()
    assert all(reply.text.startswith("echo: What is the capital") for reply in replies)
    assert len(server.served()) == 3
    assert all(r.end_s - r.start_s >= 0.05 for r in server.requests)
    assert server.connections_opened == 1  # HTTP/1.1 keep-alive through the SDK's connection pool
    assert server.busy_span_s() >= 3 * 0.05
    assert server.peak_in_flight == 1


@pytest.mark.parametrize("calls", [4, 64])
async def test_concurrent_calls_are_all_in_flight_at_once(calls: int) -> None:
    # The latency is generous so that all connections are open before the first reply, even on a busy machine.
    with LoopbackServer(paris, latency_s=0.5) as server:
        model = model_on(server, max_concurrency=calls)
        try:
            replies = await asyncio.gather(*(model.generate(QUESTION) for _ in range(calls)))
        finally:
            await model.aclose()
    assert [reply.text for reply in replies] == ["Paris"] * calls
    assert server.peak_in_flight == calls
    assert max(r.start_s for r in server.requests) < min(r.end_s for r in server.requests)


async def test_requests_over_max_requests_are_refused_with_503() -> None:
    with LoopbackServer(paris, latency_s=0.0, max_requests=2) as server:
        model = model_on(server)
        try:
            for _ in range(2):
                await model.generate(QUESTION)
            with pytest.raises(LLMCallFailed) as caught:
                await model.generate(QUESTION)
        finally:
            await model.aclose()
    assert isinstance(caught.value.__cause__, TransientLLMError)  # Model would retry it: max_retries=0 here
    assert [r.status for r in server.requests] == [200, 200, 503]
    assert len(server.served()) == 2


class Capital(BaseModel):
    city: str


async def test_the_requested_schema_reaches_the_responder() -> None:
    seen: list[JSONObject | None] = []

    def scripted(messages: list[Message], schema: JSONObject | None) -> str:
        seen.append(schema)
        return '{"city": "Paris"}'

    schema = JSONSchema.of(Capital)
    with LoopbackServer(scripted, latency_s=0.0) as server:
        model = model_on(server)
        try:
            typed = await model.generate(QUESTION, GenerateConfig(json_schema=schema))
            await model.generate(QUESTION, GenerateConfig(json_mode=True))
        finally:
            await model.aclose()
    assert typed.text == '{"city": "Paris"}'
    assert seen == [schema.schema, None]


async def test_async_use_models_route_and_bad_requests() -> None:
    def broken(messages: list[Message], schema: JSONObject | None) -> str:
        raise ValueError("scripted failure")

    async with LoopbackServer(broken, latency_s=0.0) as server, httpx.AsyncClient(base_url=server.base_url) as client:
        models = (await client.get("/models")).json()
        not_json = await client.post("/chat/completions", content=b"{not json")
        failed = await client.post("/chat/completions", json={"model": "m", "messages": QUESTION})
        missing = await client.get("/nowhere")
    assert models["data"][0]["id"] == "loopback"
    assert not_json.status_code == 400
    assert "not JSON" in not_json.json()["error"]["message"]
    assert failed.status_code == 500
    assert "scripted failure" in failed.json()["error"]["message"]
    assert missing.status_code == 404
    assert server.stopped


def test_the_server_stops_itself_after_max_seconds() -> None:
    with LoopbackServer(latency_s=0.0, max_seconds=0.2) as server:
        url = server.base_url
        deadline = time.monotonic() + 30
        while not server.stopped and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.stopped
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{url}/models")


class Counting:
    """A responder that counts its calls (in whichever process serves them)."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, messages: list[Message], schema: JSONObject | None) -> str:
        self.calls += 1
        return "Paris"


async def test_a_server_in_its_own_process_reports_its_records_on_exit() -> None:
    responder = Counting()
    # A lambda, which does not pickle: the server process must still send its records back.
    with LoopbackProcess(
        LoopbackServer(lambda messages, schema: responder(messages, schema), latency_s=0.02)
    ) as served:
        model = build_model(f"openai:loopback@{served.base_url}", max_retries=0)
        replies = await asyncio.gather(*(model.generate(QUESTION) for _ in range(5)))
        await model.aclose()
    assert [r.text for r in replies] == ["Paris"] * 5
    assert responder.calls == 0, "the calls were served in the other process"
    summary = served.summary
    assert summary is not None and len(summary.served()) == 5 and 1 <= summary.peak_in_flight <= 5
    assert all(r.end_s - r.start_s >= 0.02 for r in summary.requests)
