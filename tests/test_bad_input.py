"""Malformed input gives one `error:` line naming the file (and line or field), the expectation and the finding."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Literal

import pytest
from pydantic import BaseModel, ConfigDict

from harness.cli import main
from harness.inputs import OptionError, parse_options
from harness.results import RunDir

NOT_UTF8 = b'[{"sample_id": "caf\xe9"}]\n'


def error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The one line the CLI wrote to stderr, which must be an `error:` line."""
    err = capsys.readouterr().err
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert err.startswith("error: "), err
    return err


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    args = ["run", "--task", "toy", "--system", "full-context", "--model", "mock", "--no-cache"]
    assert main([*args, "--output", str(root), "--run-id", "r"]) == 0
    return root / "toy" / "full-context" / "r"


@pytest.fixture
def run_dir(finished_run: Path, tmp_path: Path) -> Path:
    """A copy of a finished toy run, free to be corrupted; laid out as `<root>/toy/full-context/r`."""
    copy = tmp_path / "toy" / "full-context" / "r"
    shutil.copytree(finished_run, copy)
    return copy


def test_non_utf8_data_file_names_the_file_line_and_byte(tmp_path, capsys):
    data = tmp_path / "locomo10.json"
    data.write_bytes(b"[\n" + NOT_UTF8)
    assert main(["describe", "locomo", "--data-file", str(data)]) == 2
    line = error_line(capsys)
    assert f"{data}: line 2: expected UTF-8 text, found byte 0xe9" in line


def test_non_utf8_jsonl_data_file_names_the_line(tmp_path, capsys):
    data = tmp_path / "msc.jsonl"
    data.write_bytes(b'{"a": 1}\n{"b": "\xff"}\n')
    assert main(["describe", "msc", "--data-file", str(data)]) == 2
    assert f"{data}: line 2: expected UTF-8 text, found byte 0xff" in error_line(capsys)


def test_malformed_json_data_file_names_line_and_column(tmp_path, capsys):
    data = tmp_path / "locomo10.json"
    data.write_text('[{"sample_id": "conv-1",\n  }]', encoding="utf-8")
    assert main(["describe", "locomo", "--data-file", str(data)]) == 2
    assert f"{data}: not valid JSON (line 2, column 3" in error_line(capsys)


def test_non_utf8_predictions_file_names_the_file(tmp_path, capsys):
    predictions = tmp_path / "answers.jsonl"
    predictions.write_bytes(  # byte 0xff never occurs in UTF-8
        b'{"question_id": "q1", "hypothesis": "Lisbon"}\n{"question_id": "q2", "hypothesis": "\xff"}\n'
    )
    args = ["score", "--task", "toy", "--predictions", str(predictions), "--output", str(tmp_path), "--no-cache"]
    assert main(args) == 2
    assert f"{predictions}: line 2: expected UTF-8 text, found byte 0xff" in error_line(capsys)


def test_a_predictions_path_that_is_a_folder_names_it(tmp_path, capsys):
    folder = tmp_path / "answers"
    folder.mkdir()
    args = ["score", "--task", "toy", "--predictions", str(folder), "--output", str(tmp_path), "--no-cache"]
    assert main(args) == 2
    assert f"{folder}: expected a readable file, got: Is a directory." in error_line(capsys)


@pytest.mark.parametrize(
    ("option", "expected"),
    [
        ("max_answer_tokens=many", "Invalid option for system 'full-context': max_answer_tokens='many': Input should "),
        ("max_answer_token=8", "Unknown option 'max_answer_token' for system 'full-context'."),
    ],
)
def test_invalid_system_option_reads_like_a_task_option(tmp_path, capsys, option, expected):
    args = ["run", "--task", "toy", "--system", "full-context", "--model", "mock", "--no-cache", "-S", option]
    assert main([*args, "--output", str(tmp_path)]) == 2
    line = error_line(capsys)
    assert expected in line
    assert "Valid options: max_context_tokens (default None); max_answer_tokens (default 32)." in line
    assert not any(tmp_path.iterdir()), "a rejected run must not leave a run directory"


@pytest.mark.parametrize(
    ("flag", "value", "minimum"),
    [
        ("--limit", "-3", 1),
        ("--limit", "0", 1),
        ("--limit", "ten", 1),
        ("--max-concurrency", "0", 1),  # a semaphore of 0 waits forever
        ("--max-samples", "0", 1),
        ("--max-retries", "-1", 0),  # no attempt at all: every question failed
    ],
)
def test_counts_must_be_whole_numbers_in_range(tmp_path, capsys, flag, value, minimum):
    args = ["run", "--task", "toy", "--system", "full-context", "--model", "mock", "--output", str(tmp_path)]
    with pytest.raises(SystemExit) as exit_info:
        main([*args, flag, value])
    assert exit_info.value.code == 2
    last = capsys.readouterr().err.splitlines()[-1]
    assert last == f"harness run: error: argument {flag}: expected a whole number of at least {minimum}, got {value!r}"


