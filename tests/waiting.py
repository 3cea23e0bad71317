"""Waiting in tests for something another task or process does: one ``until`` for the whole suite."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["arrived", "until"]


def arrived(got: object) -> bool:
    """For a probe that returns what it waited for, or None (or False) while it is not there: 0, "" and an
    empty list are answers too."""
    return got is not None and got is not False


async def until(what: str, probe: Callable[[], Any | Awaitable[Any]], within: float = 10.0, *,
                every: float = 0.05, detail: Callable[[], object] = lambda: "",
                done: Callable[[Any], bool] = bool) -> Any:
    """Poll ``probe`` (sync or async) every ``every`` seconds until ``done`` says its result is the answer
    (by default: it is truthy), and return that result; fail naming ``what`` (and ``detail()``) after
    ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        got = probe()
        if inspect.isawaitable(got):
            got = await got
        if done(got):
            return got
        if time.monotonic() >= deadline:
            raise AssertionError(f"waited {within:g} s for {what}; {detail()}")
        await asyncio.sleep(every)
