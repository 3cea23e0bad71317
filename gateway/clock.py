"""Clocks: the only source of time for the core.

The core never calls ``datetime.now()`` or ``asyncio.sleep()`` itself; it is handed a ``Clock``.
Production uses ``SystemClock``. The demo and the replay run a ``ScaledClock`` (virtual time that
runs N times faster than the wall, so a real HTTP exchange can happen inside a compressed hour), and
tests that need exact control use ``ManualClock``.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    """What the core needs of time."""

    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time."""
        ...


class SystemClock:
    """Wall-clock time."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class ScaledClock:
    """Virtual time that starts at ``start`` and runs ``speed`` times faster than the wall.

    Sleeping for an hour at ``speed=600`` takes six real seconds, while every network exchange
    still happens for real; it is how the demo compresses an event without faking the protocol.
    """

    def __init__(self, start: datetime, speed: float) -> None:
        if start.tzinfo is None:
            raise ValueError("ScaledClock needs a timezone-aware start")
        if speed <= 0:
            raise ValueError("ScaledClock speed must be positive")
        self._start = start.astimezone(UTC)
        self._speed = speed
        self._t0 = time.monotonic()

    @property
    def speed(self) -> float:
        return self._speed

    def now(self) -> datetime:
        return self._start + timedelta(seconds=(time.monotonic() - self._t0) * self._speed)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self._speed)


class ManualClock:
    """Time that moves only when a test (or the fast simulator) advances it.

    ``sleep`` parks the caller until ``advance`` moves time past its wake-up point, so a test can
    step an event's life precisely; ``settle`` lets every reaction finish before time moves on.
    """

    def __init__(self, start: datetime, *, settle: bool = False) -> None:
        if start.tzinfo is None:
            raise ValueError("ManualClock needs a timezone-aware start")
        self._now = start.astimezone(UTC)
        self._sleepers: list[tuple[datetime, asyncio.Future[None]]] = []
        self._settle = settle

    def now(self) -> datetime:
        return self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sleepers.append((self._now + timedelta(seconds=seconds), fut))
        await fut

    async def advance(self, seconds: float) -> None:
        """Move time forward, waking every sleeper whose time has come, in order."""
        target = self._now + timedelta(seconds=seconds)
        while True:
            due = sorted((s for s in self._sleepers if s[0] <= target), key=lambda s: s[0])
            if not due:
                break
            wake_at, fut = due[0]
            self._sleepers.remove(due[0])
            self._now = max(self._now, wake_at)
            if not fut.done():
                fut.set_result(None)
            await self._yield()
        self._now = target
        await asyncio.sleep(0)

    async def jump(self, seconds: float) -> None:
        """Move time forward at once: every sleeper whose time has come wakes *at the new time*, once.

        ``advance`` replays every wake-up on the way, so a loop that sleeps 30 s runs 2,880 times for a
        day; the fast replay simulator skips the quiet days between events with this instead (a loop
        then sees one long gap, as after a suspended host).
        """
        target = self._now + timedelta(seconds=max(0.0, seconds))
        self._now = target
        due = sorted((s for s in self._sleepers if s[0] <= target), key=lambda s: s[0])
        for entry in due:
            self._sleepers.remove(entry)
            if not entry[1].done():
                entry[1].set_result(None)
        await self._yield()

    async def _yield(self) -> None:
        """Let the woken run. By default five turns of the loop (what the tests were written against); with
        ``settle`` until nothing is ready to run, so a chain of reactions (a reading, the wake-up it causes,
        the re-plan and its commands) all happens at the time that caused it, as it would in real time: the
        fast replay simulator needs that, or each reaction would land a step late."""
        if not self._settle:
            for _ in range(5):
                await asyncio.sleep(0)
            return
        loop = asyncio.get_running_loop()
        for _ in range(10_000):
            await asyncio.sleep(0)
            if not getattr(loop, "_ready", None):  # CPython's queue of callbacks ready to run
                return


async def sleep_unless(clock: Clock, seconds: float, wake: asyncio.Event) -> bool:
    """Sleep ``seconds`` on ``clock``, or less if ``wake`` is set first; True when ``wake`` ended it.

    The loops that wait for either (the engine's control loop, a VEN's back-off, the sinks' retries) share
    this one: both waits are cancelled and gathered (not awaited under a suppression), so a cancellation of
    the caller is never swallowed."""
    if wake.is_set():
        return True
    sleeper = asyncio.ensure_future(clock.sleep(seconds))
    waker = asyncio.ensure_future(wake.wait())
    try:
        done, _ = await asyncio.wait((sleeper, waker), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (sleeper, waker):
            task.cancel()
        await asyncio.gather(sleeper, waker, return_exceptions=True)
    return waker in done or wake.is_set()
