"""Turning choices into timed actions, and each shed action into its undo.

Keys are stable across re-plans (``{event}/{kind}/{job}``, plus ``/{watts}`` for a cap), so the
engine never re-sends a command that is done; a deeper or shallower cap is a new command.

Restore order (from ``directive.end``, under the same ramp rate): stopped jobs restart first, each
right after its held nodes are released — a restart takes minutes before the job works again, so it
goes first; then paused jobs resume; caps are lifted last, because capped jobs were still working.
Within each group the last one shed comes back first: for caps that is the job that loses the most
GPU-throughput per kW of ramp budget (the reverse of the shedding rank), which minimises lost work.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import datetime
from typing import Any, cast

from gateway.domain import Action, ActionKind, Job, Tier
from gateway.planner.levers import Choice, stop_overhead_s
from gateway.planner.ramp import Times, ramp_offsets

_FIELDS = ("key", "kind", "at", "job_id", "nodes", "watts", "delta_kw", "tier", "reason")
_CAP, _PAUSE, _STOP, _HOLD = ActionKind.CAP, ActionKind.PAUSE, ActionKind.CHECKPOINT_STOP, ActionKind.HOLD_NODES
_UNCAP, _RESUME, _RESTART, _RELEASE = ActionKind.UNCAP, ActionKind.RESUME, ActionKind.RESTART, ActionKind.RELEASE_NODES


def _slot_setters() -> tuple[Callable[[Action, Any], None], ...] | None:
    """Direct slot setters for ``Action``, or None when its layout is not the one this module knows.

    Building tens of thousands of frozen, validated actions costs ~3 µs each, more than the whole
    plan's budget; every value here is valid by construction (non-empty keys and job ids, aware
    times, finite kW, watts on caps, nodes on holds), so the planner fills the slots directly. If
    ``Action`` ever changes shape this returns None and the validated constructor is used instead.
    """
    names = tuple(f.name for f in dataclasses.fields(Action))
    if names != _FIELDS or tuple(getattr(Action, "__slots__", ())) != _FIELDS:
        return None
    return tuple(cast(Callable[[Action, Any], None], getattr(Action, n).__set__) for n in _FIELDS)


_SETTERS = _slot_setters()


def make_action(key: str, kind: ActionKind, at: datetime, job_id: str, nodes: tuple[str, ...],
                watts: float | None, delta_kw: float, tier: str, reason: str) -> Action:
    """An ``Action`` equal to ``Action(key=..., ...)``, built without re-validating (see above)."""
    if _SETTERS is None:
        return Action(key=key, kind=kind, at=at, job_id=job_id, nodes=nodes, watts=watts,
                      delta_kw=delta_kw, tier=tier, reason=reason)
    a = object.__new__(Action)
    s_key, s_kind, s_at, s_job, s_nodes, s_watts, s_delta, s_tier, s_reason = _SETTERS
    s_key(a, key)
    s_kind(a, kind)
    s_at(a, at)
    s_job(a, job_id)
    s_nodes(a, nodes)
    s_watts(a, watts)
    s_delta(a, delta_kw)
    s_tier(a, tier)
    s_reason(a, reason)
    return a


@dataclasses.dataclass(slots=True, eq=False)
class Timed:
    """The actions planned for the shed phase and the restore phase, and what the ramp cut off."""

    shed: list[Action]
    restore: list[Action]
    kept: list[Choice]
    dropped_n: int = 0
    dropped_kw: float = 0.0
    reached_s: float = 0.0  # seconds after the shed start when the last shed takes effect
    restored_s: float = 0.0  # seconds after the event's end when the last restore is sent


_TIER_STR = {t: t.value for t in Tier}


def _cap_reason(c: Choice, tier: str, econ: str) -> str:
    return f"cap {c.watts} W keeps {c.kept:.0%} ({tier} allows down to {1.0 - c.allow:.0%}){econ}"


def _full_reason(c: Choice, tier: str, window_s: float, econ: str) -> str:
    minutes = window_s / 60.0
    if c.kind is _STOP:
        return (f"checkpoint and stop for {minutes:.0f} min ({tier}; {stop_overhead_s(c.job):.0f} s of "
                f"checkpoint and restart beats holding a pause that long){econ}")
    return f"pause for {minutes:.0f} min ({tier} allows losing the whole event){econ}"


def build(
    event_id: str,
    choices: list[Choice],
    econ_note: Callable[[Job], str] | None,
    shed_start: datetime,
    window_s: float,
    restore_start: datetime,
    rate_kw_per_min: float,
) -> Timed:
    """Time the shed actions from ``shed_start`` (dropping any that could not start within the window),
    then their undos from ``restore_start``. ``econ_note`` adds the price comparison to reasons."""
    time_at = Times(shed_start)
    out = Timed([], [], [])
    shed = out.shed
    kept = out.kept
    cap_key = f"{event_id}/cap/"
    reasons: dict[tuple[int, float, str, float], str] = {}  # many jobs share a cap reason (all with a = 1)
    tiers = _TIER_STR
    reached = 0.0
    for c, off in zip(choices, ramp_offsets([c.shed_kw for c in choices], rate_kw_per_min), strict=True):
        if off >= window_s:
            out.dropped_n += 1
            out.dropped_kw += c.shed_kw
            continue
        at = time_at(off)
        job = c.job
        jid = job.job_id
        tier = tiers[job.tier]
        econ = "" if econ_note is None else econ_note(job)
        if c.kind is _CAP:
            rk = (c.watts, c.kept, tier, c.allow)
            reason = reasons.get(rk) if not econ else None
            if reason is None:
                reason = _cap_reason(c, tier, econ)
                if not econ:
                    reasons[rk] = reason
            shed.append(make_action(f"{cap_key}{jid}/{c.watts}", _CAP, at, jid, (), float(c.watts), -c.shed_kw,
                                    tier, reason))
            effect = float(off)
        else:
            shed.append(make_action(f"{event_id}/{c.kind.value}/{jid}", c.kind, at, jid, (), None, -c.shed_kw,
                                    tier, _full_reason(c, tier, window_s, econ)))
            effect = float(off) + (job.checkpoint_s if c.kind is _STOP and job.checkpointable else 0.0)
            if c.kind is _STOP and job.nodes:
                shed.append(make_action(f"{event_id}/hold_nodes/{jid}", _HOLD, at, jid, job.nodes, None, 0.0, tier,
                                        f"hold {len(job.nodes)} node(s) freed by {jid} until the event ends"))
        if effect > reached:
            reached = effect
        kept.append(c)
    out.reached_s = reached
    _restore(event_id, out, restore_start, rate_kw_per_min)
    return out


def _restore(event_id: str, out: Timed, start: datetime, rate_kw_per_min: float) -> None:
    time_at = Times(start)
    restore = out.restore
    tiers = _TIER_STR
    groups: dict[ActionKind, list[Choice]] = {_STOP: [], _PAUSE: [], _CAP: []}
    for c in reversed(out.kept):
        groups[c.kind].append(c)
    stops, pauses, caps = groups[_STOP], groups[_PAUSE], groups[_CAP]
    offsets = ramp_offsets([c.shed_kw for group in (stops, pauses, caps) for c in group], rate_kw_per_min)
    out.restored_s = float(offsets[-1]) if offsets else 0.0
    offs = iter(offsets)
    for c in stops:
        job = c.job
        jid = job.job_id
        tier = tiers[job.tier]
        at = time_at(next(offs))
        if job.nodes:
            restore.append(make_action(f"{event_id}/release_nodes/{jid}", _RELEASE, at, jid, job.nodes, None, 0.0,
                                       tier, f"release the nodes held for {jid}"))
        restore.append(make_action(f"{event_id}/restart/{jid}", _RESTART, at, jid, (), None, c.shed_kw,
                                   tier, f"restart {jid}, stopped for event {event_id}"))
    resume_reason = f"resume after event {event_id}"
    for c in pauses:
        jid = c.job.job_id
        restore.append(make_action(f"{event_id}/resume/{jid}", _RESUME, time_at(next(offs)), jid, (), None, c.shed_kw,
                                   tiers[c.job.tier], resume_reason))
    uncap_key = f"{event_id}/uncap/"
    lift = "lift the event's cap"
    for c, off in zip(caps, offs, strict=True):
        job = c.job
        jid = job.job_id
        prev = job.power_cap_w
        restore.append(make_action(f"{uncap_key}{jid}", _UNCAP, time_at(off), jid, (), prev, c.shed_kw,
                                   tiers[job.tier], lift if prev is None else f"back to the {prev:g} W cap set before the event"))
