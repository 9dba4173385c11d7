"""Benchmark: how `mem0` / `memr1` ingestion does on a real LoCoMo history with the embedded models.

For each embedded model and each granularity (extraction unit / manager unit), one history (default conv-26,
the Memory-R1 train conversation, cut to `--sessions` sessions; 0 = whole) is ingested twice in the same run:

- `new`: the system as it ships (JSON schemas enforced by llama.cpp's grammar, extraction ahead of the
  updates, the speakers' update chains concurrent, facts embedded in batches);
- `old`: the reference, `-S structured=false`: JSON mode without a schema, as the system ran before schemas
  (on a single-slot local engine the ingestion order changes nothing else: every call runs one at a time).

Per run: LLM calls, prompt and completion tokens, wall time, the share of valid extraction and manager replies,
bank size per speaker, and evidence coverage: the share of the history's QA evidence turns that some memory
cites among its source turns (what `evidence_recall@k` can at best find). Ratios are old / new.

    python bench/memory_systems.py --data-dir ../shared/data --sessions 2 \
        --models smollm2-135m,qwen2.5-coder-0.5b --granularities pair/fact,pair/turn

Writes JSON to `--out` (default bench/out/memory_systems.json) and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

from harness.embeddings.build import build_embedder
from harness.llm.build import build_model
from harness.plugins import SYSTEMS, TASKS
from harness.system import SystemContext, ingest_history
from harness.task import DataOptions
from harness.types import Sample, merge_usage


def history(data_dir: str, conversation: str, sessions: int) -> Sample:
    samples = TASKS.get("locomo").load(DataOptions(data_dir=data_dir)).samples
    sample = next(s for s in samples if s.sample_id == conversation)
    if sessions:
        cut = sample.conversation.model_copy(update={"sessions": sample.conversation.sessions[:sessions]})
        sample = sample.model_copy(update={"conversation": cut})
    return sample


async def ingest_once(
    sample: Sample, system_name: str, model: str, options: dict[str, str], embedder: Any
) -> dict[str, Any]:
    roles = {"model": build_model(f"llamacpp:{model}", cache=None, max_retries=1)}
    context = SystemContext(roles=roles, speakers=sample.conversation.speakers, embedder_factory=lambda: embedder)
    system = SYSTEMS.get(system_name)(context, **options)
    started = time.perf_counter()
    usage = {}
    merge_usage(usage, await ingest_history(system, sample.conversation.sessions))
    wall = time.perf_counter() - started
    stats = system.memory_stats()
    memory = system.memory_dump()
    cited = {turn for item in memory for turn in item.source_turn_ids}
    evidence = {turn for q in sample.questions for turn in q.evidence}
    ingest = usage.get("ingest")
    await roles["model"].aclose()
    return {
        "calls": ingest.calls if ingest else 0,
        "prompt_tokens": ingest.prompt_tokens if ingest else 0,
        "completion_tokens": ingest.completion_tokens if ingest else 0,
        "wall_s": round(wall, 1),
        "extraction_valid": _share(stats["extraction_calls"], stats["invalid_extraction_output"]),
        "manager_valid": _share(stats["manager_calls"], stats["invalid_manager_output"]),
        "extraction_calls": stats["extraction_calls"],
        "manager_calls": stats["manager_calls"],
        "facts": stats["facts_extracted"],
        "operations": {op: stats[op] for op in ("ADD", "UPDATE", "DELETE", "NOOP")},
        "bank": {speaker: sum(item.speaker == speaker for item in memory) for speaker in sample.conversation.speakers},
        "evidence_coverage": round(len(evidence & cited) / len(evidence), 3) if evidence else None,
        "example_memories": [item.text for item in memory[:3]],
    }


def _share(calls: int, invalid: int) -> float | None:
    return round(1 - invalid / calls, 3) if calls else None


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--conversation", default="conv-26")
    parser.add_argument("--sessions", type=int, default=2, help="first N sessions; 0 = the whole history")
    parser.add_argument("--system", default="memr1", choices=["mem0", "memr1"])
    parser.add_argument("--models", default="smollm2-135m,qwen2.5-coder-0.5b")
    parser.add_argument("--granularities", default="pair/fact,pair/turn", help="extraction_unit/manager_unit, ...")
    parser.add_argument("--no-old", action="store_true", help="skip the structured=false reference")
    parser.add_argument("-S", dest="options", action="append", default=[], help="more system options, KEY=VALUE")
    parser.add_argument("--out", default="bench/out/memory_systems.json")
    args = parser.parse_args()

    sample = history(args.data_dir, args.conversation, args.sessions)
    embedder = build_embedder("sentence-transformers:all-MiniLM-L6-v2", use_cache=False)
    await embedder.embed(["warm up"])
    turns = sample.conversation.n_turns
    extra = " ".join(f"-S {o}" for o in args.options)
    print(f"{args.conversation}: {len(sample.conversation.sessions)} sessions, {turns} turns; {args.system} {extra}")
    rows = []
    for model in args.models.split(","):
        for granularity in args.granularities.split(","):
            extraction_unit, manager_unit = granularity.split("/")
            options = {"extraction_unit": extraction_unit, "manager_unit": manager_unit}
            options.update(dict(option.split("=", 1) for option in args.options))
            variants = [("new", options)] + ([] if args.no_old else [("old", {**options, "structured": "false"})])
            for variant, opts in variants:
                figures = await ingest_once(sample, args.system, model, opts, embedder)
                rows.append({"model": model, "granularity": granularity, "variant": variant, **figures})
                print(json.dumps(rows[-1]), flush=True)

    print()
    print(
        f"{'model':20} {'granularity':12} {'variant':7} {'calls':>6} {'wall s':>7} {'extr ok':>7} {'mgr ok':>7} "
        f"{'bank':>12} {'evid cov':>8}"
    )
    for row in rows:
        bank = "/".join(str(n) for n in row["bank"].values())
        print(
            f"{row['model']:20} {row['granularity']:12} {row['variant']:7} {row['calls']:>6} {row['wall_s']:>7} "
            f"{row['extraction_valid']!s:>7} {row['manager_valid']!s:>7} {bank:>12} {row['evidence_coverage']!s:>8}"
        )
    for new in (r for r in rows if r["variant"] == "new"):
        old = next(
            (
                r
                for r in rows
                if r["variant"] == "old" and r["model"] == new["model"] and r["granularity"] == new["granularity"]
            ),
            None,
        )
        if old and new["wall_s"]:
            print(f"{new['model']} {new['granularity']}: wall old/new = {old['wall_s'] / new['wall_s']:.2f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"conversation": args.conversation, "sessions": args.sessions, "rows": rows}, indent=1))


if __name__ == "__main__":
    asyncio.run(main())
