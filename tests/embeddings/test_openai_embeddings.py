"""The `openai` embedder against a real HTTP server on 127.0.0.1 that speaks `/v1/embeddings`.

llama-cpp-python's server does serve `/v1/embeddings`, but for SmolLM2 (a chat model whose GGUF sets no
pooling, and the server exposes no pooling setting) it answers one vector per *token*, not the one vector
per input of the OpenAI protocol. So the tests start a small protocol-conformant server of their own, which
can also fail on cue; the per-token answer is one of the cases it plays.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from harness.embeddings.build import build_embedder
from harness.embeddings.cache import CachedEmbedder
from harness.embeddings.openai_embeddings import OpenAIEmbedder
from harness.llm import LLMCallFailed, LLMError

DIM = 8


def raw_vector(text: str) -> list[float]:
    """Deterministic, not normalised (the client must normalise): letter counts folded into DIM buckets."""
    vector = [0.0] * DIM
    for char in text.lower():
        if char.isalpha():
            vector[ord(char) % DIM] += 1.0
    return vector


@dataclass
class EmbeddingServer:
    """What the server saw and what it should do next."""

    base_url: str = ""
    requests: list[dict] = field(default_factory=list)
    auth_headers: list[str | None] = field(default_factory=list)
    fail_with: list[int] = field(default_factory=list)
    """Status codes to answer the next requests with, one each, before answering normally."""
    per_token: bool = False


def handler_for(state: EmbeddingServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
            return

        def _reply(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            state.requests.append(request)
            state.auth_headers.append(self.headers.get("Authorization"))
            if self.path != "/v1/embeddings":
                self._reply(404, {"error": {"message": "not found"}})
            elif state.fail_with:
                status = state.fail_with.pop(0)
                self._reply(status, {"error": {"message": f"scripted {status}", "type": "test"}})
            elif request["model"] == "unknown":
                self._reply(400, {"error": {"message": "model not found", "type": "invalid_request_error"}})
            else:
                inputs = request["input"] if isinstance(request["input"], list) else [request["input"]]
                rows = [raw_vector(t) for t in inputs]
                data = [
                    {"object": "embedding", "index": i, "embedding": [row, row] if state.per_token else row}
                    for i, row in reversed(list(enumerate(rows)))  # out of order: the client must sort by index
                ]
                usage = {"prompt_tokens": len(inputs), "total_tokens": len(inputs)}
                self._reply(200, {"object": "list", "data": data, "model": request["model"], "usage": usage})

    return Handler


@pytest.fixture
def server() -> Iterator[EmbeddingServer]:
    state = EmbeddingServer()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler_for(state))
    state.base_url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(autouse=True)
def _no_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-real-openai-key")
    monkeypatch.delenv("HARNESS_SERVER_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


async def test_rows_are_normalised_in_input_order_and_batched(server: EmbeddingServer) -> None:
    embedder = OpenAIEmbedder("emb", server.base_url, batch_size=2)
    assert embedder.info.dim is None
    texts = ["apple", "banana", "cherry", "date", "elderberry"]
    vectors = await embedder.embed(texts)
    assert vectors.shape == (5, DIM) and vectors.dtype == np.float32
    expected = np.asarray([raw_vector(t) for t in texts], dtype=np.float32)
    np.testing.assert_allclose(vectors, expected / np.linalg.norm(expected, axis=1, keepdims=True), rtol=1e-6)
    assert sorted(len(r["input"]) for r in server.requests) == [1, 2, 2]
    assert embedder.info.dim == DIM
    await embedder.aclose()


async def test_the_openai_key_is_not_sent_to_a_server_named_in_the_spec(
    server: EmbeddingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    await OpenAIEmbedder("emb", server.base_url).embed(["x"])
    monkeypatch.setenv("HARNESS_SERVER_API_KEY", "server-key")
    await OpenAIEmbedder("emb", server.base_url).embed(["x"])
    assert server.auth_headers == ["Bearer EMPTY", "Bearer server-key"]


def test_the_openai_api_needs_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY")
    with pytest.raises(LLMError, match="OPENAI_API_KEY"):
        OpenAIEmbedder("text-embedding-3-small")
    with pytest.raises(LLMError, match="needs a model name"):
        OpenAIEmbedder(None, "http://127.0.0.1:1/v1")


async def test_transient_errors_are_retried(server: EmbeddingServer) -> None:
    server.fail_with = [503, 429]
    embedder = OpenAIEmbedder("emb", server.base_url, max_retries=2, backoff_s=0.01)
    assert (await embedder.embed(["kiwi"])).shape == (1, DIM)
    assert len(server.requests) == 3


async def test_retries_are_bounded(server: EmbeddingServer) -> None:
    server.fail_with = [500, 502, 503, 504]
    embedder = OpenAIEmbedder("emb", server.base_url, max_retries=2, backoff_s=0.01)
    with pytest.raises(LLMCallFailed, match="gave up after 3 attempts"):
        await embedder.embed(["kiwi"])
    assert len(server.requests) == 3


async def test_a_permanent_error_is_not_retried(server: EmbeddingServer) -> None:
    embedder = OpenAIEmbedder("unknown", server.base_url, max_retries=3, backoff_s=0.01)
    with pytest.raises(LLMCallFailed, match="BadRequestError"):
        await embedder.embed(["kiwi"])
    assert len(server.requests) == 1


async def test_per_token_vectors_are_a_clear_error(server: EmbeddingServer) -> None:
    server.per_token = True
    with pytest.raises(LLMCallFailed, match="one flat vector per input"):
        await OpenAIEmbedder("emb", server.base_url, max_retries=0).embed(["kiwi", "fig"])


async def test_a_closed_port_fails_after_retries() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    embedder = OpenAIEmbedder("emb", f"http://127.0.0.1:{port}/v1", max_retries=1, backoff_s=0.01, timeout_s=5)
    with pytest.raises(LLMCallFailed, match="gave up after 2 attempts"):
        await embedder.embed(["kiwi"])


async def test_built_from_a_spec_and_cached(server: EmbeddingServer, tmp_path: Path) -> None:
    embedder = build_embedder(f"openai:emb@{server.base_url}", cache_path=tmp_path / "e.sqlite")
    assert isinstance(embedder, CachedEmbedder) and embedder.info.dim is None
    first = await embedder.embed(["plum", "pear"])
    assert embedder.info.dim == DIM  # learnt from the server's first answer
    second = await embedder.embed(["pear", "plum"])
    assert len(server.requests) == 1
    np.testing.assert_array_equal(first[::-1], second)
