"""End-to-end runs of the toy task with the mock backend: records, aggregates, failures and resume."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from support import config, mock_model, oracle, question_of, toy_questions

from harness.llm import Completion, GenerateConfig, Message, Model
from harness.llm.providers.mock import MockBackend
from harness.plugins import TASKS
from harness.results import QuestionRecord, RunDir
from harness.runner import run
from harness.task import DataOptions
from harness.types import Prediction, Query
from systems.full_context import FullContextSystem


def records(tmp_path: Path, run_id: str = "r1") -> list[dict]:
    path = tmp_path / "toy" / "full-context" / run_id / "samples.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_run_writes_one_record_per_question_and_per_type_aggregates(tmp_path):
    questions = toy_questions()
    wrong_type = questions[0].question_type
    result = await run(config(tmp_path), models={"model": mock_model(oracle(wrong_types={wrong_type}))})

    assert result.status == "finished"
    lines = records(tmp_path)
    assert sorted(r["question_id"] for r in lines) == sorted(q.question_id for q in questions)
    n_wrong = sum(q.question_type == wrong_type for q in questions)
    em = result.aggregates["exact_match"]
    assert em.overall.n == len(questions)
    assert em.overall.mean == pytest.approx((len(questions) - n_wrong) / len(questions))
    assert em.by_type[wrong_type].mean == 0.0
    assert em.by_type[wrong_type].n == n_wrong
    assert all(c.mean == 1.0 for t, c in em.by_type.items() if t != wrong_type)
    assert result.counts is not None and result.counts.failed == 0
    assert result.usage["answer"].calls == len(questions)
    run_dir = tmp_path / "toy" / "full-context" / "r1"
    assert RunDir(run_dir).read_result().status == "finished"
    n_samples = len(TASKS.get("toy").load(DataOptions()).samples)
    assert len(list((run_dir / "memory").glob("*.jsonl"))) == n_samples
    assert len(RunDir(run_dir).read_ingests()) == n_samples


async def test_failed_call_is_recorded_not_scored_and_retried_on_resume(tmp_path):
    questions = toy_questions()
    failing = questions[1]
    result = await run(config(tmp_path), models={"model": mock_model(oracle(failing={failing.text}))})

    assert result.counts is not None and result.counts.failed == 1
    failed = [r for r in records(tmp_path) if r["error"]]
    assert [r["question_id"] for r in failed] == [failing.question_id]
    assert failed[0]["scores"] == {} and failed[0]["prediction"] is None
    assert "server overloaded" in failed[0]["error"]
    assert result.aggregates["exact_match"].overall.n == len(questions) - 1

    healthy = MockBackend(responder=oracle())
    resumed = await run(config(tmp_path), models={"model": Model(healthy, spec="mock")}, resume=True)

    assert resumed.counts is not None and resumed.counts.failed == 0
    assert [question_of(m) for m in healthy.calls] == [failing.text]  # only the failed question is asked again
    ids = [r["question_id"] for r in records(tmp_path)]
    assert sorted(ids) == sorted(q.question_id for q in questions)
    assert resumed.aggregates["exact_match"].overall.mean == 1.0


class SlowBackend(MockBackend):
    async def generate(self, messages: list[Message], config: GenerateConfig) -> Completion:
        await asyncio.sleep(0.02)
        return await super().generate(messages, config)


async def test_killed_run_resumes_to_the_same_aggregates_without_duplicates(tmp_path):
    questions = toy_questions()
    wrong = {questions[-1].question_type}
    reference = await run(config(tmp_path, run_id="whole"), models={"model": mock_model(oracle(wrong_types=wrong))})

    slow = Model(SlowBackend(responder=oracle(wrong_types=wrong), context_window=None), spec="mock", max_concurrency=1)
    killed = asyncio.create_task(run(config(tmp_path, run_id="killed", max_samples=1), models={"model": slow}))
    samples_file = tmp_path / "toy" / "full-context" / "killed" / "samples.jsonl"
    while not samples_file.exists() or len(samples_file.read_text().splitlines()) < 2:
        await asyncio.sleep(0.005)
    killed.cancel()
    with pytest.raises(asyncio.CancelledError):
        await killed
    partial = RunDir(samples_file.parent).read_result()
    assert partial.status == "interrupted"
    assert 2 <= partial.counts.questions < len(questions)

    resumed = await run(
        config(tmp_path, run_id="killed"), models={"model": mock_model(oracle(wrong_types=wrong))}, resume=True
    )

    ids = [r["question_id"] for r in records(tmp_path, "killed")]
    assert len(ids) == len(set(ids)) == len(questions)
    assert resumed.aggregates == reference.aggregates
    assert resumed.status == "finished"


async def test_resume_refuses_a_changed_configuration(tmp_path):
    await run(config(tmp_path), models={"model": mock_model(oracle())})
    with pytest.raises(ValueError, match="config hash"):
        await run(config(tmp_path, limit=2), models={"model": mock_model(oracle())}, resume=True)


async def test_a_new_run_never_overwrites_an_existing_run_directory(tmp_path):
    await run(config(tmp_path), models={"model": mock_model(oracle())})
    with pytest.raises(FileExistsError):
        await run(config(tmp_path), models={"model": mock_model(oracle())})


async def test_torn_last_line_of_a_killed_run_is_redone(tmp_path):
    await run(config(tmp_path), models={"model": mock_model(oracle())})
    samples_file = tmp_path / "toy" / "full-context" / "r1" / "samples.jsonl"
    lines = samples_file.read_text().splitlines()
    samples_file.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][: len(lines[-1]) // 2])

    backend = MockBackend(responder=oracle())
    resumed = await run(config(tmp_path), models={"model": Model(backend, spec="mock")}, resume=True)

    assert len(backend.calls) == 1
    assert resumed.counts is not None and resumed.counts.questions == len(lines)


async def test_a_history_whose_ingest_fails_records_its_questions_failed_and_the_run_goes_on(tmp_path):
    from harness.plugins import SYSTEMS
    from systems.full_context import FullContextSystem

    class BreaksOnSecondHistory(FullContextSystem):
        async def ingest(self, session):
            if "Carol" in self.context_speakers:
                raise RuntimeError("vector store unavailable")
            return await super().ingest(session)

    def build(context, **options):
        system = BreaksOnSecondHistory(context, **options)
        system.context_speakers = context.speakers
        return system

    SYSTEMS.add("breaks-on-carol", build)
    result = await run(config(tmp_path, system="breaks-on-carol"), models={"model": mock_model(oracle())})

    by_sample = {}
    for r in records_of(tmp_path / "toy" / "breaks-on-carol" / "r1"):
        by_sample.setdefault(r["sample_id"], []).append(r)
    assert all(r["error"] is None for r in by_sample["toy-1"])
    assert all("ingest failed: RuntimeError: vector store unavailable" in r["error"] for r in by_sample["toy-2"])
    assert result.status == "finished"
    assert result.counts.failed == len(by_sample["toy-2"])


def records_of(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]


async def test_efficiency_counts_system_tokens_per_correct_answer_and_memory_words(tmp_path):
    questions = toy_questions()
    wrong_type = questions[0].question_type
    result = await run(config(tmp_path), models={"model": mock_model(oracle(wrong_types={wrong_type}))})
    lines = records(tmp_path)
    tokens = sum(
        stage["prompt_tokens"] + stage["completion_tokens"]
        for r in lines
        for stage in r["prediction"]["usage"].values()
    )
    correct = sum(r["scores"]["exact_match"] for r in lines)
    assert result.efficiency is not None
    assert result.efficiency.system_tokens == tokens > 0
    assert result.efficiency.tokens_per_correct["exact_match"] == pytest.approx(tokens / correct, abs=0.05)
    assert (result.efficiency.system_cost_usd, result.efficiency.unpriced_calls) == (0.0, 0)  # mock: local, free
    # full-context keeps the whole history: its footprint is every turn's words.
    memory_dir = tmp_path / "toy" / "full-context" / "r1" / "memory"
    words = sum(
        len(json.loads(line)["text"].split()) for f in memory_dir.glob("*.jsonl") for line in f.read_text().splitlines()
    )
    assert result.memory is not None and result.memory.words_total == words > 0
    assert result.memory.tokens_total == words  # the mock's tokenizer splits on whitespace


async def test_two_judges_with_repeats_give_per_judge_scores_spread_and_agreement(tmp_path):
    questions = toy_questions()
    lenient = Model(MockBackend(default='{"label": "CORRECT"}'), spec="mock")
    # The second judge calls exactly the first two questions it sees wrong, whichever seed asks.
    seen: list[str] = []

    def strict(messages: list[Message]) -> str:
        text = messages[-1]["content"]
        if text not in seen:
            seen.append(text)
        return '{"label": "WRONG"}' if seen.index(text) < 2 else '{"label": "CORRECT"}'

    models = {
        "model": mock_model(oracle()),
        "judge": lenient,
        "judge_2": Model(MockBackend(responder=strict), spec="mock"),
    }
    result = await run(config(tmp_path, metrics=None, judge_repeats=2), models=models)

    assert result.spec.metrics[-2:] == ["llm_judge", "llm_judge@judge_2"]
    assert result.aggregates["llm_judge"].overall.mean == 1.0
    n = len(questions)
    assert result.aggregates["llm_judge@judge_2"].overall.mean == pytest.approx((n - 2) / n)
    assert result.aggregates["llm_judge"].overall.repeats == 2
    # Both repeats of a question get the same verdict here: no spread across repeats.
    assert result.aggregates["llm_judge@judge_2"].overall.sd_repeats == 0.0
    (agreement,) = result.judge_agreement
    assert (agreement.a, agreement.b, agreement.n) == ("llm_judge", "llm_judge@judge_2", n)
    assert agreement.raw == pytest.approx((n - 2) / n)
    assert agreement.kappa == 0.0  # one judge always says CORRECT: agreement is all chance
    assert result.usage["judge"].calls == 2 * 2 * n


async def test_questions_answered_at_once_are_bounded_by_twice_the_slots(tmp_path, monkeypatch):
    answering, peak = 0, 0
    answer = FullContextSystem.answer

    async def counted(self: FullContextSystem, query: Query) -> Prediction:
        nonlocal answering, peak
        answering += 1
        peak = max(peak, answering)
        try:
            return await answer(self, query)
        finally:
            answering -= 1

    monkeypatch.setattr(FullContextSystem, "answer", counted)
    backend = MockBackend(responder=oracle(), latency_s=0.01)
    model = Model(backend, spec="mock", max_concurrency=1)
    result = await run(config(tmp_path, max_samples=2), models={"model": model})
    assert result.counts is not None and result.counts.answered == len(toy_questions()) == 6
    assert peak == 2  # one call in its slot and one prepared, over both histories (unbounded: all 6 at once)


def test_records_appended_while_appending_are_on_disk_at_once_and_follow_a_rewrite(tmp_path):
    run_dir = RunDir(tmp_path)
    record = QuestionRecord(sample_id="s", question_id="q1", question_type="t", question="?", gold=["x"])
    with run_dir.appending():
        run_dir.append_question(record)
        assert [r.question_id for r in RunDir(tmp_path).read_questions()] == ["q1"]  # flushed, file still open
        run_dir.rewrite_questions([])
        run_dir.append_question(record.model_copy(update={"question_id": "q2"}))
        assert [r.question_id for r in RunDir(tmp_path).read_questions()] == ["q2"]
    run_dir.append_question(record.model_copy(update={"question_id": "q3"}))
    assert [r.question_id for r in run_dir.read_questions()] == ["q2", "q3"]
