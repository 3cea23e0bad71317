"""Levers and their cost: tier allowances, whole-watt cap tables, pause versus checkpoint-and-stop.

A tier is a contract on the loss a job accepts over its whole run, so what it may lose *during this
event* depends on how long it runs and what it already lost (``allowance``). Each lever's loss is a
fraction of the job's throughput over the event window D.

Power and throughput are read from ``PowerModel`` only (``job_kw`` applies overhead and subtracts
idle), once per whole-watt cap per workload, for one GPU; ``job_kw`` is linear in the GPU count, so a
job's figure is the per-GPU one times its GPUs. The tables are memoised per model because building
them costs a few milliseconds, as much as planning ten thousand jobs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

from gateway.domain import ActionKind, Job, JobState, Tier
from gateway.planner.policy import STOP_OVER_PAUSE_FACTOR
from gateway.power import PowerModel


@dataclass(frozen=True, slots=True)
class Step:
    """One step of a job's cap path: from the previous step's cap (or the cap now) down to ``idx``.

    ``save`` is the per-GPU kW shed at the end of the step, counted from the job's draw now; ``eff``
    is the step's marginal kW shed per unit of throughput lost (``inf`` when it loses none); ``avg``
    is the same ratio from the cap now to the end of the step (the rank a job capped there is shed by).
    """

    idx: int
    save: float
    eff: float
    avg: float


@dataclass(slots=True, eq=False)
class CurveTable:
    """One workload's levers for one GPU, on whole-watt caps ``lo .. lo + len(kw) - 1``.

    ``guard[i]`` is the least throughput kept by any cap at or above ``lo + i`` (the suffix minimum,
    equal to ``thr`` for the monotone measured curves): bisecting it finds the lowest cap that keeps at
    least a given throughput even if a curve is not monotone. ``knots`` are the indices of the measured
    caps (the curve's breakpoints) inside the table: between two of them power and throughput are both
    linear in the cap, so the kW shed per unit of throughput lost is constant there. ``paths`` memoises
    the water-filling steps of ``cap_path`` per (current cap, allowed index).
    """

    name: str
    lo: int
    thr: list[float]
    guard: list[float]
    kw: list[float]
    full_kw: float
    pause_kw: float
    stop_kw: float
    probe: Job
    knots: tuple[int, ...] = ()
    by_state: dict[tuple[JobState, float | None], float] = field(default_factory=dict)
    by_cap_thr: dict[float | None, float] = field(default_factory=dict)
    paths: dict[tuple[float | None, int], tuple[Step, ...]] = field(default_factory=dict)

    def running_kw(self, model: PowerModel, cap_w: float | None) -> float:
        """Per-GPU kW of a running job under its current cap (None: uncapped)."""
        return self.full_kw if cap_w is None else self.state_kw(model, JobState.RUNNING, cap_w)

    def state_kw(self, model: PowerModel, state: JobState, cap_w: float | None) -> float:
        """Per-GPU ``job_kw`` of a job of this workload in ``state`` under ``cap_w`` (memoised)."""
        kw = self.by_state.get((state, cap_w))
        if kw is None:
            kw = self.by_state[(state, cap_w)] = model.job_kw(self.probe, cap_w=cap_w, state=state)
        return kw

    def running_thr(self, model: PowerModel, cap_w: float | None) -> float:
        """Throughput kept by a running job of this workload under its current cap (memoised)."""
        thr = self.by_cap_thr.get(cap_w)
        if thr is None:
            thr = self.by_cap_thr[cap_w] = model.throughput(self.probe, cap_w=cap_w, state=JobState.RUNNING)
        return thr

    def cap_index_for_kw(self, start: int, limit_kw: float) -> int:
        """The highest cap index >= ``start`` whose per-GPU draw is at most ``limit_kw`` (``start`` if none)."""
        for i in range(len(self.kw) - 1, start, -1):
            if self.kw[i] <= limit_kw:
                return i
        return start


def cap_path(tab: CurveTable, model: PowerModel, cap_w: float | None, allowed: int) -> tuple[Step, ...]:
    """The steps, best marginal ratio first, from ``cap_w`` down to the deepest cap ``allowed``.

    The points are the measured breakpoints between the two caps, the table's top cap and the allowed
    one; the path is their upper concave hull in (throughput lost, kW shed): a breakpoint under the
    chord of its neighbours is skipped, so each step is at least as good per unit lost as the next
    and filling the steps in heap order across jobs never takes a worse step before a better one.
    (The measured curves are not concave everywhere: for the 'average' A100 curve 400→350 W sheds
    0.82 kW per unit lost and 350→300 W 0.92, so its first step is 400→300 W.) Memoised per table.
    """
    key = (cap_w, allowed)
    hit = tab.paths.get(key)
    if hit is not None:
        return hit
    cur = tab.running_kw(model, cap_w)
    kept = tab.running_thr(model, cap_w)
    kw, thr = tab.kw, tab.thr
    top = len(kw) - 1
    idxs = {allowed, top} | {k for k in tab.knots if allowed < k < top}
    pts = [(max(0.0, kept - thr[k]), cur - kw[k], k) for k in idxs if kw[k] < cur]
    pts.sort(key=lambda p: (p[0], -p[1], -p[2]))  # by loss, the most kW first among equal losses
    hull = [(0.0, 0.0, -1)]
    for p in pts:
        x, y, _ = p
        if y <= hull[-1][1]:
            continue  # loses more, sheds no more: never worth it
        while len(hull) >= 2:
            x0, y0, _ = hull[-2]
            x1, y1, _ = hull[-1]
            if (y1 - y0) * (x - x0) > (y - y0) * (x1 - x0):
                break
            hull.pop()  # on or under the chord from hull[-2] to p
        hull.append(p)
    steps = []
    px = py = 0.0
    for x, y, k in hull[1:]:
        steps.append(Step(k, y, (y - py) / (x - px) if x > px else math.inf, y / x if x > 0.0 else math.inf))
        px, py = x, y
    if len(tab.paths) >= _PATHS_MAX:  # caps set before events are arbitrary: keep the memo bounded
        tab.paths.clear()
    out = tab.paths[key] = tuple(steps)
    return out


_PATHS_MAX = 4096


_MEMO: dict[tuple[int, str, float, float], tuple[PowerModel, CurveTable]] = {}
_MEMO_MAX = 256


def curve_table(model: PowerModel, workload: str, min_cap_w: float, max_cap_w: float) -> CurveTable:
    """The (memoised) table for ``workload`` under ``model``, caps clamped to the policy, model and curve."""
    curve = model.curves.get(workload)
    key = (id(model), curve.workload, min_cap_w, max_cap_w)
    hit = _MEMO.get(key)
    if hit is not None and hit[0] is model:  # holding the model keeps its id from being reused
        return hit[1]
    lo = math.ceil(max(min_cap_w, model.min_cap_w, curve.min_cap_w))
    hi = math.floor(min(max_cap_w, model.max_cap_w, curve.max_cap_w))
    probe = Job(job_id="planner-probe", tier=Tier.CRITICAL, gpus=1, workload=workload)
    run = JobState.RUNNING
    caps = [float(w) for w in range(lo, hi + 1)]
    thr = [model.throughput(probe, cap_w=w, state=run) for w in caps]
    knots = sorted({w - lo for c in curve.caps_w for w in (math.floor(c), math.ceil(c)) if lo <= w <= hi})
    guard = thr[:]
    for i in range(len(guard) - 2, -1, -1):
        guard[i] = min(guard[i], guard[i + 1])
    table = CurveTable(
        name=curve.workload,
        lo=lo,
        thr=thr,
        guard=guard,
        kw=[model.job_kw(probe, cap_w=w, state=run) for w in caps],
        full_kw=model.job_kw(probe, state=run),
        pause_kw=model.job_kw(probe, state=JobState.SUSPENDED),
        stop_kw=model.job_kw(probe, state=JobState.STOPPED),
        probe=probe,
        knots=tuple(knots),
    )
    if len(_MEMO) >= _MEMO_MAX:
        _MEMO.clear()
    _MEMO[key] = (model, table)
    return table


def allowance(job: Job, window_s: float, kept_now: float = 1.0) -> float:
    """The fraction of throughput ``job`` may still lose over an event window of ``window_s`` seconds.

    The run length is elapsed + remaining (elapsed + the window when the remaining time is unknown);
    the tier allows ``max_loss`` of it, minus what was already lost. A job capped now (``kept_now`` < 1)
    reports a remaining time stretched by its own cap: counted at full speed (× ``kept_now``), or a
    re-plan would find more allowance the deeper the job is already capped. The hot loop in ``shed``
    inlines this formula for speed; keep the two the same.
    """
    rem = job.remaining_s
    run_s = job.elapsed_s + (window_s if rem is None else rem * kept_now)
    left = job.tier.max_loss * run_s - job.lost_s
    return min(1.0, max(0.0, left) / window_s)


def stop_overhead_s(job: Job) -> float:
    """Seconds of work a checkpoint-and-stop costs beyond the event itself.

    Checkpoint plus restart, and the work since the last checkpoint when the job cannot checkpoint
    (its ``checkpoint_s`` still counts: conservative, it is the time the attempt or the drain takes).
    """
    extra = job.checkpoint_s + job.restart_s
    return extra if job.checkpointable else extra + job.since_checkpoint_s


def can_stop(job: Job, allow_checkpoint_stop: bool) -> bool:
    """Only preemptible, requeueable jobs are ever stopped, and only when the site allows it."""
    return allow_checkpoint_stop and job.tier is Tier.PREEMPTIBLE and job.requeueable


def stop_fits(job: Job, left_s: float, window_s: float, allow_checkpoint_stop: bool) -> bool:
    """Whether a job that cannot be paused (``pausable=False``: a Ray job) may be stopped for the event
    instead: it must be resumable, the site must allow stops, and unless it is preemptible its tier's
    remaining allowance (``left_s`` seconds of work) must cover the event and the stop's overhead."""
    if not (allow_checkpoint_stop and job.requeueable):
        return False
    return job.tier is Tier.PREEMPTIBLE or left_s >= window_s + stop_overhead_s(job)


def full_lever(job: Job, window_s: float, allow_checkpoint_stop: bool) -> ActionKind:
    """PAUSE or CHECKPOINT_STOP for a job allowed to lose the whole event (rule in ``policy``); always
    the stop for a job that cannot be paused (the scan only lets it this far when ``stop_fits``)."""
    if not job.pausable:
        return ActionKind.CHECKPOINT_STOP
    if can_stop(job, allow_checkpoint_stop) and window_s >= STOP_OVER_PAUSE_FACTOR * stop_overhead_s(job):
        return ActionKind.CHECKPOINT_STOP
    return ActionKind.PAUSE


def replicas_to_remove(job: Job, allow: float) -> int:
    """How many more replicas of a replicated service (``job.replicas > 0``) may be taken away: its tier
    allows losing ``allow`` of the service's throughput, counted over every replica it has without the
    gateway's changes (those already removed included), and ``min_replicas`` always stay (at least one:
    a service with none is down, which no tier below critical is taken to accept)."""
    full = job.replicas + job.replicas_removed
    may = math.floor(allow * full + 1e-9) - job.replicas_removed
    return max(0, min(may, job.replicas - max(1, job.min_replicas)))


def lever_loss(job: Job, kind: ActionKind, window_s: float) -> float:
    """Throughput a pause or a stop loses over the window, as a fraction of it.

    A pause loses the window (1.0); a stop also loses its checkpoint and restart time, so it can
    exceed 1 — preemptible jobs accept being stopped outright. (A cap loses ``1 - kept``.)
    """
    if kind is ActionKind.CHECKPOINT_STOP:
        return 1.0 + stop_overhead_s(job) / window_s
    return 1.0


# a candidate for a cap, filed by the scan while the job is at hand (job id, job, allowance, GPUs, tier):
# the later passes read these compact entries, not tens of thousands of scattered jobs and floats
Cand = tuple[str, Job, float, int, Tier]


@dataclass(slots=True, eq=False)
class Choice:
    """A lever chosen for one job, turned into actions at the end: pauses, stops, economic mode's caps,
    and target mode's caps when some are replaced by pauses (otherwise those stay in ``CapRun``)."""

    job: Job
    kind: ActionKind
    watts: int  # the cap in whole watts (0 for a pause or a stop)
    shed_kw: float
    loss: float  # over the window, as a fraction
    kept: float  # throughput kept under a cap (0 for a pause or a stop)
    allow: float  # the job's allowance for this event (see ``allowance``)
    job_id: str
    tier: str  # ``job.tier.value``
    before_w: float | None  # ``job.power_cap_w``: the cap before the event, put back at restore
    replicas: int = 0  # SCALE_DOWN: the replica count this step leaves (one fewer than the step before)


class CapRun(NamedTuple):
    """Jobs capped alike by the water-filling (one bucket at one step), in shedding order.

    Target mode's caps stay in runs rather than one ``Choice`` per job: a large event caps tens of
    thousands of jobs, and the action builder reads the run's shared values once and each job's
    compact scan entry (``Cand``) once. ``choices`` turns runs into ``Choice`` objects when a job's
    cap has to be replaced (by a pause or a stop).
    """

    cands: list[Cand]
    watts: int  # the cap, whole watts
    save: float  # per-GPU kW shed, from the cap now
    kept: float  # throughput kept under the cap
    before_w: float | None  # the jobs' cap before the event (None: uncapped), put back at restore

    def choices(self) -> list[Choice]:
        loss = 1.0 - self.kept
        return [Choice(job, ActionKind.CAP, self.watts, g * self.save, loss, self.kept, a, jid, tier.value,
                       self.before_w) for jid, job, a, g, tier in self.cands]
