"""Benchmark: whole runs against the loopback OpenAI-compatible server, as a user runs them against vLLM.

Each (system, setting) is one `harness.runner.run` on real LoCoMo with every role on a loopback server
(`harness.loopback`, in a process of its own) that answers each call after a fixed latency with the scripted,
valid replies of `bench/ingestion_server.py` (extraction facts and manager ADDs for `memr1`, a short answer
otherwise). A setting `LATENCYxCONCURRENCY` (`50x32`: 50 ms per call, 32 calls in flight per role) gives:

- throughput: the concurrency bound (calls x latency / concurrency) over the server's busy span (first call's
  start to last call's end); 1.0 = the run kept every slot busy. For `memr1` the critical-path bound of
  `bench/ingestion_server.py` is reported too (its update chains cannot use every slot);
- harness CPU per call: `time.process_time()` of the harness process over the run / LLM calls (the run's fixed
  costs, task loading and `run.json`, included; imports are paid by a small warm-up run first);
  `--mock-reference` adds the same full-context run on the `mock` backend (no HTTP), as the reference measured
  in the same process;
- warm cache (`--warm`): the full-context run of the last setting again, under a new run id, on the cache the
  first run filled (same server, so the same cache keys): its wall time, and that it made no call;
- start-up (`--startup`): `python -m harness ls` and `run --help`, best of 3, beside `python -c pass`.

`full-context` and `rag` (BM25, so no embedding model's CPU enters) answer `--questions` LoCoMo questions
(0: all 1,986, adversarial included); `memr1` ingests `--memr1-histories` whole test histories and answers
`--memr1-questions` questions of each (hashing embedder).

    python bench/loopback.py --questions 0 --warm --startup --mock-reference

Writes the figures as JSON to `--out` (default bench/out/loopback.json) and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ingestion_server import ScriptedReplies, bound, history_chains, print_columns, subset_file

from harness.loopback import LoopbackProcess, LoopbackServer
from harness.results import RunDir
from harness.runner import RunConfig, run
from harness.task import DataOptions

ROLES = ("model", "memory", "manager", "answer")


@dataclass(frozen=True)
class Setting:
    latency_s: float
    concurrency: int

    @classmethod
    def parse(cls, text: str) -> Setting:
        latency_ms, _, concurrency = text.partition("x")
        return cls(float(latency_ms) / 1000, int(concurrency))

    def __str__(self) -> str:
        return f"{self.latency_s * 1000:g}x{self.concurrency}"


def run_config(system: str, spec: str, setting: Setting, args: argparse.Namespace, folder: Path) -> RunConfig:
    """The run of `system` with every role on `spec`; the cache and snapshots live in `folder` (a fresh cache per
    setting, so every call of the first run reaches the server)."""
    if system == "memr1":
        data_file = subset_file(args.data_dir, args.memr1_histories, args.memr1_questions, folder)
        task_options, data, limit = {"split": "test"}, DataOptions(data_file=str(data_file)), None
    else:
        task_options = {"include_adversarial": "true"}
        data, limit = DataOptions(data_dir=str(args.data_dir)), args.questions or None
    return RunConfig(
        task="locomo",
        system=system,
        task_options=task_options,
        system_options={"retriever": "bm25"} if system == "rag" else {},
        data=data,
        roles=dict.fromkeys(ROLES, spec),
        embedder="hashing",
        metrics=["f1_locomo"],
        limit=limit,
        output_dir=folder / "runs",
        run_id="cold",
        cache_path=folder / "calls.sqlite",
        snapshot_dir=folder / "snapshots",
        max_retries=0,  # a refusal or a stopped server ends the run instead of retrying
        max_concurrency=setting.concurrency,
    )


async def timed_run(config: RunConfig) -> tuple[float, float, int]:
    """Wall seconds, harness CPU seconds and questions answered of one run."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = await run(config)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if result.counts is None or result.counts.failed:
        raise RuntimeError(f"{config.system}: the run did not answer every question ({result.counts})")
    return wall, cpu, result.counts.answered


def bench_setting(system: str, setting: Setting, args: argparse.Namespace, warm: bool) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        server = LoopbackServer(ScriptedReplies(), latency_s=setting.latency_s, max_requests=args.max_requests)
        with LoopbackProcess(server) as serving:
            config = run_config(system, f"openai:loopback@{serving.base_url}", setting, args, folder)
            wall, cpu, questions = asyncio.run(timed_run(config))
            warm_figures = asyncio.run(warm_rerun(config)) if warm else None
        assert serving.summary is not None, "the server process sent no records"
        run_dir = RunDir(config.output_dir / "locomo" / system / "cold")
        served = serving.summary
        calls = len(served.served())
        busy = served.busy_span_s()
        concurrency_bound = calls * setting.latency_s / setting.concurrency
        figures: dict[str, object] = {
            "questions": questions,
            "llm_calls": calls,
            "calls_by_stage": {stage: u.calls for stage, u in run_dir.read_result().usage.items()},
            "peak_in_flight": served.peak_in_flight,
            "busy_span_s": round(busy, 3),
            "concurrency_bound_s": round(concurrency_bound, 3),
            "throughput": round(concurrency_bound / busy, 3) if busy else None,
            "wall_s": round(wall, 2),
            "cpu_ms_per_call": round(cpu / calls * 1000, 3) if calls else None,
        }
        if system == "memr1":
            rows, _ = history_chains(run_dir, setting.latency_s)
            critical = bound([float(str(r["chain_s"])) for r in rows], config.max_samples or 4)
            figures["critical_path_bound_s"] = round(critical, 3)
            figures["critical_path_over_busy"] = round(critical / busy, 3) if busy else None
        if warm_figures is not None:
            figures["warm"] = warm_figures
        return figures


