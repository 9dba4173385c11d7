"""The transformers backend and the GGUF -> Hugging Face conversion (slow tests use the real SmolLM2)."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import pytest
from pydantic import BaseModel
from support import require_smollm2_gguf, write_tiny_llama

from harness.llm import Completion, GenerateConfig, LLMError, Message, gguf_convert
from harness.llm.build import build_backend, build_model
from harness.llm.gguf_convert import SOURCE_FILE, gguf_sha256, hf_dir_from_gguf, resolve_hf_model
from harness.llm.providers.hf import HFBackend, context_window_of, cut_at_stop, generation_options
from harness.llm.structured import JSONSchema
from harness.plugins import BACKENDS
from systems.memory_ops import extraction_schema, manager_schema

QUESTION: list[Message] = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
GREEDY = GenerateConfig(max_tokens=24, temperature=0.0)


class _Verdict(BaseModel):
    label: Literal["CORRECT", "WRONG"]


VERDICT = JSONSchema.of(_Verdict, name="verdict")


def require_transformers() -> None:
    for module in ("torch", "transformers", "gguf"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"needs {module}: pip install torch transformers gguf")


@pytest.fixture(scope="module")
def backend(smollm2_hf_dir: Path) -> Iterator[HFBackend]:
    backend = HFBackend(str(smollm2_hf_dir))
    yield backend
    asyncio.run(backend.aclose())


@pytest.fixture(scope="module")
def tiny_hf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random tiny Llama: its replies are noise, so a reply that fits a schema shows the grammar at work."""
    return write_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), [VERDICT.text, QUESTION[0]["content"]])


@pytest.mark.slow
def test_conversion_matches_the_gguf_model(smollm2_hf_dir: Path) -> None:
    import torch
    from gguf import GGUFReader
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = require_smollm2_gguf()
    plain = AutoModelForCausalLM.from_pretrained(smollm2_hf_dir)
    assert getattr(plain, "hf_quantizer", None) is None
    tokenizer = AutoTokenizer.from_pretrained(smollm2_hf_dir)
    from_gguf = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    assert tokenizer.chat_template == GGUFReader(gguf).fields["tokenizer.chat_template"].contents()
    assert "<|im_start|>" in tokenizer.chat_template
    inputs = tokenizer("Caroline went to the LGBTQ support group on 7 May.", return_tensors="pt")
    with torch.inference_mode():
        assert torch.allclose(plain(**inputs).logits, from_gguf(**inputs).logits, atol=1e-5)
    record = json.loads((smollm2_hf_dir / SOURCE_FILE).read_text())
    assert record["sha256"] == gguf_sha256(gguf)
    assert record["gguf"] == str(gguf.resolve())


