"""The `hf` backend: a Hugging Face causal LM run in-process with transformers (the trainers' models).

Specs: `hf:/path/to/dir` (a `from_pretrained` directory, or a LoRA adapter directory, loaded on its base and
merged), `hf:ORG/NAME` (a hub id, for users with network), and `hf:gguf:smollm2-135m` or
`hf:gguf:/path/x.gguf` (a GGUF converted once into a cached directory, see `harness.llm.gguf_convert`);
plain `hf` means `hf:gguf:smollm2-135m`. A converted GGUF holds its quantized values dequantized to fp32,
so `hf:gguf:smollm2-135m` computes with the weights `llamacpp:smollm2-135m` uses, but in fp32 rather than
llama.cpp's quantized kernels: answers can differ slightly.

Prompts go through the tokenizer's chat template. Greedy when temperature is 0; `max_tokens`, `temperature`,
`top_p`, `stop` and `seed` are honoured (a seed sets torch's global generator).

A `json_schema` is enforced with xgrammar (`pip install 'memory-harness[hf-structured]'`): the schema is
compiled once into a grammar over the tokenizer's vocabulary, and a logits processor masks every token the
grammar forbids, so the reply is compact JSON that ends at its closing brace (unless `max_tokens` cuts it).
xgrammar was chosen by measurement on SmolLM2 (CPU): ~0.3 ms of masking per token against ~85 ms per forward
pass; lm-format-enforcer cost ~14 ms per token and its transformers integration does not import with
transformers 5; outlines cost ~0.5 ms per token but 5-30 s on its first call. Without xgrammar, schema calls
run unconstrained with a warning, and `info.structured_outputs` says which happens. `json_mode` alone is
generated unconstrained (the prompt must ask for JSON; callers parse leniently), as
`info.extra["json_mode"]` says.

Concurrent calls are batched: a worker thread takes every waiting request that can share a `generate()` call
(up to `max_batch`, the backend's `max_concurrency`), left-pads their prompts and decodes them together; each
row keeps its own `max_tokens`, stop strings and schema, and leaves the batch's work once it is done. Greedy
calls batch with each other, unseeded sampled calls with the same temperature and top_p, and a seeded sampled
call runs alone (its draws would otherwise depend on its batch-mates). Batched greedy rows give the replies of
one-at-a-time calls up to floating-point ties (padding changes the order of additions). The model loads on the
first call, in the worker thread. torch, transformers and xgrammar are imported only when needed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import importlib.metadata
import importlib.util
import itertools
import json
import logging
import threading
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.llm.base import BackendInfo, Completion, GenerateConfig, LLMError, Message
from harness.llm.gguf_convert import GGUF_PREFIX, resolve_hf_model
from harness.llm.structured import JSONSchema
from harness.model_loading import MODEL_LOAD_LOCK

DEFAULT_MODEL = f"{GGUF_PREFIX}smollm2-135m"
ADAPTER_CONFIG = "adapter_config.json"
TRAIN_META = "train_meta.json"
"""Written beside a checkpoint by `trainers.memr1`; what it records of the training enters the run spec."""
TRAINED_FIELDS = ("algorithm", "agent", "steps", "reward", "reward_settings", "base_model")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")
INSTALL_HINT = "pip install torch transformers"
SCHEMA_LIBRARY = "xgrammar"
SCHEMA_INSTALL_HINT = "pip install 'memory-harness[hf-structured]'"
DEFAULT_MAX_BATCH = 8

logger = logging.getLogger(__name__)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return None


def adapter_base(location: str) -> str | None:
    """The base model of a LoRA adapter directory (resolved like any model name), or None if not an adapter."""
    config = _read_json(Path(location) / ADAPTER_CONFIG)
    if config is None:
        return None
    base = config.get("base_model_name_or_path")
    if not base:
        raise LLMError(f"hf: {location}/{ADAPTER_CONFIG} names no base_model_name_or_path")
    return resolve_hf_model(str(base))


def trained_record(location: str) -> dict[str, Any] | None:
    """What a trainer's checkpoint directory says it was trained for (`TRAINED_FIELDS` of its train_meta.json:
    algorithm, agent, steps, reward and its settings, base model); None for any other model."""
    meta = _read_json(Path(location) / TRAIN_META)
    if meta is None:
        return None
    return {key: meta[key] for key in TRAINED_FIELDS if key in meta}


def _config_file(location: str) -> Path | None:
    local = Path(location) / "config.json"
    if local.is_file():
        return local
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    try:
        cached = try_to_load_from_cache(location, "config.json")
    except ValueError:  # not a valid hub id either (a path that does not exist): nothing to read
        return None
    return Path(cached) if isinstance(cached, str) else None


def context_window_of(location: str) -> int | None:
    """`max_position_embeddings` from the model's config.json, read without transformers; None when the file is
    not on disk yet (a hub id not downloaded: the window is filled in once the model loads)."""
    base = adapter_base(location)
    path = _config_file(base or location)
    config = _read_json(path) if path is not None else None
    if config is None:
        return None
    window = config.get("max_position_embeddings") or (config.get("text_config") or {}).get("max_position_embeddings")
    return int(window) if window else None


def cut_at_stop(text: str, stops: tuple[str, ...]) -> tuple[str, bool]:
    """The text before the earliest stop string (OpenAI semantics: the stop string is not returned)."""
    cuts = [index for index in (text.find(stop) for stop in stops if stop) if index >= 0]
    return (text[: min(cuts)], True) if cuts else (text, False)


def generation_options(config: GenerateConfig, max_new_tokens: int) -> dict[str, Any]:
    """`generate()` settings for a config: greedy at temperature 0; otherwise plain sampling with top_p and no
    top-k, as OpenAI-style APIs sample (transformers' own default would add top_k=50)."""
    if config.temperature <= 0.0:
        return {"max_new_tokens": max_new_tokens, "do_sample": False}
    top_p = 1.0 if config.top_p is None else config.top_p
    return {
        "max_new_tokens": max_new_tokens,
        "do_sample": True,
        "temperature": config.temperature,
        "top_p": top_p,
        "top_k": 0,
    }


def schema_library_version() -> str | None:
    """The installed xgrammar's version, found without importing it; None when it cannot be imported."""
    if importlib.util.find_spec(SCHEMA_LIBRARY) is None:  # also None when sys.modules blocks it
        return None
    try:
        return importlib.metadata.version(SCHEMA_LIBRARY)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _eos_ids(model: Any) -> set[int]:
    eos = model.generation_config.eos_token_id
    return {int(token) for token in (eos if isinstance(eos, list) else [eos]) if token is not None}


class SchemaGrammars:
    """JSON-schema grammars over one tokenizer's vocabulary (xgrammar), compiled once per schema text.

    Args:
        tokenizer: the model's Hugging Face tokenizer.
        vocab_size: the width of the model's logits (may exceed the tokenizer's vocabulary: padding rows).
        stop_ids: the tokens that end a generation, allowed once the JSON is complete (None: xgrammar's guess
            from the tokenizer).
    """

    def __init__(self, tokenizer: Any, vocab_size: int, stop_ids: list[int] | None) -> None:
        import xgrammar  # ImportError when missing: the caller falls back to unconstrained generation

        info = xgrammar.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size, stop_token_ids=stop_ids)
        # The lru_cache below bounds memory; the compiler's own cache would grow without bound.
        self._compiler = xgrammar.GrammarCompiler(info, cache_enabled=False)
        self.compiled = functools.lru_cache(maxsize=256)(self._compile)
        """The compiled grammar of a schema text (cached)."""

    def _compile(self, schema_text: str) -> Any:
        try:
            # Compact JSON: fewer tokens per reply, and no room for a model to loop on whitespace.
            return self._compiler.compile_json_schema(schema_text, any_whitespace=False)
        except RuntimeError as error:  # xgrammar reports unsupported or broken schemas as RuntimeError
            raise LLMError(f"hf: cannot compile the JSON schema into a grammar: {error}") from error


