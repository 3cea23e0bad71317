"""Choosing what to shed: one pass over the jobs, then a greedy pick over the few that are needed.

The pass is the hot path (100k jobs in well under 250 ms): it keeps no per-job objects, only puts
each candidate into a bucket of jobs that shed the same per-GPU kW at the same loss (same workload,
same allowed cap, same current cap). Buckets are ranked by kW shed per unit of GPU-weighted loss —
for a cap that ratio does not depend on the job's size — and only the buckets actually consumed are
sorted (largest jobs first, fewer commands; then job id). ``Choice`` objects exist only for chosen jobs.

Order of levers (target mode): caps first, each as deep as its tier allows, best ratio first, the
last one only as deep as the remaining need; then, if still short, jobs allowed to lose the whole
event are paused, and then preemptible ones stopped (their cap from the first phase is replaced).
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass, field
from operator import attrgetter

from gateway.domain import ActionKind, ClusterSnapshot, Job, JobState, Tier
from gateway.exceptions import PlanningError
from gateway.planner.levers import Choice, CurveTable, allowance, curve_table, full_lever, lever_loss
from gateway.planner.policy import LOSS_EPS, MIN_SHED_KW, PlannerPolicy
from gateway.power import PowerModel

_RUN = JobState.RUNNING
_CRIT = Tier.CRITICAL
_DRAWING = frozenset({JobState.SUSPENDED, JobState.CHECKPOINTING, JobState.RESTARTING})
_MAX_LOSS = {t: t.max_loss for t in Tier}
_CAP = ActionKind.CAP
_PAUSE = ActionKind.PAUSE
_STOP = ActionKind.CHECKPOINT_STOP

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
    buckets: dict[_BucketKey, list[Job]] = field(default_factory=dict)
    full: list[_Full] = field(default_factory=list)
    econ: list[tuple[float, str, Job, CurveTable, float, int]] = field(default_factory=list)


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
    lo_w, hi_w = policy.min_cap_w, policy.max_cap_w
    tables: dict[str, CurveTable] = {}
    # per workload: its table and the buckets of uncapped jobs, indexed by allowed-cap index
    slots: dict[str, tuple[CurveTable, list[list[Job] | None]]] = {}

    def table(wl: str) -> CurveTable:
        tab = tables.get(wl)
        if tab is None:
            tab = tables[wl] = curve_table(model, wl, lo_w, hi_w)
        return tab

    def slot(wl: str) -> tuple[CurveTable, list[list[Job] | None]]:
        tab = table(wl)
        ent = slots[wl] = (tab, [None] * len(tab.kw))
        return ent

    other: dict[_StateKey, int] = {}  # GPUs of jobs outside the buckets, by (workload, state, cap)
    crit: dict[_StateKey, int] = {}
    busy: dict[_StateKey, int] = {}
    capped = out.buckets
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
        left = max_loss[tier] * (job.elapsed_s + (window_s if rem is None else rem)) - job.lost_s
        kws = tab.kw
        if left >= window_s:  # may lose the whole event: deepest cap now, pause/stop if still short
            i = 0
            if price is not None:
                econ.append((val, job.job_id, job, tab, cur, -1))
                continue
            if not kws or kws[0] >= cur - MIN_SHED_KW:  # no cap to try first (else found in bucket 0)
                full.append((job, tab, cur))
                k = (wl, st, cap)
                other[k] = other.get(k, 0) + g
                continue
        else:
            i = bisect_left(tab.guard, 1.0 - (left / window_s if left > 0.0 else 0.0) - LOSS_EPS)
            if i >= len(kws) or kws[i] >= cur - MIN_SHED_KW:
                spent += 1
                k = (wl, st, cap)
                other[k] = other.get(k, 0) + g
                continue
            if price is not None:
                econ.append((val, job.job_id, job, tab, cur, i))
                continue
        if cap is None:
            arr = ent[1]
            lst = arr[i]
            if lst is None:
                arr[i] = [job]
            else:
                lst.append(job)
        else:
            bk = (tab, i, cap)
            lst = capped.get(bk)
            if lst is None:
                capped[bk] = [job]
            else:
                lst.append(job)
    for tab, arr in slots.values():
        for i, lst in enumerate(arr):
            if lst is not None:
                capped.setdefault((tab, i, None), []).extend(lst)
    nodes = snapshot.nodes
    total_gpus = sum(map(_gpus_of, nodes)) if nodes else sum(map(_gpus_of, snapshot.jobs))
    out.floor_kw = model.idle_floor_kw(total_gpus, len(nodes))
    parts = [tab.running_kw(model, cap) * sum(map(_gpus_of, lst)) for (tab, _, cap), lst in capped.items()]
    parts += [cur * job.gpus for _, _, job, _, cur, _ in econ]
    parts.append(_kw_of(model, other, table))
    out.model_kw = out.floor_kw + math.fsum(parts)
    out.critical_kw = _kw_of(model, crit, table)
    out.busy_kw = _kw_of(model, busy, table)
    out.critical_n, out.busy_n, out.spent_n, out.priced_out_n = crit_n, busy_n, spent, priced_out
    return out


def _cap_choice(job: Job, tab: CurveTable, cur: float, i: int, window_s: float) -> Choice:
    kept = tab.thr[i]
    return Choice(job, _CAP, tab.lo + i, job.gpus * (cur - tab.kw[i]), 1.0 - kept, kept, allowance(job, window_s))


def _full_choice(job: Job, tab: CurveTable, cur: float, s: Scan) -> Choice:
    kind = full_lever(job, s.window_s, s.policy.allow_checkpoint_stop)
    after = tab.stop_kw if kind is _STOP else tab.pause_kw
    return Choice(job, kind, 0, job.gpus * (cur - after), lever_loss(job, kind, s.window_s), 0.0, 1.0)


def select_for_target(s: Scan, need_kw: float) -> tuple[list[Choice], float]:
    """Greedy choice until ``need_kw`` is shed; returns the choices in order and what is still missing."""
    picked: list[Choice] = []
    remaining = need_kw
    model = s.policy.model
    window_s = s.window_s
    max_loss = _MAX_LOSS
    ranked = []
    for key in s.buckets:
        tab, i, cap = key
        per_gpu = tab.running_kw(model, cap) - tab.kw[i]
        loss = 1.0 - tab.thr[i]
        ratio = math.inf if loss <= 0.0 else per_gpu / loss
        ranked.append((-ratio, tab.name, i, math.inf if cap is None else cap, key))
    ranked.sort(key=lambda r: r[:4])
    for *_, key in ranked:
        if remaining <= 0.0:
            break
        tab, i, cap = key
        cur = tab.running_kw(model, cap)
        jobs = s.buckets[key]
        jobs.sort(key=_job_id)
        jobs.sort(key=_gpus_of, reverse=True)  # stable: job id stays the tie-break
        per_gpu = cur - tab.kw[i]
        watts = tab.lo + i
        kept = tab.thr[i]
        loss = 1.0 - kept
        for job in jobs:
            g = job.gpus
            shed = g * per_gpu
            if shed >= remaining:  # the last cap goes only as deep as needed
                c = _cap_choice(job, tab, cur, tab.cap_index_for_kw(i, cur - remaining / g), window_s)
                picked.append(c)
                remaining -= c.shed_kw
                break
            rem = job.remaining_s  # allowance() inlined (hot: one per chosen job)
            left = max_loss[job.tier] * (job.elapsed_s + (window_s if rem is None else rem)) - job.lost_s
            a = 1.0 if left >= window_s else (left / window_s if left > 0.0 else 0.0)
            picked.append(Choice(job, _CAP, watts, shed, loss, kept, a))
            remaining -= shed
    if remaining > 0.0:
        chosen = {c.job.job_id: c for c in picked}
        if len(chosen) != len(picked):
            raise duplicate_job([c.job.job_id for c in picked])
        remaining = _pause_and_stop(s, chosen, remaining)
        picked = list(chosen.values())
    return picked, max(0.0, remaining)


def _pause_and_stop(s: Scan, chosen: dict[str, Choice], remaining: float) -> float:
    """Second phase: pauses, then stops, each replacing the job's first-phase cap."""
    steps = []
    window_s = s.window_s
    model = s.policy.model
    full = list(s.full)
    for (tab, i, cap), jobs in s.buckets.items():
        if i == 0:
            cur = tab.running_kw(model, cap)
            full += [(job, tab, cur) for job in jobs if allowance(job, window_s) >= 1.0]
    for job, tab, cur in full:
        c = _full_choice(job, tab, cur, s)
        prev = chosen.get(job.job_id)
        gain = c.shed_kw - (prev.shed_kw if prev is not None else 0.0)
        if gain > MIN_SHED_KW:
            steps.append((0 if c.kind is _PAUSE else 1, -gain / job.gpus, -job.gpus, job.job_id, gain, c))
    steps.sort(key=lambda t: t[:4])
    for *_, gain, c in steps:
        if remaining <= 0.0:
            break
        chosen.pop(c.job.job_id, None)
        chosen[c.job.job_id] = c
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
            out.append(_cap_choice(job, tab, cur, i, s.window_s))
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


_job_id = attrgetter("job_id")
_gpus_of = attrgetter("gpus")
