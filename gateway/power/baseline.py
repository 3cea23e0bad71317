"""The baseline an event's delivery is measured against, by the method the site's program uses.

- ``prior-minutes``: the mean measured site power over the N minutes before the event (a
  meter-before/meter-after baseline; what most capacity programs accept for a flat load).
- ``x-of-y-days``: the utility method. Take the last Y days without an event of this site (days
  with too little recorded power are skipped, not counted), keep the X whose mean load over the
  event's clock hours was highest, and average them minute by minute: the baseline is that
  profile (and its mean). Days come from the journal's per-minute power record.

Both return the figure with a sentence saying how it was made, so a report can show its basis.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import date, datetime, timedelta

__all__ = ["BaselineResult", "MinuteSource", "x_of_y_days"]

# minutes of [start, end) → (minute start, mean kW, target) rows, as ``PowerLog.minutes``
MinuteSource = Callable[[datetime, datetime], list[tuple[datetime, float, float | None]]]

MIN_COVERAGE = 0.8  # share of a day's window that must be recorded for the day to count


@dataclass(frozen=True, slots=True)
class BaselineResult:
    """A baseline: its mean kW, the method, how it was made, and (x-of-y) its minute profile."""

    kw: float
    method: str
    basis: str
    profile: tuple[tuple[int, float], ...] = ()  # (minutes after the window start, kW)

    def at(self, minute: int) -> float:
        """The baseline for the ``minute``-th minute of the window (the mean where no profile point)."""
        for m, kw in self.profile:
            if m == minute:
                return kw
        return self.kw


def x_of_y_days(source: MinuteSource, start: datetime, end: datetime, x: int, y: int,
                skip: Collection[date] = ()) -> BaselineResult | None:
    """The X-of-Y-days baseline for the window [start, end), or ``None`` with fewer than X usable days.

    ``skip`` are days to leave out (days with demand-response events). Looks back at most 2·Y + 7
    days for Y usable ones.
    """
    span_min = max(1, int((end - start).total_seconds() // 60))
    days: list[tuple[float, date, dict[int, float]]] = []
    for back in range(1, 2 * y + 8):
        day_start = start - timedelta(days=back)
        if day_start.date() in skip:
            continue
        rows = source(day_start, day_start + (end - start))
        if len(rows) < MIN_COVERAGE * span_min:
            continue
        by_minute = {int((t - day_start).total_seconds() // 60): kw for t, kw, _ in rows}
        days.append((sum(by_minute.values()) / len(by_minute), day_start.date(), by_minute))
        if len(days) == y:
            break
    if len(days) < x:
        return None
    top = sorted(days, key=lambda d: (-d[0], d[1]))[:x]
    profile = []
    for m in range(span_min):
        values = [d[2][m] for d in top if m in d[2]]
        if values:
            profile.append((m, sum(values) / len(values)))
    mean = sum(d[0] for d in top) / len(top)
    chosen = ", ".join(sorted(d[1].isoformat() for d in top))
    basis = (f"x-of-y-days: mean of the {x} highest of the last {len(days)} event-free days over the same hours "
             f"({chosen})")
    return BaselineResult(kw=mean, method="x-of-y-days", basis=basis, profile=tuple(profile))
