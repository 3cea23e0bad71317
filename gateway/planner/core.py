"""``plan``: a directive and a cluster snapshot in, a timed plan out. Pure: no I/O, no clock.

Equal inputs give equal plans, whatever the order of the snapshot's jobs: every tie is broken by
job id and every sum over jobs is exact (``math.fsum`` over GPU counts grouped by power state).
"""

from __future__ import annotations

import gc
from dataclasses import dataclass
from datetime import datetime, timedelta
from operator import itemgetter

from gateway.domain import ActionKind, ClusterSnapshot, Directive, Job, Plan, Shortfall
from gateway.exceptions import PlanningError
from gateway.planner.actions import Timed, build
from gateway.planner.policy import PlannerPolicy
from gateway.planner.shed import Scan, duplicate_job, scan, select_economic, select_for_target


def plan(directive: Directive, snapshot: ClusterSnapshot, policy: PlannerPolicy, now: datetime) -> Plan:
    """The least harmful set of timed actions that brings the site to the directive's target.

    See the package docstring for the rules; a target out of reach still gets every action that
    helps, plus a ``Shortfall`` saying by how much and why.

    The cyclic garbage collector is paused while planning: a plan allocates tens of thousands of
    small objects, which with a 100k-job snapshot alive triggers full collections that cost more
    than the plan itself. Nothing planned here forms a cycle, so nothing is left for it to find.
    """
    paused = gc.isenabled()
    if paused:
        gc.disable()
    try:
        return _plan_now(directive, snapshot, policy, now)
    finally:
        if paused:
            gc.enable()


@dataclass(frozen=True, slots=True)
class Asked:
    """What a directive asks from ``now`` on: when shedding may start, the window left, and the strictest
    target (target mode) or the highest price (economic mode) of the segments not yet ended."""

    start: datetime
    window_s: float
    economic: bool
    target: float | None
    price: float | None


