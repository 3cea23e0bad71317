"""Choosing what to shed: one pass over the jobs, then the levers in order over the few that are needed.

The pass is the hot path (100k jobs in well under 250 ms): it keeps no per-job objects beyond one
small tuple per candidate (``Cand``: what the later passes need of the job, read while it is at
hand), filed into a bucket of jobs that have the same cap path (same workload, same allowed cap,
same current cap): for a cap, kW shed per unit of GPU-weighted loss does not depend on the job's size.

Order of levers (target mode): caps first, by water-filling (``fill``): the next cap step taken is
always the one with the best ratio across all jobs, within each job's allowance, the last one only as
deep as the remaining need. Only if the caps cannot meet the need (every job is then at its deepest
allowed cap) are jobs allowed to lose the whole event paused, and then preemptible ones stopped; a
paused or stopped job's cap is dropped, never sent as well.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass, field
from operator import attrgetter

from gateway.domain import ActionKind, ClusterSnapshot, Job, JobState, Tier
from gateway.exceptions import PlanningError
from gateway.planner.fill import water_fill
from gateway.planner.levers import (
    Cand,
    CapRun,
    Choice,
    CurveTable,
    allowance,
    curve_table,
    full_lever,
    lever_loss,
    replicas_to_remove,
    stop_fits,
)
from gateway.planner.policy import LOSS_EPS, MIN_SHED_KW, PlannerPolicy
from gateway.power import PowerModel

_RUN = JobState.RUNNING
_CRIT = Tier.CRITICAL
_DRAWING = frozenset({JobState.SUSPENDED, JobState.CHECKPOINTING, JobState.RESTARTING})
_MAX_LOSS = {t: t.max_loss for t in Tier}
_TIER_STR = {t: t.value for t in Tier}
_CAP = ActionKind.CAP
_PAUSE = ActionKind.PAUSE
_STOP = ActionKind.CHECKPOINT_STOP
_SCALE = ActionKind.SCALE_DOWN
_CAPS_ONLY = math.nextafter(1.0, 0.0)  # an allowance as deep as any cap, yet short of the pause/stop phase

# one bucket: jobs with the same table, allowed-cap index and current cap
_BucketKey = tuple[CurveTable, int, float | None]
_StateKey = tuple[str, JobState, float | None]
# a job allowed to lose the whole event and with no cap to try first: (job, its table, its per-GPU kW now)
_Full = tuple[Job, CurveTable, float]


@dataclass(slots=True, eq=False)
class Scan:
    """What one pass over the snapshot found: candidates, and the facts a shortfall reason needs."""

    policy: PlannerPolicy
    window_s: float
    model_kw: float = 0.0
    floor_kw: float = 0.0
    critical_n: int = 0
    critical_kw: float = 0.0
    busy_n: int = 0
    busy_kw: float = 0.0
    spent_n: int = 0
    priced_out_n: int = 0
    buckets: dict[_BucketKey, list[Cand]] = field(default_factory=dict)
    gpus: dict[_BucketKey, int] = field(default_factory=dict)  # each bucket's GPU total
    full: list[_Full] = field(default_factory=list)
    econ: list[tuple[float, str, Job, CurveTable, float, int]] = field(default_factory=list)
    scale: list[tuple[Job, CurveTable, int]] = field(default_factory=list)  # a service and how many replicas may go


def _kw_of(model: PowerModel, gsum: dict[_StateKey, int], table: Callable[[str], CurveTable]) -> float:
    """Exact (order-independent) sum of ``job_kw`` over GPU counts grouped by (workload, state, cap)."""
    return math.fsum(table(wl).state_kw(model, st, cap) * g for (wl, st, cap), g in gsum.items() if g)


def scan(snapshot: ClusterSnapshot, policy: PlannerPolicy, window_s: float, price: float | None) -> Scan:
    """One pass: modelled load, critical and busy load, and every candidate's deepest lever.

    ``price`` set means economic mode: only jobs worth less than it per MWh are candidates. Jobs that
    land in a bucket are not added to the load sums one by one: a bucket's load is its per-GPU draw
    times its GPU count, computed once after the pass.
    """
    model = policy.model
    out = Scan(policy, window_s)
    allow_stop = policy.allow_checkpoint_stop
    lo_w, hi_w = policy.min_cap_w, policy.max_cap_w
    tables: dict[str, CurveTable] = {}
    # per workload: its table and the buckets of uncapped jobs, indexed by allowed-cap index
    # (and the GPU total of each, kept as the jobs are filed: a later pass over them costs more)
    slots: dict[str, tuple[CurveTable, list[list[Cand] | None], list[int]]] = {}

    def table(wl: str) -> CurveTable:
        tab = tables.get(wl)
        if tab is None:
            tab = tables[wl] = curve_table(model, wl, lo_w, hi_w)
        return tab

    def slot(wl: str) -> tuple[CurveTable, list[list[Cand] | None], list[int]]:
        tab = table(wl)
        ent = slots[wl] = (tab, [None] * len(tab.kw), [0] * len(tab.kw))
        return ent

    other: dict[_StateKey, int] = {}  # GPUs of jobs outside the buckets, by (workload, state, cap)
    crit: dict[_StateKey, int] = {}
    busy: dict[_StateKey, int] = {}
    capped = out.buckets
    gpus = out.gpus
    full = out.full
    econ = out.econ
    max_loss = _MAX_LOSS
    spent = priced_out = crit_n = busy_n = 0
    for job in snapshot.jobs:
        st = job.state
        tier = job.tier
        if st is not _RUN or tier is _CRIT:
            k = (job.workload, st, job.power_cap_w)
            g = job.gpus
            other[k] = other.get(k, 0) + g
            if tier is _CRIT:
                if st is _RUN or st in _DRAWING:
                    crit_n += 1
                    crit[k] = crit.get(k, 0) + g
            elif st in _DRAWING:
                busy_n += 1
                busy[k] = busy.get(k, 0) + g
            continue
        g = job.gpus
        wl = job.workload
        cap = job.power_cap_w
        if g == 0:
            continue
        val = 0.0
        if price is not None:
            v = job.value_per_mwh
            if v is None or v >= price:
                priced_out += 1
                k = (wl, st, cap)
                other[k] = other.get(k, 0) + g
                continue
            val = v
        ent = slots.get(wl) or slot(wl)
        tab = ent[0]
        cur = tab.full_kw if cap is None else tab.running_kw(model, cap)
        # allowance() inlined: seconds of loss the tier still allows, against the window
        rem = job.remaining_s
        if rem is not None and cap is not None:  # stretched by its own cap: count it at full speed
            rem *= tab.running_thr(model, cap)
        left = max_loss[tier] * (job.elapsed_s + (window_s if rem is None else rem)) - job.lost_s
        kws = tab.kw
        if left >= window_s and (job.pausable or stop_fits(job, left, window_s, allow_stop)):
            # may lose the whole event: deepest cap now, pause/stop if still short
            i = 0
            a = 1.0
            if price is not None:
                econ.append((val, job.job_id, job, tab, cur, -1))
                continue
            if not kws or kws[0] >= cur - MIN_SHED_KW or not job.cappable:  # no cap to try first (else in bucket 0)
                full.append((job, tab, cur))
                k = (wl, st, cap)
                other[k] = other.get(k, 0) + g
                continue
        elif not job.cappable:  # it cannot be capped, and neither paused nor stopped within its tier
            k = (wl, st, cap)
            if job.replicas and price is None:  # a replicated service: replicas may go, within its tier
                n = replicas_to_remove(job, min(1.0, left / window_s) if left > 0.0 else 0.0)
                if n > 0:
                    out.scale.append((job, ent[0], n))
                    other[k] = other.get(k, 0) + g
                    continue
            spent += 1
            other[k] = other.get(k, 0) + g
            continue
        else:
            a = left / window_s if left > 0.0 else 0.0
            if a >= 1.0:  # the whole event, but as caps only: it can be neither paused nor stopped within its tier
                a = _CAPS_ONLY
            i = bisect_left(tab.guard, 1.0 - a - LOSS_EPS)
            if i >= len(kws) or kws[i] >= cur - MIN_SHED_KW:
                spent += 1
                k = (wl, st, cap)
                other[k] = other.get(k, 0) + g
                continue
            if price is not None:
                econ.append((val, job.job_id, job, tab, cur, i))
                continue
        cand = (job.job_id, job, a, g, tier)
        if cap is None:
            arr = ent[1]
            lst = arr[i]
            if lst is None:
                arr[i] = [cand]
            else:
                lst.append(cand)
            ent[2][i] += g
        else:
            bk = (tab, i, cap)
            lst = capped.get(bk)
            if lst is None:
                capped[bk] = [cand]
                gpus[bk] = g
            else:
                lst.append(cand)
                gpus[bk] += g
    for tab, arr, gs in slots.values():  # two workloads may share a table (unknown ones use the default)
        for i, lst in enumerate(arr):
            if lst is not None:
                capped.setdefault((tab, i, None), []).extend(lst)
                gpus[(tab, i, None)] = gpus.get((tab, i, None), 0) + gs[i]
    nodes = snapshot.nodes
    total_gpus = sum(map(_gpus_of, nodes)) if nodes else snapshot.total_gpus
    out.floor_kw = model.idle_floor_kw(total_gpus, len(nodes))
    parts = [key[0].running_kw(model, key[2]) * g for key, g in gpus.items()]
    parts += [cur * job.gpus for _, _, job, _, cur, _ in econ]
    parts.append(_kw_of(model, other, table))
    out.model_kw = out.floor_kw + math.fsum(parts)
    out.critical_kw = _kw_of(model, crit, table)
    out.busy_kw = _kw_of(model, busy, table)
    out.critical_n, out.busy_n, out.spent_n, out.priced_out_n = crit_n, busy_n, spent, priced_out
    return out


def _cap_choice(job: Job, tab: CurveTable, cur: float, i: int, s: Scan) -> Choice:
    kept = tab.thr[i]
    now = tab.running_thr(s.policy.model, job.power_cap_w) if job.power_cap_w is not None else 1.0
    return Choice(job, _CAP, tab.lo + i, job.gpus * (cur - tab.kw[i]), 1.0 - kept, kept, allowance(job, s.window_s, now),
                  job.job_id, _TIER_STR[job.tier], job.power_cap_w)


def _full_choice(job: Job, tab: CurveTable, cur: float, s: Scan) -> Choice:
    kind = full_lever(job, s.window_s, s.policy.allow_checkpoint_stop)
    after = tab.stop_kw if kind is _STOP else tab.pause_kw
    return Choice(job, kind, 0, job.gpus * (cur - after), lever_loss(job, kind, s.window_s), 0.0, 1.0, job.job_id,
                  _TIER_STR[job.tier], job.power_cap_w)


def select_for_target(s: Scan, need_kw: float) -> tuple[list[CapRun], list[Choice]]:
    """Caps by water-filling (``fill``) until ``need_kw`` is shed, then pauses and stops if still short.

    Returns what to shed in order: runs of caps, then single choices. When the caps meet the need
    (the common, large case) there are only runs; otherwise every job is at its deepest cap, some are
    paused or stopped instead, and all become choices (pauses and stops last).
    """
    runs, remaining = water_fill(s.buckets, s.gpus, s.policy.model, need_kw, s.policy.job_weights)
    if remaining <= 0.0:
        return runs, []
    picked = [c for r in runs for c in r.choices()]
    chosen = {c.job_id: c for c in picked}
    if len(chosen) != len(picked):
        raise duplicate_job([c.job_id for c in picked])
    _pause_and_stop(s, chosen, remaining)
    return [], list(chosen.values())


def _pause_and_stop(s: Scan, chosen: dict[str, Choice], remaining: float) -> float:
    """Second phase: pauses, then stops, each replacing the job's first-phase cap."""
    steps: list[tuple[int, float, float, str, str, float, Choice]] = []
    model = s.policy.model
    full = list(s.full)
    for (tab, i, cap), cands in s.buckets.items():
        if i == 0:
            cur = tab.running_kw(model, cap)
            full += [(job, tab, cur) for _, job, a, _, _ in cands if a >= 1.0]
    for job, tab, cur in full:
        c = _full_choice(job, tab, cur, s)
        prev = chosen.get(job.job_id)
        gain = c.shed_kw - (prev.shed_kw if prev is not None else 0.0)
        if gain > MIN_SHED_KW:
            steps.append((0 if c.kind is _PAUSE else 1, -gain / job.gpus, float(-job.gpus), job.job_id, job.job_id, gain,
                          c))
    for job, tab, n in s.scale:  # one step per replica, in order: like a pause of that replica's GPUs
        g = job.gpus / job.replicas
        gain = g * (tab.full_kw - tab.pause_kw)
        if gain > MIN_SHED_KW:
            full_n = job.replicas + job.replicas_removed
            for i in range(1, n + 1):
                c = Choice(job, _SCALE, 0, gain, 1.0 / full_n, 0.0, 1.0, job.job_id, _TIER_STR[job.tier],
                           job.power_cap_w, job.replicas - i)
                steps.append((0, -gain / g, -g, f"{job.job_id}/{i:09d}", f"{job.job_id}\x00{i}", gain, c))
    steps.sort(key=lambda t: t[:4])
    for *_, key, gain, c in steps:
        if remaining <= 0.0:
            break
        chosen.pop(key, None)
        chosen[key] = c
        remaining -= gain
    return remaining


def select_economic(s: Scan) -> list[Choice]:
    """Economic mode: every candidate (already filtered by price) at its deepest lever, cheapest first."""
    s.econ.sort(key=lambda e: (e[0], e[1]))
    out = []
    for _, _, job, tab, cur, i in s.econ:
        if i < 0:
            c = _full_choice(job, tab, cur, s)
            if c.shed_kw > MIN_SHED_KW:
                out.append(c)
        else:
            out.append(_cap_choice(job, tab, cur, i, s))
    return out


def duplicate_job(job_ids: list[str]) -> PlanningError:
    """The error for a snapshot that lists a job twice (``job_ids`` holds a duplicate)."""
    seen: set[str] = set()
    dup = ""
    for jid in job_ids:
        if jid in seen:
            dup = jid
            break
        seen.add(jid)
    return PlanningError(f"job id {dup!r} appears more than once in the snapshot: its commands would collide")


_gpus_of = attrgetter("gpus")
