"""End-to-end toy runs of `mem0` and `memr1` with a scripted mock: banks dumped, operation counts in run.json."""

from __future__ import annotations

import json

import pytest
from support import every_line_a_fact

from harness.llm import Message, Model
from harness.llm.providers.mock import MockBackend
from harness.plugins import TASKS
from harness.results import RunDir
from harness.runner import RunConfig, run
from harness.task import DataOptions
from systems.memory_ops import MANAGER_INSTRUCTIONS
from systems.memr1.answer_agent import ANSWER_AGENT_INSTRUCTIONS


def respond(messages: list[Message]) -> str:
    """Every line of the target speaker becomes a fact and is ADDed; the first fact's decision is malformed."""
    system, user = messages[0]["content"], messages[-1]["content"]
    if system == MANAGER_INSTRUCTIONS and "puppy named Biscuit" in user:
        return "not json"
    if (reply := every_line_a_fact(messages)) is not None:
        return reply
    return "- [1]\n**Answer:** Biscuit" if system == ANSWER_AGENT_INSTRUCTIONS else "Biscuit"


@pytest.mark.parametrize("system", ["mem0", "memr1"])
async def test_toy_run_dumps_each_bank_and_sums_operation_counts(tmp_path, system):
    config = RunConfig(
        task="toy",
        system=system,
        embedder="hashing",
        output_dir=tmp_path,
        run_id="r",
        roles={"model": "mock"},
        metrics=["exact_match"],
        use_cache=False,
    )
    backend = MockBackend(responder=respond, validate_schema=False)  # its malformed reply is the point
    result = await run(config, models={"model": Model(backend, spec="mock")})

    assert result.status == "finished" and result.counts is not None and result.counts.failed == 0
    samples = TASKS.get("toy").load(DataOptions()).samples
    run_dir = tmp_path / "toy" / system / "r"
    turns = sum(s.conversation.n_turns for s in samples)
    for sample in samples:
        lines = (run_dir / "memory" / f"{sample.sample_id}.jsonl").read_text().splitlines()
        items = [json.loads(line) for line in lines]
        assert items and all(i["source_turn_ids"] and i["history"][0]["op"] == "ADD" for i in items)
    stats = result.memory.stats if result.memory else {}
    assert stats["facts_extracted"] == turns  # one fact per turn
    assert stats["ADD"] == turns - 1 and stats["NOOP"] == 1 and stats["invalid_manager_output"] == 1
    assert stats["memories"] == turns - 1 == result.memory.items_total
    assert {"ingest", "ingest_search", "search", "answer"} <= set(result.usage)
    records = RunDir(run_dir).read_questions()
    assert all(r.prediction is not None and r.prediction.answer == "Biscuit" for r in records)
    assert all(r.prediction.retrieved for r in records if r.prediction is not None)
    if system == "memr1":
        assert all(r.prediction.metadata["marker_found"] for r in records if r.prediction is not None)
