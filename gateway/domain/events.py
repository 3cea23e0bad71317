"""Grid events as dcflex sees them, independent of the OpenADR wire format.

The VEN translates each oadrEvent into a ``GridEvent``; everything after it (policy, planner,
engine, journal) works on these values only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from gateway.domain._checks import aware, finite


class SignalKind(StrEnum):
    """OpenADR 2.0b signal names dcflex maps to directives (others are opted out of)."""

    SIMPLE = "SIMPLE"
    LOAD_DISPATCH = "LOAD_DISPATCH"
    LOAD_CONTROL = "LOAD_CONTROL"
    ELECTRICITY_PRICE = "ELECTRICITY_PRICE"


class EventState(StrEnum):
    """An event's life in the gateway; every transition is journaled before it is acted on."""

    RECEIVED = "received"
    PLANNED = "planned"
    NOTICED = "noticed"
    RAMPING = "ramping"
    HOLDING = "holding"
    RESTORING = "restoring"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    FAILED = "failed"
    OPTED_OUT = "opted_out"

    @property
    def terminal(self) -> bool:
        return self in (EventState.COMPLETED, EventState.CANCELLED, EventState.FAILED, EventState.OPTED_OUT)


@dataclass(frozen=True, slots=True)
class Interval:
    """One interval of a signal: ``value`` applies from ``start`` for ``duration``."""

    start: datetime
    duration: timedelta
    value: float

    def __post_init__(self) -> None:
        aware("interval.start", self.start)
        if self.duration <= timedelta(0):
            raise ValueError(f"interval duration must be positive, got {self.duration}")
        finite("interval.value", self.value)

    @property
    def end(self) -> datetime:
        return self.start + self.duration


@dataclass(frozen=True, slots=True)
class Signal:
    """One event signal: its name and type as sent, and its intervals in time order.

    ``name`` is kept as a string so an unknown signal survives translation and can be opted out of
    with a reason; ``kind`` is set only when dcflex knows the signal.
    """

    name: str
    signal_type: str
    intervals: tuple[Interval, ...]
    units: str | None = None
    target_kw: float | None = None  # LOAD_DISPATCH currentValue or similar, when present

    def __post_init__(self) -> None:
        if not self.intervals:
            raise ValueError(f"signal {self.name} has no intervals")
        for a, b in zip(self.intervals, self.intervals[1:], strict=False):
            if b.start < a.end:
                raise ValueError(f"signal {self.name}: intervals overlap or are out of order at {b.start}")

    @property
    def kind(self) -> SignalKind | None:
        try:
            return SignalKind(self.name)
        except ValueError:
            return None


@dataclass(frozen=True, slots=True)
class GridEvent:
    """An OpenADR event after translation: identity, timing and signals.

    ``start`` is the event's dtstart after any ``startafter`` randomization has been applied;
    ``ramp`` (x-eiRampUp) comes before ``start``, ``recovery`` (x-eiRecovery) after ``end``.
    """

    event_id: str
    modification: int
    start: datetime
    duration: timedelta
    signals: tuple[Signal, ...]
    ramp: timedelta = timedelta(0)
    recovery: timedelta = timedelta(0)
    priority: int = 0
    test_event: bool = False
    status: str = "far"
    cancelled: bool = False
    program: str = ""
    received_at: datetime | None = None
    raw: dict[str, object] = field(default_factory=dict, compare=False, hash=False, repr=False)

    def __post_init__(self) -> None:
        if not self.event_id:
            raise ValueError("event_id must not be empty")
        if self.modification < 0:
            raise ValueError(f"modification number must be >= 0, got {self.modification}")
        aware("event.start", self.start)
        if self.duration <= timedelta(0):
            raise ValueError(f"event duration must be positive, got {self.duration}")
        if self.ramp < timedelta(0) or self.recovery < timedelta(0):
            raise ValueError("ramp and recovery must not be negative")

    @property
    def end(self) -> datetime:
        return self.start + self.duration


@dataclass(frozen=True, slots=True)
class OptDecision:
    """The answer to an event: opt in, or opt out with the reason an operator will read."""

    opt_in: bool
    reason: str = ""

    @property
    def opt_type(self) -> str:
        return "optIn" if self.opt_in else "optOut"
