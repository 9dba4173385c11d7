"""Benchmark: how close `mem0` and `memr1` come to their latency bounds when every LLM call takes a fixed time.

All roles (model, memory, manager, answer) point at a loopback OpenAI-compatible server (`harness.loopback`)
that answers each call after `--latency-ms` with a scripted, valid reply: one fact per extraction call
(`"<speaker> said: <first words of their turn>"`), an ADD of that fact per manager call, a short answer
otherwise. The runs are the harness's own (`harness.runner.run`) on real LoCoMo: the first `--histories`
conversations of the Memory-R1 test split, in full, with their first `--questions` questions each.

Reported per system, from the server's own records and the files the run writes:

- calls: LLM calls served (by stage, from run.json: ingestion / answer), and peak calls in flight;
- busy span: from the first call's start to the last call's end, on the server's monotonic clock;
- concurrency bound = calls x latency / max_concurrency (the run cannot be faster with that many slots;
  each role has its own `max_concurrency` slots, so with roles working at once the true cap is looser);
- critical-path bound: per history, latency x (1 extraction + the longest speaker's manager calls + 1 answer):
  a speaker's manager calls depend on each other (each sees the bank the previous one left), the extraction
  calls of a history can all run ahead, the answers need the finished bank; histories run `max_samples` at a
  time, so the bound is max(longest history, sum over histories / max_samples). Per-speaker manager calls are
  the speaker's memories when every manager call added one (the scripted replies make it so; checked against
  `manager_calls` in `ingest.jsonl`), else estimated as manager_calls / 2 (said so in the output);
- serial chain: latency x (sessions + all manager calls + 1 answer) per history, the bound of an ingestion
  that runs both speakers' updates in one chain, session by session, after one extraction wave per session
  (the harness before the concurrent chains). It is a reference, not a bound on today's code: above 1.0 its
  ratio says the run overlapped what that ingestion would have chained;
- bound / busy span for each (1.0 = at the bound). `--embedder hashing` takes the embedding model's CPU
  time out of the span, leaving the LLM-call schedule and the harness's own overhead per call.

    python bench/ingestion_server.py --histories 1 --latency-ms 20

Writes the figures as JSON to `--out` (default bench/out/ingestion_server.json) and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from collections import Counter
from pathlib import Path

from harness.embeddings.build import DEFAULT_EMBEDDER_SPEC
from harness.llm import Message
from harness.loopback import JSONObject, LoopbackProcess, LoopbackServer, ServedSummary
from harness.results import RunDir
from harness.runner import RunConfig, run
from harness.task import DataOptions
from systems.memory_ops import EXTRACTION_INSTRUCTIONS, MANAGER_INSTRUCTIONS

ROLES = ("model", "memory", "manager", "answer")
MEMORY_R1_NOT_TEST = ("conv-26", "conv-30")
ADVERSARIAL = 5


def subset_file(data_dir: Path, histories: int, questions: int, folder: Path) -> Path:
    """A locomo10.json with the first `histories` test conversations, each with its first `questions`
    non-adversarial questions (so every history is ingested, whatever the question count)."""
    raw = json.loads((data_dir / "locomo" / "locomo10.json").read_text())
    chosen = [c for c in raw if c["sample_id"] not in MEMORY_R1_NOT_TEST][:histories]
    for conversation in chosen:
        conversation["qa"] = [q for q in conversation["qa"] if q.get("category") != ADVERSARIAL][:questions]
    path = folder / "locomo10.json"
    path.write_text(json.dumps(chosen))
    return path


class ScriptedReplies:
    """The responder: valid extraction and manager replies, a short answer otherwise."""

    def __call__(self, messages: list[Message], schema: JSONObject | None) -> str:
        system = next((m["content"] for m in messages if m["role"] == "system"), "")
        user = messages[-1]["content"]
        if system == EXTRACTION_INSTRUCTIONS:
            return json.dumps({"facts": [extraction_fact(user)]})
        if system == MANAGER_INSTRUCTIONS:
            fact = json.loads(user.split("New facts:\n", 1)[1].split("\n\n", 1)[0])[0]
            return json.dumps({"memory": [{"id": "new", "text": fact, "event": "ADD", "old_memory": ""}]})
        return "**Answer:** unknown"


def extraction_fact(user: str) -> str:
    """`"<speaker> said: <first words of the speaker's last turn in the snippet>"`."""
    transcript, _, tail = user.partition("\n\nFacts about ")
    speaker = tail.removesuffix(" (JSON):")
    lines = transcript.split("Conversation:\n", 1)[-1].splitlines()
    own = [line for line in lines if line.startswith(f"{speaker}: ")] or lines
    words = own[-1].split(": ", 1)[-1].split()[:8] if own else []
    return f"{speaker} said: {' '.join(words)}"


def history_chains(run_dir: RunDir, latency_s: float) -> tuple[list[dict[str, object]], bool]:
    """Per history: manager calls, the longest speaker's share, sessions, and the two chains in seconds;
    and whether every per-speaker count is exact (else some are manager_calls / 2)."""
    exact = True
    rows = []
    sessions = session_counts(run_dir)
    for ingest in {i.sample_id: i for i in run_dir.read_ingests()}.values():
        manager_calls = ingest.stats.get("manager_calls", 0)
        memory_file = run_dir.path / "memory" / f"{ingest.sample_id.replace('/', '_')}.jsonl"
        lines = memory_file.read_text().splitlines() if memory_file.exists() else []
        by_speaker = Counter(json.loads(line).get("speaker") for line in lines)
        if ingest.stats.get("ADD") == manager_calls == sum(by_speaker.values()) and by_speaker:
            longest = float(max(by_speaker.values()))
        else:
            exact, longest = False, manager_calls / 2
        n_sessions = sessions.get(ingest.sample_id, 1)
        rows.append(
            {
                "sample": ingest.sample_id,
                "sessions": n_sessions,
                "manager_calls": manager_calls,
                "longest_speaker_manager_calls": longest,
                "chain_s": latency_s * (1 + longest + 1),
                "serial_chain_s": latency_s * (n_sessions + manager_calls + 1),
                "error": ingest.error,
            }
        )
    return rows, exact


def session_counts(run_dir: RunDir) -> dict[str, int]:
    """Sessions per history, from the data file the run read (recorded in run.json)."""
    result = run_dir.read_result()
    data_file = Path(result.spec.data_options.data_file or "")
    raw = json.loads(data_file.read_text()) if data_file.is_file() else []
    return {
        c["sample_id"]: sum(1 for k in c["conversation"] if k.startswith("session_") and k[8:].isdigit()) for c in raw
    }


def bound(chains: list[float], max_samples: int) -> float:
    return max(max(chains, default=0.0), sum(chains) / max_samples)


async def bench_system(system: str, args: argparse.Namespace, data_file: Path, folder: Path) -> dict[str, object]:
    latency_s = args.latency_ms / 1000
    replies = ScriptedReplies()
    server = LoopbackServer(
        replies,
        latency_s=latency_s,
        jitter_s=args.jitter_ms / 1000,
        max_requests=args.max_requests,
        max_seconds=args.max_seconds,
    )
    serving = LoopbackProcess(server) if args.server_process else server
    with serving:
        spec = f"openai:loopback@{serving.base_url}"
        config = RunConfig(
            task="locomo",
            system=system,
            task_options={"split": "test"},
            data=DataOptions(data_file=str(data_file)),
            roles=dict.fromkeys(ROLES, spec),
            embedder=args.embedder,
            metrics=["f1"],
            output_dir=folder / "runs",
            run_id=system,
            use_cache=False,
            max_retries=0,  # a refusal (503) or a self-stopped server ends the run instead of retrying
            max_concurrency=args.max_concurrency,
            max_samples=args.max_samples,
        )
        started = time.perf_counter()
        result = await run(config)
        wall_s = time.perf_counter() - started
    run_dir = RunDir(folder / "runs" / "locomo" / system / system)
    rows, exact = history_chains(run_dir, latency_s)
    max_samples = args.max_samples or 4  # the runner's default for servers
    if isinstance(serving, LoopbackProcess):
        assert serving.summary is not None, "the server process sent no records"
        served = serving.summary
    else:
        served = ServedSummary(server.requests, server.peak_in_flight)
    calls = len(served.served())
    busy = served.busy_span_s()
    concurrency_bound = calls * latency_s / args.max_concurrency
    critical = bound([float(str(r["chain_s"])) for r in rows], max_samples)
    serial = bound([float(str(r["serial_chain_s"])) for r in rows], max_samples)
    return {
        "wall_s": round(wall_s, 2),
        "status": result.status,
        "failed_questions": result.counts.failed if result.counts else None,
        "llm_calls": calls,
        "calls_by_stage": {stage: u.calls for stage, u in run_dir.read_result().usage.items()},
        "refused": sum(1 for r in served.requests if r.status == 503),
        "peak_in_flight": served.peak_in_flight,
        "busy_span_s": round(busy, 3),
        "concurrency_bound_s": round(concurrency_bound, 3),
        "critical_path_bound_s": round(critical, 3),
        "critical_path_exact": exact,
        "serial_chain_s": round(serial, 3),
        "concurrency_bound_over_busy": round(concurrency_bound / busy, 3) if busy else None,
        "critical_path_over_busy": round(critical / busy, 3) if busy else None,
        "serial_chain_over_busy": round(serial / busy, 3) if busy else None,
        "histories": rows,
    }


def print_columns(
    figures: dict[str, dict[str, object]], columns: list[tuple[str, str]], first: str, name_width: int, width: int
) -> None:
    """One row per run: its name, then each column's figure (blank where the run has none)."""
    print(f"{first:<{name_width}}" + "".join(f"{title:>{width}}" for title, _ in columns))
    for name, row in figures.items():
        print(f"{name:<{name_width}}" + "".join(f"{row.get(key, '')!s:>{width}}" for _, key in columns))


