"""Keeping a VEN connected, whatever the protocol: start, and on failure retry with a doubling pause on the
injected clock (1 s up to 5 min) that a stop request cuts short."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from gateway.clock import Clock
from gateway.exceptions import AdapterUnavailable

__all__ = ["FIRST_DELAY_S", "MAX_DELAY_S", "keep_started", "pause"]

FIRST_DELAY_S = 1.0
MAX_DELAY_S = 300.0


async def keep_started(start: Callable[[], Awaitable[None]], stopped: asyncio.Event, clock: Clock,
                       log: logging.Logger) -> None:
    """Call ``start`` until it succeeds (``AdapterUnavailable`` is retried after a back-off, logged on ``log``),
    then wait until ``stopped`` is set. Returns once it is set."""
    delay = FIRST_DELAY_S
    while not stopped.is_set():
        try:
            await start()
        except AdapterUnavailable as err:
            log.warning("%s; retrying in %g s", err, delay)
            await pause(delay, stopped, clock)
            delay = min(delay * 2, MAX_DELAY_S)
            continue
        await stopped.wait()


async def pause(seconds: float, stopped: asyncio.Event, clock: Clock) -> None:
    """Sleep on the clock, but wake at once when ``stopped`` is set."""
    waits = [asyncio.ensure_future(clock.sleep(seconds)), asyncio.ensure_future(stopped.wait())]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
        await asyncio.gather(*waits, return_exceptions=True)