@pytest.mark.slow
def test_conversion_is_cached(smollm2_hf_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    weights = smollm2_hf_dir / "model.safetensors"
    before = weights.stat().st_mtime_ns

    def refuse(*args: object) -> None:
        raise AssertionError("smollm2_hf_dir again")

    monkeypatch.setattr(gguf_convert, "_convert", refuse)
    assert hf_dir_from_gguf(require_smollm2_gguf()) == smollm2_hf_dir
    assert resolve_hf_model("gguf:smollm2-135m") == str(smollm2_hf_dir)
    assert weights.stat().st_mtime_ns == before


@pytest.mark.slow
async def test_greedy_answer_is_deterministic(backend: HFBackend) -> None:
    first = await backend.generate(QUESTION, GREEDY)
    second = await backend.generate(QUESTION, GREEDY)
    assert "Paris" in first.text
    assert second == first
    assert first.prompt_tokens > 10
    assert 0 < first.completion_tokens <= GREEDY.max_tokens
    assert first.finish_reason == "stop"
    assert (backend.info.provider, backend.info.context_window, backend.info.max_concurrency) == ("hf", 8192, 8)
    assert backend.info.extra["device"] == "cpu"


@pytest.mark.slow
async def test_stop_sequence_cuts_the_answer(backend: HFBackend) -> None:
    prompt: list[Message] = [{"role": "user", "content": "Write two sentences about the sea."}]
    full = await backend.generate(prompt, GenerateConfig(max_tokens=40))
    assert full.finish_reason == "length"
    words = full.text.split()
    assert len(words) > 6, full.text
    cut = await backend.generate(prompt, GenerateConfig(max_tokens=40, stop=(words[5],)))
    assert cut.text == full.text[: full.text.index(words[5])]
    assert cut.finish_reason == "stop"
    assert cut.completion_tokens < full.completion_tokens


@pytest.mark.slow
async def test_seeded_sampling_repeats(backend: HFBackend) -> None:
    sampled = GenerateConfig(max_tokens=12, temperature=1.0, seed=7)
    first, second = await backend.generate(QUESTION, sampled), await backend.generate(QUESTION, sampled)
    assert first.text == second.text


@pytest.mark.slow
async def test_json_mode_runs_unconstrained_and_says_so(backend: HFBackend, caplog: pytest.LogCaptureFixture) -> None:
    asked: list[Message] = [{"role": "user", "content": 'Reply with JSON: {"city": ...} for the capital of France.'}]
    completion = await backend.generate(asked, GenerateConfig(max_tokens=16, json_mode=True))
    assert completion.completion_tokens > 0
    assert backend.info.extra["json_mode"] == "unconstrained"
    assert "cannot constrain output to JSON" in caplog.text


@pytest.mark.slow
@pytest.mark.parametrize(
    ("schema", "messages"),
    [
        (extraction_schema(), "extraction"),
        (extraction_schema(1, 2), "extraction"),
        (manager_schema(["0", "1"], 1), "manager"),
    ],
    ids=["facts", "one-or-two-facts", "one-operation"],
)
async def test_smollm2_replies_fit_the_schema(backend: HFBackend, schema: JSONSchema, messages: str) -> None:
    prompts: dict[str, list[Message]] = {
        "extraction": [
            {"role": "system", "content": 'Write down the facts about the person. Reply with JSON: {"facts": [...]}.'},
            {
                "role": "user",
                "content": "Session date: 8 May 2023\nConversation:\nCaroline: I adopted a dog named Rex yesterday!\n"
                "Melanie: Cute, I love dogs.\n\nFacts about Caroline (JSON):",
            },
        ],
        "manager": [
            {
                "role": "system",
                "content": "You manage a memory bank. For the new fact choose ADD, UPDATE, DELETE or NONE. Reply with "
                'JSON: {"memory": [{"event": ..., "id": ..., "text": ...}]}',
            },
            {
                "role": "user",
                "content": 'Existing memories: [{"id": "0", "text": "Caroline likes tea"}, {"id": "1", "text": '
                '"Caroline lives in Oslo"}]\nNew facts: ["Caroline adopted a dog named Rex"]',
            },
        ],
    }
    completion = await backend.generate(prompts[messages], GenerateConfig(max_tokens=96, json_schema=schema))
    assert backend.info.structured_outputs == "enforced"
    assert schema.errors(completion.text) == [], completion.text
    assert completion.finish_reason == "stop"
    assert completion.text.endswith("}")


@pytest.mark.slow
async def test_count_tokens(backend: HFBackend) -> None:
    assert backend.count_tokens("") == 0
    short, long = backend.count_tokens("Paris"), backend.count_tokens("Paris is the capital of France. " * 10)
    assert short is not None and long is not None
    assert 0 < short < long


@pytest.mark.slow
async def test_prompt_longer_than_context_is_a_permanent_error(backend: HFBackend) -> None:
    too_long: list[Message] = [{"role": "user", "content": "memory " * 8300}]
    with pytest.raises(LLMError, match=r"prompt too long: \d+ tokens, context window 8192"):
        await backend.generate(too_long, GREEDY)


@pytest.mark.slow
async def test_build_model_with_the_gguf_spec(smollm2_hf_dir: Path) -> None:
    model = build_model("hf:gguf:smollm2-135m")
    try:
        assert model.info.model == "gguf:smollm2-135m"
        assert model.info.extra["location"] == str(smollm2_hf_dir)
        assert "Paris" in (await model.generate(QUESTION, GREEDY)).text
    finally:
        await model.aclose()
    assert build_backend("hf").info.model == "gguf:smollm2-135m"


@pytest.mark.slow
async def test_lora_adapter_directory_loads(smollm2_hf_dir: Path, tmp_path: Path) -> None:
    if importlib.util.find_spec("peft") is None:
        pytest.skip("needs peft: pip install peft")
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(smollm2_hf_dir)
    # Random A and B (not the default zero B), so the adapter visibly changes the model.
    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(base, lora).save_pretrained(tmp_path / "adapter")
    backend = HFBackend(str(tmp_path / "adapter"))
    try:
        assert backend.info.extra["adapter_base"] == str(smollm2_hf_dir)
        assert backend.info.context_window == 8192
        completion = await backend.generate(QUESTION, GenerateConfig(max_tokens=8))
        assert completion.completion_tokens > 0
        inputs = {"input_ids": torch.tensor([[504, 3575, 282, 4649, 314]])}
        fresh = AutoModelForCausalLM.from_pretrained(smollm2_hf_dir)
        with torch.inference_mode():
            assert not torch.allclose(backend._model(**inputs).logits, fresh(**inputs).logits, atol=1e-3)
    finally:
        await backend.aclose()


def test_registered_and_refuses_a_base_url(tmp_path: Path) -> None:
    assert "hf" in BACKENDS.names()
    with pytest.raises(LLMError, match="takes no base URL"):
        build_backend(f"hf:{tmp_path}@http://127.0.0.1:8000/v1")


def test_directories_and_hub_ids_pass_through(tmp_path: Path) -> None:
    assert resolve_hf_model(str(tmp_path)) == str(tmp_path)
    assert resolve_hf_model("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_missing_or_unknown_gguf(tmp_path: Path) -> None:
    with pytest.raises(LLMError, match="GGUF file not found"):
        resolve_hf_model(f"gguf:{tmp_path / 'absent.gguf'}")
    with pytest.raises(LLMError, match="unknown model 'llama-70b'"):
        resolve_hf_model("gguf:llama-70b")


def test_a_foreign_directory_is_never_overwritten(tmp_path: Path) -> None:
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"not really a model")
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / SOURCE_FILE).write_text(json.dumps({"sha256": "0" * 64}))
    with pytest.raises(LLMError, match="is not a conversion of"):
        hf_dir_from_gguf(gguf, taken)


