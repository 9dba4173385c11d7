"""`kill -9` at seeded random points of `harness run` processes, each followed by `--resume`, then one last
`python -m harness run --resume` to the end: no question lost, none answered twice, records equal to an
uninterrupted run's (issue 12).

The LLM is the loopback OpenAI-compatible server (in a process of its own) with a latency and jitter, so the
runs take real time and the kills land mid-call; for `memr1` most land while the Memory Manager is still
ingesting a history. The runs keep the LLM call cache and the memory snapshots on (each run its own cache
folder), as a user's run does, so a kill can also land while either is written.

The uninterrupted run runs in this process; the killed attempts are forks of it calling `harness.cli.main`:
processes of their own, with their own files, sqlite connections and sockets, that `kill -9` ends exactly as it
ends `python -m harness run`, without its ~3 s of imports and first-call set-up on a loaded 2-core machine
(twenty of those would be a minute). The last resume is `python -m harness run` itself, a fresh interpreter.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from pathlib import Path

import pytest
from support import every_line_a_fact, make_spec, question_of, write_run

from harness.cli import main
from harness.llm import Message
from harness.llm.cache import CallCache
from harness.loopback import JSONObject, LoopbackProcess, LoopbackServer
from harness.plugins import TASKS
from harness.results import QuestionRecord, RunDir
from harness.runner import summarize
from harness.task import DataOptions
from systems.memr1.answer_agent import ANSWER_AGENT_INSTRUCTIONS

KILLS = 20
SEED = 12
GATE = 2
"""Histories in flight at once (`--max-samples`)."""
CONCURRENCY = 4
"""Calls in flight at once (`--max-concurrency`): the most replies one turn of the event loop can hold."""


def write_chats(path: Path, conversations: int, sessions: int, turns: int) -> None:
    """A LoCoMo-format file of two-speaker chats whose turns each state one fact ("My key N is VALUE."), with a
    question about every other turn and one about a fact never stated, per chat."""
    items = []
    for c in range(conversations):
        speakers = (f"Ann{c}", f"Ben{c}")
        chat: dict[str, object] = {"speaker_a": speakers[0], "speaker_b": speakers[1]}
        qa = [(f"What is {speakers[0]}'s boat called?", f"Oslo{c}", "D1:1")]
        for s in range(1, sessions + 1):
            said = []
            for t in range(1, turns + 1):
                n = (s - 1) * turns + t
                speaker, value = speakers[n % 2], f"V{c}x{n}"
                said.append({"speaker": speaker, "dia_id": f"D{s}:{t}", "text": f"My key {n} is {value}."})
                if n % 2:
                    qa.append((f"What is {speaker}'s key {n}?", value, f"D{s}:{t}"))
            chat[f"session_{s}"] = said
            chat[f"session_{s}_date_time"] = f"10:00 am on {s} May, 2023"
        questions = [
            {"question": q, "answer": a, "evidence": [e], "category": 1 + i % 4} for i, (q, a, e) in enumerate(qa)
        ]
        items.append({"sample_id": f"conv-{c}", "conversation": chat, "qa": questions})
    path.write_text(json.dumps(items))


def read_answer(messages: list[Message], schema: JSONObject | None) -> str:
    """The loopback's replies: every line becomes a fact and is ADDed (`every_line_a_fact`); an answer is the
    value of the asked key where the prompt states it, else "no idea" (for the Answer Agent, after distilling
    candidate 1)."""
    if (reply := every_line_a_fact(messages)) is not None:
        return reply
    asked = re.search(r"key (\d+)\?", question_of(messages))
    stated = asked and re.search(rf"My key {asked.group(1)} is (\w+)\.", messages[-1]["content"])
    answer = stated.group(1) if stated else "no idea"
    return f"- [1]\n**Answer:** {answer}" if messages[0]["content"] == ANSWER_AGENT_INSTRUCTIONS else answer


def _run_in_fork(args: list[str], cache_dir: Path) -> None:
    os.environ["HARNESS_CACHE_DIR"] = str(cache_dir)
    with (cache_dir / "log").open("ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
    sys.exit(main(["run", *args]))


def fork_run(args: list[str], cache_dir: Path) -> BaseProcess:
    """`harness run ARGS` in a fork of this process, with `$HARNESS_CACHE_DIR` set to `cache_dir`, its output
    appended to `cache_dir/log`."""
    process = multiprocessing.get_context("fork").Process(target=_run_in_fork, args=(args, cache_dir), daemon=True)
    process.start()
    return process


def harness_run(args: list[str], cache_dir: Path) -> subprocess.Popen[bytes]:
    """`python -m harness run ARGS`, with its cache and output likewise."""
    env = {**os.environ, "HARNESS_CACHE_DIR": str(cache_dir)}
    with (cache_dir / "log").open("ab") as log:
        return subprocess.Popen([sys.executable, "-m", "harness", "run", *args], stdout=log, stderr=log, env=env)


def log_tail(cache_dir: Path) -> str:
    return (cache_dir / "log").read_text()[-3000:]


def ids_of(run_dir: RunDir) -> list[str]:
    return [r.question_id for r in run_dir.read_questions()]


def kill_phase(run_dir: RunDir, before: set[str], ingests_before: int, histories: list[set[str]]) -> str:
    """What the attempt was doing when killed, from the files the kill left: `ingestion` (a history's memory
    was being built), `answering` (a built history had questions left), both, or `neither` (between them).

    The runner takes the histories with questions left in order, `GATE` at a time, and records each memory
    (`ingest.jsonl`) once built: so `min(left, finished + GATE)` were started, `built` have their memory."""
    done = set(ids_of(run_dir))
    left = [questions for questions in histories if not questions <= before]
    finished = sum(questions <= done for questions in left)
    started = min(len(left), finished + GATE)
    built = len(run_dir.read_ingests()) - ingests_before
    doing = [name for name, busy in (("ingestion", started > built), ("answering", built > finished)) if busy]
    return " and ".join(doing) or "neither"


def keys_cached(cache_dir: Path) -> set[str]:
    with sqlite3.connect(cache_dir / "llm_calls.sqlite") as db:
        return {key for (key,) in db.execute("SELECT key FROM calls_v2")}


def calls_cached(cache_dir: Path) -> int:
    """The LLM calls a run's cache holds: how far its attempts got, counted in calls."""
    cache = CallCache(cache_dir / "llm_calls.sqlite")
    try:
        return len(cache)
    finally:
        cache.close()


