"""`harness view`: a static site for reading runs question by question, built from run directories alone.

The site is `index.html` + `app.js` (the page and its vanilla-JS renderer, package files copied as they are),
`data.js` (every run's spec, tables and question records as one JS assignment, because browsers block
`fetch()` of JSON from `file://`) and `histories/<run>/<n>.js` (each memory bank, loaded only when its page is
opened). The renderer writes data with `textContent` only, so a model reply holding HTML shows as text.
Finished and partial runs alike: a run without scores yet shows its records without the score table.
"""

from __future__ import annotations

import functools
import http.server
import json
import shutil
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from pydantic import ValidationError

from harness.inputs import InputError, read_text, validation_problems
from harness.metrics.evidence_recall import covered_ids
from harness.reporting import DEFAULT_METRIC, read_results, run_labels, score_report_table, usage_report_table
from harness.results import MEMORY_DIR, IngestRecord, QuestionRecord, RunDir, RunResult
from harness.tables import ReportTable
from harness.types import JSONScalar, MemoryItem, StageUsage

PAGE_FILES = ("index.html", "app.js")
JSON = dict[str, object]
_SPEC_FIELDS = {"task", "task_options", "system", "system_options", "embedder", "metrics", "limit", "seed"}
"""What the overview shows of a run's spec (roles come through its label)."""
_BANK_FIELDS = {"id", "text", "speaker", "source_turn_ids", "history"}


def verdict_metric(result: RunResult) -> str | None:
    """The metric a question's correct / wrong status is read from: the judge when the run has one, else the
    run's first metric."""
    metrics = result.spec.metrics
    judges = [m for m in metrics if m.startswith(DEFAULT_METRIC)]
    return judges[0] if judges else next(iter(metrics), None)


def question_status(record: QuestionRecord, metric: str | None) -> str:
    """`failed`, `unjudged` (no score in `metric`), `correct` (score >= 0.5) or `wrong`."""
    if record.failed:
        return "failed"
    score = record.scores.get(metric) if metric else None
    if score is None:
        return "unjudged"
    return "correct" if score >= 0.5 else "wrong"


def _usage(usage: StageUsage) -> JSON:
    return {
        stage: {
            "calls": u.calls,
            "prompt_tokens": u.prompt_tokens,
            "completion_tokens": u.completion_tokens,
            "latency_s": round(u.latency_s, 3),
            "cost_usd": round(u.cost_usd, 6),
        }
        for stage, u in usage.items()
    }


def _retrieved(items: list[MemoryItem] | None, evidence: list[str]) -> list[JSON] | None:
    """Items in rank order, each marked `hit` when its source turns cover a gold evidence id."""
    if items is None:
        return None
    gold = set(evidence)
    return [
        {
            "id": item.id,
            "text": item.text,
            "sources": item.source_turn_ids,
            "score": item.score,
            "hit": sorted(gold & covered_ids([item])),
        }
        for item in items
    ]


def _question(record: QuestionRecord, metric: str | None) -> JSON:
    prediction = record.prediction
    metadata: dict[str, JSONScalar | list[str]] = prediction.metadata if prediction else {}
    return {
        "id": record.question_id,
        "sample": record.sample_id,
        "type": record.question_type,
        "text": record.question,
        "gold": record.gold,
        "evidence": record.evidence,
        "metadata": record.question_metadata,
        "status": question_status(record, metric),
        "answer": prediction.answer if prediction else None,
        "raw": metadata.get("raw_answer"),
        "system_metadata": {k: v for k, v in metadata.items() if k != "raw_answer"},
        "retrieved": _retrieved(prediction.retrieved if prediction else None, record.evidence),
        "scores": record.scores,
        "details": record.score_details,
        "usage": {**_usage(prediction.usage if prediction else {}), **_judge_usage(record)},
        "latency_s": prediction.latency_s if prediction else None,
        "error": record.error,
    }


def _judge_usage(record: QuestionRecord) -> JSON:
    return _usage({"judge": record.judge_usage}) if record.judge_usage else {}


def _table(table: ReportTable) -> JSON:
    return {
        "title": table.title,
        "columns": table.columns,
        "rows": table.rows,
        "notes": table.notes,
        "emphasized": sorted(table.emphasized_rows),
    }


def _score_tables(results: Sequence[RunResult]) -> list[JSON]:
    """The report's score table, or none where it cannot be made: a run without scores yet (a partial run), or
    runs that share no metric."""
    try:
        return [_table(score_report_table(results))]
    except ValueError:
        return []


