"""A loopback OpenAI-compatible chat-completions server with a fixed latency, for benchmarks and tests.

`LoopbackServer` listens on 127.0.0.1 (a free port) and answers `POST /v1/chat/completions` after `latency_s`
(plus uniform jitter in `[0, jitter_s]`) with the text a `responder` scripts from the messages and, when the
request asks for `response_format` of type `json_schema`, the schema. It serves `GET /v1/models` too. Every
request is a coroutine on one event loop (HTTP/1.1 keep-alive over asyncio streams), so any number may be in
flight at once: what a benchmark then measures is the client's concurrency, not the server's.

Each chat request is recorded (`RequestRecord`: monotonic start and end, body size, status) so a benchmark can
compute the busy span (`busy_span_s`) and `peak_in_flight`. The server is bounded: after `max_requests` chat
requests it answers 503, and `max_seconds` after it starts it stops itself.

    with LoopbackServer(lambda messages, schema: "Paris", latency_s=0.05) as server:
        model = build_model(f"openai:loopback@{server.base_url}")

The sync context manager runs the loop in a background thread; `async with` runs it in the caller's loop;
`LoopbackProcess(server)` runs it in a forked process, so that a benchmark's client does not share the GIL with
the server. The responder is called on the server's loop, so it must be quick (it delays every request).
"""

from __future__ import annotations

import asyncio
import json
import logging
import multiprocessing
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from multiprocessing.connection import Connection
from typing import cast

from harness.llm.base import Message

log = logging.getLogger(__name__)

JSONObject = dict[str, object]
Responder = Callable[[list[Message], JSONObject | None], str]
"""Messages and the requested JSON schema (None when the request names none) in, reply text out."""

MAX_BODY_BYTES = 64 * 1024 * 1024
START_TIMEOUT_S = 120.0
"""How long `LoopbackProcess` waits for its server to listen (a loaded CI machine forks slowly)."""


def echo_responder(messages: list[Message], schema: JSONObject | None) -> str:
    """The default reply: the first words of the last message."""
    words = messages[-1]["content"].split() if messages else []
    return "echo: " + " ".join(words[:8])


@dataclass(frozen=True)
class RequestRecord:
    """One chat-completions request as the server saw it."""

    start_s: float
    """`time.monotonic()` when the request had been read in full."""
    end_s: float
    """`time.monotonic()` when the response had been written."""
    body_bytes: int
    status: int
    model: str = ""


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class _Reply:
    status: int
    body: JSONObject
    model: str = ""
    accepted: bool = False
    """Counted against `max_requests` and as in flight (refusals and malformed requests are not)."""


@dataclass(frozen=True)
class _Request:
    method: str
    path: str
    body: bytes
    keep_alive: bool


async def _read_request(reader: asyncio.StreamReader) -> _Request | None:
    """One HTTP/1.x request with a Content-Length body, or None when the client closed the connection."""
    line = await reader.readline()
    if not line.strip():
        return None
    parts = line.decode("latin-1").split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise _BadRequest(400, "malformed request line")
    headers: dict[str, str] = {}
    while (header := await reader.readline()).strip():
        name, _, value = header.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    if "chunked" in headers.get("transfer-encoding", ""):
        raise _BadRequest(400, "chunked request bodies are not supported")
    length = int(headers.get("content-length", "0") or 0)
    if length > MAX_BODY_BYTES:
        raise _BadRequest(413, f"body over {MAX_BODY_BYTES} bytes")
    body = await reader.readexactly(length)
    connection = headers.get("connection", "").lower()
    keep_alive = connection != "close" if parts[2] == "HTTP/1.1" else connection == "keep-alive"
    return _Request(parts[0].upper(), parts[1].split("?", 1)[0], body, keep_alive)


def _response(status: int, body: JSONObject, keep_alive: bool) -> bytes:
    payload = json.dumps(body).encode()
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\nConnection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n"
    )
    return head.encode("latin-1") + payload


def _error(message: str, kind: str = "invalid_request_error") -> JSONObject:
    return {"error": {"message": message, "type": kind, "code": None}}