def test_a_file_that_is_not_a_gguf_is_refused_cleanly(tmp_path: Path) -> None:
    require_transformers()
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"just bytes")
    with pytest.raises(LLMError, match="transformers cannot load"):
        hf_dir_from_gguf(fake, tmp_path / "out")
    assert list(tmp_path.iterdir()) == [fake]


def test_cache_directory_is_named_by_content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"version one")
    first = gguf_convert.default_hf_dir(gguf)
    gguf.write_bytes(b"version two, longer")
    second = gguf_convert.default_hf_dir(gguf)
    assert first.parent == second.parent == tmp_path / "cache" / "hf-from-gguf"
    assert first.name.startswith("tiny-") and first != second


def test_cut_at_stop() -> None:
    assert cut_at_stop("Paris. Next question:", ("Next", ".")) == ("Paris", True)
    assert cut_at_stop("Paris", ("Rome",)) == ("Paris", False)
    assert cut_at_stop("Paris", ()) == ("Paris", False)


def test_generation_options() -> None:
    assert generation_options(GenerateConfig(temperature=0.0), 10) == {"max_new_tokens": 10, "do_sample": False}
    sampled = generation_options(GenerateConfig(temperature=0.7, top_p=0.9), 5)
    assert sampled == {"max_new_tokens": 5, "do_sample": True, "temperature": 0.7, "top_p": 0.9, "top_k": 0}


def test_context_window_from_config_json(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"max_position_embeddings": 2048}))
    assert context_window_of(str(tmp_path)) == 2048
    assert context_window_of(str(tmp_path / "absent")) is None


def test_adapter_needs_a_base(tmp_path: Path) -> None:
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    with pytest.raises(LLMError, match="names no base_model_name_or_path"):
        HFBackend(str(tmp_path))


async def test_adapter_without_peft_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    require_transformers()
    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text(json.dumps({"max_position_embeddings": 64}))
    (tmp_path / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(base)}))
    monkeypatch.setitem(sys.modules, "peft", None)
    backend = HFBackend(str(tmp_path))
    assert backend.info.context_window == 64
    with pytest.raises(LLMError, match="pip install peft"):
        await backend.generate(QUESTION, GREEDY)


def _schema_errors(text: str) -> list[str]:
    return VERDICT.errors(text)


