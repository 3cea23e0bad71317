"""What an event cost each job it touched, from the times its commands were done.

Each job's throughput is integrated over the event window, piecewise between the moments its
commands took effect: under a cap, the workload curve's throughput at that cap (relative to the
job's limit before the event); paused or stopped, none; a service with replicas taken, the share of
its replicas at work (of its full size when first seen). A stopped job also pays its restart time
after it is released. The window runs from the event's ramp start to the later of its end and the
job's last undo, so a slow restore counts against the event. ``lost_gpu_hours`` is the GPU-time
that work would have taken at full speed: ``gpus × window × (1 − kept)`` plus the restart.

The times come from the journal's record of each action (what was done, when), not from the plan,
so re-plans, retries and a restart in the middle are all counted as they happened.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from gateway.domain import Job
from gateway.power import PowerModel

__all__ = ["JobImpact", "job_impacts"]

_CAP, _UNCAP = "cap", "uncap"
_OFF = frozenset({"pause", "checkpoint_stop"})
_ON = frozenset({"resume", "restart"})
_SCALE = frozenset({"scale_down", "scale_up"})


@dataclass(frozen=True, slots=True)
class JobImpact:
    """One job's cost of one event."""

    job_id: str
    tier: str
    gpus: int
    throughput_kept: float  # 0..1 over the job's window
    lost_gpu_hours: float

    def facts(self) -> dict[str, object]:
        return {"job_id": self.job_id, "tier": self.tier, "gpus": self.gpus,
                "throughput_kept": round(self.throughput_kept, 4), "lost_gpu_hours": round(self.lost_gpu_hours, 4)}


def job_impacts(done: Sequence[tuple[datetime, Mapping[str, object]]], jobs: Mapping[str, Job], model: PowerModel,
                start: datetime, end: datetime) -> list[JobImpact]:
    """``done``: (time, action facts) of every command the event completed, in time order; ``jobs``: what
    is known of each job (GPUs, workload, cap before the event). A job the gateway never saw has no
    curve or size and is left out rather than guessed."""
    by_job: dict[str, list[tuple[datetime, Mapping[str, object]]]] = {}
    for at, facts in done:
        job_id = str(facts.get("job_id") or "")
        if job_id:
            by_job.setdefault(job_id, []).append((at, facts))
    out = []
    for job_id in sorted(by_job):
        job = jobs.get(job_id)
        if job is None or job.gpus <= 0:
            continue
        out.append(_one(job, by_job[job_id], model, start, end))
    return out


def _one(job: Job, steps: list[tuple[datetime, Mapping[str, object]]], model: PowerModel, start: datetime,
         end: datetime) -> JobImpact:
    curve = model.curves.get(job.workload)
    full = curve.throughput_at(job.power_cap_w) or 1.0
    stop = max(end, steps[-1][0])
    window_s = max(1.0, (stop - start).total_seconds())
    lost_s = 0.0  # seconds of full-speed work lost
    extra_s = 0.0  # restart time after a stop
    rate = 1.0  # current fraction of full speed
    off = False
    full_n = job.replicas + job.replicas_removed
    share = 1.0  # a service's replicas at work, as a fraction of its full size
    cap: float | None = job.power_cap_w
    last = start
    for at, facts in steps:
        at = min(max(at, start), stop)
        lost_s += (at - last).total_seconds() * (1.0 - rate)
        last = at
        kind = str(facts.get("kind"))
        watts = facts.get("watts")
        if kind == _CAP and isinstance(watts, int | float):
            cap = float(watts)
        elif kind == _UNCAP:
            cap = float(watts) if isinstance(watts, int | float) else None
        elif kind in _OFF:
            off = True
        elif kind in _ON:
            off = False
            if kind == "restart":
                extra_s += job.restart_s
        elif kind in _SCALE and isinstance(n := facts.get("replicas"), int) and full_n > 0:
            share = min(1.0, n / full_n)
        rate = 0.0 if off else share * min(1.0, curve.throughput_at(cap) / full)
    lost_s += (stop - last).total_seconds() * (1.0 - rate)
    lost_s = min(window_s, lost_s)
    kept = max(0.0, 1.0 - lost_s / window_s)
    lost_h = job.gpus * (lost_s + extra_s) / 3600.0
    return JobImpact(job.job_id, job.tier.value, job.gpus, kept, lost_h)

