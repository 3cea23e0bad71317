"""Baseline strategies the replay simulator runs beside dcflex's planner, on the same scenario, to show what it beats.

Each has the planner's signature (``gateway.ports.Planner``: ``(directive, snapshot, policy, now) -> Plan``), so the
engine runs it in place of ``gateway.planner.plan`` (``Engine(..., planner=...)``) and everything after the choice —
timing under the ramp rate, keys, undo, journal, restore — is the same. Only *what* is shed differs:

- ``priority_plan``: what Slurm's own preemption does. Whole jobs are suspended (or checkpointed and requeued) in
  priority order, lowest first — preemptible, flex-50, flex-25, flex-10; larger draw first within a tier, then job id —
  until the modelled shed meets the need. It exists to show the cost of ignoring the tiers' allowances: the
  lowest-priority jobs lose the whole event while dcflex spreads the loss thinly with caps.
- ``uniform_cap_plan``: the simplest power-capping policy: one whole-watt cap for every flexible job, the highest that
  brings the modelled site power to the target. It exists to show what water-filling across the jobs' DVFS curves
  (and within their tiers) buys over a flat cap.
- ``pause_all_plan``: the crude emergency response: every flexible job paused for the whole event, whatever the
  target. It exists as the bound on shed (and on lost work) that any strategy lies under.

Common rules, as in the planner (``gateway.planner``): never a ``critical`` job, only RUNNING ones; load now is the
metered ``snapshot.site_kw``, else the model's estimate (summed exactly, so the job order does not matter); the target
is the strictest of the segments not yet ended, and within ``tolerance_kw`` of it nothing is done (pause-all too);
after the event's end, or with no target or price in force, the plan is empty. A job that cannot be paused
(``pausable=False``) is checkpointed and stopped instead when it is requeueable and the site allows stops, else left
alone; one that cannot be capped (``cappable=False``) is left alone by the uniform cap. A job capped before the event
deeper than the uniform cap is left at its own cap (a shed never raises a cap).

Economic mode (price segments): priority and uniform-cap shed every flexible job worth less per MWh
(``value_per_mwh``; None counts as worth more) than the highest price in force — priority pauses or stops them, the
uniform cap puts them at the lowest cap allowed; pause-all pauses every flexible job. No target, no shortfall.

Sheds are timed from ``max(now, ramp_start)`` and their undos from the event's end by ``gateway.planner.actions.build``
(keys ``{event}/{kind}/{job}[/{watts}]``, held nodes for stopped jobs), so the engine's idempotence works unchanged.
Pure: no I/O, no clock; equal inputs give equal plans whatever the order of ``snapshot.jobs``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

from gateway.domain import ActionKind, ClusterSnapshot, Directive, Job, JobState, Plan, Shortfall, Tier
from gateway.planner import PlannerPolicy, plan
from gateway.planner.actions import Timed, build
from gateway.planner.core import (
    asked,
    assemble,
    at_target_note,
    nothing_to_shed_note,
    site_short_reasons,
    timing_notes,
)
from gateway.planner.levers import Choice, CurveTable, allowance, curve_table, lever_loss
from gateway.planner.policy import MIN_SHED_KW
from gateway.planner.shed import duplicate_job
from gateway.ports import Planner

__all__ = ["BASELINES", "STRATEGIES", "pause_all_plan", "priority_plan", "uniform_cap_plan"]

_CAP, _PAUSE, _STOP = ActionKind.CAP, ActionKind.PAUSE, ActionKind.CHECKPOINT_STOP
_RUN = JobState.RUNNING
_DRAWING = frozenset({JobState.SUSPENDED, JobState.CHECKPOINTING, JobState.RESTARTING})
# lowest priority first: the order Slurm's preemption would take them in
_RANK = {Tier.PREEMPTIBLE: 0, Tier.FLEX_50: 1, Tier.FLEX_25: 2, Tier.FLEX_10: 3}


class _Cand(NamedTuple):
    """A flexible running job with GPUs: its curve table and its per-GPU kW above idle now."""

    job: Job
    tab: CurveTable
    cur: float  # per-GPU kW now (under its current cap)
    draw: float  # the job's kW now


@dataclass(slots=True, eq=False)
class _Survey:
    """One pass over the snapshot: the modelled load, what is never touched, and the candidates in priority order."""

    model_kw: float = 0.0
    floor_kw: float = 0.0
    critical_n: int = 0
    critical_kw: float = 0.0
    busy_n: int = 0
    cands: list[_Cand] = field(default_factory=list)


@dataclass(slots=True, eq=False)
class _Pick:
    """What a strategy chose: the choices in shedding order, each job's reason, and what to tell the operator."""

    choices: list[Choice] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)  # by job id: replaces the planner's reason text
    notes: list[str] = field(default_factory=list)
    short: list[str] = field(default_factory=list)  # the strategy's own part of a shortfall's reason


