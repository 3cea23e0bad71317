"""``sleep_unless``: the one wait on the clock that an event cuts short."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from gateway.clock import ManualClock, sleep_unless

T0 = datetime(2026, 7, 1, 12, tzinfo=UTC)


async def _parked() -> None:
    """Let the new task reach its two waits (a few turns of the loop)."""
    for _ in range(5):
        await asyncio.sleep(0)


async def test_the_time_running_out_ends_it() -> None:
    clock, wake = ManualClock(T0), asyncio.Event()
    waiting = asyncio.create_task(sleep_unless(clock, 30.0, wake))
    await _parked()
    await clock.advance(30.0)
    async with asyncio.timeout(5):
        assert await waiting is False and not wake.is_set()


async def test_the_event_ends_it_early_or_at_once() -> None:
    clock, wake = ManualClock(T0), asyncio.Event()
    waiting = asyncio.create_task(sleep_unless(clock, 3600.0, wake))
    await _parked()
    wake.set()
    async with asyncio.timeout(5):
        assert await waiting is True and clock.now() == T0
    assert await sleep_unless(clock, 3600.0, wake) is True  # already set: no wait at all


async def test_a_cancellation_of_the_caller_is_not_swallowed() -> None:
    clock, wake = ManualClock(T0), asyncio.Event()
    waiting = asyncio.create_task(sleep_unless(clock, 3600.0, wake))
    await _parked()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert len(asyncio.all_tasks()) == 1  # its two waits are gone too
