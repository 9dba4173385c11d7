"""mem0-lib: the real mem0ai library behind the system seam.

The role mapping needs no mem0; the rest is skipped where mem0ai is not installed. mem0's LLM extraction
prompt alone is ~8,600 SmolLM2 tokens (more than the model's 8k context), so offline tests store messages
verbatim (`infer=false`) and check that extraction with SmolLM2 fails as a recorded LLM failure.
"""

from __future__ import annotations

import importlib.util
import json
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.llm import BackendInfo, LLMCallFailed, Model
from harness.llm.build import build_model
from harness.llm.providers.mock import MockBackend
from harness.runner import RunConfig, run
from harness.system import SystemContext
from harness.types import Sample
from systems.mem0_lib import INSTALL_HINT, UNUSED_LLM_URL, Mem0LibConfigError, Mem0LibSystem, mem0_llm_config
from systems.prompts import ANSWER_INSTRUCTIONS, answer_messages
from tasks.toy import build_samples

needs_mem0 = pytest.mark.skipif(
    importlib.util.find_spec("mem0") is None, reason=f"mem0ai is not installed ({INSTALL_HINT})"
)


def test_openai_server_maps_to_mem0s_openai_provider_with_its_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HARNESS_SERVER_API_KEY", raising=False)
    monkeypatch.delenv("OPENROUTER_API_KEY", raising=False)
    url = "http://127.0.0.1:8080/v1"
    expected = {"provider": "openai", "config": {"model": "smollm2", "api_key": "EMPTY", "openai_base_url": url}}
    assert mem0_llm_config(BackendInfo("openai", "smollm2", url), infer=True) == expected
    assert mem0_llm_config(BackendInfo("litellm", "openai/smollm2", url), infer=True) == expected
    assert mem0_llm_config(BackendInfo("openai", "gpt-4o-mini"), infer=True) == {
        "provider": "openai",
        "config": {"model": "gpt-4o-mini"},
    }
    assert mem0_llm_config(BackendInfo("litellm", "gemini/gemini-2.0-flash"), infer=True) == {
        "provider": "litellm",
        "config": {"model": "gemini/gemini-2.0-flash"},
    }
    monkeypatch.setenv("OPENROUTER_API_KEY", "k")
    with pytest.raises(Mem0LibConfigError, match="OpenRouter"):
        mem0_llm_config(BackendInfo("openai", "smollm2", url), infer=True)


def test_embedded_model_is_refused_with_server_instructions_unless_nothing_is_inferred() -> None:
    embedded = BackendInfo("llamacpp", "smollm2-135m")
    with pytest.raises(Mem0LibConfigError, match=r"python -m llama_cpp.server .*--role memory=openai:smollm2@http"):
        mem0_llm_config(embedded, infer=True)
    with pytest.raises(Mem0LibConfigError, match="openai or litellm"):
        mem0_llm_config(BackendInfo("mock", "mock"), infer=True)
    assert mem0_llm_config(embedded, infer=False)["config"]["openai_base_url"] == UNUSED_LLM_URL


def test_missing_library_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mem0", None)
    with pytest.raises(ImportError, match=r"memory-harness\[mem0\]"):
        Mem0LibSystem(SystemContext(roles={"model": Model(MockBackend(), spec="mock")}), infer="false")


@pytest.fixture
def no_remote_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """Refuses (and records) every connection that is not to the loopback interface."""
    attempts: list[Any] = []
    connect = socket.socket.connect

    def guarded(sock: socket.socket, address: Any) -> Any:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in {"127.0.0.1", "::1", "localhost"}:
            attempts.append(address)
            raise OSError(f"test: no network ({address})")
        return connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    yield attempts


def toy_sample() -> Sample:
    return build_samples()[0]


