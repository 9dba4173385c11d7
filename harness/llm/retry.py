"""Bounded retries with exponential backoff, shared by LLM calls (`Model`) and embedding servers."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from harness.llm.base import LLMCallFailed, LLMError, TransientLLMError

log = logging.getLogger(__name__)

T = TypeVar("T")


async def call_with_retries(
    attempt: Callable[[], Awaitable[T]], *, where: str, max_retries: int, backoff_s: float
) -> T:
    """`await attempt()`, retrying `TransientLLMError` up to `max_retries` times.

    The delay before retry n (0-based) is `backoff_s * 2**n`, scaled by a random factor in [0.5, 1.5) so
    that concurrent callers do not retry in lockstep. Once retries are exhausted, or on any other
    `LLMError`, `LLMCallFailed` is raised (naming `where`), with the backend's error as its cause.
    """
    for n in range(max_retries + 1):
        try:
            return await attempt()
        except TransientLLMError as error:
            if n == max_retries:
                raise LLMCallFailed(f"{where}: gave up after {n + 1} attempts: {error}") from error
            delay = backoff_s * (2**n) * (0.5 + random.random())
            log.warning("%s: transient error (%s); retry %d/%d in %.1fs", where, error, n + 1, max_retries, delay)
            await asyncio.sleep(delay)
        except LLMError as error:
            raise LLMCallFailed(f"{where}: {error}") from error
    raise AssertionError("unreachable")
