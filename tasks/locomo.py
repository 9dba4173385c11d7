"""LoCoMo: very long-term conversational memory (Maharana et al., ACL 2024, arXiv:2402.17753).

Dataset: `locomo10.json` from github.com/snap-research/locomo at commit 3eb6f2c (2024-08-12; the file is
unchanged on `main` since 2024-08-09), sha256 79fa87e9…8ff4. 10 conversations between two people, 19–32
sessions each, 1,986 QA. Licence: CC BY-NC 4.0 (the repo's LICENSE.txt).

One Sample per conversation. Category 5 (adversarial: the answer is not in the conversation) is left out
unless `include_adversarial=true`, as Mem0 and Memory-R1 do (1,540 questions remain).

**Two namings of the category numbers** (option `labels`); the per-type table says which one it uses:

- `locomo` (default): the dataset's own — 1 multi-hop, 2 temporal, 3 open-domain, 4 single-hop,
  5 adversarial. The release's statistics table (single-hop 841, multi-hop 282, temporal 321, open
  domain 96, adversarial 446) matches the file's per-category counts one to one.
- `mem0`: the naming of Mem0's evaluation and the papers that build on it, e.g. Memory-R1 — 1 single-hop,
  2 temporal, 3 multi-hop, 4 open-domain, 5 adversarial. Use it only to line up with those papers' tables:
  their per-type numbers for 1, 3 and 4 carry these swapped labels.

`split` gives Memory-R1's split by conversation: train = conv-26, val = conv-30, test = the other 8.

Data quirks handled here (see ../shared/data/locomo/README.md): conv-26 has date keys for sessions it does
not have, so sessions are the `session_<N>` lists that exist; 6 answers are integers (made strings);
category-5 items mostly lack `answer` (then `answers=()`, the tempting wrong answer goes to metadata
`adversarial_answer`); 9 evidence strings are malformed (`'D8:6; D9:17'`, space-separated ids, `'D30:05'`,
`'D:11:26'`, `'D'`) and are split and normalised to `D<session>:<turn>`, dropping what cannot be read.
Evidence ids that name no turn (e.g. `D10:19` in conv-42) are kept as the annotators wrote them.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from harness.datasets import Record, RemoteFile, json_list_records, resolve_data_file
from harness.inputs import parse_options
from harness.task import DataOptions, TaskData
from harness.types import Conversation, Question, Sample, Session, Turn

logger = logging.getLogger(__name__)

COMMIT = "3eb6f2c585f5e1699204e3c3bdf7adc5c28cb376"
REMOTE = RemoteFile(
    filename="locomo10.json",
    url=f"https://raw.githubusercontent.com/snap-research/locomo/{COMMIT}/data/locomo10.json",
    revision=COMMIT,
    sha256="79fa87e90f04081343b8c8debecb80a9a6842b76a7aa537dc9fdf651ea698ff4",
    size=2_805_274,
    subdir="locomo",
)
VERSION = f"locomo10@{COMMIT[:7]}"

LABELS: dict[str, dict[int, str]] = {
    "locomo": {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop", 5: "adversarial"},
    "mem0": {1: "single-hop", 2: "temporal", 3: "multi-hop", 4: "open-domain", 5: "adversarial"},
}
LABEL_DESCRIPTIONS = {
    "locomo": (
        "question types: LoCoMo's own labels (the dataset's naming: 1 multi-hop, 2 temporal, 3 open-domain, "
        "4 single-hop, 5 adversarial)"
    ),
    "mem0": (
        "question types: the Mem0/Memory-R1 view of LoCoMo (1 single-hop, 2 temporal, 3 multi-hop, 4 open-domain, "
        "5 adversarial): categories 1, 3 and 4 carry labels swapped against the dataset's own, to line up with "
        "those papers' tables"
    ),
}
DISPLAY_ORDER: dict[str, list[str]] = {
    # The paper's column order (task_eval/evaluation_stats.py prints categories 4, 1, 2, 3, 5).
    "locomo": ["single-hop", "multi-hop", "temporal", "open-domain", "adversarial"],
    # The column order of the Mem0 / Memory-R1 tables.
    "mem0": ["single-hop", "multi-hop", "open-domain", "temporal", "adversarial"],
}
MEMORY_R1_TRAIN = frozenset({"conv-26"})
MEMORY_R1_VAL = frozenset({"conv-30"})
ADVERSARIAL = 5

_SESSION_KEY = re.compile(r"session_(\d+)")
_EVIDENCE_ID = re.compile(r"D:?(\d+):(\d+)")


class LoCoMoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    split: Literal["all", "train", "val", "test"] = Field(
        "all", description="all, or Memory-R1's split by conversation: train (conv-26), val (conv-30), test (rest)"
    )
    include_adversarial: bool = Field(False, description="keep category 5 (answer not in the conversation)")
    labels: Literal["locomo", "mem0"] = Field(
        "locomo", description="category naming: locomo (the dataset's) or mem0 (Mem0 / Memory-R1 tables)"
    )
    image_captions: bool = Field(
        False, description="append a shared image's BLIP caption to its turn's text, as '[shares <caption>]'"
    )


class LoCoMoTask:
    name = "locomo"
    description = "LoCoMo (Maharana et al., ACL 2024): 10 long conversations, 1,986 QA"

    def load(self, data: DataOptions, **options: str) -> TaskData:
        opts = parse_options("task", self.name, LoCoMoOptions, options)
        path, info = resolve_data_file(REMOTE, data)
        samples = parse_locomo(path, opts)
        types = [t for t in DISPLAY_ORDER[opts.labels] if opts.include_adversarial or t != "adversarial"]
        return TaskData(
            task=self.name,
            version=VERSION,
            options=opts.model_dump(),
            samples=samples,
            question_types=types,
            label_convention=opts.labels,
            label_description=LABEL_DESCRIPTIONS[opts.labels],
            judge_style="mem0",
            default_metrics=["f1_locomo", "f1", "bleu1", "exact_match"],
            data=info,
        )


def parse_locomo(path: Path, opts: LoCoMoOptions) -> list[Sample]:
    return [
        _sample(rec, sample_id, item, opts)
        for rec, item, sample_id in json_list_records(path, "sample", "sample_id")
        if _in_split(sample_id, opts.split)
    ]


def _in_split(sample_id: str, split: str) -> bool:
    if split == "train":
        return sample_id in MEMORY_R1_TRAIN
    if split == "val":
        return sample_id in MEMORY_R1_VAL
    if split == "test":
        return sample_id not in MEMORY_R1_TRAIN | MEMORY_R1_VAL
    return True


def _sample(rec: Record, sample_id: str, item: dict[str, object], opts: LoCoMoOptions) -> Sample:
    conv = rec.get(item, "conversation", dict)
    speakers = (rec.get(conv, "speaker_a", str, "conversation"), rec.get(conv, "speaker_b", str, "conversation"))
    numbers = sorted(int(m.group(1)) for key in conv if (m := _SESSION_KEY.fullmatch(key)))
    sessions = tuple(_session(rec, conv, n, opts.image_captions) for n in numbers)
    questions: list[Question] = []
    counts = {"malformed": 0, "dropped": 0}
    for index, qa in enumerate(rec.get(item, "qa", list)):
        question = _question(rec, sample_id, index, rec.expect(qa, dict, f"qa[{index}]"), opts.labels, counts)
        if opts.include_adversarial or question.metadata["locomo_category"] != ADVERSARIAL:
            questions.append(question)
    if counts["malformed"]:
        logger.debug(
            "%s: %d malformed evidence strings normalised, %d unreadable ids dropped",
            sample_id,
            counts["malformed"],
            counts["dropped"],
        )
    conversation = Conversation(conversation_id=sample_id, speakers=speakers, sessions=sessions)
    return Sample(sample_id=sample_id, conversation=conversation, questions=tuple(questions))


def _session(rec: Record, conv: dict[str, object], n: int, captions: bool) -> Session:
    key = f"session_{n}"
    turns: list[Turn] = []
    for j, raw in enumerate(rec.get(conv, key, list, "conversation")):
        at = f"conversation.{key}[{j}]"
        turn = rec.expect(raw, dict, at)
        text = rec.get(turn, "text", str, at)
        caption = rec.get_optional(turn, "blip_caption", str, at)
        if captions and caption:
            text = f"{text} [shares {caption}]"
        turns.append(
            Turn(turn_id=rec.get(turn, "dia_id", str, at), speaker=rec.get(turn, "speaker", str, at), text=text)
        )
    date = rec.get_optional(conv, f"{key}_date_time", str, "conversation")
    return Session(session_id=key, date=date, turns=tuple(turns))


def _question(
    rec: Record, sample_id: str, index: int, qa: dict[str, object], labels: str, counts: dict[str, int]
) -> Question:
    at = f"qa[{index}]"
    category = rec.get(qa, "category", int, at)
    if category not in LABELS[labels]:
        raise rec.error(f"{at}.category", "an integer from 1 to 5", category)
    # Category 5 items mostly carry only `adversarial_answer`; every other item must have an answer.
    answer = rec.get_text(qa, "answer", at) if "answer" in qa or category != ADVERSARIAL else None
    metadata: dict[str, str | int | float | bool | None] = {"locomo_category": category}
    adversarial_answer = qa.get("adversarial_answer")
    if adversarial_answer is not None:
        metadata["adversarial_answer"] = str(adversarial_answer)
    evidence: list[str] = []
    for j, raw in enumerate(rec.get(qa, "evidence", list, at)):
        evidence.extend(normalize_evidence(rec.expect(raw, str, f"{at}.evidence[{j}]"), counts))
    return Question(
        question_id=f"{sample_id}/q{index}",
        text=rec.get(qa, "question", str, at),
        answers=() if answer is None else (answer,),
        question_type=LABELS[labels][category],
        evidence=tuple(evidence),
        metadata=metadata,
    )


def normalize_evidence(raw: str, counts: dict[str, int] | None = None) -> list[str]:
    """Split and normalise one annotated evidence string into `D<session>:<turn>` ids.

    `'D8:6; D9:17'` and `'D9:1 D4:4'` hold several ids; `'D30:05'` and `'D:11:26'` are typos of `D30:5` and
    `D11:26`; an id that cannot be read (`'D'`) is dropped.
    """
    ids: list[str] = []
    for token in re.split(r"[;,\s]+", raw.strip()):
        match = _EVIDENCE_ID.fullmatch(token)
        if match:
            ids.append(f"D{int(match.group(1))}:{int(match.group(2))}")
        elif token and counts is not None:
            counts["dropped"] += 1
    if counts is not None and ids != [raw]:
        counts["malformed"] += 1
    return ids


TASK = LoCoMoTask()