_Strategy = Callable[[_Survey, PlannerPolicy, float, float | None, float], _Pick]


def _survey(snapshot: ClusterSnapshot, policy: PlannerPolicy) -> _Survey:
    model = policy.model
    out = _Survey()
    loads: list[float] = []
    crit: list[float] = []
    for job in snapshot.jobs:
        kw = model.job_kw(job)
        loads.append(kw)
        st = job.state
        if job.tier is Tier.CRITICAL:
            if st is _RUN or st in _DRAWING:
                out.critical_n += 1
                crit.append(kw)
        elif st is not _RUN:
            if st in _DRAWING:
                out.busy_n += 1
        elif job.gpus > 0:
            tab = curve_table(model, job.workload, policy.min_cap_w, policy.max_cap_w)
            cur = tab.running_kw(model, job.power_cap_w)
            out.cands.append(_Cand(job, tab, cur, job.gpus * cur))
    ids = [c.job.job_id for c in out.cands]
    if len(set(ids)) != len(ids):
        raise duplicate_job(ids)
    out.cands.sort(key=lambda c: (_RANK[c.job.tier], -c.draw, c.job.job_id))
    out.floor_kw = model.idle_floor_kw(snapshot.total_gpus, len(snapshot.nodes))
    out.model_kw = out.floor_kw + math.fsum(loads)
    out.critical_kw = math.fsum(crit)
    return out


def _lever(job: Job, policy: PlannerPolicy, prefer_stop: bool) -> ActionKind | None:
    """CHECKPOINT_STOP (Slurm requeue) or PAUSE (suspend) for a whole job, None when it can be neither."""
    stoppable = policy.allow_checkpoint_stop and job.requeueable
    if prefer_stop and stoppable and job.checkpointable:
        return _STOP
    if job.pausable:
        return _PAUSE
    return _STOP if stoppable else None


def _full(c: _Cand, kind: ActionKind, window_s: float) -> Choice:
    job, tab = c.job, c.tab
    after = tab.stop_kw if kind is _STOP else tab.pause_kw
    return Choice(job, kind, 0, job.gpus * (c.cur - after), lever_loss(job, kind, window_s), 0.0,
                  allowance(job, window_s), job.job_id, job.tier.value, job.power_cap_w)


def _full_reason(name: str, c: Choice, window_s: float, why: str) -> str:
    what = "checkpoint and stop (requeue)" if c.kind is _STOP else "pause"
    return f"{name} baseline: {what} for {window_s / 60.0:.0f} min ({c.tier}, {why}){_allow_note(c)}"


def _allow_note(c: Choice) -> str:
    """What the tier would have allowed, when the baseline takes more (preemptible jobs accept any stop)."""
    over = c.loss > c.allow + 1e-9 and c.job.tier is not Tier.PREEMPTIBLE
    return f"; its tier allows losing {c.allow:.0%} of this event" if over else ""


def _counts(pick: _Pick) -> str:
    stops = sum(1 for ch in pick.choices if ch.kind is _STOP)
    return f"{len(pick.choices) - stops} job(s) paused" + (f" and {stops} checkpointed and stopped" if stops else "")


def _econ(job: Job, price: float | None) -> str:
    return "" if price is None else f"; worth {job.value_per_mwh:g}/MWh < price {price:g}/MWh"


def _worth_less(c: _Cand, price: float) -> bool:
    v = c.job.value_per_mwh
    return v is not None and v < price


