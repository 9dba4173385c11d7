"""CallCache and its use by Model: what enters the key, what is never cached, persistence."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
from pathlib import Path

import pytest

from harness.llm import Completion, GenerateConfig, LLMCallFailed, LLMError, Message, Model
from harness.llm.cache import CallCache, request_document
from harness.llm.providers.mock import MockBackend

QUESTION: list[Message] = [{"role": "user", "content": "Where does Caroline live?"}]
IDENTITY: dict[str, str | None] = {"provider": "mock", "model": "m1", "base_url": None}


@pytest.fixture
def cache(tmp_path: Path) -> CallCache:
    return CallCache(tmp_path / "calls.sqlite")


def key(identity: dict[str, str | None], messages: list[Message], config: GenerateConfig) -> str:
    return request_document(identity, messages, config).key


@pytest.mark.parametrize(
    ("identity", "messages", "config"),
    [
        pytest.param({**IDENTITY, "model": "m2"}, QUESTION, GenerateConfig(), id="model"),
        pytest.param({**IDENTITY, "provider": "openai"}, QUESTION, GenerateConfig(), id="provider"),
        pytest.param({**IDENTITY, "base_url": "http://127.0.0.1:8000/v1"}, QUESTION, GenerateConfig(), id="base_url"),
        pytest.param(IDENTITY, [{"role": "user", "content": "Where does Mel live?"}], GenerateConfig(), id="messages"),
        pytest.param(
            IDENTITY, [{"role": "system", "content": "Where does Caroline live?"}], GenerateConfig(), id="role"
        ),
        pytest.param(IDENTITY, QUESTION, GenerateConfig(max_tokens=32), id="max_tokens"),
        pytest.param(IDENTITY, QUESTION, GenerateConfig(stop=("\n",)), id="stop"),
        pytest.param(IDENTITY, QUESTION, GenerateConfig(json_mode=True), id="json_mode"),
        pytest.param(IDENTITY, QUESTION, GenerateConfig(seed=1), id="seed"),
        pytest.param(IDENTITY, QUESTION, GenerateConfig(temperature=0.7, seed=1), id="temperature"),
    ],
)
def test_key_changes_with_every_semantic_field(
    identity: dict[str, str | None], messages: list[Message], config: GenerateConfig
) -> None:
    assert key(identity, messages, config) != key(IDENTITY, QUESTION, GenerateConfig())


def test_key_is_stable() -> None:
    assert key(IDENTITY, QUESTION, GenerateConfig(seed=3)) == key(
        dict(IDENTITY), list(QUESTION), GenerateConfig(seed=3)
    )


SERVER = {"provider": "openai", "model": "m", "base_url": "http://127.0.0.1:8000/v1"}
PROMPT: list[Message] = [
    {"role": "system", "content": "Answer briefly."},
    {"role": "user", "content": 'Context:\n[S1]\nA: café "quoted"\n\nQuestion: Where?\nAnswer:'},
]
V1_KEY = "920dbcffb5fc9d62b55da98eb28b6f564ab81cbea85d461d2193d1062fc442a4"
"""The key version 1 of the cache gave PROMPT (computed with it before version 2)."""


def test_keys_are_pinned_so_a_change_is_a_deliberate_version_bump() -> None:
    request = request_document(SERVER, PROMPT, GenerateConfig(max_tokens=32))
    assert request.key == "a6cfa286694c647c74b06c0bffdcb89f56ab8d960a732f545297ddce3f6014c1"
    assert CallCache.v1_key(request.v1_document()) == V1_KEY


async def test_the_stored_request_reads_back_as_the_whole_document(cache: CallCache) -> None:
    request = request_document(SERVER, PROMPT, GenerateConfig(max_tokens=32))
    cache.put(request, Completion(text="Paris"))
    assert cache.document(request.key) == request.v1_document()
    assert (
        '"content": "Context:\\n[S1]\\nA: café \\"quoted\\"\\n\\nQuestion: Where?\\nAnswer:"' in request.v1_document()
    )


def test_a_history_shared_by_prompts_is_stored_once(cache: CallCache) -> None:
    history = "\n\n".join(f"[S{n}]\nA: turn {n} " + "x" * 1000 for n in range(20))
    for question in ("Where?", "When?", "Who?"):
        prompt: list[Message] = [{"role": "user", "content": f"Context:\n{history}\n\nQuestion: {question}"}]
        cache.put(request_document(IDENTITY, prompt, GenerateConfig()), Completion(text="a"))
    reopened = sqlite3.connect(cache.path)
    assert reopened.execute("SELECT COUNT(*) FROM blocks").fetchone()[0] == 1 + 19 + 3
    assert len(cache) == 3


def test_a_remembered_prefix_gives_the_same_block_hashes_as_a_fresh_split() -> None:
    history = "\n\n".join(f"[S{n}]\nA: turn {n}" for n in range(5))
    same_length = history.replace("turn 0", "turn 9")  # another history of the prefix's length
    contents = [
        f"{history}\n\nQuestion: Where?",
        f"{history}\n\nQuestion: When?",  # the first prompt's prefix, remembered
        f"{same_length}\n\nQuestion: Where?",
        "no blocks at all",
        "\n\n\n\nempty blocks\n\n",
    ]
    for content in contents:
        prompt: list[Message] = [{"role": "user", "content": content}]
        (message,) = json.loads(request_document(IDENTITY, prompt, GenerateConfig()).document)["messages"]
        assert message["blocks"] == [hashlib.sha256(b.encode()).hexdigest() for b in content.split("\n\n")]


def test_version_1_rows_are_still_served_and_moved_to_version_2(tmp_path: Path) -> None:
    path = tmp_path / "calls.sqlite"
    old = sqlite3.connect(path, isolation_level=None)
    old.execute(
        "CREATE TABLE calls (key TEXT PRIMARY KEY, request TEXT NOT NULL, text TEXT NOT NULL,"
        " prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL, finish_reason TEXT)"
    )
    v1_document = request_document(SERVER, PROMPT, GenerateConfig(max_tokens=32)).v1_document()
    old.execute("INSERT INTO calls VALUES (?, ?, ?, ?, ?, ?)", (V1_KEY, v1_document, "Paris", 12, 1, "stop"))
    old.close()
    cache = CallCache(path)
    request = request_document(SERVER, PROMPT, GenerateConfig(max_tokens=32))
    expected = Completion(text="Paris", prompt_tokens=12, completion_tokens=1, finish_reason="stop", cached=True)
    assert cache.get(request) == expected
    assert len(cache) == 1 and cache.document(request.key) == v1_document
    assert cache.get(request_document(SERVER, PROMPT, GenerateConfig(max_tokens=16))) is None


async def test_second_identical_call_is_served_from_cache(cache: CallCache) -> None:
    backend = MockBackend(default="Paris")
    model = Model(backend, spec="mock", cache=cache)
    first = await model.generate(QUESTION)
    second = await model.generate(QUESTION)
    assert len(backend.calls) == 1
    assert (first.cached, second.cached) == (False, True)
    assert second.text == first.text
    assert (second.prompt_tokens, second.completion_tokens) == (first.prompt_tokens, first.completion_tokens)
    assert (cache.hits, cache.misses) == (1, 1)


async def test_different_model_is_a_miss(cache: CallCache) -> None:
    await Model(MockBackend("m1", default="a"), spec="mock:m1", cache=cache).generate(QUESTION)
    other = MockBackend("m2", default="b")
    completion = await Model(other, spec="mock:m2", cache=cache).generate(QUESTION)
    assert completion.text == "b"
    assert len(other.calls) == 1
    assert len(cache) == 2


async def test_sampled_calls_without_seed_are_not_cached(cache: CallCache) -> None:
    backend = MockBackend(replies=["one", "two"])
    model = Model(backend, spec="mock", cache=cache)
    sampled = GenerateConfig(temperature=0.8)
    texts = [(await model.generate(QUESTION, sampled)).text for _ in range(2)]
    assert texts == ["one", "two"]
    assert len(cache) == 0


async def test_sampled_calls_with_seed_are_cached(cache: CallCache) -> None:
    backend = MockBackend(replies=["one", "two"])
    model = Model(backend, spec="mock", cache=cache)
    seeded = GenerateConfig(temperature=0.8, seed=7)
    texts = [(await model.generate(QUESTION, seeded)).text for _ in range(2)]
    assert texts == ["one", "one"]
    assert len(backend.calls) == 1


async def test_cache_persists_across_instances(tmp_path: Path) -> None:
    path = tmp_path / "calls.sqlite"
    first_cache = CallCache(path)
    await Model(MockBackend(default="Paris"), spec="mock", cache=first_cache).generate(QUESTION)
    first_cache.close()

    backend = MockBackend(default="something else")
    completion = await Model(backend, spec="mock", cache=CallCache(path)).generate(QUESTION)
    assert completion == Completion(
        text="Paris", prompt_tokens=4, completion_tokens=1, finish_reason="stop", cached=True, cost_usd=0.0
    )
    assert backend.calls == []


async def test_failed_calls_are_not_cached(cache: CallCache) -> None:
    backend = MockBackend(replies=[LLMError("bad request"), "fine"])
    model = Model(backend, spec="mock", cache=cache)
    with pytest.raises(LLMCallFailed):
        await model.generate(QUESTION)
    assert len(cache) == 0
    assert (await model.generate(QUESTION)).text == "fine"


def committed(path: Path) -> int:
    """Rows another connection sees: what a killed process would have left."""
    with sqlite3.connect(path) as db:
        return int(db.execute("SELECT COUNT(*) FROM calls_v2").fetchone()[0])


async def test_puts_in_one_turn_of_the_loop_commit_together_at_the_next(tmp_path: Path) -> None:
    path = tmp_path / "calls.sqlite"
    cache = CallCache(path)
    model = Model(MockBackend(default="Paris"), spec="mock", cache=cache)
    first, second = (
        request_document(IDENTITY, QUESTION, GenerateConfig()),
        request_document(IDENTITY, QUESTION, GenerateConfig(max_tokens=8)),
    )
    cache.put(first, Completion(text="Paris"))
    cache.put(second, Completion(text="Lyon"))
    assert committed(path) == 0  # nothing awaited yet: both wait for the loop's next turn
    assert cache.get(first) is not None and cache.get(second) is not None  # and are served meanwhile
    await asyncio.sleep(0)
    assert committed(path) == 2
    await model.generate(QUESTION, GenerateConfig(max_tokens=16))
    assert committed(path) == 2
    await model.aclose()  # closing the model writes what is pending
    assert committed(path) == 3


async def test_a_full_batch_commits_without_waiting_for_the_loop(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("harness.llm.cache.FLUSH_EVERY", 3)
    path = tmp_path / "calls.sqlite"
    cache = CallCache(path)
    for n in range(3):
        cache.put(request_document(IDENTITY, QUESTION, GenerateConfig(max_tokens=n + 1)), Completion(text="x"))
    assert committed(path) == 3


def test_outside_an_event_loop_a_put_commits_at_once(tmp_path: Path) -> None:
    path = tmp_path / "calls.sqlite"
    CallCache(path).put(request_document(IDENTITY, QUESTION, GenerateConfig()), Completion(text="Paris"))
    assert committed(path) == 1
