"""Resolving data files: explicit path, data folder, cache, download over httpx (from a local server) or through
huggingface_hub (from a fake hub on 127.0.0.1), offline mode, checksums and errors."""

from __future__ import annotations

import hashlib
import http.server
import json
import logging
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
from fake_hub import TOKEN, FakeHub, point_hub_client_at, running_fake_hub, serving_fake_hub

from harness.datasets import (
    ChecksumError,
    DataFileError,
    DataFormatError,
    HubFile,
    Record,
    RemoteFile,
    cache_path,
    resolve_data_file,
)
from harness.task import DataOptions

CONTENT = b'{"hello": "world"}\n'
SHA = hashlib.sha256(CONTENT).hexdigest()
REPO = "demo-org/demo-data"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
REPO_ROOT = Path(__file__).resolve().parents[1]


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


def hub_file(
    sha256: str | None = SHA, revision: str = COMMIT, repo_id: str = REPO, filename: str = "data.json"
) -> HubFile:
    return HubFile(repo_id=repo_id, filename=filename, revision=revision, sha256=sha256, subdir="demo")


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
    sha = hashlib.sha256(payload).hexdigest()
    big = RemoteFile(filename="big.bin", url=f"{base}/big.bin", revision="r1", sha256=sha, size=len(payload))
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


# --- files on the Hugging Face hub, fetched by huggingface_hub from a fake hub -------------------------------


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    with serving_fake_hub(monkeypatch) as fake:
        yield fake


def file_requests(hub: FakeHub) -> list[tuple[str, str | None]]:
    """(method, Authorization) of the requests for files (huggingface_hub also asks its endpoint other things)."""
    return [(r.method, r.authorization) for r in hub.requests if "/resolve/" in r.path]


def hf_options(tmp_path: Path, **extra: str) -> DataOptions:
    return DataOptions(cache_dir=str(tmp_path / "hf"), **extra)


def test_hub_download_into_the_hf_cache_then_from_it(hub: FakeHub, tmp_path: Path) -> None:
    hub.add(REPO, COMMIT, "data.json", CONTENT)
    found, info = resolve_data_file(hub_file(), hf_options(tmp_path))
    assert found == tmp_path / "hf" / "datasets--demo-org--demo-data" / "snapshots" / COMMIT / "data.json"
    assert found.read_bytes() == CONTENT
    assert (info.origin, info.checksum_verified, info.sha256, info.revision) == ("download", True, SHA, COMMIT)
    sent = file_requests(hub)
    assert {method for method, _ in sent} == {"HEAD", "GET"}
    assert {auth for _, auth in sent} == {f"Bearer {TOKEN}"}  # the user's token, as huggingface_hub finds it

    hub.files.clear()  # the second call must not need the hub
    again, info = resolve_data_file(hub_file(), hf_options(tmp_path))
    assert (again, info.origin, info.checksum_verified, info.sha256) == (found, "hf-cache", True, SHA)
    assert len(file_requests(hub)) == len(sent)


def test_hub_download_takes_the_pinned_revision(hub: FakeHub, tmp_path: Path) -> None:
    old, new = "1" * 40, "2" * 40
    hub.add(REPO, old, "data.json", CONTENT)
    hub.add(REPO, new, "data.json", b"a newer release\n")
    found_old, info_old = resolve_data_file(hub_file(revision=old), hf_options(tmp_path))
    found_new, info_new = resolve_data_file(hub_file(revision=new, sha256=None), hf_options(tmp_path))
    assert (found_old.read_bytes(), found_old.parent.name, info_old.revision) == (CONTENT, old, old)
    assert (found_new.read_bytes(), found_new.parent.name, info_new.revision) == (b"a newer release\n", new, new)


def test_data_dir_comes_before_the_hub(hub: FakeHub, tmp_path: Path) -> None:
    hub.add(REPO, COMMIT, "data.json", b"the hub's copy")
    (tmp_path / "data" / "demo").mkdir(parents=True)
    (tmp_path / "data" / "demo" / "data.json").write_bytes(CONTENT)
    found, info = resolve_data_file(hub_file(), hf_options(tmp_path, data_dir=str(tmp_path / "data")))
    assert (found, info.origin, info.checksum_verified) == (tmp_path / "data" / "demo" / "data.json", "data-dir", True)
    assert file_requests(hub) == []


