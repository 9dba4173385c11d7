"""A tiny built-in task for fast, offline end-to-end tests (no data file, no download).

Two LoCoMo-shaped conversations of two dated sessions each, and six questions of three types
(single-hop, temporal, multi-hop) whose one-word answers appear verbatim in the turns, with evidence turn
ids. Written for this project; no licence constraints.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from harness.inputs import parse_options
from harness.task import DataFileInfo, DataOptions, TaskData
from harness.types import Conversation, Question, Sample, Session, Turn

QUESTION_TYPES = ["single-hop", "multi-hop", "temporal"]

_Turns = list[tuple[str, str]]
_Questions = list[tuple[str, str, str, tuple[str, ...]]]
# sample id -> (speakers, sessions as (date, [(speaker, text)]), questions as (text, answer, type, evidence))
_DIALOGUES: dict[str, tuple[tuple[str, str], list[tuple[str, _Turns]], _Questions]] = {
    "toy-1": (
        ("Alice", "Bob"),
        [
            (
                "9:00 am on 3 March, 2023",
                [
                    ("Alice", "I just adopted a puppy named Biscuit."),
                    ("Bob", "Congrats! I started learning the violin last week."),
                    ("Alice", "Thanks. I am moving to Lisbon in May."),
                ],
            ),
            (
                "6:30 pm on 20 May, 2023",
                [
                    ("Bob", "How is the move going?"),
                    ("Alice", "Great, Lisbon is sunny and Biscuit loves the beach."),
                    ("Bob", "I played my first violin concert yesterday."),
                ],
            ),
        ],
        [
            ("What is the name of Alice's puppy?", "Biscuit", "single-hop", ("D1:1",)),
            ("When is Alice moving to Lisbon?", "May", "temporal", ("D1:3",)),
            ("Where does Alice's puppy like to go?", "beach", "multi-hop", ("D1:1", "D2:2")),
        ],
    ),
    "toy-2": (
        ("Carol", "Dan"),
        [
            (
                "10:00 am on 1 June, 2023",
                [
                    ("Carol", "My sister Emma is visiting from Toronto."),
                    ("Dan", "Fun! I am training for a marathon in October."),
                    ("Carol", "I will cook paella for her."),
                ],
            ),
            (
                "8:00 pm on 15 June, 2023",
                [
                    ("Dan", "Did Emma like the paella?"),
                    ("Carol", "She loved it. She flies back home on Friday."),
                ],
            ),
        ],
        [
            ("What did Carol cook for her sister?", "paella", "single-hop", ("D1:3",)),
            ("When is Dan's marathon?", "October", "temporal", ("D1:2",)),
            ("Which city does Carol's sister fly back to?", "Toronto", "multi-hop", ("D1:1", "D2:2")),
        ],
    ),
}


class ToyOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ToyTask:
    name = "toy"
    description = "a tiny built-in task for offline tests"

    def load(self, data: DataOptions, **options: str) -> TaskData:
        parse_options("task", self.name, ToyOptions, options)
        return TaskData(
            task=self.name,
            version="toy@1",
            samples=build_samples(),
            question_types=list(QUESTION_TYPES),
            judge_style="mem0",
            default_metrics=["f1", "bleu1", "exact_match"],
            data=DataFileInfo(path="built-in", origin="built-in"),
        )


def build_samples() -> list[Sample]:
    samples: list[Sample] = []
    for sample_id, (speakers, sessions, questions) in _DIALOGUES.items():
        built = tuple(
            Session(
                session_id=f"session_{n}",
                date=date,
                turns=tuple(
                    Turn(turn_id=f"D{n}:{j}", speaker=speaker, text=text)
                    for j, (speaker, text) in enumerate(turns, start=1)
                ),
            )
            for n, (date, turns) in enumerate(sessions, start=1)
        )
        qs = tuple(
            Question(
                question_id=f"{sample_id}/q{i}", text=text, answers=(answer,), question_type=qtype, evidence=evidence
            )
            for i, (text, answer, qtype, evidence) in enumerate(questions)
        )
        conversation = Conversation(conversation_id=sample_id, speakers=speakers, sessions=built)
        samples.append(Sample(sample_id=sample_id, conversation=conversation, questions=qs))
    return samples


TASK = ToyTask()
