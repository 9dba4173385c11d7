"""Answers produced elsewhere, matched to our questions so our metrics can score them (`harness score`).

Three layouts; `detect_format` tells them apart by the file's shape:

- `jsonl`: LongMemEval's submission format, one `{"question_id", "hypothesis"}` object per line (a JSON list
  of such objects is read too, as LongMemEval's `evaluate_qa.py` does). Rows are matched by question id.
- `mem0`: the per-conversation JSON of Mem0's LoCoMo scripts (`evaluation/src/*/search.py`, `evals.py`):
  `{"<i>": [{"question", "answer" (gold), "response" (the system's answer), "category", ...}]}`.
- `zep`: Zep's published LoCoMo run (getzep/zep-papers): `{"locomo_experiment_user_<i>": [{"question",
  "answer" (the system's answer), "golden_answer", "duration_ms", "grade"?, "category"?}]}`.

In the last two, `<i>` is the position of the conversation in the task's samples (LoCoMo loaded with
`split=all`: 0 = conv-26 ... 9 = conv-50, the order of locomo10.json), and rows carry no id: they are
matched by question text, compared after folding case and whitespace. Where a conversation asks the same
question twice (11 pairs in LoCoMo's conv-48), the row's gold answer and category pick the question; when
the candidates are interchangeable (same gold and type) they are filled in order of appearance.

Nothing is dropped silently: rows that fit no question, fit several, or answer a question already
answered are listed, as are the questions no row answers (`PredictionImport.summary`).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from harness.datasets import DataFormatError, Record, load_json
from harness.inputs import read_text
from harness.results import QuestionRecord
from harness.scoring import PUBLISHED_JUDGE
from harness.types import Prediction, Question, Sample

logger = logging.getLogger(__name__)

Format = Literal["jsonl", "mem0", "zep"]
FORMATS: tuple[Format, ...] = ("jsonl", "mem0", "zep")

CATEGORY_KEY = "locomo_category"
"""The question metadata key holding LoCoMo's category number (see tasks/locomo.py)."""
ADVERSARIAL_CATEGORY = 5

# Mem0's `evals.py` output adds its own scores to each row; they are kept under these names.
_MEM0_SCORES = {"llm_score": PUBLISHED_JUDGE, "f1_score": "published_f1", "bleu_score": "published_bleu1"}
# Mem0's search scripts time the two speakers' memory searches and the answer call apart.
_MEM0_TIMES = ("speaker_1_memory_time", "speaker_2_memory_time", "response_time")
_CONVERSATION_KEYS: dict[Format, re.Pattern[str]] = {
    "mem0": re.compile(r"(\d+)"),
    "zep": re.compile(r"locomo_experiment_user_(\d+)"),
}


class ImportedAnswer(BaseModel):
    """One row of a predictions file, matched to a question of ours."""

    question_id: str
    answer: str
    latency_s: float | None = None
    """The file's timing of this answer, if it has one (Zep `duration_ms`; Mem0 searches plus answer call)."""
    published: dict[str, float] = Field(default_factory=dict)
    """Scores the file itself gives the answer, e.g. `published_judge` (1.0 or 0.0) from Zep's `grade`."""
    source_row: str
    """Where the row is in the file: `line 3` (jsonl), `0[5]` (mem0), `locomo_experiment_user_0[5]` (zep)."""


