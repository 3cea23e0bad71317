"""The in-memory side of one event the engine opted in to (the journal holds the durable side)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from gateway.domain import Action, ClusterSnapshot, Directive, EventState, Job, Plan
from gateway.engine.restore import Undo


@dataclass
class Run:
    """The in-memory side of one event the gateway opted in to."""

    directive: Directive
    state: EventState
    pending: list[Action] = field(default_factory=list)
    undos: list[Undo] = field(default_factory=list)
    needs_plan: bool = False
    cancelled: bool = False
    reached_at: datetime | None = None
    next_check: datetime | None = None
    last_target: float | None = None
    shortfall_kw: float = 0.0
    running_jobs: frozenset[str] | None = None  # at the last plan, to notice jobs ending or starting
    over_target: bool = False  # at the last check
    first_plan: Plan | None = None  # made on acceptance; reused when the ramp starts right away
    final: EventState | None = None  # the state to end in when it is neither completed nor cancelled
    jobs: dict[str, Job] = field(default_factory=dict)  # each planned job as first seen (for the impact)

    def remember(self, snapshot: ClusterSnapshot, p: Plan) -> None:
        """Keep what the impact at the end needs of each job a plan touches: its size, workload and
        its cap before the event (so the first sighting wins: later ones may show the event's cap)."""
        touched = {a.job_id for a in p.shed if a.job_id} - self.jobs.keys()
        if touched:
            for job in snapshot.jobs:
                if job.job_id in touched:
                    self.jobs[job.job_id] = job

    @property
    def event_id(self) -> str:
        return self.directive.event_id
