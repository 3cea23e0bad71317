"""Directives (what the grid asks), plans and actions (what the gateway will do); notices are gateway.notices."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from gateway.domain._checks import aware, finite


@dataclass(frozen=True, slots=True)
class Segment:
    """A piece of a directive: from ``start`` to ``end`` the site load should be at most
    ``target_kw``; in economic mode ``price_per_mwh`` is set instead."""

    start: datetime
    end: datetime
    target_kw: float | None = None
    price_per_mwh: float | None = None

    def __post_init__(self) -> None:
        aware("segment.start", self.start)
        aware("segment.end", self.end)
        if self.end <= self.start:
            raise ValueError(f"segment ends ({self.end}) before it starts ({self.start})")
        if (self.target_kw is None) == (self.price_per_mwh is None):
            raise ValueError("a segment has exactly one of target_kw and price_per_mwh")
        if self.target_kw is not None:
            finite("segment.target_kw", self.target_kw, lo=0.0)
        if self.price_per_mwh is not None:
            finite("segment.price_per_mwh", self.price_per_mwh)


@dataclass(frozen=True, slots=True)
class Directive:
    """The result of mapping an event's signals: a piecewise-constant target over time.

    Load may start to fall at ``ramp_start`` and must be at target by ``target_by``; after ``end``
    the site returns to normal, at the configured ramp rate, by ``recovery_end``.
    """

    event_id: str
    modification: int
    segments: tuple[Segment, ...]
    baseline_kw: float
    ramp_start: datetime
    target_by: datetime
    end: datetime
    recovery_end: datetime
    reason: str = ""

    def __post_init__(self) -> None:
        if not self.segments:
            raise ValueError("a directive has at least one segment")
        finite("directive.baseline_kw", self.baseline_kw, lo=0.0)
        for name in ("ramp_start", "target_by", "end", "recovery_end"):
            aware(f"directive.{name}", getattr(self, name))
        if not self.ramp_start <= self.target_by <= self.end <= self.recovery_end:
            raise ValueError("directive times must satisfy ramp_start <= target_by <= end <= recovery_end")
        for a, b in zip(self.segments, self.segments[1:], strict=False):
            if b.start < a.end:
                raise ValueError("directive segments overlap or are out of order")

    @property
    def start(self) -> datetime:
        return self.segments[0].start

    @property
    def economic(self) -> bool:
        return any(s.price_per_mwh is not None for s in self.segments)

    def target_at(self, t: datetime) -> float | None:
        """The target in force at ``t`` (None outside the event or in economic mode)."""
        for s in self.segments:
            if s.start <= t < s.end:
                return s.target_kw
        return None

    @property
    def strictest_kw(self) -> float | None:
        targets = [s.target_kw for s in self.segments if s.target_kw is not None]
        return min(targets) if targets else None


class ActionKind(StrEnum):
    """Levers, gentlest first, and the undo of each."""

    CAP = "cap"                          # GPU power cap (DVFS)
    PAUSE = "pause"                      # suspend: no progress, GPUs at idle draw
    CHECKPOINT_STOP = "checkpoint_stop"  # checkpoint, then stop/requeue and hold
    HOLD_NODES = "hold_nodes"            # keep freed nodes from being refilled
    SCALE_DOWN = "scale_down"            # a replicated service (Ray Serve) to ``replicas``, one fewer
    UNCAP = "uncap"
    RESUME = "resume"
    RESTART = "restart"
    RELEASE_NODES = "release_nodes"
    SCALE_UP = "scale_up"                # back up to ``replicas``, one more

    @property
    def undo(self) -> ActionKind:
        return _UNDO[self]

    @property
    def sheds(self) -> bool:
        return self in _SHEDS


_UNDO = {
    ActionKind.CAP: ActionKind.UNCAP,
    ActionKind.PAUSE: ActionKind.RESUME,
    ActionKind.CHECKPOINT_STOP: ActionKind.RESTART,
    ActionKind.HOLD_NODES: ActionKind.RELEASE_NODES,
    ActionKind.UNCAP: ActionKind.CAP,
    ActionKind.RESUME: ActionKind.PAUSE,
    ActionKind.RESTART: ActionKind.CHECKPOINT_STOP,
    ActionKind.RELEASE_NODES: ActionKind.HOLD_NODES,
    ActionKind.SCALE_DOWN: ActionKind.SCALE_UP,
    ActionKind.SCALE_UP: ActionKind.SCALE_DOWN,
}
_SHEDS = frozenset({ActionKind.CAP, ActionKind.PAUSE, ActionKind.CHECKPOINT_STOP, ActionKind.HOLD_NODES,
                    ActionKind.SCALE_DOWN})


@dataclass(frozen=True, slots=True)
class Action:
    """One command for a scheduler, at a time, with the power change it is expected to make.

    ``key`` is the idempotency key: the journal records it, and an action whose key is done is
    never sent again (after a restart, a re-plan or a duplicate delivery). ``replicas`` is the replica
    count a SCALE_DOWN or SCALE_UP sets (absolute, so sending it twice changes nothing).
    """

    key: str
    kind: ActionKind
    at: datetime
    job_id: str = ""
    nodes: tuple[str, ...] = ()
    watts: float | None = None
    delta_kw: float = 0.0
    tier: str = ""
    reason: str = ""
    replicas: int | None = None

    def __post_init__(self) -> None:
        if not self.key:
            raise ValueError("action key must not be empty")
        aware("action.at", self.at)
        finite("action.delta_kw", self.delta_kw)
        if self.kind in (ActionKind.CAP,) and self.watts is None:
            raise ValueError(f"action {self.key}: a power cap needs watts")
        if self.kind in (ActionKind.SCALE_DOWN, ActionKind.SCALE_UP) and (self.replicas is None or self.replicas < 0):
            raise ValueError(f"action {self.key}: {self.kind} needs a replica count >= 0")
        if self.kind in (ActionKind.HOLD_NODES, ActionKind.RELEASE_NODES):
            if not self.nodes:
                raise ValueError(f"action {self.key}: {self.kind} needs nodes")
        elif not self.job_id:
            raise ValueError(f"action {self.key}: {self.kind} needs a job id")


@dataclass(frozen=True, slots=True)
class Shortfall:
    """How far a plan falls short of the target, and why (e.g. "only critical jobs left")."""

    kw: float
    reason: str

    def __post_init__(self) -> None:
        finite("shortfall.kw", self.kw, lo=0.0)


@dataclass(frozen=True, slots=True)
class Plan:
    """What the planner decided for one directive over one snapshot.

    ``shed`` runs from the directive's ramp start; ``restore`` undoes it after the end, staggered so
    the site comes back within the ramp rate. ``job_loss`` is each touched job's expected
    throughput loss over the event, as a fraction, in the order the jobs are shed.
    """

    event_id: str
    modification: int
    created_at: datetime
    baseline_kw: float
    target_kw: float | None
    expected_kw: float
    shed: tuple[Action, ...]
    restore: tuple[Action, ...]
    shortfall: Shortfall | None = None
    job_loss: tuple[tuple[str, float], ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        aware("plan.created_at", self.created_at)
        finite("plan.expected_kw", self.expected_kw, lo=0.0)
