"""`python -m harness`: run, ls, describe, show, score, compare, report, leaderboard, regress, calibrate-judge.

Examples:
    python -m harness run --task locomo --system full-context --split test --limit 20
    python -m harness run --task longmemeval --variant oracle --system full-context --data-file FILE.json
    python -m harness run --resume results/locomo/full-context/20261122-190000-ab12cd
    python -m harness describe locomo --split test
    python -m harness show results/locomo/full-context/20261122-190000-ab12cd
    python -m harness score RUN_DIR --judge openai:gpt-4o-mini --judge-repeats 3
    python -m harness score --task locomo --predictions zep_locomo_grades.json --system-name zep
    python -m harness compare RUN_A RUN_B --format md
    python -m harness report RUN_A RUN_B --format html --output report.html
    python -m harness leaderboard results/locomo --metric f1_locomo --format md
    python -m harness regress --baseline results/baselines/NAME --candidate RUN_DIR
    python -m harness calibrate-judge --task locomo --judge openai:gpt-4o-mini --limit 100
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from rich.table import Table

from harness.datasets import DataFileError
from harness.embeddings.base import DEFAULT_EMBEDDER_SPEC
from harness.llm.spec import DEFAULT_MODEL_SPEC
from harness.plugins import BACKENDS, EMBEDDERS, METRICS, SYSTEMS, TASKS
from harness.registry import UnknownNameError
from harness.tables import ReportTable, make_console, to_rich
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


def _at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number >= `minimum` (a count of 0 would hang a semaphore or run nothing)."""

    def parse(text: str) -> int:
        if not text.strip().isdecimal() or int(text) < minimum:
            raise argparse.ArgumentTypeError(f"expected a whole number of at least {minimum}, got {text!r}")
        return int(text)

    return parse


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
    run.add_argument("--model", help=f"the system's LLM (default: {DEFAULT_MODEL_SPEC})")
    _add_judge_args(run)
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
    run.add_argument(
        "--metric", action="append", help="metric to compute, e.g. llm_judge_strict (repeatable; default: the task's)"
    )
    run.add_argument("--limit", type=_at_least(1), help="a seeded subset of N questions, stratified by question type")
    run.add_argument("--seed", type=int, default=0, help="seed of the subset and of sampled calls (default 0)")
    run.add_argument("--output", default="results", help="results root (default: results/)")
    run.add_argument("--run-id", help="name of the run directory (default: timestamp + config hash)")
    run.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue a killed or failed run where it stopped; a role option (--model, --judge, --role, ...) may "
        "name the role's server at a new URL (same provider and model), recorded as an endpoint change",
    )
    _add_call_args(run)
    run.add_argument(
        "--max-samples", type=_at_least(1), help="histories processed at once (default: 1 on local engines, else 4)"
    )

    commands.add_parser("ls", help="list tasks, systems, backends and metrics")

    describe = commands.add_parser("describe", help="count samples, sessions, turns and questions per type")
    describe.add_argument("task")
    _add_data_args(describe)

    show = commands.add_parser("show", help="print the per-type table of a run directory")
    show.add_argument("run_dir")

    _add_score_parser(commands)
    _add_compare_parsers(commands)
    _add_leaderboard_parser(commands)
    _add_view_parser(commands)
    _add_calibrate_parser(commands)
    return parser


def _add_calibrate_parser(commands: argparse._SubParsersAction) -> None:
    calibrate = commands.add_parser(
        "calibrate-judge",
        help="false-acceptance and false-rejection rates of a judge on answers known right or wrong",
    )
    calibrate.add_argument("--task", help="task whose questions make the labelled set")
    calibrate.add_argument(
        "--reference",
        metavar="RUN_DIR",
        help="instead: agreement with the verdicts a run already holds (published_judge, e.g. an imported Zep run)",
    )
    _add_data_args(calibrate)
    calibrate.add_argument("--judge", required=True, metavar="SPEC", help="the judge LLM, e.g. openai:gpt-4o-mini")
    calibrate.add_argument("--limit", type=_at_least(1), help="a seeded, type-stratified subset of N questions")
    calibrate.add_argument("--seed", type=int, default=0, help="seed of the subset and the wrong answers (default 0)")
    calibrate.add_argument("--no-cache", action="store_true", help="do not read or write the LLM call cache")
    calibrate.add_argument("--max-concurrency", type=_at_least(1), default=8, help="judge calls in flight (default 8)")
    calibrate.add_argument("--format", choices=["console", "md", "csv", "latex", "html"], default="console")
    calibrate.add_argument("--output", help="write the table to this file instead of printing it")
    calibrate.add_argument("--json", metavar="FILE", help="also write the report, every verdict included, as JSON")