@dataclass
class _Request:
    messages: list[Message]
    config: GenerateConfig
    future: concurrent.futures.Future[Completion] = field(default_factory=concurrent.futures.Future)
    number: int = field(default_factory=itertools.count().__next__)
    """Unique per request: a seeded draw's batch key, so that it never shares a batch."""

    @property
    def batch_key(self) -> Hashable:
        """Requests with equal keys can share one `generate()` call."""
        config = self.config
        if config.temperature <= 0.0:
            return "greedy"
        if config.seed is not None:
            return ("seeded", self.number)
        return ("sampled", config.temperature, config.top_p)


@dataclass
class _Rows:
    """Per-row state of one batched `generate()` call, shared by its stopping criterion and grammar masks.

    A row is done once it ends its turn (an end-of-turn token), writes one of its stop strings, or reaches its
    own token limit; done rows are padded by `generate()` until the whole batch is done.
    """

    prompt_length: int
    limits: list[int]
    stops: list[tuple[str, ...]]
    eos_ids: set[int]
    tokenizer: Any
    done_at: list[int | None] = field(init=False)
    stopped: list[bool] = field(init=False)

    def __post_init__(self) -> None:
        self.done_at = [None] * len(self.limits)
        self.stopped = [False] * len(self.limits)

    def update(self, input_ids: Any) -> list[bool]:
        generated = int(input_ids.shape[1]) - self.prompt_length
        for row, limit in enumerate(self.limits):
            if self.done_at[row] is not None or generated == 0:
                continue
            tokens = input_ids[row, self.prompt_length :]
            if int(tokens[-1]) in self.eos_ids or generated >= limit:
                self.done_at[row] = generated
            elif self.stops[row] and any(
                stop in self.tokenizer.decode(tokens, skip_special_tokens=True) for stop in self.stops[row]
            ):
                self.done_at[row], self.stopped[row] = generated, True
        return [at is not None for at in self.done_at]

    def tokens_of(self, output: Any, row: int) -> Any:
        tokens = output[row, self.prompt_length :]
        at = self.done_at[row]
        return tokens[: self.limits[row] if at is None else at]