def corrupt_status(run_dir: Path) -> Path:
    run_file = run_dir / "run.json"
    result = json.loads(run_file.read_text(encoding="utf-8"))
    result["status"] = "done"
    run_file.write_text(json.dumps(result), encoding="utf-8")
    return run_file


def test_show_names_the_bad_field_of_run_json(run_dir, capsys):
    run_file = corrupt_status(run_dir)
    assert main(["show", str(run_dir)]) == 2
    line = error_line(capsys)
    assert line.startswith(f"error: {run_file}: not a valid run.json: field 'status': Input should be 'running'")
    assert "got str 'done'" in line


def test_show_names_a_missing_field_of_run_json(run_dir, capsys):
    run_file = run_dir / "run.json"
    result = json.loads(run_file.read_text(encoding="utf-8"))
    del result["spec"]["task"]
    run_file.write_text(json.dumps(result), encoding="utf-8")
    assert main(["show", str(run_dir)]) == 2
    assert f"{run_file}: not a valid run.json: field 'spec.task': required, got nothing" in error_line(capsys)


def test_resume_of_a_truncated_run_json_names_the_file(run_dir, capsys):
    run_file = run_dir / "run.json"
    run_file.write_text(run_file.read_text(encoding="utf-8")[:100], encoding="utf-8")
    assert main(["run", "--resume", str(run_dir), "--no-cache"]) == 2
    assert f"error: {run_file}: not a valid run.json: Invalid JSON: EOF while parsing" in error_line(capsys)


def test_resume_of_a_non_utf8_run_json_names_the_file(run_dir, capsys):
    run_file = run_dir / "run.json"
    run_file.write_bytes(run_file.read_bytes().replace(b'"toy"', b'"t\xf6y"', 1))
    assert main(["run", "--resume", str(run_dir), "--no-cache"]) == 2
    assert f"error: {run_file}: line " in error_line(capsys)


@pytest.mark.parametrize("command", [["show"], ["score", "--no-cache"]])
def test_a_corrupt_record_of_samples_jsonl_names_file_line_and_field(run_dir, capsys, command):
    samples = run_dir / "samples.jsonl"
    lines = samples.read_text(encoding="utf-8").splitlines()
    first = json.loads(lines[0])
    first["scores"] = "high"
    samples.write_text("\n".join([json.dumps(first), *lines[1:]]) + "\n", encoding="utf-8")
    assert main([*command, str(run_dir)]) == 2
    line = error_line(capsys)
    assert f"{samples}: line 1: not a valid QuestionRecord record: field 'scores': Input should be an object" in line
    assert "got str 'high'" in line


def test_a_non_utf8_samples_jsonl_names_the_line(run_dir, capsys):
    samples = run_dir / "samples.jsonl"
    samples.write_bytes(samples.read_bytes().replace(b"\n", b"\n\xff", 1))
    assert main(["show", str(run_dir)]) == 2
    assert f"{samples}: line 2: expected UTF-8 text, found byte 0xff" in error_line(capsys)


def test_records_holding_unicode_line_separators_read_back_whole(run_dir):
    records = RunDir(run_dir).read_questions()
    answer = "first\u2028second\x85third"
    records[0].prediction = records[0].prediction.model_copy(update={"answer": answer})  # type: ignore[union-attr]
    RunDir(run_dir).rewrite_questions(records)
    read = RunDir(run_dir).read_questions()
    assert len(read) == len(records)
    assert read[0].prediction is not None and read[0].prediction.answer == answer


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid")
    split: Literal["all", "test"] = "all"
    flag: bool = False


def test_parse_options_coerces_strings_and_rejects_unknown_names() -> None:
    parsed = parse_options("task", "demo", _Options, {"flag": "true", "split": "test"})
    assert parsed == _Options(flag=True, split="test")
    with pytest.raises(OptionError, match=r"Unknown option 'splt' for task 'demo'.*Valid options: split.*flag"):
        parse_options("task", "demo", _Options, {"splt": "test"})
    with pytest.raises(OptionError, match="Invalid option for system 'demo': split='dev'"):
        parse_options("system", "demo", _Options, {"split": "dev"})