def print_table(figures: dict[str, dict[str, object]]) -> None:
    columns = [
        ("calls", "llm_calls"),
        ("peak", "peak_in_flight"),
        ("busy s", "busy_span_s"),
        ("conc. bound s", "concurrency_bound_s"),
        ("crit. path s", "critical_path_bound_s"),
        ("serial s", "serial_chain_s"),
        ("conc/busy", "concurrency_bound_over_busy"),
        ("crit/busy", "critical_path_over_busy"),
        ("serial/busy", "serial_chain_over_busy"),
        ("wall s", "wall_s"),
    ]
    print_columns(figures, columns, "system", name_width=8, width=15)
    for system, row in figures.items():
        print(f"{system}: calls by stage {row['calls_by_stage']}, refused {row['refused']}, status {row['status']}")
        if not row["critical_path_exact"]:
            print(f"{system}: per-speaker manager calls unknown for some history: estimated as manager_calls / 2")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_data = os.environ.get("HARNESS_DATA_DIR") or "../shared/data"
    parser.add_argument("--data-dir", type=Path, default=Path(default_data))
    parser.add_argument("--systems", nargs="+", default=["mem0", "memr1"])
    parser.add_argument("--histories", type=int, default=2)
    parser.add_argument("--questions", type=int, default=2, help="questions per history")
    parser.add_argument("--latency-ms", type=float, default=100.0)
    parser.add_argument("--jitter-ms", type=float, default=0.0)
    parser.add_argument("--max-concurrency", type=int, default=8)
    parser.add_argument("--max-samples", type=int, default=None, help="histories at once (runner default: 4)")
    parser.add_argument("--embedder", default=DEFAULT_EMBEDDER_SPEC)
    parser.add_argument("--max-requests", type=int, default=20_000, help="per system; the server refuses more")
    parser.add_argument("--max-seconds", type=float, default=1800.0, help="per system; the server stops after")
    parser.add_argument(
        "--server-process",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run the server in a process of its own (default), not on a thread sharing the harness's GIL",
    )
    parser.add_argument("--out", type=Path, default=Path("bench/out/ingestion_server.json"))
    args = parser.parse_args()

    figures: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        data_file = subset_file(args.data_dir, args.histories, args.questions, folder)
        for system in args.systems:
            figures[system] = await bench_system(system, args, data_file, folder)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    setup = {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()}
    args.out.write_text(json.dumps({"setup": setup, **figures}, indent=2))
    print_table(figures)


if __name__ == "__main__":
    asyncio.run(main())
