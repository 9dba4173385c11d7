"""MSC-Self-Instruct: MemGPT's "deep memory retrieval" (DMR) probes over Multi-Session Chat dialogues.

Dataset: Hugging Face dataset `MemGPT/MSC-Self-Instruct`, file `msc_self_instruct.jsonl` (500 lines,
8.56 MB), revision 5138f416f8fa76b75b2e080da87e8a8e346e1500, licence Apache-2.0 (the dataset card). The
pinned sha256 (d3dbea36…495e) is the one third parties report; we could not fetch the file to check it.
Papers: MemGPT (Packer et al., 2023, arXiv:2310.08560) built the probes on MSC (Xu, Szlam & Weston,
ACL 2022, "Beyond Goldfish Memory"). Zep and Letta report DMR on the same file; Memory-R1 lists "MSC"
among its benchmarks, most likely this QA form (unverified).

Each line is one MSC episode plus a generated probe: `previous_dialogs` (earlier sessions, each
`{"dialog": [{"text", "id"?}], "time_num"?, "time_unit"?, "time_back"?}`), `dialog` (the current
session), `metadata {initial_data_id, session_id}` and `self_instruct {"B": question, "A": answer}`.
The schema follows the upstream code and third-party loaders; it was not checked against real rows.

One Sample per line; the question is `self_instruct.B`, the gold answer `self_instruct.A`, type
`deep-memory-retrieval`. The history is the `previous_dialogs` only: the probe asks about what was said in
*earlier* sessions (that is what DMR measures), and the current `dialog` is where the probe would be asked,
so by default it is not ingested. `include_current_dialog=true` appends it as the last session.

Speakers are `Speaker 1` / `Speaker 2`: a turn's `id` when it has one, else alternating from `Speaker 1`
(previous dialogs carry no ids). MSC has no calendar dates, only the gap after each session (`time_num`
`time_unit`, e.g. 7 days, the time until the next session) and possibly `time_back`; a session's date
string keeps that as readable text ("3 weeks ago" from `time_back`, else "7 days before the next session").
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from harness.datasets import DataFormatError, HubFile, Record, resolve_data_file
from harness.inputs import parse_options, read_text
from harness.task import DataOptions, TaskData
from harness.types import Conversation, Question, Sample, Session, Turn

REPO = "MemGPT/MSC-Self-Instruct"
REVISION = "5138f416f8fa76b75b2e080da87e8a8e346e1500"
REMOTE = HubFile(
    repo_id=REPO,
    filename="msc_self_instruct.jsonl",
    revision=REVISION,
    sha256="d3dbea36848b41dc46c0f1548d0ebf74eeaf6390d6f3fe9318e8480dc984495e",
    subdir="msc",
)
QUESTION_TYPE = "deep-memory-retrieval"
SPEAKERS = ("Speaker 1", "Speaker 2")


class MSCOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    include_current_dialog: bool = Field(
        False, description="also ingest the current session (`dialog`), after the previous ones"
    )


class MSCTask:
    name = "msc"
    description = "MSC-Self-Instruct (MemGPT deep memory retrieval): 500 probes"

    def load(self, data: DataOptions, **options: str) -> TaskData:
        opts = parse_options("task", self.name, MSCOptions, options)
        path, info = resolve_data_file(REMOTE, data)
        return TaskData(
            task=self.name,
            version=f"msc-self-instruct@{REVISION[:7]}",
            options=opts.model_dump(),
            samples=parse_msc(path, include_current_dialog=opts.include_current_dialog),
            question_types=[QUESTION_TYPE],
            judge_style="mem0",
            default_metrics=["f1", "bleu1", "exact_match"],
            data=info,
        )


def parse_msc(path: Path, include_current_dialog: bool = False) -> list[Sample]:
    rows: list[tuple[Record, dict[str, object]]] = []
    for number, line in enumerate(read_text(path).split("\n"), start=1):
        if not line.strip():
            continue
        rec = Record(path, f"line {number}")
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataFormatError(f"{path}: line {number}: not valid JSON ({exc.msg}).") from exc
        rows.append((rec, rec.expect(row, dict, "(line)")))
    ids = _sample_ids(rows)
    return [
        _sample(rec, sample_id, row, include_current_dialog) for (rec, row), sample_id in zip(rows, ids, strict=True)
    ]


def _sample_ids(rows: list[tuple[Record, dict[str, object]]]) -> list[str]:
    """`metadata.initial_data_id` when every row has one and they are unique, else `msc-<row index>`."""
    found: list[str] = []
    for _rec, row in rows:
        metadata = row.get("metadata")
        value = metadata.get("initial_data_id") if isinstance(metadata, dict) else None
        if not isinstance(value, str | int) or isinstance(value, bool):
            break
        found.append(str(value))
    if len(found) == len(rows) and len(set(found)) == len(found):
        return found
    return [f"msc-{index}" for index in range(len(rows))]


def _sample(rec: Record, sample_id: str, row: dict[str, object], include_current: bool) -> Sample:
    sessions: list[Session] = []
    for k, raw in enumerate(rec.get(row, "previous_dialogs", list)):
        at = f"previous_dialogs[{k}]"
        previous = rec.expect(raw, dict, at)
        turns = _turns(rec, rec.get(previous, "dialog", list, at), f"session_{k + 1}", f"{at}.dialog")
        sessions.append(Session(session_id=f"session_{k + 1}", date=_relative_date(previous), turns=turns))
    if include_current:
        session_id = f"session_{len(sessions) + 1}"
        sessions.append(
            Session(session_id=session_id, turns=_turns(rec, rec.get(row, "dialog", list), session_id, "dialog"))
        )

    probe = rec.get(row, "self_instruct", dict)
    metadata = row.get("metadata")
    msc_session = metadata.get("session_id") if isinstance(metadata, dict) else None
    question = Question(
        question_id=f"{sample_id}/q0",
        text=rec.get(probe, "B", str, "self_instruct"),
        answers=(rec.get(probe, "A", str, "self_instruct"),),
        question_type=QUESTION_TYPE,
        metadata={"msc_session_id": msc_session if isinstance(msc_session, int | str) else None},
    )
    seen = dict.fromkeys(turn.speaker for session in sessions for turn in session.turns)
    speakers = SPEAKERS if set(seen) <= set(SPEAKERS) else tuple(seen)
    conversation = Conversation(conversation_id=sample_id, speakers=speakers, sessions=tuple(sessions))
    return Sample(sample_id=sample_id, conversation=conversation, questions=(question,))


def _turns(rec: Record, dialog: list[object], session_id: str, at: str) -> tuple[Turn, ...]:
    turns: list[Turn] = []
    for j, raw in enumerate(dialog):
        turn = rec.expect(raw, dict, f"{at}[{j}]")
        speaker = rec.get_optional(turn, "id", str, f"{at}[{j}]") or SPEAKERS[j % 2]
        turns.append(Turn(turn_id=f"{session_id}:{j}", speaker=speaker, text=rec.get(turn, "text", str, f"{at}[{j}]")))
    return tuple(turns)


def _relative_date(previous: dict[str, object]) -> str | None:
    """A readable relative date from MSC's time fields, or None when the session has none."""
    back, num, unit = previous.get("time_back"), previous.get("time_num"), previous.get("time_unit")
    if isinstance(back, str) and back.strip():
        back = back.strip()
        return back if back.endswith("ago") else f"{back} ago"
    if isinstance(num, int | float | str) and not isinstance(num, bool) and isinstance(unit, str) and unit:
        return f"{num} {unit} before the next session"
    return None


TASK = MSCTask()