def _stopping_criteria(rows: _Rows) -> Any:
    """Stops each row at its own limit, stop string or end of turn. Decoding a row's completion each step costs
    far less than a forward pass, and unlike `generate(stop_strings=...)` needs no per-vocabulary precomputation."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class RowsDone(StoppingCriteria):
        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: object) -> torch.Tensor:
            return torch.tensor(rows.update(input_ids), dtype=torch.bool, device=input_ids.device)

    return StoppingCriteriaList([RowsDone()])


def _grammar_processor(rows: _Rows, grammars: Sequence[Any | None], vocab_size: int) -> Any:
    """Masks, for each row with a compiled grammar, the tokens its grammar forbids next. A row's matcher
    advances by the row's last token; done rows (and rows without a grammar) are left alone."""
    import torch
    import xgrammar
    from transformers import LogitsProcessor

    matchers = [xgrammar.GrammarMatcher(grammar) if grammar is not None else None for grammar in grammars]
    bitmask = xgrammar.allocate_token_bitmask(len(matchers), vocab_size)

    class GrammarMasks(LogitsProcessor):
        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            first_step = int(input_ids.shape[1]) == rows.prompt_length
            masked = []
            for row, matcher in enumerate(matchers):
                if matcher is None or rows.done_at[row] is not None:
                    continue
                if not first_step and not matcher.accept_token(int(input_ids[row, -1])):
                    raise LLMError(f"hf: token {int(input_ids[row, -1])} broke the grammar it was masked by")
                if matcher.is_terminated():
                    continue
                matcher.fill_next_token_bitmask(bitmask, row)
                masked.append(row)
            if masked:
                xgrammar.apply_token_bitmask_inplace(scores, bitmask.to(scores.device), indices=masked)
            return scores

    return GrammarMasks()


