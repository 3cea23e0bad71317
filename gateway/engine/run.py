"""The in-memory side of one event the engine opted in to (the journal holds the durable side)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from gateway.domain import Action, Directive, EventState, Plan
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

    @property
    def event_id(self) -> str:
        return self.directive.event_id
