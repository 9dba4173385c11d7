"""Faults of an OpenAI-compatible server (`harness.loopback.Faults`) against the harness's retries: each kind is
retried, `Retry-After` holds back every caller of a role (capped), a hung request times out into a retry, a run
at a 20 % fault rate loses no question and counts every retry in run.json, and a resumed run may follow its
server to a new port (but not to another model).

Gaps are measured on the server's records, which share the test's monotonic clock.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest
from support import config, mock_model, oracle, question_of

from harness.cli import main
from harness.llm import LLMCallFailed, Message, Model
from harness.llm import retry as retry_module
from harness.llm.build import build_model
from harness.llm.retry import parse_retry_after
from harness.loopback import FAULT_KINDS, FaultKind, Faults, JSONObject, LoopbackServer, RequestRecord
from harness.plugins import TASKS
from harness.results import RunDir
from harness.runner import RunConfig, run
from harness.task import DataOptions, TaskData
from harness.types import Question

REQUIRED_DATA = ["locomo/locomo10.json"]

QUESTION: list[Message] = [{"role": "user", "content": "What is the capital of France?"}]
TIMEOUT_S = 0.5
RUN_TIMEOUT_S = 2.0
"""Runs overlap many requests on a loaded machine: a healthy one must never take this long."""


def paris(messages: list[Message], schema: JSONObject | None) -> str:
    return "Paris"


def gold_answers(questions: list[Question]):
    """A responder answering each question of a full-context prompt with its gold answer."""
    gold = {q.text: q.answers[0] for q in questions}
    return lambda messages, schema: gold[question_of(messages)]


def model_on(server: LoopbackServer, max_retries: int = 3, timeout_s: float = TIMEOUT_S) -> Model:
    return build_model(
        f"openai:loopback@{server.base_url}",
        max_retries=max_retries,
        max_concurrency=16,
        backoff_s=0.01,
        timeout_s=timeout_s,
    )


def once(kind: FaultKind, **options: float | bool) -> Faults:
    """Every request's first attempt gets `kind`; its retry passes."""
    return Faults(rate=1.0, mix={kind: 1.0}, max_per_request=1, **options)  # type: ignore[arg-type]


def gap_s(first: RequestRecord, then: RequestRecord) -> float:
    """From the server reading one request to its reading the next: a lower bound of the time the client waited
    between them (its latency is 0 and its end_s may be recorded after the client read the reply)."""
    return then.start_s - first.start_s


@pytest.mark.parametrize("kind", FAULT_KINDS)
async def test_a_fault_of_each_kind_is_retried_into_the_reply(kind: FaultKind) -> None:
    with LoopbackServer(paris, latency_s=0.0, faults=once(kind)) as server:
        model = model_on(server)
        try:
            completion = await model.generate(QUESTION)
        finally:
            await model.aclose()
    assert completion.text == "Paris"
    assert completion.retries == 1
    assert server.injected == {kind: 1}
    assert [r.fault for r in server.requests] == [kind, None]


async def test_a_hung_request_costs_one_timeout_then_the_retry_answers() -> None:
    with LoopbackServer(paris, latency_s=0.0, faults=once("hang")) as server:
        model = model_on(server)
        start = time.monotonic()
        try:
            completion = await model.generate(QUESTION)
        finally:
            await model.aclose()
        elapsed = time.monotonic() - start
    assert completion.text == "Paris" and completion.retries == 1
    assert TIMEOUT_S <= elapsed < TIMEOUT_S + 2.0
    hung, answered = server.requests
    assert hung.status == 0 and answered.status == 200


async def test_a_server_that_always_hangs_costs_at_most_timeout_times_attempts() -> None:
    with LoopbackServer(paris, latency_s=0.0, faults=Faults(rate=1.0, mix={"hang": 1.0})) as server:
        model = model_on(server, max_retries=1)
        start = time.monotonic()
        try:
            with pytest.raises(LLMCallFailed, match="gave up after 2 attempts"):
                await model.generate(QUESTION)
        finally:
            await model.aclose()
        elapsed = time.monotonic() - start
    assert 2 * TIMEOUT_S <= elapsed < 2 * TIMEOUT_S + 2.0
    assert server.injected == {"hang": 2}


async def test_retry_after_delays_the_retry_and_holds_back_the_other_callers_of_the_role() -> None:
    other: list[Message] = [{"role": "user", "content": "What is the capital of Italy?"}]
    with LoopbackServer(paris, latency_s=0.0, faults=once("rate_limit", retry_after_s=2)) as server:
        model = model_on(server)
        try:
            first = asyncio.create_task(model.generate(QUESTION))
            while not server.requests:
                await asyncio.sleep(0.01)
            # The other caller asks only after the first was told to wait: it must wait as long.
            await asyncio.gather(first, model.generate(other))
        finally:
            await model.aclose()
    limited, held, *retries = server.requests
    assert limited.status == 429 and limited.fault == "rate_limit"
    assert gap_s(limited, held) >= 2.0
    assert [r.status for r in retries] == [200, 200]
    assert min(gap_s(limited, r) for r in retries) >= 2.0


async def test_a_retry_after_date_is_honoured_and_a_long_one_is_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    in_30_s = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 28.0 <= (parse_retry_after(in_30_s) or 0.0) <= 30.0
    assert parse_retry_after("2") == 2.0 and parse_retry_after("soon") is None

    monkeypatch.setattr(retry_module, "MAX_RETRY_AFTER_S", 0.3)
    faults = once("rate_limit", retry_after_s=3600, retry_after_as_date=True)
    with LoopbackServer(paris, latency_s=0.0, faults=faults) as server:
        model = model_on(server)
        try:
            completion = await model.generate(QUESTION)
        finally:
            await model.aclose()
    limited, answered = server.requests
    assert completion.retries == 1
    assert 0.3 <= gap_s(limited, answered) < 3.0