class HFBackend:
    """Chat completions from a transformers model in this process; concurrent calls are decoded in batches.

    Args:
        model: a model directory, LoRA adapter directory, hub id, or `gguf:NAME`; default `gguf:smollm2-135m`.
        base_url: not used (the model runs in-process); must be None.
        device: `cuda`, `cpu`, ...; default cuda when available, else cpu.
        dtype: a torch dtype name (`float32`, `bfloat16`, ...); default bfloat16 on GPU, float32 on CPU.
        max_batch: the most requests decoded in one `generate()` call (the backend's `max_concurrency`).
    """

    def __init__(
        self,
        model: str | None = None,
        base_url: str | None = None,
        *,
        device: str | None = None,
        dtype: str | None = None,
        max_batch: int = DEFAULT_MAX_BATCH,
    ) -> None:
        if base_url is not None:
            raise LLMError("hf runs the model in-process and takes no base URL; use openai:MODEL@URL for a server")
        name = model or DEFAULT_MODEL
        self.location = resolve_hf_model(name)
        self.base = adapter_base(self.location)
        self._device, self._dtype = device, dtype
        if max_batch < 1:
            raise LLMError(f"hf: max_batch must be at least 1, got {max_batch}")
        self.max_batch = max_batch
        self._lock = threading.Lock()
        """Held by a batch's generation, and by loading or releasing the model."""
        self._pending: list[_Request] = []
        self._wakeup = threading.Condition()
        """Guards `_pending` and `_worker`; notified when a request arrives or the backend closes."""
        self._worker: threading.Thread | None = None
        self.batch_sizes: list[int] = []
        """The size of every batch decoded so far, in order (what a benchmark reports)."""
        self._tokenizer_lock = threading.Lock()
        self._model: Any = None
        self._tokenizer: Any = None
        self._closed = False
        self._warned: set[str] = set()
        self._grammars: SchemaGrammars | None = None
        extra: dict[str, Any] = {
            "location": self.location,
            "device": device or "auto",
            "json_mode": "unconstrained",
            "max_batch": max_batch,
        }
        if self.base is not None:
            extra["adapter_base"] = self.base
        trained = trained_record(self.location)
        if trained is not None:
            extra["trained"] = trained
        library = schema_library_version()
        if library is not None:
            extra["schema_grammar"] = f"{SCHEMA_LIBRARY}=={library}"
        self.info = BackendInfo(
            provider="hf",
            model=name,
            context_window=context_window_of(self.location),
            max_concurrency=max_batch,
            structured_outputs="enforced" if library is not None else "unconstrained",
            extra=extra,
        )

    def _tokenizer_source(self) -> str:
        if self.base is None or any((Path(self.location) / name).is_file() for name in TOKENIZER_FILES):
            return self.location
        return self.base

    def _load_tokenizer(self) -> Any:
        with self._tokenizer_lock:
            if self._tokenizer is None:
                try:
                    from transformers import AutoTokenizer
                except ImportError as error:
                    raise LLMError(f"the hf backend needs transformers: {INSTALL_HINT} ({error})") from error
                try:
                    self._tokenizer = AutoTokenizer.from_pretrained(self._tokenizer_source())
                except OSError as error:
                    raise LLMError(f"hf:{self.info.model}: cannot load the tokenizer: {error}") from error
            return self._tokenizer

    def _load_model(self) -> Any:
        """Called with `_lock` held."""
        if self._model is not None:
            return self._model
        try:
            import torch
            from transformers import AutoModelForCausalLM
        except ImportError as error:
            raise LLMError(f"the hf backend needs torch and transformers: {INSTALL_HINT} ({error})") from error
        peft_model = self._peft_model_class() if self.base is not None else None
        device = self._device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = getattr(torch, self._dtype) if self._dtype else (torch.bfloat16 if device != "cpu" else torch.float32)
        with MODEL_LOAD_LOCK:
            try:
                model: Any = AutoModelForCausalLM.from_pretrained(self.base or self.location, dtype=dtype)
            except OSError as error:
                raise LLMError(f"hf:{self.info.model}: cannot load {self.base or self.location}: {error}") from error
            if peft_model is not None:
                # Merged: inference then costs what the base model costs, with no adapter matmuls per layer.
                model = peft_model.from_pretrained(model, self.location).merge_and_unload()
        self._model = model.to(device).eval()
        self.info.extra["device"] = device
        self.info.extra["dtype"] = str(dtype).removeprefix("torch.")
        self.info.context_window = self.info.context_window or getattr(model.config, "max_position_embeddings", None)
        return self._model

    def _peft_model_class(self) -> Any:
        try:
            from peft import PeftModel
        except ImportError as error:
            raise LLMError(f"hf: {self.location} is a LoRA adapter; loading it needs peft: pip install peft") from error
        return PeftModel

    def _prompt_text(self, tokenizer: Any, messages: list[Message]) -> str:
        if not tokenizer.chat_template:
            raise LLMError(f"hf:{self.info.model}: the tokenizer has no chat template (a base model?)")
        return str(tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False))

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            logger.warning("hf:%s %s", self.info.model, message)

    def _warn_schema_unenforced(self, reason: str) -> None:
        self._warn_once("json_schema", f"cannot enforce JSON schemas ({reason}); schema calls run unconstrained")

    async def generate(self, messages: list[Message], config: GenerateConfig) -> Completion:
        if config.json_schema is not None and self.info.structured_outputs != "enforced":
            self._warn_schema_unenforced(f"{SCHEMA_LIBRARY} is not installed: {SCHEMA_INSTALL_HINT}")
        elif config.json_schema is None and config.json_mode:
            self._warn_once("json_mode", "cannot constrain output to JSON; json_mode calls run unconstrained")
        request = _Request(messages, config)
        with self._wakeup:
            if self._closed:
                raise LLMError("hf backend used after aclose()")
            self._pending.append(request)
            if self._worker is None:
                self._worker = threading.Thread(target=self._serve, name=f"hf:{self.info.model}", daemon=True)
                self._worker.start()
            self._wakeup.notify()
        return await asyncio.wrap_future(request.future)

    def _next_batch(self) -> list[_Request] | None:
        """The oldest waiting request with every later one that can share its batch; None once closed."""
        with self._wakeup:
            while not self._pending and not self._closed:
                self._wakeup.wait()
            if not self._pending:
                return None
            key = self._pending[0].batch_key
            batch = [request for request in self._pending if request.batch_key == key][: self.max_batch]
            self._pending = [request for request in self._pending if request not in batch]
            return batch

    def _serve(self) -> None:
        while (batch := self._next_batch()) is not None:
            live = [request for request in batch if request.future.set_running_or_notify_cancel()]
            if not live:
                continue
            try:
                completions = self._generate_batch(live)
            except BaseException as error:  # every row of a failed batch fails with it; the worker lives on
                for request in live:
                    request.future.set_exception(error)
                continue
            for request, completion in zip(live, completions, strict=True):
                if isinstance(completion, Exception):
                    request.future.set_exception(completion)
                else:
                    request.future.set_result(completion)

    def _schema_processor(self, rows: _Rows, schemas: list[JSONSchema | None], tokenizer: Any, model: Any) -> Any:
        """The logits processor enforcing each row's schema: None when no row has one, or without xgrammar
        (recorded in `info.structured_outputs`). Called with `_lock` held."""
        if all(schema is None for schema in schemas) or self.info.structured_outputs != "enforced":
            return None
        head = model.get_output_embeddings()  # the logits' width, padding rows included
        vocab_size = int(head.weight.shape[0]) if head is not None else len(tokenizer)
        if self._grammars is None:
            try:
                self._grammars = SchemaGrammars(tokenizer, vocab_size, sorted(_eos_ids(model)) or None)
            except ImportError as error:  # found on disk but not importable (a broken install, or blocked)
                self.info.structured_outputs = "unconstrained"
                self.info.extra.pop("schema_grammar", None)
                self._warn_schema_unenforced(f"{SCHEMA_LIBRARY} does not import: {error}")
                return None
        grammars = [None if schema is None else self._grammars.compiled(schema.text) for schema in schemas]
        return _grammar_processor(rows, grammars, vocab_size)

    def _admit(self, tokenizer: Any, request: _Request) -> tuple[list[int], int] | LLMError:
        """A request's prompt tokens and token limit, or the error that fails it alone (a prompt too long)."""
        try:
            text = self._prompt_text(tokenizer, request.messages)
        except LLMError as error:
            return error
        # The template writes the special tokens (BOS, role markers) itself.
        ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
        length = len(ids)
        window = self.info.context_window
        if window is not None and length >= window:
            return LLMError(f"hf:{self.info.model}: prompt too long: {length} tokens, context window {window}")
        return ids, request.config.max_tokens if window is None else min(request.config.max_tokens, window - length)

    def _generate_batch(self, batch: list[_Request]) -> list[Completion | Exception]:
        """One `generate()` call for the admitted requests of a batch; a request refused alone gets its error."""
        import torch

        with self._lock:
            model = self._load_model()
            tokenizer = self._load_tokenizer()
            admitted = [self._admit(tokenizer, request) for request in batch]
            results: list[Completion | Exception] = [
                entry if isinstance(entry, LLMError) else Completion(text="") for entry in admitted
            ]
            rows = [(index, entry) for index, entry in enumerate(admitted) if not isinstance(entry, LLMError)]
            if not rows:
                return results
            eos_ids = _eos_ids(model)
            if tokenizer.pad_token_id is None:
                tokenizer.pad_token_id = min(eos_ids, default=0)
            # Left padding keeps every row's last prompt token in the last column, where generation continues.
            tokenizer.padding_side = "left"
            prompts = {"input_ids": [ids for _, (ids, _) in rows]}
            encoded = tokenizer.pad(prompts, padding=True, return_tensors="pt").to(model.device)
            state = _Rows(
                prompt_length=int(encoded["input_ids"].shape[1]),
                limits=[limit for _, (_, limit) in rows],
                stops=[batch[index].config.stop for index, _ in rows],
                eos_ids=eos_ids,
                tokenizer=tokenizer,
            )
            schemas = [batch[index].config.json_schema for index, _ in rows]
            processor = self._schema_processor(state, schemas, tokenizer, model)
            config = batch[rows[0][0]].config
            if config.seed is not None:
                torch.manual_seed(config.seed)
            with torch.inference_mode():
                output = model.generate(
                    **encoded,
                    **generation_options(config, max(state.limits)),
                    pad_token_id=tokenizer.pad_token_id,
                    stopping_criteria=_stopping_criteria(state),
                    logits_processor=[processor] if processor is not None else None,
                )
            self.batch_sizes.append(len(rows))
        prompt_tokens = encoded["attention_mask"].sum(dim=1).tolist()
        for position, (index, _) in enumerate(rows):
            tokens = state.tokens_of(output, position)
            text, cut = cut_at_stop(tokenizer.decode(tokens, skip_special_tokens=True), batch[index].config.stop)
            ended = len(tokens) > 0 and int(tokens[-1]) in eos_ids
            results[index] = Completion(
                text=text,
                prompt_tokens=int(prompt_tokens[position]),
                completion_tokens=len(tokens),
                finish_reason="stop" if cut or ended else "length",
            )
        return results

    def count_tokens(self, text: str) -> int | None:
        # Loads only the tokenizer (a second or so), never the model, and never waits for a generation.
        return len(self._load_tokenizer().encode(text, add_special_tokens=False))

    def _release(self) -> None:
        """Lets the worker finish what is queued, stops it, then frees the model."""
        with self._wakeup:
            self._closed = True
            worker, self._worker = self._worker, None
            self._wakeup.notify_all()
        if worker is not None:
            worker.join()
        with self._lock:
            self._model = None
            self._grammars = None

    async def aclose(self) -> None:
        self._closed = True
        await asyncio.to_thread(self._release)
