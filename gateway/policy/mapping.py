"""OpenADR event → (opt-in/opt-out decision, directive): the signal policy.

``map_event`` is pure (no I/O, no clock: ``now`` is passed in) and never raises for an event the
VEN could translate: anything it cannot follow becomes an opt-out with a reason an operator can
act on, because a crash here would leave the VTN without an answer.

How the signals combine:

- every signal is read on its own (``gateway.policy.signals``), then, per interval, the strictest
  target wins (the lowest kW): following the strictest request satisfies all of them;
- price signals alone put the directive in economic mode (segments carry a price, the highest
  price per interval wins); a price alongside a target signal is ignored and the reason says so;
- targets above the baseline are held at the baseline (dcflex never raises load), so every
  directive target lies in [0, baseline].
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import pairwise

from gateway.config.models import PolicyConfig, SiteConfig
from gateway.domain import Directive, GridEvent, OptDecision, Segment, SignalKind
from gateway.domain._checks import finite
from gateway.policy.decide import (
    absurd_target,
    precheck,
    shed_beyond_limits,
    shortfall_kw,
    shortfall_note,
    unsupported_signals,
)
from gateway.policy.signals import Baseline, Piece, fmt, translate


@dataclass(frozen=True, slots=True)
class SiteContext:
    """What the engine knows about the site when the event arrives (all kW).

    ``baseline_kw`` is the site load before the event (measured); ``flexible_kw`` the load above idle
    of the non-critical running jobs (what could be shed); ``floor_kw`` what cannot be shed: the idle
    floor plus the critical jobs' load.
    """

    baseline_kw: float
    flexible_kw: float
    floor_kw: float

    def __post_init__(self) -> None:
        finite("site_context.baseline_kw", self.baseline_kw, lo=0.0)
        finite("site_context.flexible_kw", self.flexible_kw, lo=0.0)
        finite("site_context.floor_kw", self.floor_kw, lo=0.0)


@dataclass(frozen=True, slots=True)
class Mapping:
    """The outcome for one event delivery; ``directive`` is None exactly when opting out."""

    decision: OptDecision
    directive: Directive | None

    def __post_init__(self) -> None:
        if self.decision.opt_in != (self.directive is not None):
            raise ValueError("a mapping has a directive exactly when it opts in")


def opt_out(reason: str) -> Mapping:
    return Mapping(OptDecision(opt_in=False, reason=reason), None)


def map_event(event: GridEvent, ctx: SiteContext, site: SiteConfig, policy: PolicyConfig, now: datetime) -> Mapping:
    """Decide whether to follow ``event`` and, if so, the directive to follow."""
    try:
        return _map(event, ctx, site, policy, now)
    except (ValueError, ArithmeticError) as exc:  # a value beyond what datetimes/floats hold: still answer
        return opt_out(f"cannot map event {event.event_id}: {exc}")


def _map(event: GridEvent, ctx: SiteContext, site: SiteConfig, policy: PolicyConfig, now: datetime) -> Mapping:
    reason = precheck(event, policy, now) or unsupported_signals(event)
    if reason:
        return opt_out(reason)
    base = Baseline(ctx.baseline_kw, ctx.flexible_kw)
    pieces: list[Piece] = []
    for signal in event.signals:
        got = translate(signal, event, base, policy)
        if isinstance(got, str):
            return opt_out(got)
        pieces.extend(got)
    targets = [p for p in pieces if p.target_kw is not None]
    prices = [p for p in pieces if p.price_per_mwh is not None]
    if not pieces:
        return opt_out(
            f"no signal interval of event {event.event_id} falls inside the event "
            f"({event.start.isoformat()} to {event.end.isoformat()})"
        )
    if targets:
        return _target_mode(event, ctx, site, policy, targets, ignored_prices=bool(prices))
    return _economic_mode(event, ctx, policy, prices)


def _target_mode(
    event: GridEvent,
    ctx: SiteContext,
    site: SiteConfig,
    policy: PolicyConfig,
    pieces: Sequence[Piece],
    *,
    ignored_prices: bool,
) -> Mapping:
    b = float(ctx.baseline_kw)
    reason = absurd_target(pieces, b, policy)
    if reason:
        return opt_out(reason)
    # Held within [0, baseline]: a target above the baseline asks for nothing dcflex can do.
    held = [_with_target(p, min(max(p.target_kw or 0.0, 0.0), b)) for p in pieces]
    combined = combine(held, lambda p: p.target_kw or 0.0, prefer_low=True)
    strictest = min(combined, key=lambda c: c[2].target_kw or 0.0)[2]
    low = strictest.target_kw or 0.0
    shed = b - low
    reason = shed_beyond_limits(shed, b, low, site)
    if reason:
        return opt_out(reason)
    notes = [strictest.note]
    if any((p.target_kw or 0.0) > b for p in pieces):
        notes.append(f"targets above the {fmt(b)} kW baseline are held at the baseline")
    if len({round(c[2].target_kw or 0.0, 6) for c in combined}) > 1:
        notes.append(f"strictest of {len(combined)} segments shown")
    n_target_signals = sum(1 for s in event.signals if s.kind is not SignalKind.ELECTRICITY_PRICE)
    if n_target_signals > 1:
        notes.append(f"stricter target of {n_target_signals} signals per interval")
    if ignored_prices:
        notes.append("ELECTRICITY_PRICE ignored: a target signal takes precedence")
    note = shortfall_note(shortfall_kw(shed, low, ctx.flexible_kw, ctx.floor_kw), ctx.flexible_kw, ctx.floor_kw, policy)
    if note:
        notes.append(note)
    segments = tuple(Segment(s, e, target_kw=p.target_kw) for s, e, p in combined)
    return _opt_in(event, ctx, policy, segments, "; ".join(notes))


def _economic_mode(event: GridEvent, ctx: SiteContext, policy: PolicyConfig, pieces: Sequence[Piece]) -> Mapping:
    combined = combine(pieces, lambda p: p.price_per_mwh or 0.0, prefer_low=False)
    top = max(combined, key=lambda c: c[2].price_per_mwh or 0.0)[2]
    notes = [top.note]
    if len({round(c[2].price_per_mwh or 0.0, 6) for c in combined}) > 1:
        notes.append(f"highest of {len(combined)} price segments shown")
    segments = tuple(Segment(s, e, price_per_mwh=p.price_per_mwh) for s, e, p in combined)
    return _opt_in(event, ctx, policy, segments, "; ".join(notes))


def _opt_in(event: GridEvent, ctx: SiteContext, policy: PolicyConfig, segments: tuple[Segment, ...], reason: str) -> Mapping:
    start, end = event.start, event.end
    if event.ramp > timedelta(0):
        ramp_start, target_by = start - event.ramp, start
    else:
        ramp_start, target_by = start, min(start + timedelta(seconds=policy.default_ramp_s), end)
    recovery = event.recovery if event.recovery > timedelta(0) else timedelta(seconds=policy.default_recovery_s)
    directive = Directive(
        event_id=event.event_id,
        modification=event.modification,
        segments=segments,
        baseline_kw=ctx.baseline_kw,
        ramp_start=ramp_start,
        target_by=target_by,
        end=end,
        recovery_end=end + recovery,
        reason=reason,
    )
    return Mapping(OptDecision(opt_in=True, reason=reason), directive)


def _with_target(p: Piece, target_kw: float) -> Piece:
    return Piece(p.start, p.end, target_kw, None, p.note)


def combine(
    pieces: Sequence[Piece], value: Callable[[Piece], float], *, prefer_low: bool
) -> list[tuple[datetime, datetime, Piece]]:
    """Overlay pieces: per elementary time span the lowest (or highest) value wins; equal neighbours merge.

    Returns ``(start, end, winning piece)`` in time order; spans no piece covers are left out.
    """
    bounds = sorted({p.start for p in pieces} | {p.end for p in pieces})
    out: list[tuple[datetime, datetime, Piece]] = []
    for a, b in pairwise(bounds):
        covering = [p for p in pieces if p.start <= a and b <= p.end]
        if not covering:
            continue
        win = min(covering, key=value) if prefer_low else max(covering, key=value)
        if out and out[-1][1] == a and value(out[-1][2]) == value(win):
            out[-1] = (out[-1][0], b, out[-1][2])
        else:
            out.append((a, b, win))
    return out