def _choose_priority(s: _Survey, policy: PlannerPolicy, need: float, price: float | None, window_s: float) -> _Pick:
    out = _Pick()
    shed = 0.0
    skipped = 0
    for c in s.cands:
        if price is not None and not _worth_less(c, price):
            continue
        kind = _lever(c.job, policy, prefer_stop=True)
        if kind is None:
            skipped += 1
            continue
        if price is None and shed >= need:
            continue  # keep counting what could not be touched, for the shortfall's reason
        ch = _full(c, kind, window_s)
        if ch.shed_kw <= MIN_SHED_KW:
            continue
        out.choices.append(ch)
        out.reasons[ch.job_id] = _full_reason("priority", ch, window_s, "lowest priority first") + _econ(c.job, price)
        shed += ch.shed_kw
    until = f"until {need:.0f} kW is shed" if price is None else f"each worth less than the price {price:g}/MWh"
    out.notes.append(f"priority baseline: {_counts(out)}, lowest priority first, {until}; tier allowances ignored")
    out.short.append("every job it may pause or stop is taken")
    if skipped:
        out.short.append(f"{skipped} flexible job(s) can be neither paused nor stopped")
    return out


def _choose_pause_all(s: _Survey, policy: PlannerPolicy, need: float, price: float | None, window_s: float) -> _Pick:
    out = _Pick()
    skipped = 0
    for c in s.cands:
        kind = _lever(c.job, policy, prefer_stop=False)
        if kind is None:
            skipped += 1
            continue
        ch = _full(c, kind, window_s)
        if ch.shed_kw > MIN_SHED_KW:
            out.choices.append(ch)
            why = "every flexible job" + ("" if price is None else f"; price {price:g}/MWh")
            out.reasons[ch.job_id] = _full_reason("pause-all", ch, window_s, why)
    why = " (those that cannot be paused)" if any(ch.kind is _STOP for ch in out.choices) else ""
    out.notes.append(f"pause-all baseline: {_counts(out)}{why}, whatever the target; tier allowances ignored")
    out.short.append("every flexible job that can be is paused or stopped")
    if skipped:
        out.short.append(f"{skipped} flexible job(s) can be neither paused nor stopped")
    return out


def _cap_range(policy: PlannerPolicy) -> range:
    """The whole-watt caps the policy and the model both allow, highest first."""
    model = policy.model
    lo = math.ceil(max(policy.min_cap_w, model.min_cap_w))
    hi = math.floor(min(policy.max_cap_w, model.max_cap_w))
    return range(hi, lo - 1, -1)


def _cap_index(tab: CurveTable, watts: int) -> int:
    """The index in ``tab`` of ``watts``, clamped to the caps the job's curve supports."""
    return min(max(watts, tab.lo), tab.lo + len(tab.kw) - 1) - tab.lo


def _choose_uniform(s: _Survey, policy: PlannerPolicy, need: float, price: float | None, window_s: float) -> _Pick:
    out = _Pick()
    caps = _cap_range(policy)
    cands = [c for c in s.cands if c.job.cappable and c.tab.kw and (price is None or _worth_less(c, price))]
    skipped = sum(1 for c in s.cands if not (c.job.cappable and c.tab.kw) and (price is None or _worth_less(c, price)))
    if not caps:
        out.notes.append("uniform-cap baseline: the policy's cap range and the model's do not meet: nothing capped")
        out.short.append("no cap is allowed")
        return out
    # jobs with the same table and current cap shed alike per GPU: sum over them, exactly
    gpus: dict[tuple[CurveTable, float | None], tuple[float, int]] = {}
    for c in cands:
        k = (c.tab, c.job.power_cap_w)
        gpus[k] = (c.cur, gpus.get(k, (0.0, 0))[1] + c.job.gpus)

    def shed_at(w: int) -> float:
        parts = ((cur - tab.kw[_cap_index(tab, w)], g) for (tab, _), (cur, g) in gpus.items())
        return math.fsum(d * g for d, g in parts if d > MIN_SHED_KW)

    watts = caps[-1]
    met = price is not None
    if price is None:
        for w in caps:
            if shed_at(w) >= need:
                watts, met = w, True
                break
    for c in cands:
        i = _cap_index(c.tab, watts)
        d = c.cur - c.tab.kw[i]
        if d <= MIN_SHED_KW:
            continue  # already at or below this cap: left as it is
        job = c.job
        kept = c.tab.thr[i]
        ch = Choice(job, _CAP, c.tab.lo + i, job.gpus * d, 1.0 - kept, kept, allowance(job, window_s), job.job_id,
                    job.tier.value, job.power_cap_w)
        out.choices.append(ch)
        out.reasons[ch.job_id] = (f"uniform-cap baseline: cap {ch.watts} W keeps {kept:.0%} (one cap for every flexible "
                                  f"job; {ch.tier} allows down to {1.0 - ch.allow:.0%}){_econ(job, price)}")
    if price is not None:
        out.notes.append(f"uniform-cap baseline: every job worth less than the price capped at {watts} W, the lowest "
                         f"allowed")
    elif met:
        out.notes.append(f"uniform-cap baseline: {watts} W on every flexible job, the highest whole-watt cap that meets "
                         f"the target; tier allowances ignored")
    else:
        out.notes.append(f"uniform-cap baseline: even {watts} W, the lowest cap allowed, does not meet the target")
    out.short.append(f"every flexible job is capped at {watts} W, the lowest allowed")
    if skipped:
        out.short.append(f"{skipped} flexible job(s) cannot be capped")
    return out


