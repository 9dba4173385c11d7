"""Memory snapshots: a second run with another answer model ingests nothing; stale or corrupt ones are rebuilt."""

from __future__ import annotations

import json
from pathlib import Path

from support import every_line_a_fact

from harness.llm import Message, Model
from harness.llm.providers.mock import MockBackend
from harness.results import RunDir
from harness.runner import RunConfig, run
from harness.snapshots import SnapshotStore


def memory_model(messages: list[Message]) -> str:
    return every_line_a_fact(messages) or "**Answer:** Biscuit"


def config(tmp_path: Path, run_id: str, answer: str) -> RunConfig:
    return RunConfig(
        task="toy",
        system="memr1",
        embedder="hashing",
        output_dir=tmp_path / "runs",
        run_id=run_id,
        roles={"model": "mock", "memory": "mock:memory", "manager": "mock:memory", "answer": f"mock:{answer}"},
        metrics=["exact_match"],
        snapshot_dir=tmp_path / "snapshots",
        cache_path=tmp_path / "calls.sqlite",
    )


async def run_with(tmp_path: Path, run_id: str, answer: str, memory_model_name: str = "memory"):
    memory = MockBackend(memory_model_name, responder=memory_model)
    models = {
        "model": Model(MockBackend(default="unused"), spec="mock"),
        "memory": Model(memory, spec=f"mock:{memory_model_name}"),
        "manager": Model(memory, spec=f"mock:{memory_model_name}"),
        "answer": Model(MockBackend(answer, default=f"**Answer:** {answer}"), spec=f"mock:{answer}"),
    }
    result = await run(config(tmp_path, run_id, answer), models=models)
    return result, memory


def memories(tmp_path: Path, run_id: str) -> dict[str, list[dict]]:
    folder = tmp_path / "runs" / "toy" / "memr1" / run_id / "memory"
    return {path.stem: [json.loads(line) for line in path.read_text().splitlines()] for path in folder.iterdir()}


async def test_a_second_run_with_another_answer_model_reuses_every_snapshot(tmp_path):
    first, memory = await run_with(tmp_path, "a", answer="Biscuit")
    assert first.memory is not None and first.memory.snapshots == {"built": 2}
    assert len(memory.calls) > 0 and first.usage["ingest"].calls == len(memory.calls)
    assert first.spec.roles["memory"].structured_outputs == "validated"  # what the mock does with the schemas

    second, memory = await run_with(tmp_path, "b", answer="Lisbon")

    assert memory.calls == [], "no ingestion call: both histories were restored"
    assert second.memory is not None and second.memory.snapshots == {"reused": 2}
    assert "ingest" not in second.usage
    assert memories(tmp_path, "b") == memories(tmp_path, "a")
    assert second.memory.stats == first.memory.stats  # the counters of the ingestion that built them
    assert {r.prediction.answer for r in RunDir(tmp_path / "runs/toy/memr1/b").read_questions()} == {"Lisbon"}
    retrieved = [r.prediction.retrieved for r in RunDir(tmp_path / "runs/toy/memr1/b").read_questions()]
    assert all(retrieved), "the restored banks are searchable"


async def test_another_memory_model_builds_its_own_snapshot(tmp_path):
    await run_with(tmp_path, "a", answer="Biscuit")
    result, memory = await run_with(tmp_path, "b", answer="Biscuit", memory_model_name="other")
    assert len(memory.calls) > 0 and result.memory is not None and result.memory.snapshots == {"built": 2}
    assert len(list((tmp_path / "snapshots").glob("*.json"))) == 4


async def test_a_corrupt_or_tampered_snapshot_is_rebuilt_never_used(tmp_path):
    await run_with(tmp_path, "a", answer="Biscuit")
    first, second = sorted((tmp_path / "snapshots").glob("*.json"))
    first.write_text(first.read_text()[:100])  # truncated
    stored = json.loads(second.read_text())
    stored["payload"]["items"][0]["text"] = "Alice said: something she never said"
    second.write_text(json.dumps(stored))  # payload no longer matches its checksum

    result, memory = await run_with(tmp_path, "b", answer="Biscuit")

    assert result.memory is not None and result.memory.snapshots == {"rebuilt": 2}
    assert len(memory.calls) > 0
    assert memories(tmp_path, "b") == memories(tmp_path, "a")
    reused, _ = await run_with(tmp_path, "c", answer="Biscuit")
    assert reused.memory is not None and reused.memory.snapshots == {"reused": 2}, "the rebuilt files are good"


async def test_a_payload_that_does_not_restore_is_rebuilt(tmp_path):
    await run_with(tmp_path, "a", answer="Biscuit")
    store = SnapshotStore(tmp_path / "snapshots")
    for path in (tmp_path / "snapshots").glob("*.json"):
        stored = json.loads(path.read_text())
        stored["payload"]["vectors"] = "not base64!"
        store.save(stored["identity"], stored["payload"])  # a valid checksum over a broken payload

    result, _ = await run_with(tmp_path, "b", answer="Biscuit")
    assert result.memory is not None and result.memory.snapshots == {"rebuilt": 2}
    assert memories(tmp_path, "b") == memories(tmp_path, "a")


async def test_no_cache_means_no_snapshots(tmp_path):
    memory = MockBackend("memory", responder=memory_model)
    models = {role: Model(memory, spec="mock:memory") for role in ("model", "memory", "manager", "answer")}
    settings = config(tmp_path, "a", "x").model_copy(update={"use_cache": False})
    result = await run(settings, models=models)
    assert result.memory is not None and result.memory.snapshots == {}
    assert not (tmp_path / "snapshots").exists()
