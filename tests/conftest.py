"""Shared test fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

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