@dataclass(frozen=True)
class Kills:
    """Where the kills of one run landed."""

    phases: Counter[str]
    """Kills by `kill_phase`."""
    calls: list[int]
    """LLM calls made by the run (cached) when each kill landed."""
    recorded: list[int]
    """Questions recorded when each kill landed."""


def kill_and_resume(
    run_args: list[str], run_dir: RunDir, cache_dir: Path, histories: list[set[str]], calls: int, latency_s: float
) -> Kills:
    """Start the run and `kill -9` it `KILLS` times, resuming after each, then resume it to the end.

    The kill points are seeded and uniform over the run's `calls` LLM calls (an uninterrupted run's count), in
    order: attempt i is killed once the cache holds `points[i]` calls, `uniform(0, latency_s)` later, so mostly
    mid-call; an attempt whose point its predecessors passed is killed that long after it wrote `run.json`
    (while it starts or replays cached calls). After every kill, no recorded question may be lost or recorded
    twice."""
    rng = random.Random(SEED)
    points = sorted(rng.randrange(int(0.9 * calls)) for _ in range(KILLS))  # the last calls end too soon to kill
    kills = Kills(Counter(), [], [])
    for kill, point in enumerate(points, start=1):
        resuming = run_dir.run_file.exists()  # a kill before the first `run.json` leaves nothing to resume
        written = run_dir.run_file.stat().st_mtime_ns if resuming else None
        kept = {r.question_id for r in run_dir.read_questions() if not r.failed}  # failed ones are asked again
        ingests = len(run_dir.read_ingests())
        process = fork_run(["--resume", str(run_dir.path)] if resuming else run_args, cache_dir)
        deadline = time.monotonic() + 60
        while process.is_alive() and time.monotonic() < deadline:
            began = run_dir.run_file.exists() and run_dir.run_file.stat().st_mtime_ns != written
            if began and calls_cached(cache_dir) >= point:
                break
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, latency_s))
        process.kill()
        process.join()
        assert process.exitcode == -signal.SIGKILL, f"kill {kill}: the run ended first: {log_tail(cache_dir)}"
        kills.phases[kill_phase(run_dir, kept, ingests, histories)] += 1
        kills.calls.append(calls_cached(cache_dir))
        ids = ids_of(run_dir)
        assert len(ids) == len(set(ids)), f"kill {kill}: a question was answered twice"
        assert kept <= set(ids), f"kill {kill}: recorded questions were lost: {kept - set(ids)}"
        kills.recorded.append(len(ids))
    code = harness_run(["--resume", str(run_dir.path)], cache_dir).wait(timeout=120)
    assert code == 0, f"the last resume exited with {code}: {log_tail(cache_dir)}"
    return kills


def deterministic(record: QuestionRecord) -> dict[str, object]:
    """A record without what timing and the cache change (latency, usage)."""
    return record.model_dump(exclude={"judge_usage": True, "prediction": {"latency_s", "usage"}})


