"""Resolving data files: explicit path, data folder, cache, download (from a local server), offline mode."""

from __future__ import annotations

import hashlib
import http.server
import logging
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from harness.datasets import (
    ChecksumError,
    DataFileError,
    DataFormatError,
    Record,
    RemoteFile,
    cache_path,
    resolve_data_file,
)
from harness.task import DataOptions

CONTENT = b'{"hello": "world"}\n'
SHA = hashlib.sha256(CONTENT).hexdigest()


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HARNESS_DATA_DIR", "HARNESS_CACHE_DIR", "HARNESS_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    # The local test server must be reached directly, never through a proxy.
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """An HTTP server on 127.0.0.1 serving a temporary folder: (base URL, folder)."""
    root = tmp_path / "served"
    root.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=partial(httpd.serve_forever, poll_interval=0.02), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    finally:
        httpd.shutdown()
        httpd.server_close()


def remote(url: str = "http://127.0.0.1:9/none/data.json", sha256: str | None = SHA) -> RemoteFile:
    return RemoteFile(filename="data.json", url=url, revision="abc123", sha256=sha256, subdir="demo")


def test_data_file_is_used_as_is(tmp_path: Path) -> None:
    path = tmp_path / "subset.json"
    path.write_bytes(b"anything")
    found, info = resolve_data_file(remote(), DataOptions(data_file=str(path)))
    assert found == path
    assert info.origin == "data-file"
    assert not info.checksum_verified
    assert info.sha256 == hashlib.sha256(b"anything").hexdigest()


def test_missing_data_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(DataFileError, match=r"nope\.json"):
        resolve_data_file(remote(), DataOptions(data_file=str(tmp_path / "nope.json")))


@pytest.mark.parametrize("layout", ["data.json", "demo/data.json"])
def test_data_dir_direct_or_task_folder(tmp_path: Path, layout: str) -> None:
    target = tmp_path / "data" / layout
    target.parent.mkdir(parents=True)
    target.write_bytes(CONTENT)
    found, info = resolve_data_file(remote(), DataOptions(data_dir=str(tmp_path / "data")))
    assert found == target
    assert (info.origin, info.checksum_verified, info.sha256, info.revision) == ("data-dir", True, SHA, "abc123")


def test_data_dir_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "data.json").write_bytes(CONTENT)
    monkeypatch.setenv("HARNESS_DATA_DIR", str(tmp_path))
    _, info = resolve_data_file(remote(), DataOptions())
    assert info.origin == "data-dir"


def test_checksum_mismatch_says_how_to_fix(tmp_path: Path) -> None:
    (tmp_path / "data.json").write_bytes(b"tampered")
    with pytest.raises(ChecksumError) as err:
        resolve_data_file(remote(), DataOptions(data_dir=str(tmp_path)))
    message = str(err.value)
    assert str(tmp_path / "data.json") in message
    assert SHA in message and hashlib.sha256(b"tampered").hexdigest() in message
    assert "--data-file" in message and "re-download" in message


def test_unpinned_checksum_is_recorded_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "data.json").write_bytes(CONTENT)
    with caplog.at_level(logging.WARNING, logger="harness.datasets"):
        _, info = resolve_data_file(remote(sha256=None), DataOptions(data_dir=str(tmp_path)))
    assert (info.sha256, info.checksum_verified, info.revision) == (SHA, False, None)
    assert "No sha256 is pinned" in caplog.text


def test_download_then_cache(server: tuple[str, Path], tmp_path: Path) -> None:
    base, root = server
    (root / "data.json").write_bytes(CONTENT)
    options = DataOptions(cache_dir=str(tmp_path / "cache"))
    found, info = resolve_data_file(remote(f"{base}/data.json"), options)
    assert found == tmp_path / "cache" / "demo" / "abc123" / "data.json"
    assert found.read_bytes() == CONTENT
    assert (info.origin, info.checksum_verified, info.sha256) == ("download", True, SHA)
    assert [p.name for p in found.parent.iterdir()] == ["data.json"]  # no temporary file left

    (root / "data.json").unlink()  # the second call must not need the server
    again, info = resolve_data_file(remote(f"{base}/data.json"), options)
    assert (again, info.origin, info.checksum_verified) == (found, "cache", True)


def test_big_download_with_progress_bar(server: tuple[str, Path], tmp_path: Path) -> None:
    base, root = server
    payload = bytes(range(256)) * 8192  # 2 MiB: over the progress-bar threshold
    (root / "big.bin").write_bytes(payload)
    big = RemoteFile("big.bin", f"{base}/big.bin", "r1", hashlib.sha256(payload).hexdigest(), len(payload))
    found, info = resolve_data_file(big, DataOptions(cache_dir=str(tmp_path / "cache")))
    assert found.read_bytes() == payload and info.origin == "download"


def test_download_checksum_mismatch_keeps_nothing(server: tuple[str, Path], tmp_path: Path) -> None:
    base, root = server
    (root / "data.json").write_bytes(b"changed upstream")
    cache = tmp_path / "cache"
    with pytest.raises(ChecksumError, match="expected sha256"):
        resolve_data_file(remote(f"{base}/data.json"), DataOptions(cache_dir=str(cache)))
    assert not any(p.is_file() for p in cache.rglob("*"))


def test_download_failure_names_the_url(server: tuple[str, Path], tmp_path: Path) -> None:
    base, _ = server
    url = f"{base}/missing.json"
    with pytest.raises(DataFileError, match=url.replace(".", r"\.")):
        resolve_data_file(remote(url), DataOptions(cache_dir=str(tmp_path / "cache")))
    assert not any(p.is_file() for p in (tmp_path / "cache").rglob("*"))


@pytest.mark.parametrize("variable", ["HARNESS_OFFLINE", "HF_HUB_OFFLINE"])
def test_offline_does_not_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str) -> None:
    monkeypatch.setenv(variable, "1")
    options = DataOptions(data_dir=str(tmp_path / "data"), cache_dir=str(tmp_path / "cache"))
    with pytest.raises(DataFileError) as err:
        resolve_data_file(remote(), options)
    message = str(err.value)
    assert variable in message and "data.json" in message and remote().url in message
    assert str(tmp_path / "data" / "demo" / "data.json") in message
    assert str(cache_path(remote(), options)) in message


def test_cache_dir_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path))
    assert cache_path(remote(), DataOptions()) == tmp_path / "data" / "demo" / "abc123" / "data.json"


def test_record_errors_name_file_record_field_and_expectation(tmp_path: Path) -> None:
    rec = Record(tmp_path / "f.json", "sample conv-1")
    with pytest.raises(DataFormatError, match=r"f\.json: sample conv-1: field 'qa\[3\]\.question': expected a string"):
        rec.get({"question": 7}, "question", str, "qa[3]")
    with pytest.raises(DataFormatError, match="field missing"):
        rec.get({}, "question", str)
    with pytest.raises(DataFormatError, match="expected an integer"):
        rec.get({"category": True}, "category", int)
    assert rec.get_text({"answer": 2022}, "answer") == "2022"
