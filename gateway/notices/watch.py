"""Drops the meter saw, whether they were announced, and the share of dropped kW that was (coverage).

The site's load is compared with its highest reading over the last ``window_s``: a fall of more than the
notice threshold is a drop. It was announced when a notice about a drop due around then (its time, up to
its latest time ``until``) went out at least ``lead_s`` before (the shortest lead time); a drop of the
gateway's own (an event's shed, ``own``) explains a fall only when the gateway's commands ran within the
window, so a job that crashes during an event is still caught. One drop is counted once: after it, the
reference starts again from the new level.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

__all__ = ["DropWatch", "ObservedDrop"]

# (drop id, earliest, latest, first announced at, the gateway's own shed) of every drop announced and not cancelled
Announced = tuple[str, datetime, datetime, datetime, bool]


@dataclass(frozen=True, slots=True)
class ObservedDrop:
    at: datetime
    kw: float
    from_kw: float
    notice_id: str            # "" when unannounced
    lead_s: float             # how long before it was first announced (0 when unannounced)
    covered: bool             # announced at least the lead time ahead


class DropWatch:
    def __init__(self, window_s: float, lead_s: float, grace_s: float = 120.0) -> None:
        self.window_s = window_s
        self.lead_s = lead_s
        self.grace_s = grace_s
        self._readings: deque[tuple[datetime, float]] = deque()

    def observe(self, at: datetime, kw: float, threshold_kw: float, announced: Iterable[Announced],
                commanded_at: datetime | None = None) -> ObservedDrop | None:
        """Take one reading; the drop it completes, if any. ``commanded_at``: when the gateway's commands
        last returned."""
        r = self._readings
        while r and (at - r[0][0]).total_seconds() > self.window_s:
            r.popleft()
        peak = max((v for _, v in r), default=kw)
        r.append((at, kw))
        fall = peak - kw
        if fall <= threshold_kw:
            return None
        r.clear()
        r.append((at, kw))
        grace = timedelta(seconds=self.grace_s)
        best: tuple[str, float] | None = None
        own_recent = commanded_at is not None and (at - commanded_at).total_seconds() <= self.window_s
        for drop_id, earliest, latest, first, own in announced:
            if own and not own_recent:
                continue
            if earliest - grace <= at <= latest + grace:
                lead = max(0.0, (earliest - first).total_seconds())
                if best is None or lead > best[1]:
                    best = (drop_id, lead)
        if best is None:
            return ObservedDrop(at, fall, peak, "", 0.0, False)
        return ObservedDrop(at, fall, peak, best[0], best[1], best[1] >= self.lead_s - 1.0)
