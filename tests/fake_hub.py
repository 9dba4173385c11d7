"""A stand-in for the Hugging Face hub's `resolve` endpoint on 127.0.0.1 (on sys.path through conftest.py).

Tests point the real huggingface_hub client at it, so they exercise its cache layout, revision pinning, token
and error handling without the network. It serves dataset repositories and answers like the hub:
`X-Repo-Commit` and an `ETag` on a file, and `X-Error-Code` (`RepoNotFound`, `GatedRepo`, `RevisionNotFound`,
`EntryNotFound`) on the errors that huggingface_hub turns into its own exception classes.
"""

from __future__ import annotations

import hashlib
import http.server
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from urllib.parse import unquote

import pytest

_RESOLVE = re.compile(r"^/datasets/(?P<repo>[^/]+/[^/]+)/resolve/(?P<revision>[^/]+)/(?P<path>.+)$")
TOKEN = "hf_fake_token_for_tests"


@dataclass
class Request:
    method: str
    path: str
    authorization: str | None


@dataclass
class FakeHub:
    """What the server holds and what it was asked."""

    url: str = ""
    files: dict[tuple[str, str, str], bytes] = field(default_factory=dict)
    """(dataset repo id, commit, file name) -> content."""
    gated: set[str] = field(default_factory=set)
    requests: list[Request] = field(default_factory=list)

    def add(self, repo_id: str, revision: str, filename: str, content: bytes) -> None:
        self.files[(repo_id, revision, filename)] = content

    def answer(self, path: str) -> tuple[int, dict[str, str], bytes]:
        match = _RESOLVE.match(path.split("?", 1)[0])
        if not match:
            return 404, {}, b""
        repo, revision, filename = match["repo"], unquote(match["revision"]), unquote(match["path"])
        if repo in self.gated:
            return 403, {"X-Error-Code": "GatedRepo"}, b""
        revisions = {rev for (r, rev, _) in self.files if r == repo}
        if not revisions:
            return 401, {"X-Error-Code": "RepoNotFound"}, b""
        if revision not in revisions:
            return 404, {"X-Error-Code": "RevisionNotFound"}, b""
        content = self.files.get((repo, revision, filename))
        if content is None:
            return 404, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": revision}, b""
        etag = f'"{hashlib.sha256(content).hexdigest()}"'
        return 200, {"X-Repo-Commit": revision, "ETag": etag}, content


def _handler(hub: FakeHub) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_HEAD(self) -> None:
            self._reply(with_body=False)

        def do_GET(self) -> None:
            self._reply(with_body=True)

        def _reply(self, *, with_body: bool) -> None:
            hub.requests.append(Request(self.command, self.path, self.headers.get("Authorization")))
            status, headers, body = hub.answer(self.path)
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if with_body:
                self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@contextmanager
def running_fake_hub() -> Iterator[FakeHub]:
    """Serve a `FakeHub` on a free port until the block ends."""
    hub = FakeHub()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(hub))
    hub.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=partial(httpd.serve_forever, poll_interval=0.02), daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def point_hub_client_at(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make this process's huggingface_hub talk to `url`, online, with the token `TOKEN`.

    huggingface_hub reads HF_ENDPOINT and HF_HUB_OFFLINE once, when it is imported (and conftest.py sets
    HF_HUB_OFFLINE before that), so in-process tests set its constants; `test_datasets.py` also checks the
    real environment variables in a fresh interpreter.
    """
    from huggingface_hub import constants

    for name in ("HF_HUB_OFFLINE", "HARNESS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_TOKEN", TOKEN)  # never the developer's own token, even to 127.0.0.1
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}")


@contextmanager
def serving_fake_hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    """A running `FakeHub` that this process's huggingface_hub talks to (the body of the tests' fixture)."""
    with running_fake_hub() as hub:
        point_hub_client_at(hub.url, monkeypatch)
        yield hub