def test_hub_download_checksum_mismatch_keeps_nothing(hub: FakeHub, tmp_path: Path) -> None:
    hub.add(REPO, COMMIT, "data.json", b"changed upstream")
    with pytest.raises(ChecksumError) as err:
        resolve_data_file(hub_file(), hf_options(tmp_path))
    message = str(err.value)
    assert "data.json" in message and REPO in message and COMMIT in message
    assert SHA in message and hashlib.sha256(b"changed upstream").hexdigest() in message
    assert "nothing was kept" in message and "--data-file" in message
    repo_dir = tmp_path / "hf" / "datasets--demo-org--demo-data"
    assert not [p for p in repo_dir.rglob("*") if p.is_file() or p.is_symlink()]

    hub.add(REPO, COMMIT, "data.json", CONTENT)  # once upstream is right again, it is downloaded afresh
    _, info = resolve_data_file(hub_file(), hf_options(tmp_path))
    assert (info.origin, info.sha256) == ("download", SHA)


def test_hf_cache_checksum_mismatch_says_how_to_fix(hub: FakeHub, tmp_path: Path) -> None:
    hub.add(REPO, COMMIT, "data.json", b"tampered")
    cached, _ = resolve_data_file(hub_file(sha256=None), hf_options(tmp_path))
    with pytest.raises(ChecksumError) as err:
        resolve_data_file(hub_file(), hf_options(tmp_path))
    message = str(err.value)
    assert str(cached) in message and str(cached.resolve()) in message  # the link and the blob behind it
    assert SHA in message and hashlib.sha256(b"tampered").hexdigest() in message
    assert "--data-file" in message and "re-download" in message


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("unknown repository", "has no dataset demo-org/other that your token can read"),
        ("gated repository", "demo-org/demo-data is gated"),
        ("unknown revision", "has no revision ffffffffffffffffffffffffffffffffffffffff of demo-org/demo-data"),
        ("missing file", "has no file other.json"),
    ],
)
def test_hub_errors_are_one_line_saying_what_to_do(hub: FakeHub, tmp_path: Path, case: str, expected: str) -> None:
    hub.add(REPO, COMMIT, "data.json", CONTENT)
    hub.gated = {REPO} if case == "gated repository" else set()
    remote = {
        "unknown repository": hub_file(repo_id="demo-org/other"),
        "gated repository": hub_file(),
        "unknown revision": hub_file(revision="f" * 40),
        "missing file": hub_file(filename="other.json"),
    }[case]
    with pytest.raises(DataFileError) as err:
        resolve_data_file(remote, hf_options(tmp_path))
    message = str(err.value)
    assert expected in message
    assert remote.repo_id in message and remote.filename in message and remote.revision in message
    assert "--data-file" in message and "\n" not in message and TOKEN not in message