class PredictionImport(BaseModel):
    """What reading a predictions file gave: the matched answers and every row or question left over."""

    path: str
    format: Format
    rows: int = 0
    questions: int = 0
    """Questions of the samples given, the denominator of coverage."""
    answers: dict[str, ImportedAnswer] = Field(default_factory=dict)
    """By question id."""
    unmatched: list[str] = Field(default_factory=list)
    """Rows that fit no question."""
    excluded: list[str] = Field(default_factory=list)
    """Rows of LoCoMo category 5 (adversarial) that fit no category-5 question, because the task leaves them
    out by default (Mem0's `evals.py` skips them too): expected, so kept apart from `unmatched`."""
    ambiguous: list[str] = Field(default_factory=list)
    """Rows that fit several questions that are not interchangeable (left out)."""
    duplicates: list[str] = Field(default_factory=list)
    """Rows for a question already answered by an earlier row (left out; the first row is kept)."""
    missing: list[str] = Field(default_factory=list)
    """Ids of the questions no row answers."""
    category_mismatches: list[str] = Field(default_factory=list)
    """Matched rows whose category differs from the question's LoCoMo category (matched anyway)."""
    gold_mismatches: list[str] = Field(default_factory=list)
    """Matched rows whose gold answer is none of the question's (matched anyway): a sign of another release."""

    @property
    def complete(self) -> bool:
        """Every question answered and every row used (category-5 rows outside the task aside)."""
        return not (self.unmatched or self.ambiguous or self.duplicates or self.missing)

    def summary(self, examples: int = 3) -> list[str]:
        """Readable lines: coverage, then each kind of leftover with its count and a few examples."""
        lines = [
            f"{Path(self.path).name} ({self.format}): {self.rows} rows, "
            f"answers for {len(self.answers)} of {self.questions} questions"
        ]
        for label, items in (
            ("rows that match no question", self.unmatched),
            ("rows of category 5 (adversarial) outside the task, skipped", self.excluded),
            ("ambiguous rows, left out", self.ambiguous),
            ("duplicate rows, left out (the first row for a question is kept)", self.duplicates),
            ("questions with no row", self.missing),
            ("rows whose category differs from the question's", self.category_mismatches),
            ("rows whose gold answer differs from the question's", self.gold_mismatches),
        ):
            if items:
                lines.append(f"{label}: {len(items)}")
                lines.extend(f"  {item}" for item in items[:examples])
                if len(items) > examples:
                    lines.append(f"  ... and {len(items) - examples} more")
        return lines


@dataclass(frozen=True)
class _Row:
    """A mem0 or zep row, read and checked, before matching."""

    locator: str
    question: str
    answer: str
    gold: str | None
    category: int | None
    latency_s: float | None
    published: dict[str, float]


def detect_format(path: str | Path) -> Format:
    """The layout of a predictions file (see the module docstring); DataFormatError if it is none of them."""
    path = Path(path)
    return _detect(path, _load(path))


def read_predictions(
    path: str | Path, samples: Sequence[Sample], format: Format | Literal["auto"] = "auto"
) -> PredictionImport:
    """Read a predictions file and match its rows to the questions of `samples`.

    For mem0 and zep files, `samples` must be all of the task's conversations in file order (LoCoMo with
    `split=all`), since rows name their conversation by position. Bad input (not JSON, a wrong shape, a
    missing field, an unknown conversation) raises DataFormatError naming the file, row and field.
    """
    path = Path(path)
    data = _load(path)
    chosen = _detect(path, data) if format == "auto" else format
    result = PredictionImport(path=str(path), format=chosen, questions=sum(len(s.questions) for s in samples))
    if chosen == "jsonl":
        _match_by_id(result, _jsonl_rows(path, data), samples)
    else:
        data = load_json(path) if data is _NOT_JSON else data  # raises, saying where the JSON breaks
        _match_by_text(result, _conversation_rows(path, data, chosen, samples), samples)
    result.missing = [q.question_id for s in samples for q in s.questions if q.question_id not in result.answers]
    return result


# --- reading ---------------------------------------------------------------------------------------------------

_NOT_JSON = object()


def _load(path: Path) -> object:
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return _NOT_JSON  # perhaps JSONL: read line by line later