def asked(directive: Directive, now: datetime) -> Asked:
    """Read the directive as every planner (the gateway's and the replay's baselines) must."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise PlanningError(f"planning time must be timezone-aware, got naive {now.isoformat()}")
    live = [s for s in directive.segments if s.end > now]
    start = max(now, directive.ramp_start)
    economic = directive.economic
    prices = [s.price_per_mwh for s in live if s.price_per_mwh is not None]
    targets = [s.target_kw for s in live if s.target_kw is not None]
    return Asked(start=start, window_s=(directive.end - start).total_seconds(), economic=economic,
                 target=None if economic or not targets else min(targets),
                 price=max(prices) if economic and prices else None)


def _plan_now(directive: Directive, snapshot: ClusterSnapshot, policy: PlannerPolicy, now: datetime) -> Plan:
    ask = asked(directive, now)
    start, window_s, economic, target, price = ask.start, ask.window_s, ask.economic, ask.target, ask.price
    notes: list[str] = []

    if window_s <= 0.0 or (target is None and price is None):
        current = snapshot.site_kw if snapshot.site_kw is not None else policy.model.site_kw(snapshot)
        notes.append(nothing_to_shed_note(directive, now))
        return assemble(directive, now, None if economic else target, current, None, None, notes)
    aim = None if target is None else target - policy.headroom_kw  # below the target by the site's margin
    if aim is not None and snapshot.site_kw is not None and snapshot.site_kw - aim <= policy.tolerance_kw:
        notes.append(at_target_note(snapshot.site_kw, target))  # type: ignore[arg-type]
        return assemble(directive, now, target, snapshot.site_kw, None, None, notes)

    found = scan(snapshot, policy, window_s, price)
    current = snapshot.site_kw if snapshot.site_kw is not None else found.model_kw
    if target is not None and aim is not None:
        need = current - aim
        if need <= policy.tolerance_kw:
            notes.append(at_target_note(current, target))
            return assemble(directive, now, target, current, None, None, notes)
        runs, choices = select_for_target(found, need)
    else:
        need = 0.0
        runs, choices = [], select_economic(found)
        assert price is not None
        notes.append(f"economic mode: price {price:g}/MWh; {len(choices)} job(s) worth less are shed, "
                     f"{found.priced_out_n} worth more or without a value are left running")

    def econ_note(job: Job) -> str:
        return f"; worth {job.value_per_mwh:g}/MWh < price {price:g}/MWh"

    timed = build(directive.event_id, runs, choices, None if price is None else econ_note, start, window_s, directive.end,
                  policy.ramp_rate_kw_per_min)
    shed_kw = timed.shed_kw
    expected = max(0.0, current - shed_kw)
    shortfall = None
    if target is not None and expected - target > policy.tolerance_kw:
        shortfall = Shortfall(kw=expected - target, reason=_why_short(found, timed, need, expected - target, current, policy))
    notes += timing_notes(directive, start, timed, shed_kw, policy)
    if snapshot.site_kw is not None and shed_kw > 0 and current < found.model_kw - policy.tolerance_kw:
        notes.append(f"the meter reads {current:.0f} kW, below the model's {found.model_kw:.0f} kW: the "
                     f"expected load may be optimistic")
    return assemble(directive, now, target, expected, shortfall, timed, notes)


def assemble(directive: Directive, now: datetime, target: float | None, expected: float, shortfall: Shortfall | None,
          timed: Timed | None, notes: list[str]) -> Plan:
    shed = tuple(timed.shed) if timed else ()
    restore = tuple(timed.restore) if timed else ()
    loss = _job_loss(timed) if timed else ()
    return Plan(
        event_id=directive.event_id,
        modification=directive.modification,
        created_at=now,
        baseline_kw=directive.baseline_kw,
        target_kw=target,
        expected_kw=expected,
        shed=shed,
        restore=restore,
        shortfall=shortfall,
        job_loss=loss,
        notes=tuple(notes),
    )


def _job_loss(timed: Timed) -> tuple[tuple[str, float], ...]:
    """Each touched job's loss, in shedding order (itself independent of the snapshot's order); a job
    id seen twice (a bad snapshot) is an error."""
    pairs = timed.job_loss()
    if len(set(map(itemgetter(0), pairs))) != len(pairs):
        raise duplicate_job([jid for jid, _ in pairs])
    return tuple(pairs)


def at_target_note(current: float, target: float) -> str:
    return f"no shed needed: the site draws {current:.0f} kW against a target of {target:.0f} kW"


def nothing_to_shed_note(directive: Directive, now: datetime) -> str:
    return (f"nothing to shed: event {directive.event_id} ends at {_iso(directive.end)}, "
            f"no target or price is in force at {_iso(now)}")


def _iso(t: datetime) -> str:
    return t.isoformat(timespec="seconds")


def timing_notes(directive: Directive, start: datetime, timed: Timed, shed_kw: float, policy: PlannerPolicy) -> list[str]:
    notes = []
    rate = policy.ramp_rate_kw_per_min
    if timed.runs or timed.kept:
        reached = start + timedelta(seconds=timed.reached_s)
        if reached > directive.target_by:
            late = (reached - directive.target_by).total_seconds() / 60.0
            stops = any(c.kind is ActionKind.CHECKPOINT_STOP for c in timed.kept)
            notes.append(
                f"target reached at {_iso(reached)}, {late:.0f} min after {_iso(directive.target_by)}: shedding "
                f"{shed_kw:.0f} kW at {rate:g} kW/min from {_iso(start)} takes that long"
                + (" (stopped jobs drop their load only once their checkpoint is written)" if stops else "")
            )
        done = directive.end + timedelta(seconds=timed.restored_s)
        if done > directive.recovery_end:
            notes.append(
                f"restore ends at {_iso(done)}, after the recovery window ({_iso(directive.recovery_end)}): "
                f"{shed_kw:.0f} kW comes back at {rate:g} kW/min"
            )
    if timed.dropped_n:
        notes.append(
            f"{timed.dropped_n} command(s) ({timed.dropped_kw:.0f} kW) left out: at {rate:g} kW/min they could "
            f"not start before the event ends at {_iso(directive.end)}"
        )
    return notes


def _why_short(found: Scan, timed: Timed, need: float, gap: float, current: float, policy: PlannerPolicy) -> str:
    """An operator's explanation of a shortfall: what cannot be touched and what is spent."""
    parts = []
    if found.critical_n:
        parts.append(f"{found.critical_n} critical job(s) ({found.critical_kw:.0f} kW) are never touched")
    caps = timed.caps_n
    if caps:
        parts.append(f"flex tiers allow no deeper caps on the {caps} capped job(s)")
    scaled = timed.scaled_n
    full = timed.touched_n - caps - scaled
    if full:
        parts.append(f"{full} job(s) are paused or stopped outright")
    if scaled:
        parts.append(f"{scaled} service(s) are down to the fewest replicas their tier allows")
    if found.spent_n:
        parts.append(f"{found.spent_n} flex job(s) have no allowance left for this event")
    if found.busy_n:
        draw = f" ({found.busy_kw:.0f} kW)" if found.busy_kw >= 0.5 else ""
        parts.append(f"{found.busy_n} job(s) already paused or in transition{draw} are left as they are")
    parts += site_short_reasons(timed, found.floor_kw, current - found.model_kw, policy)
    body = "; ".join(parts) if parts else "no running job can shed more"
    return f"{gap:.0f} kW of {need:.0f} kW needed is out of reach: {body}"


def site_short_reasons(timed: Timed, floor_kw: float, other_kw: float, policy: PlannerPolicy) -> list[str]:
    """The parts of a shortfall no strategy's choice explains: the ramp, the idle floor, load not from jobs."""
    parts = []
    if timed.dropped_n:
        parts.append(f"{timed.dropped_kw:.0f} kW of commands could not start before the event ends at "
                     f"{policy.ramp_rate_kw_per_min:g} kW/min")
    if floor_kw > 0.5:
        parts.append(f"{floor_kw:.0f} kW is idle GPU and node draw that no lever removes")
    if other_kw > policy.tolerance_kw:
        parts.append(f"{other_kw:.0f} kW of the metered load is not from the jobs")
    return parts

