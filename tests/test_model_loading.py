"""Every model load the harness starts holds the process-wide `MODEL_LOAD_LOCK`: transformers 5 patches torch
process-wide while it loads, and concurrent loads in threads can leave the patches in place for good (see
`harness/model_loading.py`). These tests check the lock is held at each load, with the loader replaced."""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness.llm import Model
from harness.llm.providers.mock import MockBackend
from harness.model_loading import MODEL_LOAD_LOCK
from harness.system import SystemContext


def lock_is_held() -> bool:
    """Whether this thread holds the lock."""
    return bool(MODEL_LOAD_LOCK._is_owned())  # type: ignore[attr-defined]


def test_the_probe_tells_held_from_free() -> None:
    assert not lock_is_held()
    with MODEL_LOAD_LOCK:
        assert lock_is_held()
    seen: list[bool] = []
    with MODEL_LOAD_LOCK:  # held by this thread: another thread sees it as not its own
        worker = threading.Thread(target=lambda: seen.append(lock_is_held()))
        worker.start()
        worker.join()
    assert seen == [False]


@pytest.mark.skipif(importlib.util.find_spec("mem0") is None, reason="mem0ai is not installed (extra [mem0])")
def test_mem0_lib_builds_its_memory_under_the_lock(tmp_path: Path) -> None:
    from systems.mem0_lib import Mem0LibSystem

    held: list[bool] = []

    class RecordingMemory:
        @classmethod
        def from_config(cls, config: dict[str, object]) -> SimpleNamespace:
            held.append(lock_is_held())
            return SimpleNamespace(llm=SimpleNamespace(generate_response=lambda *a, **k: ""))

    context = SystemContext(
        roles={"model": Model(MockBackend(default="x"), spec="mock")}, speakers=("A", "B"), work_dir=tmp_path
    )
    system = Mem0LibSystem(context, infer="false")
    system._memory_class = RecordingMemory
    system._build_memory()
    system.close()
    assert held == [True]


def test_sentence_transformers_load_under_the_lock(monkeypatch: pytest.MonkeyPatch) -> None:
    sentence_transformers = pytest.importorskip("sentence_transformers")
    from harness.embeddings import sentence_transformers as embedder_module

    held: list[bool] = []

    class RecordingModel:
        def __init__(self, source: str, device: str | None = None) -> None:
            held.append(lock_is_held())

    monkeypatch.setattr(sentence_transformers, "SentenceTransformer", RecordingModel)
    monkeypatch.setattr(embedder_module, "_LOADED", {})
    embedder_module._load("some/model", "cpu")
    assert held == [True]
