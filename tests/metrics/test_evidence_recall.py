"""evidence_recall@k on hand-computed cases: turn ids, session ids, the @k cut-off and the unscored cases."""

from __future__ import annotations

import pytest

from harness.metrics.base import MetricContext
from harness.metrics.evidence_recall import EvidenceRecall, evidence_recall
from harness.plugins import METRICS
from harness.types import MemoryItem, Prediction, Question


def question(*evidence: str) -> Question:
    return Question(question_id="q", text="?", answers=("x",), question_type="single-hop", evidence=evidence)


def retrieved(*sources: list[str]) -> Prediction:
    items = [MemoryItem(id=f"m{i}", text="...", source_turn_ids=ids) for i, ids in enumerate(sources)]
    return Prediction(question_id="q", answer="x", retrieved=items)


def metric(argument: str | None = None) -> EvidenceRecall:
    return evidence_recall(MetricContext(argument=argument))


@pytest.mark.parametrize(
    ("evidence", "sources", "argument", "expected"),
    [
        (("D1:3",), [["D1:3"]], None, 1.0),
        (("D1:3", "D2:5"), [["D2:5"], ["D9:1"]], None, 0.5),
        (("D1:3", "D2:5"), [["D9:1"], ["D1:3", "D2:5"]], "1", 0.0),  # the covering item is ranked 2nd
        (("D1:3", "D2:5"), [["D9:1"], ["D1:3", "D2:5"]], "2", 1.0),
        (("D1:3", "D2:5", "D3:1"), [["D1:3"], ["D3:1"], ["D2:5"]], "2", 2 / 3),
        (("D1:3", "D1:3"), [["D1:3"]], None, 1.0),  # a repeated gold id counts once
        (("D1:3",), [["D1:30"], ["D11:3"]], None, 0.0),  # no prefix matching between turn ids
        (("D1:3",), [], None, 0.0),  # retrieved nothing
        # LongMemEval: a gold session id is covered by any turn of that session
        (("answer_a1",), [["answer_a1:4"]], None, 1.0),
        (("answer_a1", "answer_b2"), [["answer_a1:0"], ["other:2"]], None, 0.5),
        (("answer_a1", "answer_a1:3"), [["answer_a1:0"]], None, 0.5),  # the turn itself is not covered
        (("answer_a1",), [["answer_a1"]], None, 1.0),  # a whole-session source
        (("answer_a1",), [["answer_a12:0"]], None, 0.0),
    ],
)
async def test_hand_computed_recall(evidence, sources, argument, expected) -> None:
    score = await metric(argument).score(question(*evidence), retrieved(*sources))
    assert score.value == pytest.approx(expected)


async def test_details_say_what_was_counted() -> None:
    score = await metric("2").score(question("D1:3", "D2:5"), retrieved(["D1:3"], ["D4:4"], ["D2:5"]))
    assert score.value == 0.5
    assert score.details == {"covered": 1, "gold": 2, "items": 2}


async def test_questions_without_evidence_are_not_scored() -> None:
    score = await metric("10").score(question(), retrieved(["D1:3"]))
    assert score.value is None and score.details == {"reason": "no gold evidence"}


async def test_systems_that_do_not_retrieve_are_not_scored() -> None:
    prediction = Prediction(question_id="q", answer="x")
    score = await metric().score(question("D1:3"), prediction)
    assert score.value is None and score.details == {"reason": "system does not retrieve"}


def test_names_and_arguments() -> None:
    assert metric().name == "evidence_recall" and metric().k is None
    assert metric("10").name == "evidence_recall@10" and metric("10").k == 10
    assert metric().higher_is_better
    for bad in ("0", "-3", "ten", "1.5"):
        with pytest.raises(ValueError, match="positive integer"):
            metric(bad)


def test_registered() -> None:
    built = METRICS.get("evidence_recall")(MetricContext(argument="5"))
    assert built.name == "evidence_recall@5"