def _add_judge_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--judge",
        action="append",
        default=[],
        metavar="SPEC",
        help="judge LLM (repeatable: roles judge, judge_2, ...); adds llm_judge, llm_judge@judge_2, ... to the metrics",
    )
    parser.add_argument("--judge-repeats", type=_at_least(1), help="times each judge grades each answer (seeds 0..N-1)")
    parser.add_argument("--judge-temperature", type=float, help="judge sampling temperature (default: the prompt's, 0)")


def _add_call_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-cache", action="store_true", help="do not read or write the LLM call cache")
    parser.add_argument("--cache-path", help="sqlite file of the LLM call cache (default: ~/.cache/memory-harness/)")
    parser.add_argument(
        "--max-concurrency", type=_at_least(1), default=8, help="LLM calls in flight per role (default 8)"
    )
    parser.add_argument(
        "--max-retries", type=_at_least(0), default=3, help="retries of a transient LLM error (default 3)"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="give up on an LLM request after this long and retry it (default: the backend's own limit, 120 s for "
        "openai and litellm, which also applies)",
    )


def _add_score_parser(commands: argparse._SubParsersAction) -> None:
    score = commands.add_parser(
        "score",
        help="re-score a run directory in place, or score a predictions file made elsewhere as a new run",
        epilog="Predictions: LongMemEval JSONL {question_id, hypothesis}; Mem0's per-conversation JSON; Zep's LoCoMo "
        "JSON. Unmatched, ambiguous and duplicate rows and unanswered questions are reported.",
    )
    score.add_argument("run_dir", nargs="?", help="the run to re-score (omit with --predictions)")
    score.add_argument("--task", help="with --predictions: the task the answers are for")
    score.add_argument("--predictions", help="a predictions file made elsewhere")
    score.add_argument("--format", choices=["auto", "jsonl", "mem0", "zep"], default="auto", help="its layout")
    score.add_argument("--system-name", default="imported", help="name the imported run is filed under")
    score.add_argument("--output", default="results", help="results root for an imported run (default: results/)")
    score.add_argument("--run-id", help="name of the imported run's directory")
    _add_data_args(score)
    score.add_argument("--metric", action="append", help="metric to compute (repeatable)")
    _add_judge_args(score)
    _add_call_args(score)


def _add_compare_parsers(commands: argparse._SubParsersAction) -> None:
    formats = ["console", "md", "csv", "latex", "html"]
    compare = commands.add_parser("compare", help="paired comparison of runs on the questions they share")
    compare.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="two or more runs; the first is the reference")
    compare.add_argument("--metric", help="default: llm_judge when every run has it, else the first shared metric")
    compare.add_argument("--test", choices=["permutation", "bootstrap"], default="permutation", help="paired test")
    compare.add_argument("--resamples", type=_at_least(1), default=10_000, help="resamples of the test (default 10000)")
    compare.add_argument("--seed", type=int, default=0, help="seed of the resampling (default 0)")
    compare.add_argument("--format", choices=formats, default="console")
    compare.add_argument("--output", help="write the table to this file instead of printing it")

    report = commands.add_parser("report", help="tables of one or more runs as md, csv, LaTeX or HTML, and a chart")
    report.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    report.add_argument("--metric", help="the metric of a several-run table and of the chart")
    report.add_argument("--format", choices=formats, default="md")
    report.add_argument("--output", help="write the report to this file instead of printing it")
    report.add_argument("--chart", help="also write a per-type bar chart with 95%% intervals to this PNG")

    regress = commands.add_parser(
        "regress",
        help="fail (exit 1) when a candidate run is significantly worse than a baseline (or, with --expect-better, "
        "not significantly better)",
        epilog="A cell (overall or a question type) fails when it drops by more than --max-drop points (x100) and "
        "a one-sided paired permutation test gives p < --alpha.",
    )
    regress.add_argument("--baseline", required=True, help="baseline run directory (e.g. results/baselines/NAME)")
    regress.add_argument("--candidate", required=True, help="candidate run directory")
    regress.add_argument("--metric", help="default: llm_judge when both runs have it, else the first shared metric")
    regress.add_argument("--max-drop", type=float, default=1.0, help="tolerated drop in points x100 (default 1.0)")
    regress.add_argument("--alpha", type=float, default=0.05, help="significance level (default 0.05)")
    regress.add_argument("--seed", type=int, default=0, help="seed of the resampling (default 0)")
    regress.add_argument(
        "--allow-missing", action="store_true", help="do not fail when the candidate lacks baseline questions"
    )
    regress.add_argument(
        "--expect-better",
        action="store_true",
        help="also fail unless the candidate is significantly better overall (one-sided paired permutation test, "
        "p < --alpha): for a training run that must help",
    )
    regress.add_argument("--format", choices=formats, default="console")