def _parse_chat(body: bytes) -> tuple[str, list[Message], JSONObject | None]:
    """The model name, messages and requested JSON schema of a chat-completions body."""
    try:
        request = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise _BadRequest(400, f"body is not JSON: {error}") from error
    if not isinstance(request, dict) or not isinstance(request.get("messages"), list):
        raise _BadRequest(400, "body needs a 'messages' list")
    if request.get("stream"):
        raise _BadRequest(400, "streaming is not supported")
    for message in request["messages"]:
        if not (isinstance(message, dict) and all(isinstance(message.get(k), str) for k in ("role", "content"))):
            raise _BadRequest(400, "every message needs string 'role' and 'content'")
    response_format = request.get("response_format")
    schema = None
    if isinstance(response_format, dict) and response_format.get("type") == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
    return str(request.get("model", "")), cast(list[Message], request["messages"]), schema


class LoopbackServer:
    """The server (see the module docstring). `base_url` is the `/v1` URL once started."""

    def __init__(
        self,
        responder: Responder = echo_responder,
        *,
        latency_s: float = 0.1,
        jitter_s: float = 0.0,
        max_requests: int = 10_000,
        max_seconds: float = 600.0,
        seed: int = 0,
    ) -> None:
        self.responder = responder
        self.latency_s = latency_s
        self.jitter_s = jitter_s
        self.max_requests = max_requests
        self.max_seconds = max_seconds
        self.requests: list[RequestRecord] = []
        """Chat-completions requests in the order they finished (refused ones too, with status 503)."""
        self.accepted = 0
        self.in_flight = 0
        self.peak_in_flight = 0
        self.connections_opened = 0
        self.port = 0
        self._random = random.Random(seed)
        self._connections: set[asyncio.Task[object]] = set()
        self._server: asyncio.Server | None = None
        self._stop_requested: asyncio.Event | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        """The background loop of the sync context manager."""
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        if not self.port:
            raise RuntimeError("the loopback server is not started")
        return f"http://127.0.0.1:{self.port}/v1"

    def served(self) -> list[RequestRecord]:
        """The requests answered with 200."""
        return [r for r in list(self.requests) if r.status == 200]

    def busy_span_s(self) -> float:
        """From the first served request's start to the last one's end (0 when none was served)."""
        served = self.served()
        return max(r.end_s for r in served) - min(r.start_s for r in served) if served else 0.0

    @property
    def stopped(self) -> bool:
        """True once the server has stopped (asked to, or after `max_seconds`)."""
        return self._watcher is not None and self._watcher.done()

    async def start(self) -> None:
        """Listen in the running loop; the server stops itself `max_seconds` from now."""
        self._stop_requested = asyncio.Event()
        self._server = await asyncio.start_server(self._serve_connection, "127.0.0.1", 0, backlog=1024)
        self.port = self._server.sockets[0].getsockname()[1]
        self._watcher = asyncio.create_task(self._stop_when_requested())

    async def stop(self) -> None:
        if self._stop_requested is not None and self._watcher is not None:
            self._stop_requested.set()
            await self._watcher

    async def _stop_when_requested(self) -> None:
        assert self._stop_requested is not None and self._server is not None
        try:
            await asyncio.wait_for(self._stop_requested.wait(), self.max_seconds)
        except TimeoutError:
            log.warning("loopback server: stopping itself after max_seconds=%s", self.max_seconds)
        self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        self.connections_opened += 1
        try:
            while (request := await _read_request(reader)) is not None:
                start = time.monotonic()
                reply = await self._dispatch(request)
                writer.write(_response(reply.status, reply.body, request.keep_alive))
                await writer.drain()
                if request.path == "/v1/chat/completions":
                    end = time.monotonic()
                    self.requests.append(RequestRecord(start, end, len(request.body), reply.status, reply.model))
                    self.in_flight -= reply.accepted
                if not request.keep_alive:
                    break
        except _BadRequest as error:
            writer.write(_response(error.status, _error(str(error)), keep_alive=False))
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass  # the client went away mid-request, or sent a line over the reader's limit
        except asyncio.CancelledError:
            pass  # our own shutdown; re-raised, Python 3.11's stream callback would log it as an error
        finally:
            self._connections.discard(task)
            writer.close()

    async def _dispatch(self, request: _Request) -> _Reply:
        if request.path == "/v1/models" and request.method == "GET":
            return _Reply(200, {"object": "list", "data": [{"id": "loopback", "object": "model"}]})
        if request.path != "/v1/chat/completions" or request.method != "POST":
            return _Reply(404, _error(f"no route {request.method} {request.path}", "not_found_error"))
        try:
            model, messages, schema = _parse_chat(request.body)
        except _BadRequest as error:
            return _Reply(error.status, _error(str(error)))
        if self.accepted >= self.max_requests:
            return _Reply(503, _error(f"max_requests={self.max_requests} reached", "server_error"), model)
        self.accepted += 1
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        # A place for fault injection (errors, stalls, truncated replies) when a test needs it: decide here.
        await asyncio.sleep(self.latency_s + self._random.uniform(0.0, self.jitter_s))
        try:
            text = self.responder(messages, schema)
        except Exception as error:  # a responder bug: the client sees a 500 with its message
            log.exception("loopback responder failed")
            return _Reply(500, _error(f"responder failed: {error!r}", "server_error"), model, accepted=True)
        prompt_words = sum(len(m["content"].split()) for m in messages)
        completion_words = len(text.split())
        body: JSONObject = {
            "id": f"chatcmpl-loopback-{self.accepted}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {
                "prompt_tokens": prompt_words,
                "completion_tokens": completion_words,
                "total_tokens": prompt_words + completion_words,
            },
        }
        return _Reply(200, body, model, accepted=True)

    async def __aenter__(self) -> LoopbackServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def __enter__(self) -> LoopbackServer:
        """Start on an event loop of its own, in a background thread."""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="loopback-server", daemon=True)
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self.start(), self._loop).result(timeout=30)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        assert self._loop is not None and self._thread is not None
        try:
            asyncio.run_coroutine_threadsafe(self.stop(), self._loop).result(timeout=30)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=30)
            self._loop.close()


