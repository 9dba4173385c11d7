"""Shared test fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


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
