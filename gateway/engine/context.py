"""What the engine knows about the site when an event arrives: its baseline (by the site's method,
``gateway.power.baseline``), its flexible load and the floor no lever removes."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from gateway.config import SiteConfig
from gateway.domain import ClusterSnapshot, GridEvent, Tier
from gateway.journal import Journal
from gateway.policy import SiteContext
from gateway.power import PowerModel
from gateway.power.baseline import x_of_y_days
from gateway.power.history import PowerHistory


def event_baseline(site: SiteConfig, journal: Journal, history: PowerHistory, now: datetime,
                   event: GridEvent) -> tuple[float | None, str]:
    """The baseline for ``event`` by the site's method, and a sentence saying how it was made
    (``None`` when nothing has been measured yet)."""
    note = ""
    if site.baseline_method == "x-of-y-days":
        skip = {r.directive.start.date() for r in journal.events() if r.directive is not None}
        got = x_of_y_days(journal.power.minutes, event.start, event.end, site.baseline_x_days, site.baseline_y_days, skip)
        if got is not None:
            return got.kw, got.basis
        note = f"x-of-y-days: fewer than {site.baseline_x_days} event-free days recorded; "
    base = history.baseline(now, site.baseline_minutes)
    if base is None:
        return None, note
    return base.kw, note + (f"prior-minutes: mean of {base.samples} reading(s) over the {base.covered_s / 60:.0f} min "
                            f"before {now.isoformat(timespec='seconds')}")


def site_context(site: SiteConfig, journal: Journal, history: PowerHistory, model: PowerModel,
                 snapshot: ClusterSnapshot, now: datetime, event: GridEvent) -> SiteContext:
    """The site as ``map_event`` needs it; the baseline and its basis are journaled with the event."""
    measured, basis = event_baseline(site, journal, history, now, event)
    flexible = sum(model.job_kw(j) for j in snapshot.jobs if j.tier is not Tier.CRITICAL)
    if measured is None:
        metered = snapshot.site_kw is not None
        measured = snapshot.site_kw if snapshot.site_kw is not None else model.site_kw(snapshot)
        basis = "no measured power yet: the " + ("metered" if metered else "modelled") + " load now"
    journal.log(event.event_id, "baseline", now, {"kw": round(measured, 3), "basis": basis})
    return SiteContext(baseline_kw=measured, flexible_kw=flexible, floor_kw=max(0.0, measured - flexible))


def metered(snapshot: ClusterSnapshot, latest: tuple[datetime, float] | None, now: datetime, sample_interval_s: float,
            commanded_at: datetime | None) -> ClusterSnapshot:
    """The snapshot with the site's measured power when the scheduler reports none and a reading is
    fresh: a scheduler that lists no nodes (Ray) cannot model the idle GPUs and the rest of the site,
    and the meter's figure is what the target is judged against. A reading taken before the last
    commands returned (``commanded_at``) is not used: it still counts load they removed, and the
    snapshot, read just now, does not (the model decides until the next reading; the drift check
    re-plans on it)."""
    if snapshot.site_kw is not None or latest is None:
        return snapshot
    if (now - latest[0]).total_seconds() > 2.0 * sample_interval_s + 1.0:
        return snapshot
    if commanded_at is not None and latest[0] <= commanded_at:
        return snapshot
    return replace(snapshot, site_kw=latest[1])
