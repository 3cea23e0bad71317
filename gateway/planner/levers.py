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

from gateway.domain import ActionKind, Job, JobState, Tier
from gateway.planner.policy import STOP_OVER_PAUSE_FACTOR
from gateway.power import PowerModel


@dataclass(slots=True, eq=False)
class CurveTable:
    """One workload's levers for one GPU, on whole-watt caps ``lo .. lo + len(kw) - 1``.

    ``guard[i]`` is the least throughput kept by any cap at or above ``lo + i`` (the suffix minimum,
    equal to ``thr`` for the monotone measured curves): bisecting it finds the lowest cap that keeps at
    least a given throughput even if a curve is not monotone.
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
    by_state: dict[tuple[JobState, float | None], float] = field(default_factory=dict)

    def running_kw(self, model: PowerModel, cap_w: float | None) -> float:
        """Per-GPU kW of a running job under its current cap (None: uncapped)."""
        return self.full_kw if cap_w is None else self.state_kw(model, JobState.RUNNING, cap_w)

    def state_kw(self, model: PowerModel, state: JobState, cap_w: float | None) -> float:
        """Per-GPU ``job_kw`` of a job of this workload in ``state`` under ``cap_w`` (memoised)."""
        kw = self.by_state.get((state, cap_w))
        if kw is None:
            kw = self.by_state[(state, cap_w)] = model.job_kw(self.probe, cap_w=cap_w, state=state)
        return kw

    def cap_index_for_kw(self, start: int, limit_kw: float) -> int:
        """The highest cap index >= ``start`` whose per-GPU draw is at most ``limit_kw`` (``start`` if none)."""
        for i in range(len(self.kw) - 1, start, -1):
            if self.kw[i] <= limit_kw:
                return i
        return start


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
    )
    if len(_MEMO) >= _MEMO_MAX:
        _MEMO.clear()
    _MEMO[key] = (model, table)
    return table


def allowance(job: Job, window_s: float) -> float:
    """The fraction of throughput ``job`` may still lose over an event window of ``window_s`` seconds.

    The run length is elapsed + remaining (elapsed + the window when the remaining time is unknown);
    the tier allows ``max_loss`` of it, minus what was already lost. The hot loop in ``shed`` inlines
    this formula for speed; keep the two the same.
    """
    rem = job.remaining_s
    run_s = job.elapsed_s + (window_s if rem is None else rem)
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


def full_lever(job: Job, window_s: float, allow_checkpoint_stop: bool) -> ActionKind:
    """PAUSE or CHECKPOINT_STOP for a job allowed to lose the whole event (rule in ``policy``)."""
    if can_stop(job, allow_checkpoint_stop) and window_s >= STOP_OVER_PAUSE_FACTOR * stop_overhead_s(job):
        return ActionKind.CHECKPOINT_STOP
    return ActionKind.PAUSE


def lever_loss(job: Job, kind: ActionKind, window_s: float) -> float:
    """Throughput a pause or a stop loses over the window, as a fraction of it.

    A pause loses the window (1.0); a stop also loses its checkpoint and restart time, so it can
    exceed 1 — preemptible jobs accept being stopped outright. (A cap loses ``1 - kept``.)
    """
    if kind is ActionKind.CHECKPOINT_STOP:
        return 1.0 + stop_overhead_s(job) / window_s
    return 1.0


@dataclass(slots=True, eq=False)
class Choice:
    """A lever chosen for one job: made only for chosen jobs, turned into actions at the end."""

    job: Job
    kind: ActionKind
    watts: int  # the cap in whole watts (0 for a pause or a stop)
    shed_kw: float
    loss: float  # over the window, as a fraction
    kept: float  # throughput kept under a cap (0 for a pause or a stop)
    allow: float  # the job's allowance for this event (see ``allowance``)