@dataclass(frozen=True)
class ServedSummary:
    """What a server in another process reports when it stops."""

    requests: list[RequestRecord]
    peak_in_flight: int
    responder: object
    """The responder as the server process left it (e.g. with the counts it kept)."""

    def served(self) -> list[RequestRecord]:
        return [r for r in self.requests if r.status == 200]

    def busy_span_s(self) -> float:
        served = self.served()
        return max(r.end_s for r in served) - min(r.start_s for r in served) if served else 0.0


def _serve_in_child(server: LoopbackServer, connection: Connection) -> None:
    async def main() -> None:
        async with server:
            connection.send(server.port)
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, connection.recv)  # any message: stop
        connection.send(ServedSummary(server.requests, server.peak_in_flight, server.responder))

    asyncio.run(main())


class LoopbackProcess:
    """A `LoopbackServer` in a process of its own (forked, so the responder needs no import path): its work does
    not compete with the client's for the GIL, as a real server's would not. `summary` holds its records once
    the context exits (monotonic times are comparable: one clock for the machine)."""

    def __init__(self, server: LoopbackServer) -> None:
        self.server = server
        self.summary: ServedSummary | None = None
        self._connection: Connection | None = None
        self._process: multiprocessing.process.BaseProcess | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> LoopbackProcess:
        ours, theirs = multiprocessing.get_context("fork").Pipe()
        self._process = multiprocessing.get_context("fork").Process(
            target=_serve_in_child, args=(self.server, theirs), name="loopback-server", daemon=True
        )
        self._process.start()
        if not ours.poll(START_TIMEOUT_S):
            self._process.kill()
            raise RuntimeError(f"the loopback server process did not start within {START_TIMEOUT_S:.0f} s")
        self.port = int(ours.recv())
        self._connection = ours
        return self

    def __exit__(self, *exc_info: object) -> None:
        assert self._connection is not None and self._process is not None
        try:
            self._connection.send("stop")
            if self._connection.poll(START_TIMEOUT_S):
                self.summary = self._connection.recv()
        finally:
            self._process.join(timeout=30)
            if self._process.is_alive():
                self._process.kill()
