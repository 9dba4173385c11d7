"""A loopback OpenAI-compatible chat-completions server with a fixed latency, for benchmarks and tests.

`LoopbackServer` listens on 127.0.0.1 (a free port) and answers `POST /v1/chat/completions` after `latency_s`
(plus uniform jitter in `[0, jitter_s]`) with the text a `responder` scripts from the messages and, when the
request asks for `response_format` of type `json_schema`, the schema. It serves `GET /v1/models` too. Every
request is a coroutine on one event loop (HTTP/1.1 keep-alive over asyncio streams), so any number may be in
flight at once: what a benchmark then measures is the client's concurrency, not the server's.

Each chat request is recorded (`RequestRecord`: monotonic start and end, body size, status, fault) so a benchmark
can compute the busy span (`busy_span_s`) and `peak_in_flight`. The server is bounded: after `max_requests` chat
requests it answers 503, and `max_seconds` after it starts it stops itself.

`Faults` makes it misbehave as real servers and proxies do: a share `rate` of chat requests gets a fault drawn
from a `mix` of the kinds in `FAULT_KINDS` (500, 429 with an optional `Retry-After`, a hung request, a dropped
connection, a 200 whose body is not JSON, a 200 without `choices`, a 200 with truncated JSON); `injected`
counts them by kind. Which request meets which fault follows from the seed, the request's body and how many
times that body came before, not from arrival order: a client run meets the same faults however its concurrent
requests interleave, and a retried request is drawn afresh.

    with LoopbackServer(lambda messages, schema: "Paris", latency_s=0.05) as server:
        model = build_model(f"openai:loopback@{server.base_url}")

The sync context manager runs the loop in a background thread; `async with` runs it in the caller's loop;
`LoopbackProcess(server)` runs it in a forked process, so that a benchmark's client does not share the GIL with
the server. The responder is called on the server's loop, so it must be quick (it delays every request).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import multiprocessing
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from http import HTTPStatus
from multiprocessing.connection import Connection
from typing import Literal, cast, get_args

import orjson

from harness.llm.base import Message

log = logging.getLogger(__name__)

JSONObject = dict[str, object]
Responder = Callable[[list[Message], JSONObject | None], str]
"""Messages and the requested JSON schema (None when the request names none) in, reply text out."""

MAX_BODY_BYTES = 64 * 1024 * 1024
START_TIMEOUT_S = 120.0
"""How long `LoopbackProcess` waits for its server to listen (a loaded CI machine forks slowly)."""


FaultKind = Literal["server_error", "rate_limit", "hang", "drop", "not_json", "no_choices", "truncated_json"]
"""500; 429; no reply until the client gives up; the connection closed unanswered; a 200 whose body is not
JSON; a 200 without `choices`; a 200 whose JSON body is cut in half."""
FAULT_KINDS: tuple[FaultKind, ...] = get_args(FaultKind)
NOT_JSON_BODY = b"<html><body>502 Bad Gateway</body></html>"
"""What a proxy in front of a server may send with a 200 and a JSON content type."""


def token_estimate(text: str) -> int:
    """The server's stand-in for a tokenizer in `usage`: one token per 4 characters, rounded up (the usual rule of
    thumb for English). Counting words instead (`str.split`) cost ~0.6 ms of CPU per 100 KB prompt, more than
    the harness's whole cost per call."""
    return -(-len(text) // 4)


@dataclass(frozen=True)
class Faults:
    """The faults a `LoopbackServer` injects into chat requests (see the module docstring)."""

    rate: float = 0.0
    """The share of chat requests that get a fault, in [0, 1]."""
    mix: Mapping[FaultKind, float] = field(default_factory=lambda: dict.fromkeys(FAULT_KINDS, 1.0))
    """Relative weights of the kinds (default: all kinds, equally)."""
    retry_after_s: float | None = None
    """The `Retry-After` of a 429, in seconds (no header when None)."""
    retry_after_as_date: bool = False
    """Send `Retry-After` as an HTTP date (rounded up to the second) instead of seconds."""
    max_per_request: int | None = None
    """Only the first N attempts of a request (by body) may get a fault, so that a client retrying N times
    always gets through; None: every attempt may."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"fault rate must be in [0, 1], got {self.rate}")
        unknown = sorted(set(self.mix) - set(FAULT_KINDS))
        if unknown:
            raise ValueError(f"unknown fault kinds {unknown}; expected some of {list(FAULT_KINDS)}")
        if any(w < 0 for w in self.mix.values()) or not sum(self.mix.values()) > 0:
            raise ValueError(f"fault mix weights must be >= 0 with a positive sum, got {dict(self.mix)}")

    def draw(self, seed: int, body_sha256: bytes, occurrence: int) -> FaultKind | None:
        """The fault of the `occurrence`-th request (0-based) with this body, or None."""
        if self.max_per_request is not None and occurrence >= self.max_per_request:
            return None
        rng = random.Random(f"{seed}:{occurrence}:{body_sha256.hex()}")
        if rng.random() >= self.rate:
            return None
        kinds = list(self.mix)
        return rng.choices(kinds, weights=[self.mix[k] for k in kinds])[0]

    def retry_after_header(self) -> dict[str, str]:
        if self.retry_after_s is None:
            return {}
        if not self.retry_after_as_date:
            return {"Retry-After": f"{self.retry_after_s:g}"}
        when = datetime.fromtimestamp(math.ceil(time.time() + self.retry_after_s), UTC)
        return {"Retry-After": format_datetime(when, usegmt=True)}


def echo_responder(messages: list[Message], schema: JSONObject | None) -> str:
    """The default reply: the first words of the last message."""
    words = messages[-1]["content"].split(maxsplit=8) if messages else []  # not all words of a 100 KB prompt
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
    """0 when no response was sent (a hung or dropped request)."""
    model: str = ""
    fault: FaultKind | None = None


def _served(requests: list[RequestRecord]) -> list[RequestRecord]:
    return [r for r in requests if r.status == 200 and r.fault is None]


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class _Reply:
    status: int
    payload: bytes
    model: str = ""
    accepted: bool = False
    """Counted against `max_requests` and as in flight (refusals and malformed requests are not)."""
    fault: FaultKind | None = None
    headers: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        status: int,
        body: JSONObject,
        model: str = "",
        accepted: bool = False,
        fault: FaultKind | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> _Reply:
        """A reply with a JSON body."""
        return cls(status, json.dumps(body).encode(), model, accepted, fault, headers or {})


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


def _response(reply: _Reply, keep_alive: bool) -> bytes:
    extra = "".join(f"{name}: {value}\r\n" for name, value in reply.headers.items())
    head = (
        f"HTTP/1.1 {reply.status} {HTTPStatus(reply.status).phrase}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(reply.payload)}\r\nConnection: {'keep-alive' if keep_alive else 'close'}\r\n"
        f"{extra}\r\n"
    )
    return head.encode("latin-1") + reply.payload


def _error(message: str, kind: str = "invalid_request_error") -> JSONObject:
    return {"error": {"message": message, "type": kind, "code": None}}


def _parse_chat(body: bytes) -> tuple[str, list[Message], JSONObject | None]:
    """The model name, messages and requested JSON schema of a chat-completions body."""
    try:
        request = orjson.loads(body)  # a third of json's CPU on a 100 KB body
    except orjson.JSONDecodeError as error:
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
        faults: Faults = Faults(),
    ) -> None:
        self.responder = responder
        self.latency_s = latency_s
        self.jitter_s = jitter_s
        self.max_requests = max_requests
        self.max_seconds = max_seconds
        self.seed = seed
        self.faults = faults
        self.requests: list[RequestRecord] = []
        """Chat-completions requests in the order they finished (refused ones too, with status 503)."""
        self.injected: Counter[FaultKind] = Counter()
        """Faults injected so far, by kind."""
        self._bodies_seen: Counter[bytes] = Counter()
        """Chat requests so far by the sha256 of their body, which with the seed decides their faults."""
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
        """The requests answered with 200 and no fault."""
        return _served(list(self.requests))

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
                try:
                    if reply.fault == "hang":
                        await reader.read()  # until the client gives up and closes the connection
                    if reply.fault in ("hang", "drop"):
                        break
                    writer.write(_response(reply, request.keep_alive))
                    await writer.drain()
                finally:
                    if request.path == "/v1/chat/completions":
                        record = RequestRecord(
                            start, time.monotonic(), len(request.body), reply.status, reply.model, reply.fault
                        )
                        self.requests.append(record)
                        self.in_flight -= reply.accepted
                if not request.keep_alive:
                    break
        except _BadRequest as error:
            writer.write(_response(_Reply.of(error.status, _error(str(error))), keep_alive=False))
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass  # the client went away mid-request, or sent a line over the reader's limit
        except asyncio.CancelledError:
            pass  # our own shutdown; re-raised, Python 3.11's stream callback would log it as an error
        finally:
            self._connections.discard(task)
            writer.close()

    async def _dispatch(self, request: _Request) -> _Reply:
        if request.path == "/v1/models" and request.method == "GET":
            return _Reply.of(200, {"object": "list", "data": [{"id": "loopback", "object": "model"}]})
        if request.path != "/v1/chat/completions" or request.method != "POST":
            return _Reply.of(404, _error(f"no route {request.method} {request.path}", "not_found_error"))
        try:
            model, messages, schema = _parse_chat(request.body)
        except _BadRequest as error:
            return _Reply.of(error.status, _error(str(error)))
        if self.accepted >= self.max_requests:
            return _Reply.of(503, _error(f"max_requests={self.max_requests} reached", "server_error"), model)
        self.accepted += 1
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        fault = self._draw_fault(request.body)
        if fault == "hang":
            return _Reply(0, b"", model, accepted=True, fault=fault)
        await asyncio.sleep(self.latency_s + self._random.uniform(0.0, self.jitter_s))
        if fault == "drop":
            return _Reply(0, b"", model, accepted=True, fault=fault)
        if fault == "server_error":
            return _Reply.of(500, _error("injected fault", "server_error"), model, True, fault=fault)
        if fault == "rate_limit":
            limited = _error("injected rate limit", "rate_limit_error")
            return _Reply.of(429, limited, model, True, fault=fault, headers=self.faults.retry_after_header())
        try:
            text = self.responder(messages, schema)
        except Exception as error:  # a responder bug: the client sees a 500 with its message
            log.exception("loopback responder failed")
            return _Reply.of(500, _error(f"responder failed: {error!r}", "server_error"), model, accepted=True)
        prompt_tokens = sum(token_estimate(m["content"]) for m in messages)
        completion_tokens = token_estimate(text)
        body: JSONObject = {
            "id": f"chatcmpl-loopback-{self.accepted}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
        if fault == "no_choices":
            del body["choices"]
        payload = json.dumps(body).encode()
        if fault == "truncated_json":
            payload = payload[: len(payload) // 2]
        elif fault == "not_json":
            payload = NOT_JSON_BODY
        return _Reply(200, payload, model, accepted=True, fault=fault)

    def _draw_fault(self, body: bytes) -> FaultKind | None:
        if self.faults.rate == 0.0:
            return None
        digest = hashlib.sha256(body).digest()
        fault = self.faults.draw(self.seed, digest, self._bodies_seen[digest])
        self._bodies_seen[digest] += 1
        if fault is not None:
            self.injected[fault] += 1
        return fault

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
    injected: dict[FaultKind, int] = field(default_factory=dict)
    """Faults injected, by kind."""

    def served(self) -> list[RequestRecord]:
        return _served(self.requests)

    def busy_span_s(self) -> float:
        served = self.served()
        return max(r.end_s for r in served) - min(r.start_s for r in served) if served else 0.0


def _serve_in_child(server: LoopbackServer, connection: Connection) -> None:
    async def main() -> None:
        async with server:
            connection.send(server.port)
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, connection.recv)  # any message: stop
        # Not the responder: it may not pickle (a lambda), and a summary that fails to pickle never arrives.
        connection.send(ServedSummary(server.requests, server.peak_in_flight, dict(server.injected)))

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