def _detect(path: Path, data: object) -> Format:
    if isinstance(data, list) or (isinstance(data, dict) and "question_id" in data):
        return "jsonl"  # a JSON list of rows, or a JSONL file of one line
    if isinstance(data, dict) and data:
        for name, pattern in _CONVERSATION_KEYS.items():
            if all(pattern.fullmatch(key) for key in data):
                return name
        keys = ", ".join(repr(key) for key in list(data)[:3])
        raise DataFormatError(
            f"{path}: top-level keys ({keys}, ...): expected conversation indices ('0', '1', ...: the mem0 "
            "layout) or 'locomo_experiment_user_<i>' (the zep layout)."
        )
    if data is _NOT_JSON:
        first = next((line for line in read_text(path).split("\n") if line.strip()), None)
        try:
            if first is not None and isinstance(json.loads(first), dict):
                return "jsonl"
        except json.JSONDecodeError:
            pass
        raise DataFormatError(f"{path}: neither JSON nor JSONL: expected a predictions file (jsonl, mem0 or zep).")
    raise DataFormatError(f"{path}: expected a JSON object of conversations or JSONL rows, got {_describe(data)}.")


def _jsonl_rows(path: Path, data: object) -> Iterator[tuple[str, ImportedAnswer]]:
    """(question id, answer) per row of a LongMemEval submission."""
    if isinstance(data, list):
        raw_rows = [(f"item {i}", item) for i, item in enumerate(data)]
    elif isinstance(data, dict):
        raw_rows = [("line 1", data)]
    else:
        raw_rows = []
        for number, line in enumerate(read_text(path).split("\n"), start=1):
            if not line.strip():
                continue
            try:
                raw_rows.append((f"line {number}", json.loads(line)))
            except json.JSONDecodeError as error:
                raise DataFormatError(f"{path}: line {number}: not valid JSON ({error.msg}).") from error
    for locator, raw in raw_rows:
        rec = Record(path, locator)
        row = rec.expect(raw, dict, "(row)")
        question_id = rec.get(row, "question_id", str)
        yield (
            question_id,
            ImportedAnswer(question_id=question_id, answer=rec.get_text(row, "hypothesis"), source_row=locator),
        )


def _conversation_rows(
    path: Path, data: object, layout: Format, samples: Sequence[Sample]
) -> Iterator[tuple[int, _Row]]:
    """(conversation position, row) per row of a mem0 or zep file, in file order."""
    if not isinstance(data, dict):
        raise DataFormatError(
            f"{path}: expected a JSON object of conversations ({layout} layout), got {_describe(data)}."
        )
    for key, raw_rows in data.items():
        conversation = _conversation_index(path, key, layout, samples)
        rows = Record(path, f"conversation {key!r}").expect(raw_rows, list, "(rows)")
        for index, raw in enumerate(rows):
            locator = f"{key}[{index}]"
            rec = Record(path, f"row {locator}")
            row = rec.expect(raw, dict, "(row)")
            yield conversation, (_mem0_row if layout == "mem0" else _zep_row)(rec, locator, row)


def _conversation_index(path: Path, key: str, layout: Format, samples: Sequence[Sample]) -> int:
    match = _CONVERSATION_KEYS[layout].fullmatch(key)
    if match is None or int(match.group(1)) >= len(samples):
        example = "'0'" if layout == "mem0" else "'locomo_experiment_user_0'"
        first = f", 0 = {samples[0].sample_id}" if samples else ""
        raise DataFormatError(
            f"{path}: key {key!r}: expected a conversation like {example} whose index is the position of one of "
            f"the task's {len(samples)} conversations (0 to {len(samples) - 1}{first}); load the task with all "
            "its conversations (LoCoMo split=all)."
        )
    return int(match.group(1))


def _mem0_row(rec: Record, locator: str, row: Mapping[str, object]) -> _Row:
    times = [_number(rec, row, key) for key in _MEM0_TIMES if row.get(key) is not None]
    published = {name: _number(rec, row, key) for key, name in _MEM0_SCORES.items() if row.get(key) is not None}
    return _Row(
        locator=locator,
        question=rec.get(row, "question", str),
        answer=rec.get_text(row, "response"),
        gold=_optional_text(rec, row, "answer"),
        category=_category(rec, row),
        latency_s=sum(times) if times else None,
        published=published,
    )


