"""Tests of the pure planner; the builders they share live here."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gateway.domain import ClusterSnapshot, Directive, Job, Segment
from gateway.planner import PlannerPolicy
from gateway.power import PowerModel

NOW = datetime(2025, 5, 20, 17, 0, tzinfo=UTC)
MODEL = PowerModel()


def directive(
    target_kw: float | None = None,
    *,
    price: float | None = None,
    lead_min: float = 0.0,
    ramp_min: float = 10.0,
    hold_min: float = 60.0,
    recovery_min: float = 30.0,
    event_id: str = "ev-1",
) -> Directive:
    """Ramp from NOW + lead, target by ramp end, hold, then recover; one segment over the hold."""
    ramp_start = NOW + timedelta(minutes=lead_min)
    target_by = ramp_start + timedelta(minutes=ramp_min)
    end = target_by + timedelta(minutes=hold_min)
    seg = Segment(start=target_by, end=end, target_kw=target_kw, price_per_mwh=price)
    return Directive(
        event_id=event_id, modification=0, segments=(seg,), baseline_kw=1000.0, ramp_start=ramp_start,
        target_by=target_by, end=end, recovery_end=end + timedelta(minutes=recovery_min), reason="test",
    )


def snapshot(*jobs: Job, site_kw: float | None = None) -> ClusterSnapshot:
    return ClusterSnapshot(at=NOW, jobs=tuple(jobs), site_kw=site_kw)


def policy(**kw: object) -> PlannerPolicy:
    return PlannerPolicy(model=MODEL, **kw)  # type: ignore[arg-type]
