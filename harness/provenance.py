"""Facts about the code that produced a run: git commit and the versions of the packages that matter."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

RECORDED_PACKAGES = (
    "memory-harness",
    "pydantic",
    "nltk",
    "llama-cpp-python",
    "openai",
    "litellm",
    "transformers",
    "torch",
    "trl",
    "vllm",
)


def git_sha() -> str | None:
    """The commit of the checkout the harness runs from, with `+dirty` when it has uncommitted changes."""
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return sha + ("+dirty" if dirty else "")


def package_versions(names: Sequence[str] = RECORDED_PACKAGES) -> dict[str, str]:
    """The installed version of each of `names` (those not installed are left out)."""
    found = {}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found
