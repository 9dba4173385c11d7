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
`info.extra["json_mode"]` says. The model loads on the first call, in a worker thread; calls run one at a
time. torch, transformers and xgrammar are imported only when needed.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.metadata
import importlib.util
import json
import logging
import threading
from pathlib import Path
from typing import Any

from harness.llm.base import BackendInfo, Completion, GenerateConfig, LLMError, Message
from harness.llm.gguf_convert import GGUF_PREFIX, resolve_hf_model
from harness.llm.structured import JSONSchema
from harness.model_loading import MODEL_LOAD_LOCK

DEFAULT_MODEL = f"{GGUF_PREFIX}smollm2-135m"
ADAPTER_CONFIG = "adapter_config.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")
INSTALL_HINT = "pip install torch transformers"
SCHEMA_LIBRARY = "xgrammar"
SCHEMA_INSTALL_HINT = "pip install 'memory-harness[hf-structured]'"

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


def _stop_criteria(tokenizer: Any, stops: tuple[str, ...], prompt_length: int) -> Any:
    """Stops once the decoded completion contains a stop string. Decoding the completion each step costs far
    less than a forward pass, and unlike `generate(stop_strings=...)` needs no per-vocabulary precomputation."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class StopOnText(StoppingCriteria):
        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: object) -> torch.Tensor:
            done = [
                any(stop in tokenizer.decode(row[prompt_length:], skip_special_tokens=True) for stop in stops)
                for row in input_ids
            ]
            return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    return StoppingCriteriaList([StopOnText()])


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

    def logits_processor(self, schema: JSONSchema) -> Any:
        """A processor for one `generate()` call (xgrammar's processor keeps per-call matcher state)."""
        from xgrammar.contrib.hf import LogitsProcessor

        return LogitsProcessor(self.compiled(schema.text))


class HFBackend:
    """Chat completions from a transformers model in this process; one call at a time.

    Args:
        model: a model directory, LoRA adapter directory, hub id, or `gguf:NAME`; default `gguf:smollm2-135m`.
        base_url: not used (the model runs in-process); must be None.
        device: `cuda`, `cpu`, ...; default cuda when available, else cpu.
        dtype: a torch dtype name (`float32`, `bfloat16`, ...); default bfloat16 on GPU, float32 on CPU.
    """

    def __init__(
        self,
        model: str | None = None,
        base_url: str | None = None,
        *,
        device: str | None = None,
        dtype: str | None = None,
    ) -> None:
        if base_url is not None:
            raise LLMError("hf runs the model in-process and takes no base URL; use openai:MODEL@URL for a server")
        name = model or DEFAULT_MODEL
        self.location = resolve_hf_model(name)
        self.base = adapter_base(self.location)
        self._device, self._dtype = device, dtype
        self._lock = threading.Lock()
        """Held by a generation, and by loading the model: one call at a time, and one load."""
        self._tokenizer_lock = threading.Lock()
        self._model: Any = None
        self._tokenizer: Any = None
        self._closed = False
        self._warned: set[str] = set()
        self._grammars: SchemaGrammars | None = None
        extra = {"location": self.location, "device": device or "auto", "json_mode": "unconstrained"}
        if self.base is not None:
            extra["adapter_base"] = self.base
        library = schema_library_version()
        if library is not None:
            extra["schema_grammar"] = f"{SCHEMA_LIBRARY}=={library}"
        self.info = BackendInfo(
            provider="hf",
            model=name,
            context_window=context_window_of(self.location),
            max_concurrency=1,
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

    def _prompt_ids(self, tokenizer: Any, messages: list[Message]) -> Any:
        if not tokenizer.chat_template:
            raise LLMError(f"hf:{self.info.model}: the tokenizer has no chat template (a base model?)")
        prompt = tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False)
        # The template writes the special tokens (BOS, role markers) itself.
        return tokenizer(prompt, add_special_tokens=False, return_tensors="pt")

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            logger.warning("hf:%s %s", self.info.model, message)

    def _warn_schema_unenforced(self, reason: str) -> None:
        self._warn_once("json_schema", f"cannot enforce JSON schemas ({reason}); schema calls run unconstrained")

    async def generate(self, messages: list[Message], config: GenerateConfig) -> Completion:
        if self._closed:
            raise LLMError("hf backend used after aclose()")
        if config.json_schema is not None and self.info.structured_outputs != "enforced":
            self._warn_schema_unenforced(f"{SCHEMA_LIBRARY} is not installed: {SCHEMA_INSTALL_HINT}")
        elif config.json_schema is None and config.json_mode:
            self._warn_once("json_mode", "cannot constrain output to JSON; json_mode calls run unconstrained")
        return await asyncio.to_thread(self._generate_blocking, messages, config)

    def _schema_processors(self, schema: JSONSchema | None, tokenizer: Any, model: Any) -> list[Any]:
        """The logits processors enforcing `schema`: none without a schema, or without xgrammar (recorded in
        `info.structured_outputs`). Called with `_lock` held."""
        if schema is None or self.info.structured_outputs != "enforced":
            return []
        if self._grammars is None:
            head = model.get_output_embeddings()  # the logits' width, padding rows included
            vocab_size = int(head.weight.shape[0]) if head is not None else len(tokenizer)
            try:
                self._grammars = SchemaGrammars(tokenizer, vocab_size, sorted(_eos_ids(model)) or None)
            except ImportError as error:  # found on disk but not importable (a broken install, or blocked)
                self.info.structured_outputs = "unconstrained"
                self.info.extra.pop("schema_grammar", None)
                self._warn_schema_unenforced(f"{SCHEMA_LIBRARY} does not import: {error}")
                return []
        return [self._grammars.logits_processor(schema)]

    def _generate_blocking(self, messages: list[Message], config: GenerateConfig) -> Completion:
        import torch

        with self._lock:
            model = self._load_model()
            tokenizer = self._load_tokenizer()
            encoded = self._prompt_ids(tokenizer, messages).to(model.device)
            prompt_length = int(encoded["input_ids"].shape[1])
            window = self.info.context_window
            if window is not None and prompt_length >= window:
                raise LLMError(
                    f"hf:{self.info.model}: prompt too long: {prompt_length} tokens, context window {window}"
                )
            max_new = config.max_tokens if window is None else min(config.max_tokens, window - prompt_length)
            criteria = _stop_criteria(tokenizer, config.stop, prompt_length) if config.stop else None
            processors = self._schema_processors(config.json_schema, tokenizer, model)
            if config.seed is not None:
                torch.manual_seed(config.seed)
            with torch.inference_mode():
                output = model.generate(
                    **encoded,
                    **generation_options(config, max_new),
                    stopping_criteria=criteria,
                    logits_processor=processors or None,
                )
        new_tokens = output[0, prompt_length:]
        text, stopped = cut_at_stop(tokenizer.decode(new_tokens, skip_special_tokens=True), config.stop)
        ended = len(new_tokens) > 0 and int(new_tokens[-1]) in _eos_ids(model)
        return Completion(
            text=text,
            prompt_tokens=prompt_length,
            completion_tokens=len(new_tokens),
            finish_reason="stop" if stopped or ended else "length",
        )

    def count_tokens(self, text: str) -> int | None:
        # Loads only the tokenizer (a second or so), never the model, and never waits for a generation.
        return len(self._load_tokenizer().encode(text, add_special_tokens=False))

    def _release(self) -> None:
        with self._lock:
            self._model = None
            self._grammars = None

    async def aclose(self) -> None:
        self._closed = True
        await asyncio.to_thread(self._release)
