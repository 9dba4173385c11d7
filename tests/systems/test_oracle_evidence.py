"""oracle-evidence: each question's gold evidence as the context, handed only to a system that declares it reads
it, and marked as such in the spec, the reports and `compare`."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import config, question_of, toy_questions

from harness.compare import compare_runs, comparison_table
from harness.llm import Message, Model
from harness.llm.providers.mock import MockBackend
from harness.reporting import GOLD_EVIDENCE_MARK, GOLD_EVIDENCE_NOTE, read_results, score_report_table
from harness.runner import run
from harness.system import SystemContext
from harness.types import Query, Session, Turn
from systems.full_context import FullContextSystem
from systems.oracle_evidence import OracleEvidenceSystem, select_evidence
from systems.prompts import answer_messages


def session(index: int, texts: list[str]) -> Session:
    turns = tuple(Turn(turn_id=f"D{index}:{j}", speaker="Ann", text=t) for j, t in enumerate(texts, start=1))
    return Session(session_id=f"session_{index}", date=f"day {index}", turns=turns)


HISTORY = [session(1, ["I adopted a cat.", "Her name is Mia."]), session(2, ["I moved to Oslo.", "It rains."])]


async def build(backend: MockBackend, **options: str) -> OracleEvidenceSystem:
    system = OracleEvidenceSystem(SystemContext(roles={"model": Model(backend, spec="mock")}), **options)
    for s in HISTORY:
        assert await system.ingest(s) == {}
    return system


def test_turn_ids_bring_their_turns_and_session_ids_whole_sessions_in_history_order():
    selection = select_evidence(HISTORY, ["D2:1", "D1:2", "D9:9"])
    assert [s.session_id for s in selection.sessions] == ["session_1", "session_2"]
    assert [[t.turn_id for t in s.turns] for s in selection.sessions] == [["D1:2"], ["D2:1"]]
    assert [s.date for s in selection.sessions] == ["day 1", "day 2"]
    assert selection.missing == ["D9:9"] and selection.turns == 2

    whole = select_evidence(HISTORY, ["session_2", "D2:2"])  # LongMemEval: answer sessions and their has_answer turns
    assert whole.sessions == [HISTORY[1]] and whole.missing == []


async def test_the_prompt_holds_only_the_evidence_turns_under_their_session_date():
    backend = MockBackend(replies=["Mia"])
    system = await build(backend)

    prediction = await system.answer(Query(question_id="q", text="Cat's name?", gold_evidence=("D1:2",)))

    prompt = backend.calls[0][-1]["content"]
    assert "[session_1, day 1]\nAnn: Her name is Mia." in prompt
    assert "adopted" not in prompt and "Oslo" not in prompt and "session_2" not in prompt
    assert prediction.answer == "Mia"
    assert prediction.retrieved is not None and [i.source_turn_ids for i in prediction.retrieved] == [["D1:2"]]
    assert prediction.metadata["oracle_context"] == "evidence"
    assert prediction.metadata["evidence_missing"] == [] and prediction.metadata["evidence_turns"] == 1
    assert system.memory_stats() == {"sessions": 2} and len(system.memory_dump()) == 2


@pytest.mark.parametrize("evidence", [(), ("D7:1", "D")], ids=["none", "unknown-ids"])
async def test_no_usable_evidence_gives_the_no_memory_prompt_and_is_recorded(evidence: tuple[str, ...]):
    backend = MockBackend(replies=["Not mentioned"])
    system = await build(backend)
    query = Query(question_id="q", text="Dog's name?", gold_evidence=evidence)

    prediction = await system.answer(query)

    assert backend.calls[0] == answer_messages("", query)
    assert prediction.metadata["oracle_context"] == "empty"
    assert prediction.metadata["evidence_missing"] == list(evidence)
    assert prediction.retrieved == []


async def test_evidence_beyond_the_window_loses_its_oldest_sessions_as_full_context_does():
    # mock tokens = words: each evidence session renders to ~10 words; the window leaves room for one
    backend = MockBackend(replies=["Oslo"], context_window=32 + 256 + 12)
    system = await build(backend)

    prediction = await system.answer(Query(question_id="q", text="City?", gold_evidence=("D1:2", "D2:1")))

    assert prediction.metadata["sessions_dropped"] == 1 and prediction.metadata["sessions_kept"] == ["session_2"]
    assert prediction.retrieved is not None and [i.id for i in prediction.retrieved] == ["session_2"]


async def test_a_query_without_evidence_is_refused():
    system = await build(MockBackend())
    with pytest.raises(ValueError, match="reads_gold_evidence"):
        await system.answer(Query(question_id="q", text="?"))


def answer_from_context(messages: list[Message]) -> str:
    """Gold when the gold answer is in the prompt's context, else the prompt's abstention."""
    gold = {q.text: q.answers[0] for q in toy_questions()}[question_of(messages)]
    return gold if gold in messages[-1]["content"].split("Question:")[0] else "Not mentioned"


async def test_only_a_system_that_declares_it_gets_the_evidence_and_the_run_is_marked(tmp_path, monkeypatch):
    seen: list[tuple[str, ...] | None] = []
    full_context_answer = FullContextSystem.answer

    async def spying(self: FullContextSystem, query: Query):
        seen.append(query.gold_evidence)
        return await full_context_answer(self, query)

    monkeypatch.setattr(FullContextSystem, "answer", spying)  # the oracle answers through full-context too
    metrics = ["exact_match", "evidence_recall"]
    runs: dict[str, Path] = {}
    for system in ("no-memory", "full-context", "oracle-evidence"):
        seen.clear()
        model = Model(MockBackend(responder=answer_from_context), spec="mock")
        result = await run(config(tmp_path, system=system, metrics=metrics), models={"model": model})
        runs[system] = tmp_path / "toy" / system / "r1"
        expected = {q.evidence for q in toy_questions()} if system == "oracle-evidence" else {None}
        assert set(seen) <= expected and (system == "no-memory" or seen)
        assert result.spec.reads_gold_evidence is (system == "oracle-evidence")
        assert result.aggregates["exact_match"].overall.mean == (0.0 if system == "no-memory" else 1.0)
        if system == "oracle-evidence":
            assert result.aggregates["evidence_recall"].overall.mean == 1.0

    oracle, full = (read_results([runs[s]])[0] for s in ("oracle-evidence", "full-context"))
    unmarked = oracle.spec.model_copy(update={"reads_gold_evidence": False})
    assert oracle.spec.compute_config_hash() == unmarked.compute_config_hash()  # existing runs keep their hashes

    table = score_report_table(read_results([runs["no-memory"], runs["full-context"], runs["oracle-evidence"]]))
    assert table.columns[-1].endswith(GOLD_EVIDENCE_MARK) and not table.columns[-2].endswith(GOLD_EVIDENCE_MARK)
    assert GOLD_EVIDENCE_NOTE in table.notes
    assert GOLD_EVIDENCE_NOTE not in score_report_table([full]).notes

    comparison = compare_runs([runs["no-memory"], runs["full-context"], runs["oracle-evidence"]], "exact_match")
    warnings = [w for w in comparison.warnings if "reads the gold evidence" in w]
    assert len(warnings) == 1 and "oracle-evidence" in warnings[0]
    assert any("reads the gold evidence" in note for note in comparison_table(comparison).notes)
    alone = compare_runs([runs["no-memory"], runs["full-context"]], "exact_match")
    assert not any("gold evidence" in w for w in alone.warnings)
