"""What the engine's parts share, by composition: their collaborators and the state of the events in progress.

Each part (``intake``, ``recovery``, ``control``, ``loops``, ``overrides``) holds this one object; none inherits
from another, and none keeps state of its own that another part reads.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime

from gateway.clock import Clock
from gateway.domain import ClusterSnapshot, EventState
from gateway.engine.executor import Executor
from gateway.engine.outputs import Outputs
from gateway.engine.run import Run
from gateway.engine.settings import EngineSettings
from gateway.journal import Journal
from gateway.notices.service import NoticeService
from gateway.planner import PlannerPolicy
from gateway.ports import Planner, PowerMeter, SchedulerPort, VtnAnswers
from gateway.power import PowerModel
from gateway.power.history import PowerHistory

__all__ = ["ACTIVE", "OPERATOR_OUT", "WAITING", "Shared"]

ACTIVE = (EventState.RAMPING, EventState.HOLDING)
WAITING = (EventState.RECEIVED, EventState.PLANNED, EventState.NOTICED)
OPERATOR_OUT = "operator opt-out"  # how an operator's opt-out reason starts; later revisions of that event stay out


@dataclass(eq=False)
class Shared:
    """The collaborators (fixed once built) and the mutable state every part works on, under ``lock``."""

    settings: EngineSettings
    clock: Clock
    journal: Journal
    scheduler: SchedulerPort
    meter: PowerMeter
    planner: Planner
    planner_policy: PlannerPolicy
    model: PowerModel
    history: PowerHistory
    out: Outputs
    notices: NoticeService
    executor: Executor
    runs: dict[str, Run] = field(default_factory=dict)  # the events in progress, by id
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # one change of the runs at a time
    wake: asyncio.Event = field(default_factory=asyncio.Event)  # the control loop looks again now
    started: asyncio.Event = field(default_factory=asyncio.Event)  # the journal's unfinished events are resumed
    last_snapshot: ClusterSnapshot | None = None
    commanded_at: datetime | None = None  # when commands last returned (a reading before is stale)
    paused: str | None = None  # why operators paused new commands (None: not paused)
    vtn: VtnAnswers | None = None  # the VEN, once connected: an operator's opt-out reaches it

    def effective_target(self, at: datetime) -> float | None:
        """The strictest target in force at ``at`` among active events (None: no target)."""
        targets = [t for r in self.runs.values() if r.state in ACTIVE if (t := r.directive.target_at(at)) is not None]
        return min(targets) if targets else None
