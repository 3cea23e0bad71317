"""Tests of the signal policy; the small builders below are shared by its test modules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gateway.config import PolicyConfig, SiteConfig
from gateway.domain import GridEvent, Interval, Signal
from gateway.policy import Mapping, SiteContext, map_event

T0 = datetime(2025, 5, 1, 18, 0, tzinfo=UTC)
BEFORE = T0 - timedelta(hours=1)
# A site drawing 4100 kW: 1450 kW could be shed, 2650 kW cannot (idle floor + critical jobs).
CTX = SiteContext(baseline_kw=4100.0, flexible_kw=1450.0, floor_kw=2650.0)


def signal(name: str, signal_type: str, *values: float, units: str | None = None, minutes: int = 20,
           start: datetime = T0) -> Signal:
    """A signal with consecutive intervals of ``minutes`` each, from ``start``."""
    step = timedelta(minutes=minutes)
    intervals = tuple(Interval(start + i * step, step, v) for i, v in enumerate(values))
    return Signal(name, signal_type, intervals, units=units)


def event(*signals: Signal, minutes: int = 60, **kw: object) -> GridEvent:
    return GridEvent("evt-1", 0, T0, timedelta(minutes=minutes), signals, **kw)  # type: ignore[arg-type]


def run(ev: GridEvent, ctx: SiteContext = CTX, site: SiteConfig | None = None, policy: PolicyConfig | None = None,
        now: datetime = BEFORE) -> Mapping:
    return map_event(ev, ctx, site or SiteConfig(), policy or PolicyConfig(), now)


def targets(m: Mapping) -> list[float | None]:
    assert m.directive is not None, m.decision.reason
    return [s.target_kw for s in m.directive.segments]
