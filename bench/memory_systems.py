"""Benchmark: what memory systems cost on real LoCoMo with the embedded models.

Runs `rag`, `mem0` and `memr1` (SmolLM2-135M through llama.cpp, all-MiniLM-L6-v2 embeddings) on the Memory-R1
test split, cut to `--conversations` conversations and their first `--sessions` sessions (full ingestion of
all 8 test conversations takes hours on 2 CPU cores), and reports per conversation: ingestion LLM calls and
tokens, memory bank size and operation counts; plus embedding throughput (per-session batches, as systems
embed, against one batch of the whole history: the reference measured in the same run) and retrieval latency
p50/p95 (as a multiple of one query embedding, measured in the same run).

    python bench/memory_systems.py --data-dir ../shared/data --conversations 1 --sessions 3 --questions 6

Writes the figures as JSON to `--out` (default bench/out/memory_systems.json) and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

from harness.embeddings.build import build_embedder
from harness.plugins import TASKS
from harness.results import RunDir
from harness.runner import RunConfig, run
from harness.task import DataOptions
from harness.types import Sample
from systems.retrieval.chunking import chunk_by_turn

SYSTEMS = ("rag", "mem0", "memr1")


def subset_file(data_dir: str, conversations: int, sessions: int, folder: Path) -> Path:
    """A locomo10.json holding the first `conversations` test conversations cut to `sessions` sessions."""
    source = Path(data_dir) / "locomo" / "locomo10.json"
    raw = json.loads(source.read_text())
    test = [c for c in raw if c["sample_id"] not in ("conv-26", "conv-30")][:conversations]
    for conv in test:
        keep = {f"session_{n}" for n in range(1, sessions + 1)}
        dropped = [
            k
            for k in conv["conversation"]
            if k.startswith("session_") and k.split("_")[1].isdigit() and "date" not in k and k not in keep
        ]
        for key in dropped:
            del conv["conversation"][key]
        kept_turns = {t["dia_id"] for k in keep for t in conv["conversation"].get(k, [])}
        conv["qa"] = [q for q in conv["qa"] if q.get("evidence") and set(q["evidence"]) <= kept_turns]
    path = folder / "locomo10.json"
    path.write_text(json.dumps(test))
    return path


async def embedding_figures(samples: list[Sample]) -> dict[str, float]:
    embedder = build_embedder("sentence-transformers:all-MiniLM-L6-v2", use_cache=False)
    chunks = [c.text for s in samples for session in s.conversation.sessions for c in chunk_by_turn(session)]
    await embedder.embed(chunks[:8])  # load the model outside the timings
    started = time.perf_counter()
    for sample in samples:
        for session in sample.conversation.sessions:
            await embedder.embed([c.text for c in chunk_by_turn(session)])
    per_session = time.perf_counter() - started
    started = time.perf_counter()
    await embedder.embed(chunks)
    one_batch = time.perf_counter() - started
    queries = [q.text for s in samples for q in s.questions][:50] or ["What did they talk about?"]
    timings = []
    for text in queries:
        started = time.perf_counter()
        await embedder.embed([text])
        timings.append(time.perf_counter() - started)
    return {
        "sentences": len(chunks),
        "per_session_batches_sentences_per_s": round(len(chunks) / per_session, 1),
        "one_batch_sentences_per_s": round(len(chunks) / one_batch, 1),
        "per_session_vs_one_batch": round(one_batch / per_session, 3),
        "query_embedding_p50_s": round(statistics.median(timings), 4),
    }


def run_figures(run_dir: Path) -> dict[str, object]:
    result = RunDir(run_dir).read_result()
    per_conversation = []
    for ingest in RunDir(run_dir).read_ingests():
        usage = ingest.usage.get("ingest")
        per_conversation.append(
            {
                "sample": ingest.sample_id,
                "ingest_llm_calls": usage.calls if usage else 0,
                "ingest_prompt_tokens": usage.prompt_tokens if usage else 0,
                "ingest_completion_tokens": usage.completion_tokens if usage else 0,
                "ingest_latency_s": round(usage.latency_s, 1) if usage else 0.0,
                "memory_items": ingest.memory_items,
                "stats": ingest.stats,
            }
        )
    search = result.usage.get("search")
    return {
        "per_conversation": per_conversation,
        "search_p50_s": search.latency_p50_s if search else None,
        "search_p95_s": search.latency_p95_s if search else None,
        "questions": result.counts.questions if result.counts else 0,
        "failed": result.counts.failed if result.counts else 0,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--conversations", type=int, default=1)
    parser.add_argument("--sessions", type=int, default=3)
    parser.add_argument("--questions", type=int, default=6)
    parser.add_argument("--systems", nargs="+", default=list(SYSTEMS))
    parser.add_argument("--out", default="bench/out/memory_systems.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        data_file = subset_file(args.data_dir, args.conversations, args.sessions, folder)
        data = DataOptions(data_file=str(data_file))
        samples = TASKS.get("locomo").load(data, split="test").samples
        figures: dict[str, object] = {"setup": vars(args), "embedding": await embedding_figures(samples)}
        for system in args.systems:
            config = RunConfig(
                task="locomo",
                system=system,
                task_options={"split": "test"},
                data=data,
                limit=args.questions,
                output_dir=folder / "runs",
                run_id=system,
                use_cache=False,
                metrics=["f1", "evidence_recall@10"],
            )
            started = time.perf_counter()
            await run(config)
            figures[system] = {
                "wall_s": round(time.perf_counter() - started, 1),
                **run_figures(folder / "runs" / "locomo" / system / system),
            }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=2))
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