def _run(choose: _Strategy, directive: Directive, snapshot: ClusterSnapshot, policy: PlannerPolicy,
         now: datetime) -> Plan:
    """The frame the planner puts round its choice (``gateway.planner.core``), with ``choose`` as the choice."""
    ask = asked(directive, now)
    start, window_s, economic, target, price = ask.start, ask.window_s, ask.economic, ask.target, ask.price
    found = _survey(snapshot, policy)
    current = snapshot.site_kw if snapshot.site_kw is not None else found.model_kw
    if window_s <= 0.0 or (target is None and price is None):
        return assemble(directive, now, None if economic else target, current, None, None,
                        [nothing_to_shed_note(directive, now)])
    need = 0.0
    if target is not None:
        need = current - target
        if need <= policy.tolerance_kw:
            return assemble(directive, now, target, current, None, None, [at_target_note(current, target)])
    pick = choose(found, policy, need, price, window_s)
    timed = build(directive.event_id, [], pick.choices, None, start, window_s, directive.end, policy.ramp_rate_kw_per_min)
    _relabel(timed, pick.reasons)
    expected = max(0.0, current - timed.shed_kw)
    shortfall = None
    if target is not None and expected - target > policy.tolerance_kw:
        shortfall = Shortfall(kw=expected - target, reason=_why_short(found, timed, pick, need, expected - target, current,
                                                                      policy))
    notes = pick.notes + timing_notes(directive, start, timed, timed.shed_kw, policy)
    return assemble(directive, now, target, expected, shortfall, timed, notes)


def _relabel(timed: Timed, reasons: dict[str, str]) -> None:
    """The baseline's own reason on each shed command: the planner's text would claim the tier allows it."""
    timed.shed[:] = [dataclasses.replace(a, reason=reasons[a.job_id]) if a.kind in (_CAP, _PAUSE, _STOP) else a
                     for a in timed.shed]


def _why_short(found: _Survey, timed: Timed, pick: _Pick, need: float, gap: float, current: float,
               policy: PlannerPolicy) -> str:
    parts = list(pick.short)
    if found.critical_n:
        parts.append(f"{found.critical_n} critical job(s) ({found.critical_kw:.0f} kW) are never touched")
    if found.busy_n:
        parts.append(f"{found.busy_n} job(s) already paused or in transition are left as they are")
    parts += site_short_reasons(timed, found.floor_kw, current - found.model_kw, policy)
    return f"{gap:.0f} kW of {need:.0f} kW needed is out of reach: {'; '.join(parts)}"


def priority_plan(directive: Directive, snapshot: ClusterSnapshot, policy: PlannerPolicy, now: datetime) -> Plan:
    """Pause or requeue whole jobs, lowest priority first, until the target is met (Slurm's preemption)."""
    return _run(_choose_priority, directive, snapshot, policy, now)


def uniform_cap_plan(directive: Directive, snapshot: ClusterSnapshot, policy: PlannerPolicy, now: datetime) -> Plan:
    """One whole-watt cap on every flexible job: the highest that meets the target."""
    return _run(_choose_uniform, directive, snapshot, policy, now)


def pause_all_plan(directive: Directive, snapshot: ClusterSnapshot, policy: PlannerPolicy, now: datetime) -> Plan:
    """Pause every flexible job (stop those that cannot be paused), whatever the target."""
    return _run(_choose_pause_all, directive, snapshot, policy, now)


BASELINES: dict[str, Planner] = {"priority": priority_plan, "uniform-cap": uniform_cap_plan, "pause-all": pause_all_plan}
STRATEGIES: dict[str, Planner] = {"dcflex": plan, **BASELINES}
