"""Upcoming drops of the site's load: the gateway's own sheds (exact) and jobs' expected ends (estimated).

A drop is named by its cause (``event:<id>``, ``job:<id>``), so the same drop keeps its name while its time
or size moves (a job extended, an event modified) and the notices about it can be updated or cancelled.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from gateway.domain import ClusterSnapshot, Directive, JobState, Plan
from gateway.power import PowerModel

__all__ = ["Drop", "event_drop", "job_drops"]


@dataclass(frozen=True, slots=True)
class Drop:
    """Site load will fall by ``kw`` at ``at`` (and by ``until`` at the latest), because of ``reason``."""

    drop_id: str
    at: datetime
    kw: float
    exact: bool
    reason: str
    source: str               # "event" or "job"
    until: datetime
    event_id: str = ""


def event_drop(directive: Directive, plan: Plan) -> Drop:
    """A demand-response event's shed: from its ramp start, baseline minus what the plan expects (the
    gateway will send those commands itself: exact). It may come until the event ends (a slow ramp, a
    re-plan after drift), so ``until`` is the event's end; the watch counts a fall then as this shed only
    when the gateway's own commands had just run."""
    kw = max(0.0, directive.baseline_kw - plan.expected_kw)
    return Drop(f"event:{directive.event_id}", directive.ramp_start, kw, True,
                f"demand-response event {directive.event_id}: {directive.reason}", "event",
                max(directive.end, directive.ramp_start), directive.event_id)


def job_drops(snapshot: ClusterSnapshot, model: PowerModel, now: datetime, horizon_s: float,
              etas: Mapping[str, tuple[datetime, float]] | None = None, skip: Iterable[str] = ()) -> list[Drop]:
    """Running jobs expected to end within ``horizon_s``: by the job's own report (``etas``: job id → (when
    reported, seconds left then), the job-side helper's ``report_eta``), else its remaining time (Slurm's
    end time or time limit). Jobs in ``skip`` (the gateway is about to stop them) are left out."""
    out: list[Drop] = []
    skipped = set(skip)
    etas = etas or {}
    for job in snapshot.jobs:
        if job.state is not JobState.RUNNING or job.job_id in skipped:
            continue
        eta = etas.get(job.job_id)
        if eta is not None:
            end, why = eta[0] + timedelta(seconds=eta[1]), "its own estimate (report_eta)"
        elif job.remaining_s is not None:
            end, why = snapshot.at + timedelta(seconds=job.remaining_s), "its scheduler's end time"
        else:
            continue
        if end < now or (end - now).total_seconds() > horizon_s:
            continue
        kw = model.job_kw(job)
        if kw <= 0.0:
            continue
        name = f" ({job.name})" if job.name and job.name != job.job_id else ""
        out.append(Drop(f"job:{job.job_id}", end, kw, False, f"job {job.job_id}{name} ends, by {why}", "job",
                        end + timedelta(minutes=5)))
    return out