def _zep_row(rec: Record, locator: str, row: Mapping[str, object]) -> _Row:
    grade = rec.get_optional(row, "grade", bool)
    duration_ms = _number(rec, row, "duration_ms") if row.get("duration_ms") is not None else None
    return _Row(
        locator=locator,
        question=rec.get(row, "question", str),
        answer=rec.get_text(row, "answer"),
        gold=_optional_text(rec, row, "golden_answer"),
        category=_category(rec, row),
        latency_s=None if duration_ms is None else duration_ms / 1000,
        published={} if grade is None else {PUBLISHED_JUDGE: float(grade)},
    )


def _optional_text(rec: Record, row: Mapping[str, object], key: str) -> str | None:
    return None if row.get(key) is None else rec.get_text(row, key)


def _number(rec: Record, row: Mapping[str, object], key: str) -> float:
    value = row.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise rec.error(key, "a number", value)
    return float(value)


def _category(rec: Record, row: Mapping[str, object]) -> int | None:
    value = row.get("category")
    if value is None:
        return None
    # Mem0's evals.py writes the category back as a string.
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return rec.expect(value, int, "category")


def _describe(value: object) -> str:
    return "an empty object" if value == {} else type(value).__name__


# --- matching --------------------------------------------------------------------------------------------------


def _match_by_id(
    result: PredictionImport, rows: Iterator[tuple[str, ImportedAnswer]], samples: Sequence[Sample]
) -> None:
    known = {q.question_id for s in samples for q in s.questions}
    for question_id, answer in rows:
        result.rows += 1
        if question_id not in known:
            result.unmatched.append(f"{answer.source_row}: question_id {question_id!r} is not a question of the task")
        elif question_id in result.answers:
            first = result.answers[question_id].source_row
            result.duplicates.append(f"{answer.source_row}: {question_id} is already answered by {first}")
        else:
            result.answers[question_id] = answer


def _match_by_text(result: PredictionImport, rows: Iterator[tuple[int, _Row]], samples: Sequence[Sample]) -> None:
    by_text: list[dict[str, list[Question]]] = []
    for sample in samples:
        index: dict[str, list[Question]] = {}
        for question in sample.questions:
            index.setdefault(_normalize(question.text), []).append(question)
        by_text.append(index)
    for conversation, row in rows:
        result.rows += 1
        sample_id = samples[conversation].sample_id
        candidates = _narrow(by_text[conversation].get(_normalize(row.question), []), row)
        if _outside_task(row, candidates):
            result.excluded.append(f"{row.locator}: {row.question!r} (category 5) is not a question of {sample_id}")
            continue
        if not candidates:
            result.unmatched.append(f"{row.locator}: {row.question!r} is not a question of {sample_id}")
            continue
        free = [q for q in candidates if q.question_id not in result.answers]
        if len(candidates) > 1 and not _interchangeable(candidates):
            ids = ", ".join(q.question_id for q in candidates)
            result.ambiguous.append(f"{row.locator}: {row.question!r} fits {ids}, with different answers")
        elif not free:
            firsts = ", ".join(f"{q.question_id} by {result.answers[q.question_id].source_row}" for q in candidates)
            result.duplicates.append(f"{row.locator}: {row.question!r} is already answered ({firsts})")
        else:
            _accept(result, row, free[0])


def _narrow(candidates: list[Question], row: _Row) -> list[Question]:
    """The candidates a repeated question's row fits best: those with its gold answer, then its category."""
    if len(candidates) > 1 and row.gold is not None:
        candidates = [q for q in candidates if _normalize(row.gold) in _golds(q)] or candidates
    if len(candidates) > 1 and row.category is not None:
        candidates = [q for q in candidates if q.metadata.get(CATEGORY_KEY) == row.category] or candidates
    return candidates


def _outside_task(row: _Row, candidates: list[Question]) -> bool:
    """A category-5 row when the task has no category-5 question of that text (it leaves them out). Its text
    may still be that of another question: conv-30 asks "What did Gina receive from a dance contest?" twice,
    as categories 4 and 5."""
    if row.category != ADVERSARIAL_CATEGORY:
        return False
    return all(q.metadata.get(CATEGORY_KEY) != ADVERSARIAL_CATEGORY for q in candidates)


