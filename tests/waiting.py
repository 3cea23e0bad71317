"""Waiting in tests for something another task or process does: one ``until`` for the whole suite."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["until"]


async def until(what: str, probe: Callable[[], Any | Awaitable[Any]], within: float = 10.0, *,
                every: float = 0.05, detail: Callable[[], object] = lambda: "") -> Any:
    """Poll ``probe`` (sync or async) until it returns something truthy, and return that; fail naming ``what``
    (and ``detail()``) after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        got = probe()
        if inspect.isawaitable(got):
            got = await got
        if got:
            return got
        if time.monotonic() >= deadline:
            raise AssertionError(f"waited {within:g} s for {what}; {detail()}")
        await asyncio.sleep(every)