async def warm_rerun(config: RunConfig) -> dict[str, object]:
    """The same run under a new id on the cache the first one filled: every call must be a hit."""
    rerun = config.model_copy(update={"run_id": "warm"})
    wall, cpu, questions = await timed_run(rerun)
    usage = RunDir(rerun.output_dir / rerun.task / rerun.system / "warm").read_result().usage
    calls = sum(u.calls for u in usage.values())
    hits = sum(u.cache_hits for u in usage.values())
    return {"questions": questions, "wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "calls": calls, "hits": hits}


def mock_reference(args: argparse.Namespace, questions: int | None = None) -> dict[str, object]:
    """Full-context on the `mock` backend: the harness's CPU per call without HTTP or a server."""
    with tempfile.TemporaryDirectory() as tmp:
        config = run_config("full-context", "mock", Setting(0.0, 32), args, Path(tmp))
        if questions is not None:
            config = config.model_copy(update={"limit": questions})
        wall, cpu, questions = asyncio.run(timed_run(config))
    return {"questions": questions, "wall_s": round(wall, 2), "cpu_ms_per_call": round(cpu / questions * 1000, 3)}


def startup() -> dict[str, float]:
    """Best of 3 wall seconds of each command in a fresh interpreter."""
    commands = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "harness ls": [sys.executable, "-m", "harness", "ls"],
        "harness run --help": [sys.executable, "-m", "harness", "run", "--help"],
    }
    figures = {}
    for name, command in commands.items():
        times = []
        for _ in range(3):
            started = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True)
            times.append(time.perf_counter() - started)
        figures[name] = round(min(times), 3)
    return figures


def print_table(figures: dict[str, dict[str, object]]) -> None:
    columns = [
        ("questions", "questions"),
        ("calls", "llm_calls"),
        ("peak", "peak_in_flight"),
        ("busy s", "busy_span_s"),
        ("bound s", "concurrency_bound_s"),
        ("bound/busy", "throughput"),
        ("crit/busy", "critical_path_over_busy"),
        ("cpu ms/call", "cpu_ms_per_call"),
        ("wall s", "wall_s"),
    ]
    print_columns(figures, columns, "run", name_width=22, width=12)
    for name, row in figures.items():
        if "warm" in row:
            print(f"{name}: warm-cache re-run {row['warm']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("HARNESS_DATA_DIR") or "../shared/data"))
    parser.add_argument("--systems", nargs="+", default=["full-context", "rag", "memr1"])
    parser.add_argument("--settings", nargs="+", type=Setting.parse, default=["200x8", "500x64", "50x32"])
    parser.add_argument("--questions", type=int, default=0, help="full-context and rag (0: all 1,986)")
    parser.add_argument("--memr1-histories", type=int, default=1)
    parser.add_argument("--memr1-questions", type=int, default=20, help="per history")
    parser.add_argument("--warm", action="store_true", help="re-run full-context of the last setting warm")
    parser.add_argument("--mock-reference", action="store_true", help="full-context on the mock backend too")
    parser.add_argument("--startup", action="store_true", help="time `ls` and `run --help`")
    parser.add_argument("--max-requests", type=int, default=100_000, help="per run; the server refuses more")
    parser.add_argument("--out", type=Path, default=Path("bench/out/loopback.json"))
    args = parser.parse_args()
    args.settings = [s if isinstance(s, Setting) else Setting.parse(s) for s in args.settings]

    mock_reference(args, questions=20)  # the imports and one-time work, before anything is measured
    figures: dict[str, dict[str, object]] = {}
    if args.mock_reference:
        figures["full-context mock"] = mock_reference(args)
    for system in args.systems:
        for setting in args.settings:
            warm = args.warm and system == "full-context" and setting == args.settings[-1]
            figures[f"{system} {setting}"] = bench_setting(system, setting, args, warm)
            print(f"{system} {setting}: {json.dumps(figures[f'{system} {setting}'])}", flush=True)
    extra = {"startup_s": startup()} if args.startup else {}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    setup = {**vars(args), "data_dir": str(args.data_dir), "out": str(args.out)}
    setup["settings"] = [str(s) for s in args.settings]
    args.out.write_text(json.dumps({"setup": setup, **figures, **extra}, indent=2))
    print_table(figures)
    if extra:
        print(f"start-up, best of 3: {extra['startup_s']}")


if __name__ == "__main__":
    main()
