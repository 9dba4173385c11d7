"""Bounded retries with exponential backoff, shared by LLM calls (`Model`) and embedding servers.

A server's `Retry-After` replaces the backoff (up to `MAX_RETRY_AFTER_S`), and when the callers of one model
share a `RateLimitHold`, one caller's rate limit holds back the others too instead of each finding it alone.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from email.utils import parsedate_to_datetime
from typing import TypeVar

from harness.llm.base import LLMCallFailed, LLMError, TransientLLMError

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_RETRY_AFTER_S = 60.0
"""The longest wait a server's `Retry-After` gets: a longer one (or a date further ahead) is cut to this, so a
misconfigured server cannot stall a run for hours."""


def parse_retry_after(value: str | None) -> float | None:
    """The seconds an HTTP `Retry-After` header asks for (delay-seconds or an HTTP date, never negative), or
    None when there is none or it cannot be read."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class RateLimitHold:
    """A time before which the callers sharing it send nothing: pushed back by each `Retry-After` one of them
    is given."""

    def __init__(self) -> None:
        self.until = 0.0
        """`time.monotonic()` before which callers wait."""

    def extend(self, delay_s: float) -> None:
        self.until = max(self.until, time.monotonic() + delay_s)

    async def wait(self) -> None:
        while (left := self.until - time.monotonic()) > 0:
            await asyncio.sleep(left)


async def call_with_retries(
    attempt: Callable[[], Awaitable[T]],
    *,
    where: str,
    max_retries: int,
    backoff_s: float,
    hold: RateLimitHold | None = None,
) -> T:
    """`await attempt()`, retrying `TransientLLMError` up to `max_retries` times.

    The delay before retry n (0-based) is `backoff_s * 2**n`, scaled by a random factor in [0.5, 1.5) so
    that concurrent callers do not retry in lockstep; when the error carries the server's `Retry-After`, the
    delay is that instead (capped at `MAX_RETRY_AFTER_S`) and it extends `hold`, which every attempt waits
    out first. Once retries are exhausted, or on any other `LLMError`, `LLMCallFailed` is raised (naming
    `where`), with the backend's error as its cause.
    """
    hold = hold or RateLimitHold()
    for n in range(max_retries + 1):
        await hold.wait()
        try:
            return await attempt()
        except TransientLLMError as error:
            if n == max_retries:
                raise LLMCallFailed(f"{where}: gave up after {n + 1} attempts: {error}") from error
            if error.retry_after_s is None:
                delay = backoff_s * (2**n) * (0.5 + random.random())
            else:
                delay = min(error.retry_after_s, MAX_RETRY_AFTER_S)
                hold.extend(delay)
            log.warning("%s: transient error (%s); retry %d/%d in %.1fs", where, error, n + 1, max_retries, delay)
            await asyncio.sleep(delay)
        except LLMError as error:
            raise LLMCallFailed(f"{where}: {error}") from error
    raise AssertionError("unreachable")
