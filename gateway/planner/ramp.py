"""Spacing changes under the ramp rate.

Time is cut into minutes from the start; a minute carries at most ``rate`` kW of change. Inside a
minute, each change starts when the minute's budget used before it would have been ramped through
(``60 s × used / rate``, whole seconds), so the site moves in steps no larger than one action and
any 60-second window holds at most ``rate`` plus one action. A change larger than a whole minute's
budget starts a minute of its own, and whatever follows waits until the rate has paid for it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime, timedelta


def ramp_offsets(changes_kw: Iterable[float], rate_kw_per_min: float) -> list[int]:
    """Seconds after the start at which each change (kW, sign ignored) may begin, in order."""
    rate = rate_kw_per_min
    full = rate * (1.0 + 1e-12)
    minute = 0
    used = 0.0
    out: list[int] = []
    append = out.append
    for kw in changes_kw:
        if kw < 0.0:
            kw = -kw
        if kw > rate:
            if used > 0.0:
                minute += 1
            append(minute * 60)
            span = kw / rate  # what follows waits until the rate has covered this change
            whole = math.floor(span)
            minute += whole
            used = (span - whole) * rate
            continue
        if used + kw > full:
            minute += 1
            used = 0.0
        append(minute * 60 + int(60.0 * used / rate))
        used += kw
    return out


class Times:
    """``start + offset`` as datetimes, one object per distinct second (plans share many)."""

    __slots__ = ("_cache", "_start")

    def __init__(self, start: datetime) -> None:
        self._start = start
        self._cache: dict[int, datetime] = {}

    def __call__(self, offset_s: int) -> datetime:
        t = self._cache.get(offset_s)
        if t is None:
            t = self._cache[offset_s] = self._start + timedelta(seconds=offset_s)
        return t