def _ingest(record: IngestRecord) -> JSON:
    return {
        "sample": record.sample_id,
        "items": record.memory_items,
        "words": record.memory_words,
        "usage": _usage(record.usage),
        "stats": record.stats,
        "error": record.error,
    }


def _bank_files(run_dir: Path) -> list[Path]:
    """The run's memory banks, one file per history, named by its sample id with "/" made "_"."""
    return sorted((run_dir / MEMORY_DIR).glob("*.jsonl"))


def _run_data(key: str, label: str, run_dir: Path, result: RunResult) -> JSON:
    folder = RunDir(run_dir)
    metric = verdict_metric(result)
    return {
        "key": key,
        "label": label,
        "dir": str(run_dir),
        "run_id": result.run_id,
        "status": result.status,
        "planned": result.planned_questions,
        "metric": metric,
        "spec": json.loads(result.spec.model_dump_json(include=_SPEC_FIELDS)),
        "tables": [*_score_tables([result]), *([_table(usage_report_table(result))] if result.usage else [])],
        "ingests": [_ingest(r) for r in folder.read_ingests()],
        "histories": [path.stem for path in _bank_files(run_dir)],
        "questions": [_question(r, metric) for r in folder.latest_questions()],
        "error": result.error,
    }


def _read_bank(path: Path) -> list[MemoryItem]:
    # Split on newlines only: str.splitlines would also break inside texts holding U+2028 or U+0085.
    lines = read_text(path).removesuffix("\n").split("\n")
    items = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            items.append(MemoryItem.model_validate_json(line))
        except ValidationError as error:
            problems = validation_problems(error)
            raise InputError(f"{path}: line {number}: not a valid MemoryItem record: {problems}.") from None
    return items


def _bank_data(items: list[MemoryItem]) -> list[JSON]:
    return [json.loads(item.model_dump_json(include=_BANK_FIELDS)) for item in items]


def _js_assignment(target: str, value: object) -> str:
    # ensure_ascii escapes U+2028/U+2029 too, which older engines reject in string literals; `<` escaped keeps
    # the file safe even if inlined into a page (a reply's `</script>` cannot close the tag). `<` occurs only
    # inside JSON strings, where `\u003c` means the same character.
    text = json.dumps(value, ensure_ascii=True, separators=(",", ":")).replace("<", "\\u003c")
    return f"{target} = {text};\n"


def build_site(run_dirs: Sequence[Path], output: Path) -> Path:
    """Write the viewer of `run_dirs` to `output` (created or refreshed); returns the path of `index.html`."""
    if not run_dirs:
        raise ValueError("harness view: name at least one run directory")
    if output.is_dir() and any(output.iterdir()) and not (output / "data.js").exists():
        raise ValueError(f"{output}: not empty and not a viewer folder (no data.js); name a new or empty one")
    results = read_results(run_dirs)
    labels = run_labels(results)
    output.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(output / "histories", ignore_errors=True)
    runs = []
    for index, (run_dir, label, result) in enumerate(zip(run_dirs, labels, results, strict=True)):
        key = f"r{index}"
        runs.append(_run_data(key, label, Path(run_dir), result))
        folder = output / "histories" / key
        for number, bank in enumerate(_bank_files(Path(run_dir))):  # one at a time: banks can be large
            folder.mkdir(parents=True, exist_ok=True)
            name = json.dumps(f"{key}/{bank.stem}")
            (folder / f"{number}.js").write_text(_js_assignment(f"HV_BANKS[{name}]", _bank_data(_read_bank(bank))))
    site = {"runs": runs, "tables": _score_tables(results) if len(results) > 1 else []}
    (output / "data.js").write_text(_js_assignment("window.HV_DATA", site), encoding="utf-8")
    page = resources.files(__package__)
    for name in PAGE_FILES:
        (output / name).write_text(page.joinpath(name).read_text(encoding="utf-8"), encoding="utf-8")
    return output / "index.html"


def serve(folder: Path, port: int) -> None:
    """Serve `folder` on 127.0.0.1 only (the data may be private) until interrupted."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    with http.server.ThreadingHTTPServer(("127.0.0.1", port), handler) as server:
        print(f"serving http://127.0.0.1:{server.server_address[1]}/index.html (Ctrl-C stops)", flush=True)
        server.serve_forever()
