"""Keeping a VEN connected, whatever the protocol: start, and on failure retry with a doubling pause on the
injected clock (1 s up to 5 min) that a stop request cuts short."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from gateway.clock import Clock, sleep_unless
from gateway.exceptions import AdapterUnavailable

__all__ = ["FIRST_DELAY_S", "MAX_DELAY_S", "keep_started"]

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
            await sleep_unless(clock, delay, stopped)
            delay = min(delay * 2, MAX_DELAY_S)
            continue
        await stopped.wait()
