"""Run the trainers' async work (bank building, frozen Answer Agent calls) from synchronous callers, a bounded
number of jobs at a time.

TRL calls reward functions synchronously, sometimes from a thread whose event loop is already running (a
notebook). `run_sync` hands the coroutine to one long-lived event loop on a daemon thread and waits for it.
Using the same loop for every call matters: a `Model`'s concurrency semaphore and an HTTP client's connection
pool bind to the loop that first uses them, so a fresh `asyncio.run` per batch would break them.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Coroutine, Sequence
from typing import Any, TypeVar

T = TypeVar("T")

_loop: asyncio.AbstractEventLoop | None = None
_lock = threading.Lock()


def _background_loop() -> asyncio.AbstractEventLoop:
    global _loop
    with _lock:
        if _loop is None or _loop.is_closed():
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="memr1-trainers-loop", daemon=True).start()
            _loop = loop
        return _loop


def run_sync(coroutine: Coroutine[Any, Any, T]) -> T:
    """The result of `coroutine`, run to completion on the trainers' background event loop."""
    loop = _background_loop()
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        coroutine.close()
        raise RuntimeError("run_sync called from the trainers' own event loop: await the coroutine instead")
    return asyncio.run_coroutine_threadsafe(coroutine, loop).result()


async def gather_bounded(jobs: Sequence[Awaitable[T]], limit: int) -> list[T]:
    """The results of `jobs`, in order, with at most `limit` of them awaited at once."""
    semaphore = asyncio.Semaphore(limit)

    async def run(job: Awaitable[T]) -> T:
        async with semaphore:
            return await job

    return list(await asyncio.gather(*(run(job) for job in jobs)))