def _interchangeable(questions: list[Question]) -> bool:
    return len({(frozenset(_golds(q)), q.question_type) for q in questions}) == 1


def _accept(result: PredictionImport, row: _Row, question: Question) -> None:
    result.answers[question.question_id] = ImportedAnswer(
        question_id=question.question_id,
        answer=row.answer,
        latency_s=row.latency_s,
        published=row.published,
        source_row=row.locator,
    )
    category = question.metadata.get(CATEGORY_KEY)
    if row.category is not None and category is not None and row.category != category:
        result.category_mismatches.append(
            f"{row.locator}: category {row.category}, {question.question_id} has {category}"
        )
    if row.gold is not None and _normalize(row.gold) not in _golds(question):
        result.gold_mismatches.append(
            f"{row.locator}: gold {row.gold!r}, {question.question_id} has {', '.join(map(repr, question.answers))}"
        )


def _normalize(text: str) -> str:
    return " ".join(text.split()).casefold()


def _golds(question: Question) -> set[str]:
    # A question without gold (LoCoMo adversarial) matches the empty gold that Mem0's scripts write for it.
    return {_normalize(a) for a in question.answers} or {""}


# --- writing ---------------------------------------------------------------------------------------------------


def write_mem0_predictions(records: Sequence[QuestionRecord], samples: Sequence[Sample], path: str | Path) -> int:
    """Write a run's answers in the mem0 layout, for Mem0's `evals.py`; return the number of rows written.

    Conversations are keyed by their position in `samples` (pass all of LoCoMo's, `split=all`) and rows
    follow the questions' order. Records without a prediction (failed questions) are left out, with a
    warning; a later record for a question replaces an earlier one.
    """
    positions = {q.question_id: (i, j) for i, s in enumerate(samples) for j, q in enumerate(s.questions)}
    questions = {q.question_id: q for s in samples for q in s.questions}
    rows: dict[tuple[int, int], dict[str, object]] = {}
    for record, prediction in _answered(records):
        if record.question_id not in positions:
            raise ValueError(f"{record.question_id}: not a question of the samples given")
        category = record.question_metadata.get(CATEGORY_KEY, questions[record.question_id].metadata.get(CATEGORY_KEY))
        if category is None:
            raise ValueError(f"{record.question_id}: no LoCoMo category ({CATEGORY_KEY!r}): the mem0 layout needs one")
        rows[positions[record.question_id]] = {
            "question": record.question,
            "answer": record.gold[0] if record.gold else "",
            "response": prediction.answer,
            "category": category,
        }
    conversations: dict[str, list[dict[str, object]]] = {}
    for (i, _), row in sorted(rows.items()):
        conversations.setdefault(str(i), []).append(row)
    _write_atomically(Path(path), json.dumps(conversations, indent=4, ensure_ascii=False) + "\n")
    return len(rows)


def write_jsonl_predictions(records: Sequence[QuestionRecord], path: str | Path) -> int:
    """Write a run's answers as LongMemEval's `{"question_id", "hypothesis"}` lines; return the line count.

    Records without a prediction are left out, with a warning; a later record for a question replaces an
    earlier one.
    """
    lines = [
        json.dumps({"question_id": record.question_id, "hypothesis": prediction.answer}, ensure_ascii=False) + "\n"
        for record, prediction in _answered(records)
    ]
    _write_atomically(Path(path), "".join(lines))
    return len(lines)


def _answered(records: Sequence[QuestionRecord]) -> list[tuple[QuestionRecord, Prediction]]:
    """The latest record of each question, with its prediction; those without one are left out, logged."""
    latest = {r.question_id: r for r in records}
    failed = [r.question_id for r in latest.values() if r.prediction is None]
    if failed:
        logger.warning("%d questions have no prediction and are left out (e.g. %s)", len(failed), failed[0])
    return [(r, r.prediction) for r in latest.values() if r.prediction is not None]


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
