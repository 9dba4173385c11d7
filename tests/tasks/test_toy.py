"""The built-in toy task: well-formed, offline, and its answers can be found in its turns."""

from __future__ import annotations

import pytest

from harness.inputs import OptionError
from harness.plugins import TASKS
from harness.task import DataOptions
from harness.types import count_by_type
from tasks.toy import TASK


def test_shape() -> None:
    data = TASK.load(DataOptions())
    assert len(data.samples) == 2
    assert all(len(s.conversation.sessions) == 2 for s in data.samples)
    assert all(session.date for s in data.samples for session in s.conversation.sessions)
    questions = [q for s in data.samples for q in s.questions]
    assert len(questions) == 6
    assert count_by_type(questions) == {"single-hop": 2, "temporal": 2, "multi-hop": 2}
    assert set(data.question_types) == {"single-hop", "temporal", "multi-hop"}
    assert data.data.origin == "built-in"
    assert len({q.question_id for q in questions}) == 6


def test_answers_appear_in_evidence_turns() -> None:
    for sample in TASK.load(DataOptions()).samples:
        turns = {t.turn_id: t.text for s in sample.conversation.sessions for t in s.turns}
        for question in sample.questions:
            assert question.evidence and all(e in turns for e in question.evidence)
            assert any(question.answers[0] in turns[e] for e in question.evidence)


def test_registered_and_takes_no_options() -> None:
    assert TASKS.get("toy") is TASK
    with pytest.raises(OptionError, match="takes no options"):
        TASK.load(DataOptions(), split="test")
