"""Start-up: listing and help import none of the heavy packages (nltk alone pulls in scipy, over a second)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = (
    *("nltk", "scipy", "torch", "numpy", "openai", "httpx", "transformers", "llama_cpp", "litellm", "faiss"),
    *("asyncio", "sqlite3"),  # the runner and the call cache: not for listing or help
)


@pytest.mark.parametrize("argv", [["ls"], ["run", "--help"], ["--help"]])
def test_command_imports_no_heavy_package(argv):
    code = (
        "import contextlib, io, json, sys\n"
        "from harness.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        f"    main({argv!r})\n"
        f"print(json.dumps([name for name in {HEAVY!r} if name in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == []
