"""Holding a gateway-initiated drop until its notice has had the lead time, when the event allows it."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from gateway.config.models import NoticesConfig
from gateway.domain import Directive

__all__ = ["deferred"]


def deferred(directive: Directive, now: datetime, cfg: NoticesConfig, threshold_kw: float) -> Directive:
    """With ``defer_drops``: the directive with its shed starting no sooner than the shortest lead time from
    ``now`` (its notice goes out now), when that is still no later than the time the target is due; the
    same directive otherwise (deferring off, no room, or a drop too small to need notice)."""
    target = directive.strictest_kw
    if not (cfg.enabled and cfg.defer_drops) or target is None:
        return directive
    lead = min(cfg.lead_times_min)
    earliest = now + timedelta(minutes=lead)
    if earliest <= directive.ramp_start or earliest > directive.target_by:
        return directive
    if directive.baseline_kw - target < threshold_kw:
        return directive
    return replace(directive, ramp_start=earliest,
                   reason=f"{directive.reason}; shed deferred to {earliest.isoformat(timespec='seconds')} so the "
                          f"grid has {lead:g} min notice")
