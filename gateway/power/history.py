"""Measured site power over time, and the baseline derived from it.

The baseline is the mean of the measured power over the ``minutes`` before a given time: the
"average of the N minutes before the event" method most demand-response programs accept as a
meter-before/meter-after baseline. With no history yet (a gateway that just started), the latest
reading stands in, and ``covered_s`` says how much history the figure rests on.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True, slots=True)
class Baseline:
    kw: float
    samples: int
    covered_s: float


class PowerHistory:
    """A bounded, time-ordered record of (time, kW) samples."""

    def __init__(self, keep: timedelta = timedelta(hours=26)) -> None:
        self._keep = keep
        self._samples: deque[tuple[datetime, float]] = deque()

    def add(self, at: datetime, kw: float) -> None:
        if self._samples and at < self._samples[-1][0]:
            return  # out of order: a clock never goes back, so this is a stale reading
        self._samples.append((at, kw))
        while self._samples and self._samples[0][0] < at - self._keep:
            self._samples.popleft()

    @property
    def latest(self) -> tuple[datetime, float] | None:
        return self._samples[-1] if self._samples else None

    def between(self, start: datetime, end: datetime) -> list[tuple[datetime, float]]:
        times = [t for t, _ in self._samples]
        i = bisect_left(times, start)
        j = bisect_left(times, end)
        return list(self._samples)[i:j]

    def baseline(self, before: datetime, minutes: float) -> Baseline | None:
        window = self.between(before - timedelta(minutes=minutes), before)
        if not window:
            last = self.latest
            return Baseline(kw=last[1], samples=1, covered_s=0.0) if last else None
        covered = (window[-1][0] - window[0][0]).total_seconds()
        return Baseline(kw=sum(kw for _, kw in window) / len(window), samples=len(window), covered_s=covered)
