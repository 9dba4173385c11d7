"""LongMemEval: long-term interactive memory of chat assistants (Wu et al., ICLR 2025, arXiv:2410.10813).

Dataset: Hugging Face dataset `xiaowu0162/longmemeval-cleaned` (the September 2025 "cleaned" release),
revision 98d7416c24c778c2fee6e6f3006e7a073259d48f. That revision is not from the authors: several independent
third-party projects pin it, each together with the sha256 of `longmemeval_s_cleaned.json` that we also
pin (d6f21ea9…a442, 277,383,467 bytes). No checksum is pinned for the oracle and m files: they are used
with a warning and their sha256 is recorded. Licence: MIT (github.com/xiaowu0162/LongMemEval).

Variants (option `variant`): `oracle` (only the evidence sessions; the default, small and fast), `s`
(~40 sessions, ~115k tokens per question) and `m` (~500 sessions). 500 questions each.

One Sample per question: its haystack is the history, sessions in date order (the oracle file does not
sort them). Speakers are `user` and `assistant`; turn ids are `<session id>:<index in session>`, from 0.
The question's date (`question_date`) reaches the system through `Query.date`, since many questions are
relative to it ("two weeks ago"). Questions whose id ends in `_abs` are abstention questions (the answer
is not in the history): they get type `abstention`, and metadata `longmemeval_type` keeps the official
type. Evidence = `answer_session_ids` plus the ids of the turns marked `has_answer`.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from harness.datasets import HubFile, Record, json_list_records, resolve_data_file
from harness.inputs import parse_options
from harness.task import DataOptions, TaskData
from harness.types import Conversation, Question, Sample, Session, Turn

logger = logging.getLogger(__name__)

REPO = "xiaowu0162/longmemeval-cleaned"
REVISION = "98d7416c24c778c2fee6e6f3006e7a073259d48f"


def _hub_file(filename: str, sha256: str | None = None) -> HubFile:
    return HubFile(repo_id=REPO, filename=filename, revision=REVISION, sha256=sha256, subdir="longmemeval")


REMOTES: dict[str, HubFile] = {
    "oracle": _hub_file("longmemeval_oracle.json"),
    "s": _hub_file("longmemeval_s_cleaned.json", "d6f21ea9d60a0d56f34a05b609c79c88a451d2ae03597821ea3d5a9678c3a442"),
    "m": _hub_file("longmemeval_m_cleaned.json"),
}

QUESTION_TYPES = [
    "single-session-user",
    "single-session-assistant",
    "single-session-preference",
    "multi-session",
    "knowledge-update",
    "temporal-reasoning",
    "abstention",
]
ABSTENTION_SUFFIX = "_abs"
SPEAKERS = ("user", "assistant")

_DATE = re.compile(r"(\d{4})/(\d{1,2})/(\d{1,2}) \(\w+\) (\d{1,2}):(\d{2})")


class LongMemEvalOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    variant: Literal["oracle", "s", "m"] = Field(
        "oracle", description="oracle (evidence sessions only), s (~40 sessions) or m (~500 sessions)"
    )


class LongMemEvalTask:
    name = "longmemeval"
    description = "LongMemEval (Wu et al., ICLR 2025): variants oracle, s, m"

    def load(self, data: DataOptions, **options: str) -> TaskData:
        opts = parse_options("task", self.name, LongMemEvalOptions, options)
        path, info = resolve_data_file(REMOTES[opts.variant], data)
        return TaskData(
            task=self.name,
            version=f"longmemeval-cleaned@{REVISION[:7]}/{opts.variant}",
            options=opts.model_dump(),
            samples=parse_longmemeval(path),
            question_types=list(QUESTION_TYPES),
            judge_style="longmemeval",
            default_metrics=["f1", "bleu1", "exact_match"],
            data=info,
        )


def parse_longmemeval(path: Path) -> list[Sample]:
    return [
        _sample(rec, question_id, item) for rec, item, question_id in json_list_records(path, "question", "question_id")
    ]


def _sample(rec: Record, question_id: str, item: dict[str, object]) -> Sample:
    session_ids = _strings(rec, item, "haystack_session_ids")
    dates = _strings(rec, item, "haystack_dates")
    raw_sessions = rec.get(item, "haystack_sessions", list)
    if not len(session_ids) == len(dates) == len(raw_sessions):
        raise rec.invalid(
            "haystack_sessions",
            f"has {len(raw_sessions)} sessions, haystack_session_ids {len(session_ids)} and haystack_dates "
            f"{len(dates)}; they must be the same length",
        )
    sessions: list[Session] = []
    answer_turns: list[str] = []
    for i in _date_order(dates, question_id):
        session, marked = _session(rec, i, session_ids[i], dates[i], raw_sessions[i])
        sessions.append(session)
        answer_turns.extend(marked)

    official_type = rec.get(item, "question_type", str)
    answer = rec.get_text(item, "answer")
    answer_sessions = _strings(rec, item, "answer_session_ids")
    question = Question(
        question_id=question_id,
        text=rec.get(item, "question", str),
        answers=(answer,),
        question_type="abstention" if question_id.endswith(ABSTENTION_SUFFIX) else official_type,
        evidence=tuple(answer_sessions + answer_turns),
        date=rec.get_optional(item, "question_date", str),
        metadata={"longmemeval_type": official_type},
    )
    conversation = Conversation(conversation_id=question_id, speakers=SPEAKERS, sessions=tuple(sessions))
    return Sample(sample_id=question_id, conversation=conversation, questions=(question,))


def _strings(rec: Record, item: dict[str, object], key: str) -> list[str]:
    return [rec.expect(value, str, f"{key}[{i}]") for i, value in enumerate(rec.get(item, key, list))]


def _session(rec: Record, i: int, session_id: str, date: str, raw: object) -> tuple[Session, list[str]]:
    at = f"haystack_sessions[{i}]"
    turns: list[Turn] = []
    marked: list[str] = []
    for j, raw_turn in enumerate(rec.expect(raw, list, at)):
        turn = rec.expect(raw_turn, dict, f"{at}[{j}]")
        role = rec.get(turn, "role", str, f"{at}[{j}]")
        if role not in SPEAKERS:
            raise rec.error(f"{at}[{j}].role", "'user' or 'assistant'", role)
        turn_id = f"{session_id}:{j}"
        turns.append(Turn(turn_id=turn_id, speaker=role, text=rec.get(turn, "content", str, f"{at}[{j}]")))
        if rec.get_optional(turn, "has_answer", bool, f"{at}[{j}]"):
            marked.append(turn_id)
    return Session(session_id=session_id, date=date, turns=tuple(turns)), marked


def parse_date(text: str) -> datetime | None:
    """Read LongMemEval's `2023/05/20 (Sat) 02:21`; None if it has another form."""
    match = _DATE.fullmatch(text.strip())
    if not match:
        return None
    year, month, day, hour, minute = (int(g) for g in match.groups())
    try:
        return datetime(year, month, day, hour, minute)
    except ValueError:
        return None


def _date_order(dates: list[str], question_id: str) -> list[int]:
    """Indices of the sessions in date order; the file's order on ties or when some date cannot be read."""
    stamps = [stamp for d in dates if (stamp := parse_date(d)) is not None]
    if len(stamps) < len(dates):
        logger.warning("%s: some haystack dates cannot be read; keeping the file's session order", question_id)
        return list(range(len(dates)))
    return sorted(range(len(dates)), key=lambda i: stamps[i])


TASK = LongMemEvalTask()
