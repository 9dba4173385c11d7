"""`rag`: retrieval over the raw history, the standard baseline between full-context and memory systems.

Each session is cut into chunks (one per turn, or windows of about N words) that keep the ids of the turns
they cover. Chunks are indexed densely (the run's embedding model, `--embedder`, and a faiss index), with
BM25 (bm25s), or both, fused by reciprocal rank fusion. A question retrieves the `top_k` chunks, which are
shown to the shared answer prompt in time order, one `[<date>] <speaker>: <text>` line each; the
prediction lists them best first, with their scores and source turn ids, for evidence recall.
"""

from __future__ import annotations

import time
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from harness.embeddings.base import Embedder
from harness.llm import GenerateConfig, usage_of
from harness.system import SystemContext
from harness.types import MemoryItem, Prediction, Query, Session, StageUsage, Usage
from systems.prompts import ANSWER_INSTRUCTIONS, answer_messages, clean_short_answer
from systems.retrieval.bm25 import BM25Index
from systems.retrieval.chunking import chunk_by_tokens, chunk_by_turn
from systems.retrieval.fusion import RRF_K, reciprocal_rank_fusion
from systems.retrieval.vector_index import VectorIndex

FUSION_CANDIDATES = 50
"""In `hybrid` mode each retriever hands at least this many candidates to the fusion: fusing only the two
top-k lists would drop chunks ranked moderately by both, which is where fusion helps."""


class RagOptions(BaseModel):
    """Options of `rag` (`-S KEY=VALUE` on the command line)."""

    model_config = ConfigDict(extra="forbid")

    retriever: Literal["dense", "bm25", "hybrid"] = "hybrid"
    """`dense` (embeddings + faiss), `bm25`, or `hybrid`: both, merged by reciprocal rank fusion."""
    chunking: Literal["turn", "tokens"] = "turn"
    """`turn`: one chunk per turn; `tokens`: windows of `chunk_tokens` words inside each session."""
    chunk_tokens: int = Field(default=128, gt=0)
    chunk_overlap: int = Field(default=0, ge=0)
    """Words shared by consecutive windows (`tokens` chunking only)."""
    top_k: int = Field(default=10, gt=0)
    rrf_k: int = Field(default=RRF_K, ge=0)
    """The constant of reciprocal rank fusion (`hybrid` only)."""
    max_answer_tokens: int = Field(default=32, gt=0)

    @model_validator(mode="after")
    def _overlap_below_size(self) -> RagOptions:
        if self.chunk_overlap >= self.chunk_tokens:
            raise ValueError(f"chunk_overlap ({self.chunk_overlap}) must be below chunk_tokens ({self.chunk_tokens})")
        return self


def render_context(items: list[MemoryItem]) -> str:
    """One `[<date>] <speaker>: <text>` line per turn (piece) of each item, in the order given."""
    lines: list[str] = []
    for item in items:
        prefix = f"[{item.timestamp}] " if item.timestamp else ""
        lines.extend(prefix + line for line in item.text.splitlines())
    return "\n".join(lines)


class RagSystem:
    """Answers each question from the `top_k` chunks of the history that best match it."""

    options_model: ClassVar[type[RagOptions]] = RagOptions
    prompts: ClassVar[dict[str, str]] = {"answer": ANSWER_INSTRUCTIONS}

    def __init__(self, context: SystemContext, **options: str) -> None:
        self.options = self.options_model.model_validate(options)
        self.model = context.role("answer")
        self.generate_config = GenerateConfig(max_tokens=self.options.max_answer_tokens)
        mode = self.options.retriever
        self.embedder: Embedder | None = context.embedder() if mode in ("dense", "hybrid") else None
        self.bm25 = BM25Index() if mode in ("bm25", "hybrid") else None
        self.vectors: VectorIndex | None = None
        """Built on the first session, with the size of the vectors the embedder returns."""
        self.chunks: list[MemoryItem] = []
        """Every chunk in ingestion (time) order; a chunk's index key is its position here."""

    def _chunk(self, session: Session) -> list[MemoryItem]:
        if self.options.chunking == "turn":
            return chunk_by_turn(session)
        return chunk_by_tokens([session], self.options.chunk_tokens, self.options.chunk_overlap)

    async def ingest(self, session: Session) -> StageUsage:
        chunks = self._chunk(session)
        if not chunks:
            return {}
        keys = [str(len(self.chunks) + i) for i in range(len(chunks))]
        texts = [c.text for c in chunks]
        usage: StageUsage = {}
        if self.embedder is not None:
            started = time.perf_counter()
            vectors = await self.embedder.embed(texts)  # first, so a failure leaves the indexes unchanged
            latency = time.perf_counter() - started
            if self.vectors is None:
                self.vectors = VectorIndex(int(vectors.shape[1]))
            self.vectors.upsert(keys, vectors)
            usage["ingest"] = Usage(calls=1, latency_s=latency, latencies_s=[latency])
        if self.bm25 is not None:
            self.bm25.add(keys, texts)
        self.chunks.extend(chunks)
        return usage

    async def search(self, text: str) -> list[tuple[int, float]]:
        """Positions (in `chunks`) and scores of the `top_k` chunks for `text`, best first."""
        top_k = self.options.top_k
        if not self.chunks:
            return []
        depth = max(top_k, FUSION_CANDIDATES) if self.options.retriever == "hybrid" else top_k
        rankings: list[list[tuple[str, float]]] = []
        if self.embedder is not None and self.vectors is not None:
            query_vector = (await self.embedder.embed([text]))[0]
            rankings.append(self.vectors.search(query_vector, depth))
        if self.bm25 is not None:
            rankings.append(self.bm25.search(text, depth))
        if len(rankings) == 1:
            hits = rankings[0][:top_k]
        else:
            hits = reciprocal_rank_fusion([[key for key, _ in r] for r in rankings], k=self.options.rrf_k)[:top_k]
        return [(int(key), score) for key, score in hits]

    async def answer(self, query: Query) -> Prediction:
        started = time.perf_counter()
        hits = await self.search(query.text)
        search_s = time.perf_counter() - started
        in_time_order = [self.chunks[position] for position, _ in sorted(hits)]
        completion = await self.model.generate(
            answer_messages(render_context(in_time_order), query), self.generate_config
        )
        return Prediction(
            question_id=query.question_id,
            answer=clean_short_answer(completion.text),
            retrieved=[self.chunks[position].model_copy(update={"score": score}) for position, score in hits],
            usage={
                "search": Usage(calls=1, latency_s=search_s, latencies_s=[search_s]),
                "answer": usage_of(completion),
            },
            latency_s=search_s + completion.latency_s,
            metadata={"raw_answer": completion.text, "retriever": self.options.retriever},
        )

    def memory_dump(self) -> list[MemoryItem]:
        return [chunk.model_copy() for chunk in self.chunks]

    def memory_stats(self) -> dict[str, int]:
        return {"chunks": len(self.chunks)}
