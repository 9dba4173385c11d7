"""`python -m harness`: run, ls, describe, show.

Examples:
    python -m harness run --task locomo --system full-context --split test --limit 20
    python -m harness run --task longmemeval --variant oracle --system full-context --data-file FILE.json
    python -m harness run --resume results/locomo/full-context/20261122-190000-ab12cd
    python -m harness describe locomo --split test
    python -m harness show results/locomo/full-context/20261122-190000-ab12cd
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.table import Table

from harness.datasets import DataFileError
from harness.embeddings.base import DEFAULT_EMBEDDER_SPEC
from harness.llm.spec import DEFAULT_MODEL_SPEC
from harness.plugins import BACKENDS, EMBEDDERS, METRICS, SYSTEMS, TASKS
from harness.registry import UnknownNameError
from harness.report import make_console
from harness.task import DataOptions

EPILOG = """\
Model specs: PROVIDER:MODEL or PROVIDER:MODEL@BASE_URL, e.g. llamacpp:smollm2-135m (the embedded CPU default),
openai:gpt-4o-mini, openai:Qwen/Qwen2.5-7B-Instruct@http://127.0.0.1:8000/v1 (a vLLM or llama.cpp server),
litellm:anthropic/claude-3-5-haiku-latest, mock. Data: --data-file uses exactly that file (unchecked);
otherwise the official file name is looked for in --data-dir / $HARNESS_DATA_DIR, then the local cache,
then downloaded from its official location and checked against its pinned sha256."""


def _key_values(pairs: Sequence[str], flag: str) -> dict[str, str]:
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"{flag} expects KEY=VALUE, got {pair!r}")
        options[key.replace("-", "_")] = value
    return options


def _add_data_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--split", help="task split (LoCoMo: all [default], train, val, test)")
    parser.add_argument("--variant", help="task variant (LongMemEval: oracle [default], s, m)")
    parser.add_argument(
        "-T",
        "--task-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="task option, e.g. -T include_adversarial=true -T labels=mem0 (see `describe`)",
    )
    parser.add_argument("--data-file", help="use exactly this data file (a subset or local copy; not checksum-checked)")
    parser.add_argument("--data-dir", help="folder holding the official data files (default: $HARNESS_DATA_DIR)")


def _task_options(args: argparse.Namespace) -> dict[str, str]:
    options = _key_values(args.task_arg, "-T/--task-arg")
    if args.split:
        options["split"] = args.split
    if args.variant:
        options["variant"] = args.variant
    return options


def _data_options(args: argparse.Namespace) -> DataOptions:
    return DataOptions(data_file=args.data_file, data_dir=args.data_dir or os.environ.get("HARNESS_DATA_DIR"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="harness",
        description="Evaluate LLM agent memory.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser(
        "run",
        help="run a system on a task and score it",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("--task", help="task name (see `ls`)")
    run.add_argument("--system", help="memory system name (see `ls`)")
    run.add_argument(
        "-S",
        "--system-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="system option, e.g. -S max_context_tokens=4096",
    )
    _add_data_args(run)
    run.add_argument("--model", default=DEFAULT_MODEL_SPEC, help=f"the system's LLM (default: {DEFAULT_MODEL_SPEC})")
    run.add_argument(
        "--judge", help="LLM for the llm_judge metric; when given, llm_judge is added to the default metrics"
    )
    run.add_argument("--answer-model", help="LLM of the answering step (role `answer`; default: --model)")
    run.add_argument("--manager-model", help="LLM of memr1's Memory Manager (role `manager`; default: --model)")
    run.add_argument(
        "--role",
        action="append",
        default=[],
        metavar="ROLE=SPEC",
        help="any further LLM role a system documents, e.g. --role memory=openai:gpt-4o-mini",
    )
    run.add_argument(
        "--embedder",
        default=DEFAULT_EMBEDDER_SPEC,
        help=f"embedding model of retrieving systems (default: {DEFAULT_EMBEDDER_SPEC})",
    )
    run.add_argument("--metric", action="append", help="metric to compute (repeatable; default: the task's defaults)")
    run.add_argument("--limit", type=int, help="a seeded subset of N questions, stratified by question type")
    run.add_argument("--seed", type=int, default=0, help="seed of the subset and of sampled calls (default 0)")
    run.add_argument("--output", default="results", help="results root (default: results/)")
    run.add_argument("--run-id", help="name of the run directory (default: timestamp + config hash)")
    run.add_argument("--resume", metavar="RUN_DIR", help="continue a killed or failed run where it stopped")
    run.add_argument("--no-cache", action="store_true", help="do not read or write the LLM call cache")
    run.add_argument("--cache-path", help="sqlite file of the LLM call cache (default: ~/.cache/memory-harness/)")
    run.add_argument("--max-concurrency", type=int, default=8, help="LLM calls in flight per role (default 8)")
    run.add_argument(
        "--max-samples", type=int, help="histories processed at once (default: 1 on local engines, else 4)"
    )
    run.add_argument("--max-retries", type=int, default=3, help="retries of a transient LLM error (default 3)")

    commands.add_parser("ls", help="list tasks, systems, backends and metrics")

    describe = commands.add_parser("describe", help="count samples, sessions, turns and questions per type")
    describe.add_argument("task")
    _add_data_args(describe)

    show = commands.add_parser("show", help="print the per-type table of a run directory")
    show.add_argument("run_dir")
    return parser


def cmd_run(args: argparse.Namespace) -> int:
    from harness.report import print_run
    from harness.runner import RunConfig, config_of_run, run

    if args.resume:
        config = config_of_run(Path(args.resume))
    else:
        if not args.task or not args.system:
            raise SystemExit("run needs --task and --system (or --resume RUN_DIR)")
        roles = {"model": args.model, **_key_values(args.role, "--role")}
        for role, spec in (("answer", args.answer_model), ("manager", args.manager_model), ("judge", args.judge)):
            if spec:
                roles[role] = spec
        config = RunConfig(
            task=args.task,
            system=args.system,
            task_options=_task_options(args),
            system_options=_key_values(args.system_arg, "-S/--system-arg"),
            data=_data_options(args),
            roles=roles,
            embedder=args.embedder,
            metrics=args.metric,
            limit=args.limit,
            seed=args.seed,
            output_dir=Path(args.output),
            run_id=args.run_id,
        )
    config = config.model_copy(
        update={
            "use_cache": not args.no_cache,
            "cache_path": Path(args.cache_path) if args.cache_path else None,
            "max_concurrency": args.max_concurrency,
            "max_samples": args.max_samples,
            "max_retries": args.max_retries,
        }
    )
    result = asyncio.run(run(config, resume=bool(args.resume)))
    run_dir = Path(config.output_dir) / config.task / config.system / result.run_id
    print_run(result, str(run_dir))
    return 0 if result.counts is None or result.counts.failed == 0 else 3


def cmd_ls(_: argparse.Namespace) -> int:
    console = make_console()
    for title, registry in (
        ("tasks", TASKS),
        ("systems", SYSTEMS),
        ("backends", BACKENDS),
        ("embedders", EMBEDDERS),
        ("metrics", METRICS),
    ):
        table = Table(title=title, title_justify="left", show_header=False, box=None)
        for entry in registry.entries():
            table.add_row(f"  {entry.name}", entry.description)
        console.print(table)
    return 0


def cmd_describe(args: argparse.Namespace) -> int:
    from harness.describe import describe_table

    task = TASKS.get(args.task).load(_data_options(args), **_task_options(args))
    make_console().print(describe_table(task))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from harness.report import print_run
    from harness.results import RunDir
    from harness.runner import summarize

    run_dir = RunDir(Path(args.run_dir))
    result = run_dir.read_result()
    # Recomputed from the records, so a run still going (or killed) shows what it has finished so far.
    print_run(result.model_copy(update=summarize(run_dir, result.spec)), args.run_dir)
    return 0


COMMANDS = {"run": cmd_run, "ls": cmd_ls, "describe": cmd_describe, "show": cmd_show}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return COMMANDS[args.command](args)
    except (UnknownNameError, DataFileError, ValueError, FileNotFoundError, FileExistsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