async def test_schema_is_enforced_and_compiled_once(tiny_hf_dir: Path) -> None:
    pytest.importorskip("xgrammar")
    backend = HFBackend(str(tiny_hf_dir))
    try:
        assert backend.info.structured_outputs == "enforced"
        assert backend.info.extra["schema_grammar"].startswith("xgrammar==")
        free = await backend.generate(QUESTION, GenerateConfig(max_tokens=48))
        assert _schema_errors(free.text) != [], free.text  # the model alone writes noise
        constrained = GenerateConfig(max_tokens=48, json_schema=VERDICT)
        first, second = await backend.generate(QUESTION, constrained), await backend.generate(QUESTION, constrained)
        assert _schema_errors(first.text) == [], first.text
        assert second == first
        # The grammar ends the reply at its closing brace: the last token is the end-of-turn token.
        assert first.text.endswith("}") and first.finish_reason == "stop"
        assert first.completion_tokens < constrained.max_tokens
        assert backend._grammars is not None
        assert (backend._grammars.compiled.cache_info().misses, backend._grammars.compiled.cache_info().hits) == (1, 1)
        other = await backend.generate(QUESTION, GenerateConfig(max_tokens=8, json_schema=extraction_schema()))
        assert other.text.startswith('{"facts": [')
        assert backend._grammars.compiled.cache_info().misses == 2
    finally:
        await backend.aclose()


async def test_stop_strings_cut_a_constrained_reply(tiny_hf_dir: Path) -> None:
    pytest.importorskip("xgrammar")
    backend = HFBackend(str(tiny_hf_dir))
    try:
        # Compact JSON: the grammar itself writes `{"label": ` before the model picks a label.
        cut = await backend.generate(QUESTION, GenerateConfig(max_tokens=48, json_schema=VERDICT, stop=(": ",)))
        assert (cut.text, cut.finish_reason) == ('{"label"', "stop")
    finally:
        await backend.aclose()


async def test_without_xgrammar_schema_calls_run_unconstrained(
    tiny_hf_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "xgrammar", None)
    backend = HFBackend(str(tiny_hf_dir))
    try:
        assert backend.info.structured_outputs == "unconstrained"
        assert "schema_grammar" not in backend.info.extra
        config = GenerateConfig(max_tokens=8, json_schema=VERDICT)
        replies = [await backend.generate(QUESTION, config) for _ in range(2)]
        assert all(reply.completion_tokens == 8 and reply.finish_reason == "length" for reply in replies)
        assert _schema_errors(replies[0].text) != []
        warnings = [
            record.getMessage() for record in caplog.records if "cannot enforce JSON schemas" in record.getMessage()
        ]
        assert len(warnings) == 1 and "hf-structured" in warnings[0]
    finally:
        await backend.aclose()


