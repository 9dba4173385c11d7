"""The `openai` backend's HTTP/1.1 client (`harness.llm.providers.http1`) against a scripted raw server: what
it sends (body, key and account headers), the reply framings it reads (Content-Length, chunked, until close),
keep-alive reuse and a server's idle close, status errors, the llama-cpp schema fallback, TLS.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pydantic import BaseModel

from harness.llm import GenerateConfig, LLMError, Message, TransientLLMError
from harness.llm.build import build_backend
from harness.llm.providers.openai_compat import OpenAIBackend, request_body
from harness.llm.structured import JSONSchema
from harness.loopback import LoopbackServer

QUESTION: list[Message] = [{"role": "user", "content": "What is the capital of France?"}]
CHOICE = {"message": {"role": "assistant", "content": "Paris"}, "finish_reason": "stop"}
SHORT = GenerateConfig(max_tokens=8)
OK = json.dumps({"choices": [CHOICE], "usage": {"prompt_tokens": 7, "completion_tokens": 1}}).encode()


def reply(status: int = 200, body: bytes = OK, *, chunked: bool = False, close: bool = False, **headers: str) -> bytes:
    """A raw HTTP/1.1 reply: `Content-Length` framed, chunked (in 3 chunks), or (`close`) ended by closing."""
    names = {"Content-Type": "application/json", **{k.replace("_", "-"): v for k, v in headers.items()}}
    if chunked:
        names["Transfer-Encoding"] = "chunked"
        thirds = [body[: len(body) // 3], body[len(body) // 3 : 2 * len(body) // 3], body[2 * len(body) // 3 :]]
        payload = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(part), part) for part in thirds) + b"0\r\nTrailer: x\r\n\r\n"
    else:
        payload = body
        if not close:
            names["Content-Length"] = str(len(body))
    head = f"HTTP/1.1 {status} X\r\n" + "".join(f"{k}: {v}\r\n" for k, v in names.items()) + "\r\n"
    return head.encode() + payload


def ends_by_close(raw: bytes) -> bool:
    head = raw.split(b"\r\n\r\n", 1)[0]
    return b"Content-Length" not in head and b"chunked" not in head


@dataclass
class Seen:
    target: str
    headers: dict[str, str]
    body: dict
    connection: int


@dataclass
class ScriptedServer:
    """Answers each request with the next of `replies`, closing the connection after one built with `close`
    (or after every reply, with `close_after_reply`)."""

    replies: list[bytes]
    close_after_reply: bool = False
    seen: list[Seen] = field(default_factory=list)
    connections: int = 0
    url: str = ""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        connection = self.connections
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                line, *lines = head.decode().split("\r\n")[:-2]
                headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in lines)}
                body = await reader.readexactly(int(headers["content-length"]))
                self.seen.append(Seen(line.split()[1], headers, json.loads(body), connection))
                raw = self.replies.pop(0)
                writer.write(raw)
                await writer.drain()
                if self.close_after_reply or ends_by_close(raw):
                    break
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()


@pytest.fixture
async def server() -> AsyncIterator[ScriptedServer]:
    scripted = ScriptedServer([])
    listening = await asyncio.start_server(scripted.handle, "127.0.0.1", 0)
    scripted.url = f"http://127.0.0.1:{listening.sockets[0].getsockname()[1]}/v1"
    async with listening:
        yield scripted


async def call(backend: OpenAIBackend, config: GenerateConfig = SHORT) -> str:
    return (await backend.generate(QUESTION, config)).text


async def test_body_key_and_framings_over_one_kept_alive_connection(
    server: ScriptedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-real-openai-key")
    monkeypatch.setenv("OPENAI_ORG_ID", "org-1")
    monkeypatch.delenv("HARNESS_SERVER_API_KEY", raising=False)
    server.replies = [reply(), reply(chunked=True), reply(close=True)]
    backend = OpenAIBackend("smollm2", server.url)
    config = GenerateConfig(max_tokens=8, top_p=0.5, stop=("\n",), seed=3, json_mode=True)
    completion = await backend.generate(QUESTION, config)
    assert (completion.text, completion.finish_reason, completion.prompt_tokens) == ("Paris", "stop", 7)
    assert [await call(backend), await call(backend)] == ["Paris", "Paris"]
    await backend.aclose()
    first = server.seen[0]
    assert first.target == "/v1/chat/completions"
    assert first.body == {
        "model": "smollm2",
        "messages": QUESTION,
        "temperature": 0.0,
        "top_p": 0.5,
        "stop": ["\n"],
        "seed": 3,
        "response_format": {"type": "json_object"},
        "max_tokens": 8,
    }
    assert first.headers["authorization"] == "Bearer EMPTY", "never OPENAI_API_KEY to a server in the spec"
    assert "openai-organization" not in first.headers
    assert [s.connection for s in server.seen] == [1, 1, 1]


async def test_the_openai_api_gets_its_key_and_account_headers(
    server: ScriptedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-real-openai-key")
    monkeypatch.setenv("OPENAI_BASE_URL", server.url)  # where the OpenAI API is reached, e.g. a gateway
    monkeypatch.setenv("OPENAI_ORG_ID", "org-1")
    monkeypatch.setenv("OPENAI_PROJECT_ID", "proj-1")
    server.replies = [reply()]
    backend = build_backend("openai:gpt-4o-mini")
    assert await call(backend) == "Paris"
    await backend.aclose()
    [seen] = server.seen
    assert seen.headers["authorization"] == "Bearer sk-real-openai-key"
    assert (seen.headers["openai-organization"], seen.headers["openai-project"]) == ("org-1", "proj-1")
    assert seen.body["max_tokens"] == 8, "a server at OPENAI_BASE_URL may know only max_tokens"
    monkeypatch.delenv("OPENAI_BASE_URL")
    direct = build_backend("openai:gpt-4o-mini")
    assert (direct._client.host, direct._client.port, direct._max_tokens_param) == (
        "api.openai.com",
        443,
        "max_completion_tokens",
    )


async def test_the_server_key_env_is_sent_to_a_server_in_the_spec(
    server: ScriptedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HARNESS_SERVER_API_KEY", "server-key")
    server.replies = [reply()]
    backend = OpenAIBackend("m", server.url)
    await call(backend)
    await backend.aclose()
    assert server.seen[0].headers["authorization"] == "Bearer server-key"


async def test_a_connection_the_server_closed_while_idle_is_not_reused(server: ScriptedServer) -> None:
    server.close_after_reply = True  # as uvicorn does after its keep-alive timeout, though the reply said keep-alive
    server.replies = [reply(), reply()]
    backend = OpenAIBackend("m", server.url)
    assert await call(backend) == "Paris"
    await asyncio.sleep(0.05)  # the loop sees the close
    assert await call(backend) == "Paris"
    await backend.aclose()
    assert [s.connection for s in server.seen] == [1, 2]


def test_a_backend_outlives_its_event_loop() -> None:
    with LoopbackServer(lambda messages, schema: "Paris", latency_s=0.0) as loopback:
        backend = OpenAIBackend("loopback", loopback.base_url)
        # Each asyncio.run has a loop of its own; connections of a closed one must not be reused.
        assert [asyncio.run(call(backend)) for _ in range(2)] == ["Paris", "Paris"]
    assert loopback.connections_opened == 2


async def test_status_errors_carry_the_server_message_on_one_line_and_never_the_key(
    server: ScriptedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = "sk-test-do-not-leak-0123456789"
    monkeypatch.setenv("HARNESS_SERVER_API_KEY", key)
    echoed = json.dumps({"error": {"message": f"bad key\n{key}", "type": "invalid_request_error"}}).encode()
    server.replies = [
        reply(401, echoed),
        reply(404, b"<html>\n not found </html>"),
        reply(429, b'{"message": "slow down"}', Retry_After="2"),
        reply(503, b"{}"),
        reply(200, b'{"choices": [{"message": {"content": "Pa'),
        reply(200, b'{"object": "chat.completion"}'),
        reply(200, OK, Content_Encoding="br"),
    ]
    backend = OpenAIBackend("m", server.url)
    errors = []
    for _ in server.replies[:]:
        with pytest.raises(LLMError) as caught:
            await call(backend)
        errors.append(caught.value)
    await backend.aclose()
    messages = [str(e) for e in errors]
    assert messages[:3] == [
        "openai:m: HTTP 401: bad key ***",
        "openai:m: HTTP 404: <html> not found </html>",
        "openai:m: HTTP 429: slow down",
    ]
    assert [type(e) for e in errors] == [LLMError, LLMError] + [TransientLLMError] * 5
    assert [getattr(e, "retry_after_s", None) for e in errors[2:4]] == [2.0, None]
    assert "not JSON" in messages[4] and "no choices" in messages[5] and "Content-Encoding 'br'" in messages[6]
    assert all(key not in m and "\n" not in m for m in messages)


async def test_a_server_that_rejects_json_schema_gets_its_json_object_form_from_then_on(server: ScriptedServer) -> None:
    schema = JSONSchema.of(Capital)
    rejected = json.dumps({"error": {"message": "response_format: unknown type json_schema"}}).encode()
    server.replies = [reply(500, rejected), reply(), reply()]
    backend = OpenAIBackend("m", server.url)
    config = GenerateConfig(json_schema=schema)
    assert [await call(backend, config), await call(backend, config)] == ["Paris", "Paris"]
    await backend.aclose()
    formats = [s.body["response_format"] for s in server.seen]
    json_object = {"type": "json_object", "schema": schema.schema}
    assert formats == [schema.openai_response_format(), json_object, json_object]
    assert backend.info.extra["schema_format"] == "json_object+schema"


async def test_a_rejected_fallback_raises_the_first_error(server: ScriptedServer) -> None:
    rejected = json.dumps({"error": {"message": "response_format: unknown type json_schema"}}).encode()
    server.replies = [reply(400, rejected), reply(400, b'{"error": {"message": "no schema either"}}')]
    backend = OpenAIBackend("m", server.url)
    with pytest.raises(LLMError, match="unknown type json_schema"):
        await call(backend, GenerateConfig(json_schema=JSONSchema.of(Capital)))
    await backend.aclose()
    assert "schema_format" not in backend.info.extra


class Capital(BaseModel):
    city: str


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make a certificate")
async def test_https_with_a_certificate_from_ssl_cert_file(
    server: ScriptedServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost", "-days", "1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server.replies = [reply(chunked=True), reply()]
    async with await asyncio.start_server(server.handle, "127.0.0.1", 0, ssl=context) as tls:
        port = tls.sockets[0].getsockname()[1]
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        backend = OpenAIBackend("m", f"https://localhost:{port}/v1")
        assert [await call(backend), await call(backend)] == ["Paris", "Paris"]
        await backend.aclose()
        monkeypatch.delenv("SSL_CERT_FILE")
        untrusting = OpenAIBackend("m", f"https://localhost:{port}/v1")
        with pytest.raises(TransientLLMError, match="CERTIFICATE_VERIFY_FAILED"):
            await call(untrusting)
        await untrusting.aclose()
    assert server.seen[0].headers["host"] == f"localhost:{port}"


async def test_a_lone_surrogate_in_a_message_is_sent_escaped(server: ScriptedServer) -> None:
    server.replies = [reply()]
    backend = OpenAIBackend("m", server.url)
    broken: list[Message] = [{"role": "user", "content": "half an emoji: \ud83d"}]
    assert (await backend.generate(broken, SHORT)).text == "Paris"
    await backend.aclose()
    assert server.seen[0].body["messages"] == broken


HISTORY = "\n\n".join(f'[S{n}]\nA: "turn {n}" é \u2028 \x01 \U0001f642 \\' for n in range(5))


@pytest.mark.parametrize(
    "contents",
    [
        pytest.param([f"{HISTORY}\n\nQuestion: Where?", f"{HISTORY}\n\nQuestion: When?"], id="remembered-prefix"),
        pytest.param([f"{HISTORY}\n\nQ?", f"{HISTORY.replace('turn 0', 'turn 9')}\n\nQ?"], id="same-length-prefix"),
        pytest.param(["no blank line", "\n\n", "a\n\n", "\n\nb", "\n\n\n\n"], id="edges"),
    ],
)
def test_a_request_body_is_the_json_of_the_request(contents: list[str]) -> None:
    options = {"temperature": 0.0, "stop": ["\n"], "max_tokens": 8}
    for content in contents:
        messages: list[Message] = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": content}]
        assert json.loads(request_body("m", messages, options)) == {"model": "m", "messages": messages, **options}


def test_a_proxy_it_would_not_use_is_named_in_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    for lower in ("https_proxy", "no_proxy"):  # urllib reads either case
        monkeypatch.delenv(lower, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    OpenAIBackend("m", "https://api.example.com/v1")
    OpenAIBackend("m", "https://127.0.0.1:1/v1")
    assert [r.getMessage() for r in caplog.records] == [
        "https_proxy is set, but requests to api.example.com go direct: this client does not use proxies"
    ]