def test_unreachable_hub_is_one_line_naming_the_endpoint(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from huggingface_hub import file_download

    # huggingface_hub retries a refused connection for ~23 s before it gives up with the error mapped here.
    monkeypatch.setattr(file_download, "_DEFAULT_RETRY_ON_EXCEPTIONS", ())
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    point_hub_client_at(closed, monkeypatch)
    with pytest.raises(DataFileError) as err:
        resolve_data_file(hub_file(), hf_options(tmp_path))
    message = str(err.value)
    assert f"the hub at {closed} could not be reached" in message and str(tmp_path / "hf") in message
    assert REPO in message and COMMIT in message and "\n" not in message


@pytest.mark.parametrize("variable", ["HARNESS_OFFLINE", "HF_HUB_OFFLINE"])
def test_offline_takes_the_hf_cache(
    hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    hub.add(REPO, COMMIT, "data.json", CONTENT)
    found, _ = resolve_data_file(hub_file(), hf_options(tmp_path))
    asked = len(file_requests(hub))
    monkeypatch.setenv(variable, "1")
    again, info = resolve_data_file(hub_file(), hf_options(tmp_path))
    assert (again, info.origin, info.checksum_verified) == (found, "hf-cache", True)
    assert len(file_requests(hub)) == asked


@pytest.mark.parametrize("variable", ["HARNESS_OFFLINE", "HF_HUB_OFFLINE"])
def test_offline_hub_file_not_cached_says_how_to_get_it(
    hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    hub.add(REPO, COMMIT, "data.json", CONTENT)
    monkeypatch.setenv(variable, "1")
    with pytest.raises(DataFileError) as err:
        resolve_data_file(hub_file(), hf_options(tmp_path, data_dir=str(tmp_path / "data")))
    message = str(err.value)
    assert variable in message and "data.json" in message and REPO in message and COMMIT in message
    assert str(tmp_path / "data" / "demo" / "data.json") in message and str(tmp_path / "hf") in message
    assert f"hf download {REPO} data.json --repo-type dataset --revision {COMMIT}" in message
    assert file_requests(hub) == []


def test_hub_settings_come_from_the_users_environment(tmp_path: Path) -> None:
    """A fresh interpreter, as a user runs it: HF_ENDPOINT (a mirror), HF_HUB_CACHE and HF_TOKEN, no patching."""
    code = (
        "import json, logging\n"
        "from harness.datasets import HubFile, resolve_data_file\n"
        "from harness.task import DataOptions\n"
        "logging.basicConfig(level=logging.INFO)\n"
        f"remote = HubFile(repo_id={REPO!r}, filename='data.json', revision={COMMIT!r}, sha256={SHA!r})\n"
        "print(json.dumps(resolve_data_file(remote, DataOptions())[1].model_dump()))\n"
    )
    cache = tmp_path / "hub-cache"
    with running_fake_hub() as hub:
        hub.add(REPO, COMMIT, "data.json", CONTENT)
        env = {k: v for k, v in os.environ.items() if k not in ("HARNESS_OFFLINE", "HF_HUB_OFFLINE")}
        env.update(HF_ENDPOINT=hub.url, HF_HOME=str(tmp_path / "hf-home"), HF_HUB_CACHE=str(cache), HF_TOKEN=TOKEN)
        env["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
        done = subprocess.run(
            [sys.executable, "-c", code], env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
        )
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout.splitlines()[-1])
    assert (info["origin"], info["sha256"], info["checksum_verified"]) == ("download", SHA, True)
    assert Path(info["path"]).is_relative_to(cache.resolve())
    assert {auth for _, auth in file_requests(hub)} == {f"Bearer {TOKEN}"}
    assert "Downloading data.json" in done.stderr and TOKEN not in done.stdout + done.stderr


def test_hub_client_is_imported_only_to_reach_the_hub(tmp_path: Path) -> None:
    """Loading the task modules, and a hub file found in a data folder, leave huggingface_hub unimported."""
    (tmp_path / "data.json").write_bytes(CONTENT)
    code = (
        "import sys\n"
        "import tasks.longmemeval, tasks.msc\n"
        "from harness.datasets import HubFile, resolve_data_file\n"
        "from harness.task import DataOptions\n"
        f"remote = HubFile(repo_id={REPO!r}, filename='data.json', revision={COMMIT!r}, sha256={SHA!r})\n"
        f"resolve_data_file(remote, DataOptions(data_dir={str(tmp_path)!r}))\n"
        "print('huggingface_hub' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_record_errors_name_file_record_field_and_expectation(tmp_path: Path) -> None:
    rec = Record(tmp_path / "f.json", "sample conv-1")
    with pytest.raises(DataFormatError, match=r"f\.json: sample conv-1: field 'qa\[3\]\.question': expected a string"):
        rec.get({"question": 7}, "question", str, "qa[3]")
    with pytest.raises(DataFormatError, match="field missing"):
        rec.get({}, "question", str)
    with pytest.raises(DataFormatError, match="expected an integer"):
        rec.get({"category": True}, "category", int)
    assert rec.get_text({"answer": 2022}, "answer") == "2022"