FAULT_RUN_RETRIES = 5
"""At a 20 % fault rate a call fails all of 1 + r attempts with probability 0.2 ** (1 + r): with the default 3
retries 0.16 % of calls (one question in four 200-question runs would be lost), with 5 retries 0.0064 %."""


async def fault_run(tmp_path: Path, task: TaskData, seed: int = 0, **options: object) -> tuple[dict, LoopbackServer]:
    """A full-context run at a 20 % rate of faults of every kind; its run.json as written, and the server."""
    questions = [q for sample in task.samples for q in sample.questions]
    faults = Faults(rate=0.2)
    with LoopbackServer(gold_answers(questions), latency_s=0.0, seed=seed, faults=faults) as server:
        model = model_on(server, max_retries=FAULT_RUN_RETRIES, timeout_s=RUN_TIMEOUT_S)
        run_config = RunConfig(
            task=task.task,
            system="full-context",
            roles={"model": model.spec},
            metrics=["exact_match"],
            output_dir=tmp_path,
            run_id=f"r{seed}",
            use_cache=False,
            **options,  # type: ignore[arg-type]
        )
        try:
            await run(run_config, {"model": model})
        finally:
            await model.aclose()
    run_file = RunDir(tmp_path / task.task / "full-context" / f"r{seed}").run_file
    return json.loads(run_file.read_text()), server


def retries_in(result: dict) -> int:
    return sum(usage["retries"] for usage in result["usage"].values())


async def test_runs_at_a_20_percent_fault_rate_lose_no_question_and_count_every_retry(tmp_path: Path) -> None:
    toy = TASKS.get("toy").load(DataOptions())
    # Eight seeds make 48 questions, a few faults of several kinds; each run against a server of its own.
    runs = await asyncio.gather(*(fault_run(tmp_path, toy, seed) for seed in range(8)))
    for result, server in runs:
        assert result["counts"]["failed"] == 0
        assert result["aggregates"]["exact_match"]["overall"]["mean"] == 1.0  # no fault became an answer
        assert retries_in(result) == sum(server.injected.values())
    assert len({kind for _, server in runs for kind in server.injected}) >= 3


async def test_200_locomo_questions_at_a_20_percent_fault_rate(tmp_path: Path, shared_data_dir: Path) -> None:
    data = DataOptions(data_dir=str(shared_data_dir))
    result, server = await fault_run(tmp_path, TASKS.get("locomo").load(data), data=data, limit=200)
    assert result["counts"] == {"samples": 10, "questions": 200, "answered": 200, "failed": 0}
    assert set(server.injected) == set(FAULT_KINDS)
    assert retries_in(result) == sum(server.injected.values())


def cli_run(*args: str) -> int:
    return main(["run", *args, "--no-cache", "--max-retries", "0", "--timeout", str(TIMEOUT_S)])


def test_resume_follows_a_moved_server_and_records_the_endpoint_change(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = ["--task", "toy", "--system", "full-context", "--metric", "exact_match"]
    with LoopbackServer(paris, latency_s=0.0, faults=Faults(rate=1.0, mix={"server_error": 1.0})) as old:
        old_spec = f"openai:loopback@{old.base_url}"
        assert cli_run(*first, "--model", old_spec, "--output", str(tmp_path), "--run-id", "r1") == 3
    run_dir = tmp_path / "toy" / "full-context" / "r1"
    with LoopbackServer(paris, latency_s=0.0) as new:
        assert cli_run("--resume", str(run_dir), "--model", f"openai:other@{new.base_url}") == 2
        error = capsys.readouterr().err
        assert "config hash differs" in error and f"model {old_spec} -> openai:other@" in error
        assert not new.requests
        assert cli_run("--resume", str(run_dir), "--model", f"openai:loopback@{new.base_url}") == 0
    result = RunDir(run_dir).read_result()
    assert result.counts is not None and result.counts.failed == 0
    assert len(new.served()) == result.counts.questions == 6
    assert result.spec.roles["model"].spec == old_spec
    [moved] = result.spec.endpoint_changes
    assert (moved.role, moved.from_url, moved.to_url) == ("model", old.base_url, new.base_url)


def without_retries(value: object) -> object:
    """A record as written before usage counted retries."""
    if isinstance(value, dict):
        return {k: without_retries(v) for k, v in value.items() if k != "retries"}
    return [without_retries(v) for v in value] if isinstance(value, list) else value


async def test_a_run_recorded_before_retries_and_endpoint_changes_were_kept_still_resumes(tmp_path: Path) -> None:
    await run(config(tmp_path), models={"model": mock_model(oracle())})
    run_dir = RunDir(tmp_path / "toy" / "full-context" / "r1")
    old = without_retries(json.loads(run_dir.run_file.read_text()))
    assert isinstance(old, dict)
    del old["spec"]["endpoint_changes"]
    run_dir.run_file.write_text(json.dumps(old))
    samples = run_dir.path / "samples.jsonl"
    records = [without_retries(json.loads(line)) for line in samples.read_text().splitlines()]
    samples.write_text("".join(json.dumps(record) + "\n" for record in records))
    assert "retries" not in samples.read_text() + run_dir.run_file.read_text()

    resumed = await run(config(tmp_path), models={"model": mock_model(oracle())}, resume=True)
    assert resumed.status == "finished" and resumed.spec.endpoint_changes == []
    assert resumed.usage["answer"].retries == 0
