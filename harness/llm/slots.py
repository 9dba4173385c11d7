"""`CallSlots`: a model's calls in flight, where calls on the critical path go before calls that can wait.

Memory ingestion has two kinds of calls on one model: a chain of update calls per speaker, each waiting for
the previous one (the critical path), and extraction calls that never wait for anything and may run far
ahead (background). A plain semaphore queues a chain's next call behind hundreds of queued extractions; here:

- a foreground call takes a free slot at once, or the next one freed, before any background call;
- `reserve(n)` keeps up to `n` slots for foreground calls while fewer than `n` run (one per chain), so a
  background call never takes the slot a chain is about to need, across every history that shares the model.

Slots are handed from a finishing call straight to the next waiter, in order of priority, then arrival.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager


class CallSlots:
    def __init__(self, size: int) -> None:
        self.size = size
        self._free = size
        self._reserved = 0
        self._foreground_running = 0
        self._waiting: dict[bool, deque[asyncio.Future[None]]] = {False: deque(), True: deque()}
        """Waiters by `background`."""

    def _idle_reservations(self) -> int:
        return max(0, self._reserved - self._foreground_running)

    def _may_start(self, background: bool) -> bool:
        if not background:
            return self._free > 0
        return not self._waiting[False] and self._free > self._idle_reservations()

    @contextmanager
    def reserve(self, slots: int = 1) -> Iterator[None]:
        """Keep `slots` slots for foreground calls while the block runs: a chain holds one while it is ready to
        call (never while it waits for a background result, or chains and background could wait on each other)."""
        self._reserved += slots
        try:
            yield
        finally:
            self._reserved -= slots
            self._hand_over()

    @asynccontextmanager
    async def slot(self, *, background: bool = False) -> AsyncIterator[None]:
        await self._acquire(background)
        if not background:
            self._foreground_running += 1
        try:
            yield
        finally:
            if not background:
                self._foreground_running -= 1
            self._free += 1
            self._hand_over()

    async def _acquire(self, background: bool) -> None:
        if not self._waiting[background] and self._may_start(background):
            self._free -= 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting[background].append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():  # the slot was handed over just before the cancel
                self._free += 1
                self._hand_over()
            else:
                self._waiting[background].remove(waiter)
            raise

    def _hand_over(self) -> None:
        """Give free slots to waiters: foreground first, then background while no reservation is idle."""
        for background in (False, True):
            queue = self._waiting[background]
            while queue and self._may_start(background):
                waiter = queue.popleft()
                if not waiter.done():
                    self._free -= 1
                    waiter.set_result(None)
