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


def test_judge_role_scores_with_the_benchmark_prompt_and_never_guesses(tmp_path):
    args = [
        "run",
        "--task",
        "toy",
        "--system",
        "full-context",
        "--model",
        "mock",
        "--judge",
        "llamacpp",
        "--output",
        str(tmp_path),
        "--run-id",
        "j",
        "--cache-path",
        str(tmp_path / "cache.sqlite"),
    ]
    assert main(args) == 0
    run_dir = tmp_path / "toy" / "full-context" / "j"
    result = json.loads((run_dir / "run.json").read_text())
    records = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]

    assert result["spec"]["metrics"][-1] == "llm_judge"
    assert result["usage"]["judge"]["calls"] == 6
    for record in records:
        details = record["score_details"]["llm_judge"]
        assert details["judge_reply"]  # the rationale is kept
        # a parsed verdict is 0 or 1; an unparsable reply is unscored, never counted right or wrong
        assert record["scores"]["llm_judge"] in (0.0, 1.0) or details.get("unjudged") is True
    judged = result["aggregates"]["llm_judge"]["overall"]
    assert judged["n"] + judged["n_unscored"] == 6
