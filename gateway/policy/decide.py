"""The opt-in/opt-out decision: each check returns the reason to opt out, or None to go on.

DR programs count a partial delivery as better than a refusal, so dcflex opts out only when the
request is outside what the site has agreed to (``site.max_shed_kw``, ``site.max_shed_fraction``),
is absurd (a target below 0 or far above the baseline), cannot be read, or does not apply (a test
event, an event already over). A request the site agreed to but cannot fully deliver (more shed than
its flexible load) is opted in, and the reason says the expected shortfall.

Reasons are read by operators and sent to the VTN, so each names the numbers that decided it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime

from gateway.config.models import PolicyConfig, SiteConfig
from gateway.domain import GridEvent
from gateway.policy.signals import Piece, fmt, unsupported

# Float noise allowed before a shed counts as above a maximum, or a target as below 0 (kW).
EPS_KW = 1e-6


def _when(t: datetime) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S %Z").strip()


def precheck(event: GridEvent, policy: PolicyConfig, now: datetime) -> str | None:
    """Reasons that do not depend on the signals' values: cancelled, over, test, empty."""
    if event.cancelled:
        return f"event {event.event_id} is cancelled: nothing to follow"
    if event.end <= now:
        return f"event {event.event_id} already ended at {_when(event.end)} (now {_when(now)})"
    if event.test_event and not policy.opt_in_test_events:
        return f"event {event.event_id} is a test event and policy.opt_in_test_events is false"
    if not event.signals:
        return f"event {event.event_id} has no signals"
    return None


def unsupported_signals(event: GridEvent) -> str | None:
    """Every signal dcflex cannot map, in one reason.

    An event with a known and an unknown signal is opted out of as a whole: following part of an
    event would report a delivery the utility did not ask for, and hide the part that was ignored.
    """
    problems = [p for p in (unsupported(s) for s in event.signals) if p is not None]
    if not problems:
        return None
    reason = "; ".join(problems)
    if len(problems) < len(event.signals):
        reason += " (the whole event is opted out: dcflex does not follow part of an event)"
    return reason


def absurd_target(pieces: Sequence[Piece], baseline_kw: float, policy: PolicyConfig) -> str | None:
    """A target no sane program sends: not a number, below 0, or above ``max_target_factor`` × baseline.

    With a zero baseline (an idle site, or no reading yet) there is no scale to judge "far above"
    by, and nothing to shed either, so only negative targets are refused.
    """
    ceiling = policy.max_target_factor * baseline_kw
    for p in pieces:
        t = p.target_kw
        if t is None:
            continue
        if not math.isfinite(t):
            return f"absurd target {t!r} kW ({p.note})"
        if t < -EPS_KW:
            return f"absurd target {fmt(t)} kW: below 0 ({p.note})"
        if baseline_kw > 0 and t > ceiling + EPS_KW:
            return (
                f"absurd target {fmt(t)} kW: above {policy.max_target_factor:g}× the {fmt(baseline_kw)} kW baseline "
                f"(policy.max_target_factor) ({p.note})"
            )
    return None


def shed_beyond_limits(shed_kw: float, baseline_kw: float, strictest_kw: float, site: SiteConfig) -> str | None:
    """The requested shed is more than the site agreed to give."""
    asked = f"requested shed {fmt(shed_kw)} kW (from the {fmt(baseline_kw)} kW baseline to {fmt(strictest_kw)} kW)"
    if site.max_shed_kw is not None and shed_kw > site.max_shed_kw + EPS_KW:
        return f"{asked} exceeds site.max_shed_kw {fmt(site.max_shed_kw)} kW"
    limit = site.max_shed_fraction * baseline_kw
    if shed_kw > limit + EPS_KW:
        share = f"{shed_kw / baseline_kw * 100:.4g}% of the baseline, " if baseline_kw > 0 else ""
        return (
            f"{asked} is {share}above site.max_shed_fraction {site.max_shed_fraction * 100:.4g}% "
            f"({fmt(limit)} kW)"
        )
    return None


def shortfall_kw(shed_kw: float, strictest_kw: float, flexible_kw: float, floor_kw: float) -> float:
    """How far the site is expected to miss the strictest target.

    Either limit can bind: the shed cannot exceed the flexible load, and the load cannot go below
    the floor (idle draw plus critical jobs). They agree when baseline = floor + flexible; when the
    measured baseline and the model differ, the larger miss is the honest estimate.
    """
    return max(0.0, shed_kw - flexible_kw, floor_kw - strictest_kw)


def shortfall_note(short_kw: float, flexible_kw: float, floor_kw: float, policy: PolicyConfig) -> str | None:
    """The reason's remark when the shortfall is beyond the tolerance."""
    if short_kw <= policy.tolerance_kw:
        return None
    return (
        f"expected shortfall {fmt(short_kw)} kW: only {fmt(flexible_kw)} kW is flexible "
        f"and the site cannot go below its {fmt(floor_kw)} kW floor"
    )