@needs_mem0
@pytest.mark.slow
async def test_verbatim_memories_keep_speaker_time_and_turn_and_feed_the_shared_prompt(
    no_remote_network: list[Any], tmp_path: Path
) -> None:
    sample = toy_sample()
    backend = MockBackend(default="Answer: Biscuit")
    context = SystemContext(
        roles={"model": Model(backend, spec="mock")}, speakers=sample.conversation.speakers, work_dir=tmp_path
    )
    system = Mem0LibSystem(context, infer="false", top_k="3")
    for session in sample.conversation.sessions:
        assert await system.ingest(session) == {}  # stored verbatim: no LLM call

    n_turns = sample.conversation.n_turns
    assert system.memory_stats() == {"memories": 2 * n_turns, "add_calls": 2 * n_turns, "llm_calls": 0}
    dump = system.memory_dump()
    puppy = [m for m in dump if "puppy" in m.text]
    assert {m.speaker for m in puppy} == {"Alice", "Bob"}
    assert all(m.timestamp == "9:00 am on 3 March, 2023" and m.source_turn_ids == ["D1:1"] for m in puppy)
    assert puppy[0].history[0].op == "ADD" and puppy[0].history[0].session_id == "session_1"

    query = sample.questions[0].to_query()
    prediction = await system.answer(query)
    assert prediction.answer == "Biscuit"
    retrieved = prediction.retrieved or []
    assert len(retrieved) == 6  # top_k per speaker
    assert retrieved[0].source_turn_ids == ["D1:1"] and retrieved[0].score is not None
    prompt = backend.calls[0]
    assert prompt[0]["content"] == ANSWER_INSTRUCTIONS
    context_text = prompt[1]["content"].split("\n", 1)[1].rsplit("\n\nQuestion: ", 1)[0]
    assert prompt == answer_messages(context_text, query)
    assert context_text.startswith("Memories of Alice:\n9:00 am on 3 March, 2023: Alice: I just adopted a puppy")
    assert "\n\nMemories of Bob:\n" in context_text

    folder = Path(system._store.folder.name)
    assert folder.parent == tmp_path and folder.is_dir()
    system.close()
    assert not folder.exists()
    assert no_remote_network == []


@needs_mem0
@pytest.mark.slow
async def test_extraction_with_smollm2_fails_as_a_recorded_llm_failure(llama_server_url: str) -> None:
    sample = toy_sample()
    model = build_model(f"openai:smollm2@{llama_server_url}", max_retries=0)
    system = Mem0LibSystem(SystemContext(roles={"model": model}, speakers=sample.conversation.speakers))
    try:
        with pytest.raises(LLMCallFailed, match=r"context length|context window"):
            await system.ingest(sample.conversation.sessions[0])
        assert system.memory_stats() == {"memories": 0, "add_calls": 1, "llm_calls": 1}
    finally:
        system.close()
        await model.aclose()


@needs_mem0
@pytest.mark.slow
async def test_runner_scores_mem0_lib_against_a_local_server(
    llama_server_url: str, tmp_path: Path, no_remote_network: list[Any]
) -> None:
    config = RunConfig(
        task="toy",
        system="mem0-lib",
        system_options={"infer": "false", "top_k": "3"},
        roles={"model": f"openai:smollm2@{llama_server_url}"},
        metrics=["f1"],
        output_dir=tmp_path,
        run_id="m",
        use_cache=False,
    )
    result = await run(config)

    assert result.status == "finished"
    assert result.counts is not None and result.counts.failed == 0 and result.counts.answered == 6
    assert result.usage["answer"].calls == 6
    assert "ingest" not in result.usage
    assert result.memory is not None
    run_dir = tmp_path / "toy" / "mem0-lib" / "m"
    records = {r["question_id"]: r for r in map(json.loads, (run_dir / "samples.jsonl").read_text().splitlines())}
    puppy = records["toy-1/q0"]["prediction"]["retrieved"]
    assert ["D1:1"] in [item["source_turn_ids"] for item in puppy]
    assert no_remote_network == []