@pytest.mark.parametrize(
    ("system", "chats", "min_ingestion_kills"),
    [
        ("full-context", (5, 3, 10), 0),  # 5 histories of 30 turns, 16 questions each: 80 calls
        # 4 histories of 18 turns, 10 questions each: per history 18 extraction and 18 manager calls (9 in a row
        # per speaker) before its 10 answer calls, 184 calls in all
        ("memr1", (4, 3, 6), KILLS // 2),
    ],
)
def test_kill_9_twenty_times_then_resume_gives_the_uninterrupted_records(
    tmp_path, monkeypatch, system, chats, min_ingestion_kills
):
    data = tmp_path / "chats.json"
    write_chats(data, *chats)
    samples = TASKS.get("locomo").load(DataOptions(data_file=str(data))).samples
    histories = [{q.question_id for q in sample.questions} for sample in samples]
    whole_cache, killed_cache = tmp_path / "whole-cache", tmp_path / "killed-cache"
    killed_cache.mkdir()
    latency_s = 0.04
    started = time.monotonic()
    server = LoopbackServer(read_answer, latency_s=latency_s, jitter_s=latency_s / 2, seed=SEED)
    with LoopbackProcess(server) as served:
        spec = f"openai:loopback@{served.base_url}"
        args = ["--task", "locomo", "--data-file", str(data), "--system", system, "--embedder", "hashing"]
        args += ["--model", spec, "--metric", "exact_match", "--metric", "f1"]
        args += ["--run-id", "r", "--max-samples", str(GATE), "--max-concurrency", str(CONCURRENCY)]
        # In this process, which the forks then inherit warm: imports, schemas, the SDK's first-call set-up.
        monkeypatch.setenv("HARNESS_CACHE_DIR", str(whole_cache))
        assert main(["run", *args, "--output", str(tmp_path / "whole")]) == 0
        calls = calls_cached(whole_cache)
        killed = RunDir(tmp_path / "killed" / "locomo" / system / "r")
        kills = kill_and_resume(
            [*args, "--output", str(tmp_path / "killed")], killed, killed_cache, histories, calls, latency_s
        )
    wall_s = time.monotonic() - started
    reference = RunDir(tmp_path / "whole" / "locomo" / system / "r")

    total = sum(len(h) for h in histories)
    snapshots = Counter(ingest.snapshot for ingest in killed.read_ingests())
    print(
        f"\n{system}: {KILLS} kills, {dict(kills.phases)}, at calls {kills.calls} of {calls}, "
        f"with questions {kills.recorded} of {total} recorded; memory snapshots {dict(snapshots)}; {wall_s:.1f} s"
    )
    ids = ids_of(killed)
    assert len(ids) == len(set(ids)) == total
    by_id = {r.question_id: deterministic(r) for r in killed.read_questions()}
    assert by_id == {r.question_id: deterministic(r) for r in reference.read_questions()}
    resumed, uninterrupted = killed.read_result(), reference.read_result()
    assert resumed.status == uninterrupted.status == "finished"
    assert resumed.counts == uninterrupted.counts and resumed.counts is not None and resumed.counts.failed == 0
    assert resumed.aggregates == uninterrupted.aggregates  # intervals included
    assert resumed.memory is not None and uninterrupted.memory is not None
    assert resumed.memory.stats == uninterrupted.memory.stats
    dumps = sorted((reference.path / "memory").glob("*.jsonl"))
    assert len(dumps) == len(samples)
    assert all((killed.path / "memory" / dump.name).read_text() == dump.read_text() for dump in dumps)
    # No request the uninterrupted run did not make. A kill loses the cache entries of its event loop's last turn
    # (they are committed at the next, `harness.llm.cache`): their questions, if recorded, are not asked again.
    lost = keys_cached(whole_cache) - keys_cached(killed_cache)
    assert keys_cached(killed_cache) <= keys_cached(whole_cache)
    assert len(lost) <= KILLS * CONCURRENCY, f"{len(lost)} cache entries lost to {KILLS} kills"
    assert sum(n for phase, n in kills.phases.items() if "ingestion" in phase) >= min_ingestion_kills
    assert kills.calls[-1] >= calls // 2, "the kills did not reach the second half of the run"


def test_aggregates_do_not_depend_on_the_order_records_were_written(tmp_path):
    scores = {f"q{i}": float(i % 3 == 0) for i in range(24)}
    written = summarize(RunDir(write_run(tmp_path / "a", scores)), make_spec())
    reversed_ = summarize(RunDir(write_run(tmp_path / "b", dict(reversed(scores.items())))), make_spec())
    assert written["aggregates"] == reversed_["aggregates"]
