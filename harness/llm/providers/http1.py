"""A lean HTTP/1.1 client for JSON APIs on asyncio streams: the request path of the `openai` backend.

General clients cost milliseconds of CPU per call on a 100 KB prompt: measured on sequential calls to the loopback
server (`harness.loopback`, another process, no latency) with a 96 KB prompt, the `openai` SDK's
`chat.completions.create` took 4.3 ms, a bare `httpx.AsyncClient.post` 2.4 ms, aiohttp 1.3 ms, the `openai`
backend on this client 0.25 ms. The SDK spends it on a parameter transform, httpx on anyio and h11 layers and a
pool that re-checks every connection per request. This client writes a request head and a `Content-Length`
body, reads a `Content-Length`, chunked or until-close body, and keeps connections alive for reuse, one pool per
client (per base URL). TLS comes from `ssl.create_default_context()` (so
`SSL_CERT_FILE` is honoured); no `Accept-Encoding` but identity is offered, so bodies arrive uncompressed.

Not handled, because the APIs it serves do not need them: redirects, 1xx replies, HTTP/2. Nor proxies: where
`HTTP(S)_PROXY` names one for the URL (and `NO_PROXY` does not exempt it), a warning says it is not used.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

MAX_HEAD_BYTES = 64 * 1024
"""The longest status line plus headers read (the stream reader's line limit)."""


class ProtocolError(ValueError):
    """The server's reply is not HTTP/1.x as this client reads it."""


@dataclass(frozen=True)
class Response:
    status: int
    headers: Mapping[str, str]
    """Lower-cased names; a repeated header keeps its last value."""
    body: bytes


_Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class HTTPClient:
    """POSTs to one origin, over keep-alive connections it pools (see the module docstring).

    Args:
        base_url: `http://` or `https://` origin and path prefix, e.g. `https://api.openai.com/v1`.
        headers: sent with every request (auth, user agent).
        timeout_s: the longest one request may take, connecting and reading the whole reply included.
    """

    def __init__(self, base_url: str, headers: Mapping[str, str], timeout_s: float) -> None:
        url = urlsplit(base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"expected an http:// or https:// URL, got {base_url!r}")
        self.host = url.hostname
        self.port = url.port or (443 if url.scheme == "https" else 80)
        self.timeout_s = timeout_s
        if urllib.request.getproxies().get(url.scheme) and not urllib.request.proxy_bypass(self.host):
            log.warning(
                "%s_proxy is set, but requests to %s go direct: this client does not use proxies", url.scheme, self.host
            )
        self._ssl = ssl.create_default_context() if url.scheme == "https" else None
        self._prefix = url.path.rstrip("/")
        host = self.host if url.port is None else f"{self.host}:{url.port}"
        fixed = {"Host": host, "Accept": "application/json", "Accept-Encoding": "identity", **headers}
        self._fixed_head = "".join(f"{name}: {value}\r\n" for name, value in fixed.items())
        self._idle: list[_Connection] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    async def post_json(self, path: str, body: bytes) -> Response:
        """POST `body` (JSON) to the prefix + `path`. Raises `OSError` (connection refused, reset, TLS),
        `EOFError` (the connection closed mid-reply), `ProtocolError` and `TimeoutError` after `timeout_s`."""
        head = (
            f"POST {self._prefix}{path} HTTP/1.1\r\n{self._fixed_head}"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode("latin-1")
        async with asyncio.timeout(self.timeout_s):
            reader, writer = self._reuse() or await self._connect()
            try:
                writer.write(head + body)
                response, keep_alive = await _read_response(reader)
            except BaseException:
                writer.close()
                raise
        if keep_alive:
            self._idle.append((reader, writer))
        else:
            writer.close()
        return response

    def _reuse(self) -> _Connection | None:
        """The most recently used idle connection the server has not closed, if any."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # connections belong to the loop that opened them (asyncio.run twice)
            self._idle.clear()
            self._loop = loop
        while self._idle:
            reader, writer = self._idle.pop()
            # The loop reads idle sockets, so a server's close (a keep-alive timeout) has been seen by now.
            if not (reader.at_eof() or writer.is_closing() or reader.exception()):
                return reader, writer
            writer.close()
        return None

    async def _connect(self) -> _Connection:
        return await asyncio.open_connection(
            self.host, self.port, ssl=self._ssl, server_hostname=self.host if self._ssl else None, limit=MAX_HEAD_BYTES
        )

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for _, writer in idle:
            writer.close()


async def _read_response(reader: asyncio.StreamReader) -> tuple[Response, bool]:
    """One reply, and whether its connection may carry the next request."""
    head = await _read_until(reader, b"\r\n\r\n")
    status_line, *lines = head[:-4].decode("latin-1").split("\r\n")
    version, _, rest = status_line.partition(" ")
    code = rest[:3]
    if not (version.startswith("HTTP/1.") and code.isdigit()):
        raise ProtocolError(f"not an HTTP/1.x status line: {status_line[:80]!r}")
    headers: dict[str, str] = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    encoding = headers.get("content-encoding", "identity").lower()
    if encoding != "identity":
        raise ProtocolError(f"reply in Content-Encoding {encoding!r}, which was not asked for")
    connection = headers.get("connection", "").lower()
    keep_alive = connection != "close" if version == "HTTP/1.1" else connection == "keep-alive"
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = await _read_chunked(reader)
    elif (length := headers.get("content-length")) is not None:
        if not length.isdigit():
            raise ProtocolError(f"bad Content-Length {length[:40]!r}")
        body = await reader.readexactly(int(length))
    else:  # delimited by the server closing the connection
        body, keep_alive = await reader.read(), False
    return Response(int(code), headers, body), keep_alive


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    chunks: list[bytes] = []
    while True:
        size_line = await _read_until(reader, b"\r\n")
        try:
            size = int(size_line.split(b";", 1)[0], 16)
        except ValueError as error:
            raise ProtocolError(f"bad chunk size line {size_line[:40]!r}") from error
        if size == 0:
            while await _read_until(reader, b"\r\n") != b"\r\n":  # trailers
                pass
            return b"".join(chunks)
        chunks.append(await reader.readexactly(size))
        if await reader.readexactly(2) != b"\r\n":
            raise ProtocolError("a chunk does not end in CRLF")


async def _read_until(reader: asyncio.StreamReader, separator: bytes) -> bytes:
    try:
        return await reader.readuntil(separator)
    except asyncio.LimitOverrunError as error:
        raise ProtocolError(f"a reply line or head over {MAX_HEAD_BYTES} bytes") from error