def _add_view_parser(commands: argparse._SubParsersAction) -> None:
    view = commands.add_parser(
        "view", help="write a static site for reading runs question by question (opens from disk, no server)"
    )
    view.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories, finished or partial")
    view.add_argument("--output", default="view", help="folder of the site (default: view/)")
    view.add_argument("--serve", action="store_true", help="then serve it on 127.0.0.1 until interrupted")
    view.add_argument("--port", type=int, default=8000, help="port of --serve (default 8000; 0: any free one)")


def _add_leaderboard_parser(commands: argparse._SubParsersAction) -> None:
    leaderboard = commands.add_parser(
        "leaderboard",
        help="rank many runs (finished or partial): overall and per question type, mean [95%% interval] (n)",
    )
    leaderboard.add_argument("dirs", nargs="+", metavar="DIR", help="run directories, or folders holding them")
    leaderboard.add_argument("--metric", help="default: llm_judge when every run has it, else the first shared metric")
    leaderboard.add_argument("--format", choices=["console", "md", "csv", "latex", "html"], default="console")
    leaderboard.add_argument("--output", help="write the table to this file instead of printing it")


def cmd_run(args: argparse.Namespace) -> int:
    import asyncio

    from harness.report import print_run
    from harness.rescore import judge_role_specs
    from harness.runner import RunConfig, config_of_run, run

    # The roles named on the command line; on --resume they may move a role to a new server URL.
    named = {"model": args.model, "answer": args.answer_model, "manager": args.manager_model}
    roles = _key_values(args.role, "--role") | judge_role_specs(args.judge) | {r: s for r, s in named.items() if s}
    if args.resume:
        config = config_of_run(Path(args.resume))
        config = config.model_copy(update={"roles": config.roles | roles})
    else:
        if not args.task or not args.system:
            raise SystemExit("run needs --task and --system (or --resume RUN_DIR)")
        roles = {"model": DEFAULT_MODEL_SPEC} | roles
        config = RunConfig(
            task=args.task,
            system=args.system,
            task_options=_task_options(args),
            system_options=_key_values(args.system_arg, "-S/--system-arg"),
            data=_data_options(args),
            roles=roles,
            embedder=args.embedder,
            metrics=args.metric,
            judge_repeats=args.judge_repeats or 1,
            judge_temperature=args.judge_temperature,
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
            "timeout_s": args.timeout,
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


def cmd_score(args: argparse.Namespace) -> int:
    import asyncio

    from harness.report import print_run
    from harness.rescore import ImportConfig, ScoreOptions, import_predictions, rescore_run

    options = ScoreOptions(
        metrics=args.metric,
        judges=args.judge,
        judge_repeats=args.judge_repeats,
        judge_temperature=args.judge_temperature,
        use_cache=not args.no_cache,
        cache_path=Path(args.cache_path) if args.cache_path else None,
        max_retries=args.max_retries,
        max_concurrency=args.max_concurrency,
        timeout_s=args.timeout,
    )
    if args.predictions:
        if args.run_dir or not args.task:
            raise SystemExit("score --predictions FILE needs --task and no RUN_DIR")
        config = ImportConfig(
            task=args.task,
            task_options=_task_options(args),
            data=_data_options(args),
            predictions=Path(args.predictions),
            format=None if args.format == "auto" else args.format,
            system=args.system_name,
            output_dir=Path(args.output),
            run_id=args.run_id,
        )
        result, imported, run_dir = asyncio.run(import_predictions(config, options))
        for line in imported.summary():
            print(line, file=sys.stderr)
        print_run(result, str(run_dir))
        return 0
    if not args.run_dir:
        raise SystemExit("score needs a RUN_DIR to re-score, or --task T --predictions FILE")
    print_run(asyncio.run(rescore_run(Path(args.run_dir), options)), args.run_dir)
    return 0


def _emit(text: str, output: str | None) -> None:
    if output:
        Path(output).write_text(text, encoding="utf-8")
        print(f"wrote {output}", file=sys.stderr)
    else:
        sys.stdout.write(text)


def _show_table(table: ReportTable, fmt: str, output: str | None) -> None:
    if fmt == "console" and not output:
        console = make_console()
        console.print(to_rich(table))
        for note in table.notes:
            console.print(note, highlight=False, markup=False)
        return
    from harness.export import render

    _emit(render(table, "md" if fmt == "console" else fmt), output)


def cmd_compare(args: argparse.Namespace) -> int:
    from harness.compare import compare_runs, comparison_table
    from harness.decomposition import runs_decomposition_table

    run_dirs = [Path(p) for p in args.run_dirs]
    comparison = compare_runs(run_dirs, args.metric, seed=args.seed, test=args.test, resamples=args.resamples)
    decomposition = runs_decomposition_table(run_dirs, comparison.metric)
    _show_tables([comparison_table(comparison), *([] if decomposition is None else [decomposition])], args)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from harness.decomposition import runs_decomposition_table
    from harness.reporting import (
        abstention_report_table,
        chart,
        html_report,
        read_results,
        score_report_table,
        usage_report_table,
    )

    results = read_results(args.run_dirs)
    if args.chart:
        print(f"wrote {chart(results, args.metric, Path(args.chart))}", file=sys.stderr)
    if args.format == "html":
        _emit(html_report(results, args.metric), args.output)
        return 0
    optional = [
        abstention_report_table(results),
        runs_decomposition_table([Path(d) for d in args.run_dirs], args.metric),
    ]
    tables = [
        score_report_table(results, args.metric),
        *(table for table in optional if table is not None),
        *(usage_report_table(r) for r in results if r.usage),
    ]
    _show_tables(tables, args)
    return 0


def _show_tables(tables: Sequence[ReportTable], args: argparse.Namespace) -> None:
    """Tables one after the other on the console, or rendered together in `args.format` to `args.output`."""
    from harness.export import render

    if args.format == "console" and not args.output:
        for table in tables:
            _show_table(table, "console", None)
        return
    fmt = "md" if args.format == "console" else args.format
    separator = "\n" if fmt == "csv" else "\n\n"
    _emit(separator.join(render(table, fmt) for table in tables), args.output)


def cmd_view(args: argparse.Namespace) -> int:
    from harness.viewer import build_site, serve

    index = build_site([Path(d) for d in args.run_dirs], Path(args.output))
    print(f"wrote {index}", file=sys.stderr)
    if args.serve:
        serve(index.parent, args.port)
    return 0


def cmd_leaderboard(args: argparse.Namespace) -> int:
    try:
        from harness.leaderboard import leaderboard_table
    except ImportError as error:  # pandas missing: the message says which extra to install
        print(f"error: {error}", file=sys.stderr)
        return 2
    _show_table(leaderboard_table(args.dirs, args.metric), args.format, args.output)
    return 0


def cmd_calibrate_judge(args: argparse.Namespace) -> int:
    import asyncio

    from harness.calibration import (
        calibrate_against_reference,
        calibrate_judge,
        calibration_table,
        reference_table,
    )

    options = {
        "seed": args.seed,
        "limit": args.limit,
        "use_cache": not args.no_cache,
        "max_concurrency": args.max_concurrency,
    }
    if args.reference:
        reference = asyncio.run(calibrate_against_reference(Path(args.reference), args.judge, **options))
        _write_json_report(args.json, reference.model_dump_json(indent=2))
        _show_table(reference_table(reference), args.format, args.output)
        return 0
    if not args.task:
        raise SystemExit("calibrate-judge needs --task T (a labelled set from its data) or --reference RUN_DIR")
    task_options = _task_options(args)
    report = asyncio.run(calibrate_judge(args.task, args.judge, _data_options(args), task_options, **options))
    _write_json_report(args.json, report.model_dump_json(indent=2))
    _show_table(calibration_table(report), args.format, args.output)
    return 0


def _write_json_report(path: str | None, text: str) -> None:
    if path:
        Path(path).write_text(text + "\n", encoding="utf-8")
        print(f"wrote {path}", file=sys.stderr)


def cmd_regress(args: argparse.Namespace) -> int:
    from harness.compare import regress, regression_table

    report = regress(
        Path(args.baseline),
        Path(args.candidate),
        args.metric,
        max_drop=args.max_drop,
        alpha=args.alpha,
        seed=args.seed,
        allow_missing=args.allow_missing,
        expect_better=args.expect_better,
    )
    _show_table(regression_table(report), args.format, None)
    return 0 if report.passed else 1


COMMANDS = {
    "run": cmd_run,
    "ls": cmd_ls,
    "describe": cmd_describe,
    "show": cmd_show,
    "score": cmd_score,
    "compare": cmd_compare,
    "report": cmd_report,
    "leaderboard": cmd_leaderboard,
    "view": cmd_view,
    "calibrate-judge": cmd_calibrate_judge,
    "regress": cmd_regress,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    # huggingface_hub prints through a handler of its own: passing its records on as well printed each twice.
    logging.getLogger("huggingface_hub").propagate = False
    try:
        return COMMANDS[args.command](args)
    except (UnknownNameError, DataFileError, ValueError, FileNotFoundError, FileExistsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
