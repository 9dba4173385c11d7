"""CallSlots: calls on the critical path go first, reserved slots stay free for them, nothing leaks."""

from __future__ import annotations

import asyncio

import pytest

from harness.llm.slots import CallSlots


async def hold(slots: CallSlots, log: list[str], name: str, release: asyncio.Event, background: bool) -> None:
    async with slots.slot(background=background):
        log.append(name)
        await release.wait()


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_foreground_call_takes_the_next_free_slot_before_queued_background_calls():
    slots, log = CallSlots(1), []
    first, rest = asyncio.Event(), asyncio.Event()
    tasks = [asyncio.create_task(hold(slots, log, "running", first, background=True))]
    await settle()
    tasks += [asyncio.create_task(hold(slots, log, f"bg{n}", rest, background=True)) for n in range(3)]
    await settle()
    tasks.append(asyncio.create_task(hold(slots, log, "fg", rest, background=False)))
    await settle()
    first.set()
    await settle()
    assert log == ["running", "fg"]
    rest.set()
    await asyncio.gather(*tasks)
    assert log == ["running", "fg", "bg0", "bg1", "bg2"], "same priority: in order of arrival"


async def test_a_reserved_slot_is_never_taken_by_background_calls():
    slots, log = CallSlots(3), []
    release = asyncio.Event()
    with slots.reserve(1):
        tasks = [asyncio.create_task(hold(slots, log, f"bg{n}", release, background=True)) for n in range(4)]
        await settle()
        assert log == ["bg0", "bg1"], "3 slots less 1 reserved"
        tasks.append(asyncio.create_task(hold(slots, log, "fg", release, background=False)))
        await settle()
        assert log == ["bg0", "bg1", "fg"], "the reserved slot went to the chain at once"
        release.set()
        await asyncio.gather(*tasks)
    assert sorted(log) == ["bg0", "bg1", "bg2", "bg3", "fg"]


async def test_ending_a_reservation_lets_waiting_background_calls_in():
    slots, log = CallSlots(1), []
    release = asyncio.Event()
    with slots.reserve(1):
        task = asyncio.create_task(hold(slots, log, "bg", release, background=True))
        await settle()
        assert log == []
    await settle()
    assert log == ["bg"]
    release.set()
    await task


async def test_a_cancelled_waiter_leaves_no_slot_behind():
    slots, log = CallSlots(1), []
    release = asyncio.Event()
    holder = asyncio.create_task(hold(slots, log, "holder", release, background=False))
    await settle()
    waiter = asyncio.create_task(hold(slots, log, "cancelled", release, background=False))
    await settle()
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    release.set()
    await holder
    later = asyncio.create_task(hold(slots, log, "later", release, background=True))
    await asyncio.wait_for(later, timeout=1)
    assert log == ["holder", "later"]
