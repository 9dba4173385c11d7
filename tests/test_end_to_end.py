"""A whole run on the embedded model: the default path a new user takes, with real LLM calls."""

from __future__ import annotations

import json

import pytest

from harness.cli import main

pytestmark = pytest.mark.slow


def test_toy_run_on_the_embedded_model_answers_every_question_and_caches_the_calls(tmp_path, capsys):
    args = [
        "run",
        "--task",
        "toy",
        "--system",
        "full-context",
        "--output",
        str(tmp_path),
        "--cache-path",
        str(tmp_path / "cache.sqlite"),
    ]
    assert main([*args, "--run-id", "first"]) == 0
    first = json.loads((tmp_path / "toy" / "full-context" / "first" / "run.json").read_text())
    records = [
        json.loads(line) for line in (tmp_path / "toy/full-context/first/samples.jsonl").read_text().splitlines()
    ]

    assert first["spec"]["roles"]["model"]["provider"] == "llamacpp"
    assert first["counts"] == {"samples": 2, "questions": 6, "answered": 6, "failed": 0}
    assert all(r["prediction"]["metadata"]["raw_answer"] for r in records)
    assert first["usage"]["answer"]["calls"] == 6 and first["usage"]["answer"]["cache_hits"] == 0
    assert first["usage"]["answer"]["prompt_tokens"] > 6 * 100

    assert main([*args, "--run-id", "second"]) == 0
    second = json.loads((tmp_path / "toy" / "full-context" / "second" / "run.json").read_text())
    assert second["usage"]["answer"]["cache_hits"] == 6
    assert second["aggregates"] == first["aggregates"]
    assert "overall" in capsys.readouterr().out
