"""openleadr's parsed event dict → ``GridEvent``. Pure: no I/O, no clock, no randomness.

openleadr parses an ``oadrEvent`` into a nested dict (``event_descriptor``, ``active_period``,
``event_signals`` with ``intervals``) and checks nothing beyond the XML schema: a VTN can send an
interval of ``-PT30M``, a value of ``NaN`` or ``1e12``, intervals that start out of order, or an
event that lasts zero seconds. Everything after the VEN assumes a well-formed event, so this module
is the one gate: each problem raises ``ProtocolError`` naming the event and the offending field
(``event_signals[0].intervals[1].duration``), and the VEN opts out with that text as the reason.

What is *not* an error: a signal name dcflex does not know. It survives into ``GridEvent.signals``
(``Signal.kind`` is ``None``) so the policy can opt out of it with its own reason.

``startafter`` randomization (``tolerance/tolerate/startafter``): OpenADR lets a VTN ask each VEN to
start up to ``startafter`` later than ``dtstart`` so that many sites do not all switch at the same
second. openleadr parses the value and never applies it; dcflex applies it here. The offset is
``sha256(ven_key, event_id, modification)`` mapped onto ``[0, startafter)`` (microsecond steps), so
it is spread evenly across VENs, yet a restarted gateway computes exactly the same start for the same
event and never re-plans because of a new random draw. A modification draws a new offset.
``GridEvent.start`` and every interval are shifted by it; the duration is unchanged.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from gateway.domain import GridEvent, Interval, Signal, SignalKind
from gateway.exceptions import ProtocolError

__all__ = [
    "MAX_ABS_VALUE",
    "MAX_DURATION",
    "MAX_INTERVALS",
    "MAX_SIGNALS",
    "event_identity",
    "event_status",
    "jsonable",
    "startafter_offset",
    "translate_event",
]

MAX_SIGNALS = 32
MAX_INTERVALS = 1000  # per signal: a day of 1-minute intervals fits with room to spare
MAX_ABS_VALUE = 1e9  # larger than any price, level or kW a site will ever see: such a value is hostile
MAX_DURATION = timedelta(days=366)  # bounds datetime arithmetic too (no OverflowError further on)
_SLACK = timedelta(seconds=1)  # durations travel as whole seconds; datetimes carry microseconds

# SI scale codes as openleadr spells them (enums.SI_SCALE_CODE), as multipliers.
_SCALE = {"p": 1e-12, "n": 1e-9, "micro": 1e-6, "m": 1e-3, "c": 1e-2, "d": 1e-1,
          "none": 1.0, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
_PREFIX = {"micro": "µ", "none": ""}


def translate_event(raw: Mapping[str, Any], *, ven_key: str, received_at: datetime | None = None) -> GridEvent:
    """Validate one parsed ``oadrEvent`` and build the ``GridEvent`` the engine plans from.

    ``ven_key`` (the VEN id, or its name before registration) seeds the startafter offset.
    Raises ``ProtocolError`` for anything malformed or hostile.
    """
    event_id, modification = event_identity(raw)
    try:
        return _translate(raw, event_id, modification, ven_key, received_at)
    except OverflowError as err:  # a dtstart near year 9999 plus any duration
        raise ProtocolError(f"dates out of range: {err}", event_id=event_id, field="active_period.dtstart") from err


def _translate(raw: Mapping[str, Any], event_id: str, modification: int, ven_key: str,
               received_at: datetime | None) -> GridEvent:
    bad = _Reporter(event_id)
    descriptor = _mapping(raw.get("event_descriptor"), "event_descriptor", bad)
    period = _mapping(raw.get("active_period"), "active_period", bad)

    dtstart = period.get("dtstart")
    if not isinstance(dtstart, datetime):
        raise bad("missing or unparseable dtstart" if dtstart is None else f"dtstart is not a date-time: {dtstart!r}",
                  "active_period.dtstart")
    if dtstart.tzinfo is None or dtstart.utcoffset() is None:
        raise bad("dtstart has no time zone", "active_period.dtstart")
    duration = _duration(period.get("duration"), "active_period.duration", bad, positive=True)
    ramp = _optional_duration(_first(period, "ramp_up", "ramp_up_period"), "active_period.ramp_up", bad)
    recovery = _optional_duration(_first(period, "recovery", "recovery_period"), "active_period.recovery", bad)
    startafter = _optional_duration(_startafter(period), "active_period.tolerance.tolerate.startafter", bad)
    offset = startafter_offset(ven_key, event_id, modification, startafter)

    signals = tuple(
        _signal(s, i, dtstart, offset, duration, bad) for i, s in enumerate(_signal_list(raw.get("event_signals"), bad))
    )
    priority = descriptor.get("priority", 0)
    if priority is None:
        priority = 0
    if isinstance(priority, bool) or not isinstance(priority, int) or priority < 0:
        raise bad(f"priority must be a non-negative integer, got {priority!r}", "event_descriptor.priority")
    try:
        return GridEvent(
            event_id=event_id,
            modification=modification,
            start=dtstart + offset,
            duration=duration,
            signals=signals,
            ramp=ramp,
            recovery=recovery,
            priority=priority,
            test_event=bool(descriptor.get("test_event", False)),
            status=event_status(raw),
            cancelled=event_status(raw) == "cancelled",
            program=str(descriptor.get("market_context") or ""),
            received_at=received_at,
            raw=_as_dict(jsonable(raw)),
        )
    except ValueError as err:  # the domain's own checks; the ones above should have caught everything
        raise bad(str(err), "event") from err


def event_identity(raw: Mapping[str, Any]) -> tuple[str, int]:
    """The event's id and modification number, or ``ProtocolError`` when either is unusable.

    openleadr turns an all-digit id into an ``int``; it is turned back into the text that was sent.
    """
    descriptor = raw.get("event_descriptor") if isinstance(raw, Mapping) else None
    if not isinstance(descriptor, Mapping):
        raise ProtocolError("event has no event_descriptor (field event_descriptor)", field="event_descriptor")
    event_id = descriptor.get("event_id")
    if isinstance(event_id, int) and not isinstance(event_id, bool):
        event_id = str(event_id)
    if not isinstance(event_id, str) or not event_id.strip():
        raise ProtocolError(f"event id is missing or empty: {event_id!r} (field event_descriptor.event_id)",
                            field="event_descriptor.event_id")
    modification = descriptor.get("modification_number")
    if isinstance(modification, bool) or not isinstance(modification, int) or modification < 0:
        raise ProtocolError(f"modification number must be a non-negative integer, got {modification!r}",
                            event_id=event_id, field="event_descriptor.modification_number")
    return event_id, modification


def event_status(raw: Mapping[str, Any]) -> str:
    """The VTN's ``eventStatus`` in lower case (``far`` when absent): none/far/near/active/completed/cancelled."""
    descriptor = raw.get("event_descriptor")
    status = descriptor.get("event_status") if isinstance(descriptor, Mapping) else None
    return status.strip().lower() if isinstance(status, str) and status.strip() else "far"


