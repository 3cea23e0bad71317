"""Turning what the planner chose into timed actions, and each shed action into its undo.

Target mode's caps come as runs (``CapRun``: jobs capped alike, in order), everything else as single
choices after them; the runs are read with their shared values hoisted, because a large event caps
tens of thousands of jobs and each command's cost is most of the plan's.

Keys are stable across re-plans (``{event}/{kind}/{job}``, plus ``/{watts}`` for a cap), so the
engine never re-sends a command that is done; a deeper or shallower cap is a new command.

Restore order (from ``directive.end``, under the same ramp rate): stopped jobs restart first, each
right after its held nodes are released — a restart takes minutes before the job works again, so it
goes first; then paused jobs resume; then services get their replicas back, one replica per command
(staggered: each replica's load comes back at the ramp rate); caps are lifted last, because capped
jobs were still working.
Within each group the last one shed comes back first: for caps that is the job that loses the most
GPU-throughput per kW of ramp budget (the reverse of the shedding rank), which minimises lost work.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from itertools import chain
from operator import itemgetter

from gateway.domain import Action, ActionKind, Job, Tier
from gateway.domain.unchecked import unchecked
from gateway.planner.levers import CapRun, Choice, stop_overhead_s
from gateway.planner.ramp import Times, ramp_offsets

__all__ = ["Timed", "build", "make_action"]

_CAP, _PAUSE, _STOP, _HOLD = ActionKind.CAP, ActionKind.PAUSE, ActionKind.CHECKPOINT_STOP, ActionKind.HOLD_NODES
_UNCAP, _RESUME, _RESTART, _RELEASE = ActionKind.UNCAP, ActionKind.RESUME, ActionKind.RESTART, ActionKind.RELEASE_NODES
_SCALE, _SCALE_UP = ActionKind.SCALE_DOWN, ActionKind.SCALE_UP
_TIER_STR = {t: t.value for t in Tier}
_cand_gpus = itemgetter(3)

make_action: Callable[..., Action] = unchecked(Action)
"""``make_action(key, kind, at, job_id, nodes, watts, delta_kw, tier, reason, replicas=None)``: an ``Action`` equal
to ``Action(key=..., ...)``, built without re-validating: every value the planner puts in an action is valid
by construction (non-empty keys and job ids, aware times, finite kW), and a plan can hold a hundred thousand."""


@dataclass(slots=True, eq=False)
class Timed:
    """The actions planned for the shed phase and the restore phase, and what the ramp cut off."""

    shed: list[Action]
    restore: list[Action]
    runs: list[CapRun] = field(default_factory=list)  # the runs of caps kept (cut where the ramp ran out)
    kept: list[Choice] = field(default_factory=list)  # the single choices kept
    shed_kw: float = 0.0  # what the kept actions shed, summed exactly
    run_loss: list[tuple[str, float]] = field(default_factory=list)  # (job id, loss) of the runs' jobs
    dropped_n: int = 0
    dropped_kw: float = 0.0
    reached_s: float = 0.0  # seconds after the shed start when the last shed takes effect
    restored_s: float = 0.0  # seconds after the event's end when the last restore is sent

    @property
    def caps_n(self) -> int:
        """How many jobs are capped (in runs or as single choices)."""
        return sum(len(r.cands) for r in self.runs) + sum(1 for c in self.kept if c.kind is _CAP)

    @property
    def touched_n(self) -> int:
        return sum(len(r.cands) for r in self.runs) + len({c.job_id for c in self.kept})

    @property
    def scaled_n(self) -> int:
        """How many replicated services lose replicas."""
        return len({c.job_id for c in self.kept if c.kind is _SCALE})

    def job_loss(self) -> list[tuple[str, float]]:
        """(job id, loss over the window) of every job touched, in shedding order (a service's replica
        steps add up to one entry)."""
        single: dict[str, float] = {}
        for c in self.kept:
            single[c.job_id] = single.get(c.job_id, 0.0) + c.loss if c.kind is _SCALE else c.loss
        return self.run_loss + list(single.items())


def _cap_reason(watts: int, kept: float, tier: str, allow: float, econ: str) -> str:
    return f"cap {watts} W keeps {kept:.0%} ({tier} allows down to {1.0 - allow:.0%}){econ}"


def _full_reason(c: Choice, tier: str, window_s: float, econ: str) -> str:
    minutes = window_s / 60.0
    if c.kind is _SCALE:
        full = c.job.replicas + c.job.replicas_removed
        return (f"scale {c.job.name or c.job_id} to {c.replicas} of {full} replica(s) for {minutes:.0f} min "
                f"({tier} allows losing {c.job.tier.max_loss:.0%} of its throughput){econ}")
    if c.kind is _STOP:
        return (f"checkpoint and stop for {minutes:.0f} min ({tier}; {stop_overhead_s(c.job):.0f} s of "
                f"checkpoint and restart beats holding a pause that long){econ}")
    return f"pause for {minutes:.0f} min ({tier} allows losing the whole event){econ}"


def build(
    event_id: str,
    runs: list[CapRun],
    choices: list[Choice],
    econ_note: Callable[[Job], str] | None,
    shed_start: datetime,
    window_s: float,
    restore_start: datetime,
    rate_kw_per_min: float,
) -> Timed:
    """Time the shed actions (the runs' jobs, then the choices) from ``shed_start``, dropping any that
    could not start within the window; then their undos from ``restore_start``. ``econ_note`` adds the
    price comparison to the choices' reasons."""
    run_kws = [[g * r.save for g in map(_cand_gpus, r.cands)] for r in runs]
    kws = list(chain.from_iterable(run_kws))
    kws += [c.shed_kw for c in choices]
    offsets = ramp_offsets(kws, rate_kw_per_min)
    n = bisect_left(offsets, window_s)  # offsets never decrease: those past the window are a tail
    out = Timed([], [], shed_kw=math.fsum(kws[:n]), dropped_n=len(kws) - n, dropped_kw=sum(kws[n:]))
    left = n
    kept_runs: list[tuple[CapRun, list[float]]] = []
    for r, rk in zip(runs, run_kws, strict=True):
        if left <= 0:
            break
        if len(rk) > left:
            r, rk = r._replace(cands=r.cands[:left]), rk[:left]
        kept_runs.append((r, rk))
        out.runs.append(r)
        left -= len(rk)
    out.kept = choices[:left] if left > 0 else []
    out.reached_s = float(offsets[n - 1]) if n else 0.0

    # Restore order: restarts, resumes, the single choices' uncaps (each last shed first), then the
    # runs' uncaps, last shed first. Their times are known up front, so the runs' uncaps are made in
    # the same pass as their caps (while each job's entry is at hand) and reversed afterwards.
    groups: dict[ActionKind, list[Choice]] = {_STOP: [], _PAUSE: [], _SCALE: [], _CAP: []}
    for c in reversed(out.kept):
        groups[c.kind].append(c)
    head = [*groups[_STOP], *groups[_PAUSE], *groups[_SCALE], *groups[_CAP]]
    run_n = n - len(out.kept)
    back_offsets = ramp_offsets([*(c.shed_kw for c in head), *reversed(kws[:run_n])], rate_kw_per_min)
    out.restored_s = float(back_offsets[-1]) if back_offsets else 0.0
    run_backs = back_offsets[len(head):]
    run_backs.reverse()  # the runs' uncap times, in shedding order
    shed_at, back_at = Times(shed_start), Times(restore_start)
    backs: list[Action] = []
    _shed_runs(event_id, kept_runs, offsets, run_backs, shed_at, back_at, out, backs)
    _shed_choices(event_id, out, offsets[run_n:n], econ_note, shed_at, window_s)
    _restore_choices(event_id, out, groups, back_offsets, back_at)
    backs.reverse()
    out.restore += backs
    return out


def _shed_runs(event_id: str, runs: list[tuple[CapRun, list[float]]], offsets: list[int], back_offsets: list[int],
               shed_at: Times, back_at: Times, out: Timed, backs: list[Action]) -> None:
    """The runs' cap commands and their undos (in shedding order), and each job's loss: one pass, made
    while each job's entry is at hand. The hot loop of a large plan."""
    append = out.shed.append
    add_back = backs.append
    add_loss = out.run_loss.append
    new = make_action
    tiers = _TIER_STR
    cap_key = f"{event_id}/cap/"
    uncap_key = f"{event_id}/uncap/"
    pos = 0
    last = back_last = -1
    at = shed_at(0)
    back = back_at(0)
    for r, rk in runs:
        watts_i, kept, prev = r.watts, r.kept, r.before_w
        watts = float(watts_i)
        loss = 1.0 - kept
        tail = f"/{watts_i}"
        back_reason = _back_reason(prev)
        reasons: dict[tuple[Tier, float], tuple[str, str]] = {}  # a run's jobs share few reasons
        end = pos + len(rk)
        for (jid, _, allow, _, tier), kw, off, back_off in zip(r.cands, rk, offsets[pos:end], back_offsets[pos:end],
                                                                strict=True):
            if off != last:
                at = shed_at(off)
                last = off
            if back_off != back_last:
                back = back_at(back_off)
                back_last = back_off
            hit = reasons.get((tier, allow))
            if hit is None:
                hit = reasons[(tier, allow)] = (_cap_reason(watts_i, kept, tiers[tier], allow, ""), tiers[tier])
            reason, tier_s = hit
            append(new(f"{cap_key}{jid}{tail}", _CAP, at, jid, (), watts, -kw, tier_s, reason))
            add_back(new(f"{uncap_key}{jid}", _UNCAP, back, jid, (), prev, kw, tier_s, back_reason))
            add_loss((jid, loss))
        pos = end


def _shed_choices(event_id: str, out: Timed, offsets: list[int], econ_note: Callable[[Job], str] | None,
                  time_at: Times, window_s: float) -> None:
    """The single choices' commands: caps (economic mode), pauses, stops and the holds of their nodes."""
    append = out.shed.append
    new = make_action
    cap_key = f"{event_id}/cap/"
    reasons: dict[tuple[int, float, str, float], str] = {}
    for c, off in zip(out.kept, offsets, strict=True):
        at = time_at(off)
        job, kind, jid, tier = c.job, c.kind, c.job_id, c.tier
        econ = "" if econ_note is None else econ_note(job)
        if kind is _CAP:
            rk = (c.watts, c.kept, tier, c.allow)
            reason = reasons.get(rk) if not econ else None
            if reason is None:
                reason = _cap_reason(c.watts, c.kept, tier, c.allow, econ)
                if not econ:
                    reasons[rk] = reason
            append(new(f"{cap_key}{jid}/{c.watts}", _CAP, at, jid, (), float(c.watts), -c.shed_kw, tier, reason))
            continue
        if kind is _SCALE:
            append(new(f"{event_id}/scale_down/{jid}/{c.replicas}", kind, at, jid, (), None, -c.shed_kw, tier,
                       _full_reason(c, tier, window_s, econ), c.replicas))
            continue
        append(new(f"{event_id}/{kind.value}/{jid}", kind, at, jid, (), None, -c.shed_kw, tier,
                   _full_reason(c, tier, window_s, econ)))
        if kind is _STOP:
            if job.checkpointable:  # a stopped job's load drops once its checkpoint is written
                out.reached_s = max(out.reached_s, float(off) + job.checkpoint_s)
            if job.nodes:
                append(new(f"{event_id}/hold_nodes/{jid}", _HOLD, at, jid, job.nodes, None, 0.0, tier,
                           f"hold {len(job.nodes)} node(s) freed by {jid} until the event ends"))


def _restore_choices(event_id: str, out: Timed, groups: dict[ActionKind, list[Choice]], offsets: list[int],
                     time_at: Times) -> None:
    """The single choices' undos, at the head of the restore: restarts (their held nodes released
    first), then resumes, then uncaps."""
    append = out.restore.append
    new = make_action
    offs = iter(offsets)
    for c in groups[_STOP]:
        job, jid, tier = c.job, c.job_id, c.tier
        at = time_at(next(offs))
        if job.nodes:
            append(new(f"{event_id}/release_nodes/{jid}", _RELEASE, at, jid, job.nodes, None, 0.0, tier,
                       f"release the nodes held for {jid}"))
        append(new(f"{event_id}/restart/{jid}", _RESTART, at, jid, (), None, c.shed_kw, tier,
                   f"restart {jid}, stopped for event {event_id}"))
    resume_reason = f"resume after event {event_id}"
    for c in groups[_PAUSE]:
        jid = c.job_id
        append(new(f"{event_id}/resume/{jid}", _RESUME, time_at(next(offs)), jid, (), None, c.shed_kw, c.tier,
                   resume_reason))
    for c in groups[_SCALE]:  # the last replica taken comes back first: one at a time, under the ramp
        jid, up = c.job_id, c.replicas + 1
        append(new(f"{event_id}/scale_up/{jid}/{up}", _SCALE_UP, time_at(next(offs)), jid, (), None, c.shed_kw,
                   c.tier, f"scale {c.job.name or jid} back up to {up} replica(s) after event {event_id}", up))
    uncap_key = f"{event_id}/uncap/"
    for c in groups[_CAP]:
        append(new(f"{uncap_key}{c.job_id}", _UNCAP, time_at(next(offs)), c.job_id, (), c.before_w, c.shed_kw,
                   c.tier, _back_reason(c.before_w)))


def _back_reason(before_w: float | None) -> str:
    """A cap set before the event (by an operator or an earlier program) comes back, not none at all."""
    return "lift the event's cap" if before_w is None else f"back to the {before_w:g} W cap set before the event"