async def test_xgrammar_that_does_not_import_is_recorded(
    tiny_hf_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    pytest.importorskip("xgrammar")
    backend = HFBackend(str(tiny_hf_dir))
    try:
        assert backend.info.structured_outputs == "enforced"
        monkeypatch.setitem(sys.modules, "xgrammar", None)  # found on disk, but the import fails
        reply = await backend.generate(QUESTION, GenerateConfig(max_tokens=8, json_schema=VERDICT))
        assert reply.completion_tokens == 8
        assert backend.info.structured_outputs == "unconstrained"
        assert "schema_grammar" not in backend.info.extra
        assert "xgrammar does not import" in caplog.text
    finally:
        await backend.aclose()


async def test_a_schema_that_does_not_compile_is_a_permanent_error(tiny_hf_dir: Path) -> None:
    pytest.importorskip("xgrammar")
    broken = JSONSchema(name="broken", text='{"type": "object", "properties": {"a": {"$ref": "#/nowhere"}}}')
    backend = HFBackend(str(tiny_hf_dir))
    try:
        with pytest.raises(LLMError, match="cannot compile the JSON schema"):
            await backend.generate(QUESTION, GenerateConfig(max_tokens=8, json_schema=broken))
    finally:
        await backend.aclose()


PROMPTS: list[list[Message]] = [
    [{"role": "user", "content": text}]
    for text in ("What is the capital of France?", "Name a colour.", "Say hello to Caroline and Melanie, please.", "Hi")
]


async def _one_batch(
    backend: HFBackend, calls: list[tuple[list[Message], GenerateConfig]]
) -> list[Completion | BaseException]:
    """The replies to (or errors of) `calls` decoded as one batch: a first call holds the worker while the
    others queue."""
    backend._lock.acquire()
    try:
        blocker = asyncio.ensure_future(backend.generate(QUESTION, GREEDY))
        await asyncio.sleep(0)  # the blocker is queued
        while backend._pending:  # the worker has taken the blocker and waits for the lock
            await asyncio.sleep(0.01)
        queued = [asyncio.ensure_future(backend.generate(messages, config)) for messages, config in calls]
        while len(backend._pending) < len(calls):
            await asyncio.sleep(0.01)
    finally:
        backend._lock.release()
    await blocker
    return list(await asyncio.gather(*queued, return_exceptions=True))


async def test_concurrent_greedy_calls_share_a_batch_and_reply_as_one_at_a_time(tiny_hf_dir: Path) -> None:
    backend = HFBackend(str(tiny_hf_dir), max_batch=8)
    try:
        assert backend.info.max_concurrency == 8
        calls = [(messages, GenerateConfig(max_tokens=6 + 3 * n)) for n, messages in enumerate(PROMPTS)]
        alone = [await backend.generate(messages, config) for messages, config in calls]
        assert backend.batch_sizes == [1, 1, 1, 1]
        together = await _one_batch(backend, calls)
        assert backend.batch_sizes[-2:] == [1, 4]
        assert together == alone
        # Each row keeps its own limit in a batch whose longest row runs on.
        assert [reply.completion_tokens for reply in together] == [6, 9, 12, 15]
        assert len({reply.prompt_tokens for reply in together}) > 1  # padding is not counted
    finally:
        await backend.aclose()


async def test_a_batch_keeps_each_rows_stop_strings_and_schema(tiny_hf_dir: Path) -> None:
    pytest.importorskip("xgrammar")
    backend = HFBackend(str(tiny_hf_dir))
    try:
        free = GenerateConfig(max_tokens=24)
        constrained = GenerateConfig(max_tokens=48, json_schema=VERDICT)
        cut = GenerateConfig(max_tokens=48, json_schema=VERDICT, stop=(": ",))
        alone = [await backend.generate(QUESTION, config) for config in (free, constrained, cut)]
        together = await _one_batch(backend, [(QUESTION, config) for config in (free, constrained, cut)])
        assert backend.batch_sizes[-1] == 3
        assert together == alone
        assert _schema_errors(together[0].text) != []  # the row without a schema is not masked
        assert _schema_errors(together[1].text) == [] and together[1].finish_reason == "stop"
        assert (together[2].text, together[2].finish_reason) == ('{"label"', "stop")
    finally:
        await backend.aclose()


async def test_a_prompt_too_long_fails_alone_in_its_batch(tiny_hf_dir: Path) -> None:
    backend = HFBackend(str(tiny_hf_dir))
    try:
        too_long: list[Message] = [{"role": "user", "content": "capital " * 600}]
        config = GenerateConfig(max_tokens=4)
        first, failed, last = await _one_batch(
            backend, [(PROMPTS[0], config), (too_long, config), (PROMPTS[1], config)]
        )
        assert isinstance(failed, LLMError) and "prompt too long" in str(failed)
        assert isinstance(first, Completion) and isinstance(last, Completion)
        assert first.completion_tokens == last.completion_tokens == 4
        assert backend.batch_sizes[-1] == 2
    finally:
        await backend.aclose()


def test_only_compatible_calls_share_a_batch() -> None:
    from harness.llm.providers.hf import _Request

    def key(**options: object) -> object:
        return _Request(QUESTION, GenerateConfig(**options)).batch_key  # type: ignore[arg-type]

    assert key() == key(max_tokens=3, stop=("x",), json_schema=VERDICT)  # greedy rows batch whatever their limits
    assert key(temperature=0.7) == key(temperature=0.7, max_tokens=9)
    assert key(temperature=0.7) != key(temperature=0.7, top_p=0.9) != key()
    assert key(temperature=0.7, seed=1) != key(temperature=0.7, seed=1)  # a seeded draw runs alone


async def test_closing_finishes_queued_calls_and_refuses_new_ones(tiny_hf_dir: Path) -> None:
    backend = HFBackend(str(tiny_hf_dir))
    replies = [asyncio.ensure_future(backend.generate(messages, GREEDY)) for messages in PROMPTS]
    await asyncio.sleep(0)
    await backend.aclose()
    assert all(reply.done() and reply.result().completion_tokens > 0 for reply in replies)
    assert backend._worker is None
    with pytest.raises(LLMError, match="after aclose"):
        await backend.generate(QUESTION, GREEDY)


def test_max_batch_must_be_positive(tiny_hf_dir: Path) -> None:
    with pytest.raises(LLMError, match="max_batch must be at least 1"):
        HFBackend(str(tiny_hf_dir), max_batch=0)