def startafter_offset(ven_key: str, event_id: str, modification: int, startafter: timedelta) -> timedelta:
    """The deterministic start delay in ``[0, startafter)`` for this VEN and event version.

    A hash rather than ``random``: the same VEN computes the same offset after a restart, and
    different VENs (keys) spread uniformly over the window the VTN allowed.
    """
    window_us = startafter // timedelta(microseconds=1)
    if window_us <= 0:
        return timedelta(0)
    digest = hashlib.sha256(f"{ven_key}\x1f{event_id}\x1f{modification}".encode()).digest()
    return timedelta(microseconds=int.from_bytes(digest[:8], "big") % window_us)


def jsonable(value: object) -> object:
    """A JSON-safe copy of a parsed payload (datetimes → ISO text, durations → seconds, NaN → text),
    so ``GridEvent.raw`` can be journaled as it arrived, hostile values included."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


class _Reporter:
    """Builds ``ProtocolError``s that name this event."""

    def __init__(self, event_id: str) -> None:
        self.event_id = event_id

    def __call__(self, message: str, field: str) -> ProtocolError:
        return ProtocolError(message, event_id=self.event_id, field=field)


def _as_dict(value: object) -> dict[str, object]:
    return value if isinstance(value, dict) else {}


def _mapping(value: object, field: str, bad: _Reporter) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise bad(f"{field} is missing or not a structure", field)
    return value


def _first(mapping: Mapping[str, Any], *keys: str) -> object:
    for key in keys:
        if mapping.get(key) is not None:
            return mapping[key]
    return None


def _startafter(period: Mapping[str, Any]) -> object:
    """openleadr parses ``tolerance/tolerate/startafter`` as nested dicts; accept the flat spellings too."""
    tolerance = period.get("tolerance")
    if isinstance(tolerance, Mapping):
        tolerate = tolerance.get("tolerate")
        if isinstance(tolerate, Mapping) and tolerate.get("startafter") is not None:
            return tolerate["startafter"]
        if tolerance.get("startafter") is not None:
            return tolerance["startafter"]
    return _first(period, "start_after", "startafter")


def _duration(value: object, field: str, bad: _Reporter, *, positive: bool) -> timedelta:
    if value is None:
        raise bad("missing duration", field)
    if not isinstance(value, timedelta):
        raise bad(f"duration is not a duration: {value!r}", field)
    if positive and value <= timedelta(0):
        raise bad(f"duration must be positive, got {_fmt(value)}", field)
    if value < timedelta(0):
        raise bad(f"duration must not be negative, got {_fmt(value)}", field)
    if value > MAX_DURATION:
        raise bad(f"duration {_fmt(value)} exceeds the {MAX_DURATION.days}-day limit", field)
    return value


def _optional_duration(value: object, field: str, bad: _Reporter) -> timedelta:
    return timedelta(0) if value is None else _duration(value, field, bad, positive=False)


def _number(value: object, field: str, bad: _Reporter) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise bad(f"value is not a number: {value!r}", field)
    number = float(value)
    if not math.isfinite(number):
        raise bad(f"value must be finite, got {number!r}", field)
    if abs(number) > MAX_ABS_VALUE:
        raise bad(f"value {number:g} is beyond the plausible range (|value| <= {MAX_ABS_VALUE:g})", field)
    return number


def _signal_list(value: object, bad: _Reporter) -> Sequence[object]:
    if isinstance(value, Mapping):  # openleadr sometimes nests the list one level deeper
        value = value.get("event_signals")
    if not isinstance(value, list | tuple) or not value:
        raise bad("event has no signals", "event_signals")
    if len(value) > MAX_SIGNALS:
        raise bad(f"{len(value)} signals exceed the limit of {MAX_SIGNALS}", "event_signals")
    return value


def _signal(raw: object, index: int, start: datetime, offset: timedelta, event_duration: timedelta,
            bad: _Reporter) -> Signal:
    """One signal; ``start`` is the VTN's dtstart, ``offset`` the startafter delay applied to every interval."""
    where = f"event_signals[{index}]"
    signal = _mapping(raw, where, bad)
    name = signal.get("signal_name")
    if not isinstance(name, str) or not name.strip():
        raise bad(f"signal name is missing: {name!r}", f"{where}.signal_name")
    signal_type = signal.get("signal_type")
    if not isinstance(signal_type, str) or not signal_type.strip():
        raise bad(f"signal type is missing: {signal_type!r}", f"{where}.signal_type")
    raw_intervals = signal.get("intervals")
    if not isinstance(raw_intervals, list | tuple) or not raw_intervals:
        raise bad("signal has no intervals", f"{where}.intervals")
    if len(raw_intervals) > MAX_INTERVALS:
        raise bad(f"{len(raw_intervals)} intervals exceed the limit of {MAX_INTERVALS}", f"{where}.intervals")

    intervals: list[Interval] = []
    cursor = start
    last_uid: int | None = None
    for j, raw_interval in enumerate(raw_intervals):
        at = f"{where}.intervals[{j}]"
        interval = _mapping(raw_interval, at, bad)
        duration = _duration(interval.get("duration"), f"{at}.duration", bad, positive=True)
        uid = interval.get("uid")
        if isinstance(uid, int) and not isinstance(uid, bool):
            if last_uid is not None and uid <= last_uid:
                raise bad(f"intervals out of order: uid {uid} follows uid {last_uid}", f"{at}.uid")
            last_uid = uid
        sent_start = interval.get("dtstart")
        if isinstance(sent_start, datetime) and sent_start.tzinfo is not None:
            # In OpenADR an interval starts where the previous one ends; a VTN that also sends
            # dtstart must agree with that sequence, or the intervals are out of order or gapped.
            if abs(sent_start - cursor) > _SLACK:
                raise bad(f"intervals out of order or with gaps: starts at {sent_start.isoformat()}, "
                          f"expected {cursor.isoformat()} from the preceding durations", f"{at}.dtstart")
        value = _number(interval.get("signal_payload"), f"{at}.signal_payload", bad)
        intervals.append(Interval(start=cursor + offset, duration=duration, value=value))
        cursor += duration
        if cursor - start > MAX_DURATION:
            raise bad(f"intervals run past the {MAX_DURATION.days}-day limit", f"{at}.duration")

    total = cursor - start
    if abs(total - event_duration) > _SLACK:
        raise bad(f"interval durations add up to {_fmt(total)} but the event lasts {_fmt(event_duration)}",
                  f"{where}.intervals")

    current = signal.get("current_value")
    current_value = None if current is None else _number(current, f"{where}.current_value", bad)
    units, to_kw = _units(signal.get("measurement"))
    target_kw = None
    if name == SignalKind.LOAD_DISPATCH and current_value is not None and to_kw is not None:
        target_kw = current_value * to_kw
        _number(target_kw, f"{where}.current_value", bad)
    try:
        return Signal(name=name, signal_type=signal_type, intervals=tuple(intervals), units=units, target_kw=target_kw)
    except ValueError as err:
        raise bad(str(err), where) from err


def _units(measurement: object) -> tuple[str | None, float | None]:
    """A signal's unit text (e.g. ``kW``) and the factor to kW, when the signal says it is power.

    No measurement: ``LOAD_DISPATCH`` values are taken as kW (the program's convention).
    """
    if not isinstance(measurement, Mapping):
        return None, 1.0
    unit = measurement.get("unit")
    scale = measurement.get("scale") or "none"
    if not isinstance(unit, str) or not isinstance(scale, str) or scale not in _SCALE:
        return (unit if isinstance(unit, str) else None), None
    text = f"{_PREFIX.get(scale, scale)}{unit}"
    return text, (_SCALE[scale] / 1e3 if unit == "W" else None)


def _fmt(value: timedelta) -> str:
    seconds = value.total_seconds()
    return f"{seconds:g} s"
