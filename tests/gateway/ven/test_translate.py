"""translate_event: openleadr's parsed event dict → GridEvent, and every way it refuses one.

The valid payloads are real: built with openleadr's own message templates and parsed back with its
parser, exactly as the VEN receives them. Hostile variants are edits of those parsed dicts.
"""

from __future__ import annotations

import copy
import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from openleadr.messaging import create_message, parse_message

from gateway.domain import SignalKind
from gateway.exceptions import ProtocolError
from gateway.ven.oadr20b.translate import (
    MAX_INTERVALS,
    MAX_SIGNALS,
    event_identity,
    event_status,
    jsonable,
    startafter_offset,
    translate_event,
)

T0 = datetime(2025, 5, 1, 18, 0, tzinfo=UTC)
KW = {"name": "powerReal", "description": "RealPower", "unit": "W", "scale": "k",
      "power_attributes": {"hertz": 60, "voltage": 480, "ac": True}}


def wire_event(*, intervals: list[tuple[timedelta, float]] | None = None, signal_name: str = "LOAD_DISPATCH",
               event_id: str = "evt-7", modification: int = 2, startafter: timedelta | None = None,
               measurement: dict[str, Any] | None = KW, current_value: float | None = 450.0,
               extra_signals: int = 0) -> dict[str, Any]:
    """An event as the VEN gets it: rendered by openleadr's templates, parsed by its parser."""
    intervals = intervals or [(timedelta(minutes=30), 500.0), (timedelta(minutes=60), 400.0)]
    rows, at = [], T0
    for uid, (duration, value) in enumerate(intervals):
        rows.append({"dtstart": at, "duration": duration, "signal_payload": value, "uid": uid})
        at += duration
    signal = {"intervals": rows, "signal_name": signal_name, "signal_type": "setpoint", "signal_id": "s0",
              "current_value": current_value, "measurement": measurement}
    signals = [signal] + [dict(copy.deepcopy(signal), signal_id=f"s{i + 1}", signal_name="ELECTRICITY_PRICE",
                               signal_type="price", measurement=None, current_value=None)
                          for i in range(extra_signals)]
    event = {
        "event_descriptor": {"event_id": event_id, "modification_number": modification, "event_status": "near",
                             "market_context": "oadr://utility/dr", "created_date_time": T0 - timedelta(hours=1),
                             "priority": 3, "test_event": False},
        "active_period": {"dtstart": T0, "duration": at - T0, "ramp_up_period": timedelta(minutes=15),
                          "recovery_period": timedelta(minutes=20),
                          "tolerance": {"startafter": startafter} if startafter else None},
        "event_signals": signals, "targets": [{"ven_id": "ven-1"}], "response_required": "always",
    }
    message = create_message("oadrDistributeEvent", request_id="req-1", vtn_id="VTN", events=[event])
    _, payload = parse_message(message)
    parsed: dict[str, Any] = payload["events"][0]
    return parsed


def refused(raw: dict[str, Any]) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        translate_event(raw, ven_key="ven-1")
    return info.value


def test_a_load_dispatch_event_translates_completely() -> None:
    raw = wire_event()
    event = translate_event(raw, ven_key="ven-1", received_at=T0 - timedelta(minutes=5))

    assert (event.event_id, event.modification, event.status, event.priority) == ("evt-7", 2, "near", 3)
    assert (event.start, event.duration, event.end) == (T0, timedelta(minutes=90), T0 + timedelta(minutes=90))
    assert (event.ramp, event.recovery) == (timedelta(minutes=15), timedelta(minutes=20))
    assert event.program == "oadr://utility/dr" and not event.test_event and not event.cancelled
    assert event.received_at == T0 - timedelta(minutes=5)
    (signal,) = event.signals
    assert (signal.name, signal.kind, signal.signal_type, signal.units) == ("LOAD_DISPATCH", SignalKind.LOAD_DISPATCH,
                                                                            "setpoint", "kW")
    assert signal.target_kw == 450.0
    assert [(i.start, i.duration, i.value) for i in signal.intervals] == [
        (T0, timedelta(minutes=30), 500.0),
        (T0 + timedelta(minutes=30), timedelta(minutes=60), 400.0),
    ]
    assert event.raw["event_descriptor"]["event_id"] == "evt-7"  # type: ignore[index]
    json.dumps(event.raw, allow_nan=False)


def test_interval_starts_follow_cumulative_durations_when_the_vtn_sends_no_dtstart() -> None:
    raw = wire_event(intervals=[(timedelta(minutes=10), 1.0), (timedelta(minutes=20), 2.0), (timedelta(minutes=5), 3.0)])
    for interval in raw["event_signals"][0]["intervals"]:
        del interval["dtstart"], interval["uid"]
    starts = [i.start for i in translate_event(raw, ven_key="v").signals[0].intervals]
    assert starts == [T0, T0 + timedelta(minutes=10), T0 + timedelta(minutes=30)]


def test_unknown_signal_names_survive_for_the_policy_to_refuse() -> None:
    event = translate_event(wire_event(signal_name="x-utilityCustom", measurement=None), ven_key="v")
    assert event.signals[0].name == "x-utilityCustom" and event.signals[0].kind is None
    assert event.signals[0].target_kw is None  # currentValue is read as a target for LOAD_DISPATCH only


def test_several_signals_are_kept_in_order() -> None:
    event = translate_event(wire_event(extra_signals=2), ven_key="v")
    assert [s.name for s in event.signals] == ["LOAD_DISPATCH", "ELECTRICITY_PRICE", "ELECTRICITY_PRICE"]


def test_an_all_digit_event_id_is_text_again() -> None:
    raw = wire_event(event_id="12345")
    assert raw["event_descriptor"]["event_id"] == 12345  # openleadr's parser made it a number
    assert translate_event(raw, ven_key="v").event_id == "12345"


@pytest.mark.parametrize(("measurement", "current", "units", "target_kw"), [
    (None, 450.0, None, 450.0),  # LOAD_DISPATCH without a measurement: the program's kW
    ({**KW, "scale": "none"}, 450_000.0, "W", 450.0),
    ({**KW, "scale": "M"}, 0.45, "MW", 450.0),
    ({"name": "energyReal", "description": "RealEnergy", "unit": "Wh", "scale": "k"}, 450.0, "kWh", None),
])
def test_load_dispatch_current_value_becomes_kw(measurement: dict[str, Any] | None, current: float,
                                                units: str | None, target_kw: float | None) -> None:
    signal = translate_event(wire_event(measurement=measurement, current_value=current), ven_key="v").signals[0]
    assert signal.units == units
    assert signal.target_kw == pytest.approx(target_kw) if target_kw is not None else signal.target_kw is None


def test_startafter_offset_is_applied_deterministically_within_the_window() -> None:
    window = timedelta(minutes=10)
    raw = wire_event(startafter=window)
    assert raw["active_period"]["tolerance"] == {"tolerate": {"startafter": window}}

    first = translate_event(raw, ven_key="ven-1")
    again = translate_event(copy.deepcopy(raw), ven_key="ven-1")  # e.g. after a restart
    offset = first.start - T0
    assert timedelta(0) <= offset < window
    assert offset == startafter_offset("ven-1", "evt-7", 2, window) and again.start == first.start
    assert first.duration == timedelta(minutes=90)
    assert [i.start - offset for i in first.signals[0].intervals] == [T0, T0 + timedelta(minutes=30)]


def test_startafter_spreads_vens_and_redraws_on_modification() -> None:
    window = timedelta(minutes=10)
    offsets = {startafter_offset(f"ven-{n}", "evt-7", 2, window) for n in range(50)}
    assert len(offsets) == 50 and all(timedelta(0) <= o < window for o in offsets)
    assert max(offsets) - min(offsets) > window / 2  # spread across the window, not bunched
    assert startafter_offset("ven-1", "evt-7", 3, window) != startafter_offset("ven-1", "evt-7", 2, window)
    assert startafter_offset("ven-1", "evt-7", 2, timedelta(0)) == timedelta(0)


@pytest.mark.parametrize("spelling", ["tolerance_flat", "start_after"])
def test_other_startafter_spellings_are_honoured(spelling: str) -> None:
    raw = wire_event()
    window = timedelta(minutes=5)
    if spelling == "tolerance_flat":
        raw["active_period"]["tolerance"] = {"startafter": window}
    else:
        raw["active_period"]["start_after"] = window
    assert translate_event(raw, ven_key="k").start == T0 + startafter_offset("k", "evt-7", 2, window)


def _set(path: str, value: object) -> Any:
    """An edit of the parsed event: ``path`` like ``event_signals.0.intervals.1.duration``."""
    def edit(raw: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = raw
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if value is _DELETE:
            del node[int(last) if isinstance(node, list) else last]
        elif isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    return edit


_DELETE = object()
_IV1 = "event_signals.0.intervals.1"  # path for _set
IV1 = "event_signals[0].intervals[1]"  # the same, as ProtocolError.field names it
S0 = "event_signals[0]"


@pytest.mark.parametrize(("edit", "field", "words"), [
    (_set("active_period.dtstart", _DELETE), "active_period.dtstart", "missing"),
    (_set("active_period.dtstart", "2025-13-01 noon"), "active_period.dtstart", "not a date-time"),
    (_set("active_period.dtstart", datetime(2025, 5, 1, 18)), "active_period.dtstart", "time zone"),
    (_set("active_period.duration", _DELETE), "active_period.duration", "missing duration"),
    (_set("active_period.duration", timedelta(0)), "active_period.duration", "must be positive"),
    (_set("active_period.duration", timedelta(minutes=-90)), "active_period.duration", "must be positive"),
    (_set("active_period.duration", timedelta(days=400)), "active_period.duration", "366-day limit"),
    (_set("active_period.ramp_up", timedelta(minutes=-1)), "active_period.ramp_up", "not be negative"),
    (_set("active_period.recovery", "soon"), "active_period.recovery", "not a duration"),
    (_set("active_period.tolerance", {"tolerate": {"startafter": timedelta(seconds=-5)}}),
     "active_period.tolerance.tolerate.startafter", "not be negative"),
    (_set(f"{_IV1}.duration", timedelta(minutes=-60)), f"{IV1}.duration", "must be positive"),
    (_set(f"{_IV1}.duration", timedelta(0)), f"{IV1}.duration", "must be positive"),
    (_set(f"{_IV1}.duration", timedelta(minutes=30)), f"{S0}.intervals", "add up to 3600 s"),
    (_set(f"{_IV1}.dtstart", T0 - timedelta(minutes=30)), f"{IV1}.dtstart", "out of order"),
    (_set(f"{_IV1}.uid", 0), f"{IV1}.uid", "out of order"),
    (_set(f"{_IV1}.signal_payload", math.nan), f"{IV1}.signal_payload", "finite"),
    (_set(f"{_IV1}.signal_payload", math.inf), f"{IV1}.signal_payload", "finite"),
    (_set(f"{_IV1}.signal_payload", 1e12), f"{IV1}.signal_payload", "plausible range"),
    (_set(f"{_IV1}.signal_payload", -1e12), f"{IV1}.signal_payload", "plausible range"),
    (_set(f"{_IV1}.signal_payload", "high"), f"{IV1}.signal_payload", "not a number"),
    (_set(f"{_IV1}.signal_payload", True), f"{IV1}.signal_payload", "not a number"),
    (_set("event_signals.0.current_value", math.nan), f"{S0}.current_value", "finite"),
    (_set("event_signals.0.intervals", []), f"{S0}.intervals", "no intervals"),
    (_set("event_signals.0.signal_name", ""), f"{S0}.signal_name", "missing"),
    (_set("event_signals.0.signal_type", None), f"{S0}.signal_type", "missing"),
    (_set("event_signals", []), "event_signals", "no signals"),
    (_set("event_signals.0", "LOAD_DISPATCH"), "event_signals[0]", "not a structure"),
    (_set("active_period", None), "active_period", "not a structure"),
    (_set("event_descriptor.priority", -1), "event_descriptor.priority", "non-negative"),
])
def test_malformed_or_hostile_content_is_refused_naming_event_and_field(edit: Any, field: str, words: str) -> None:
    raw = wire_event()
    edit(raw)
    err = refused(raw)
    assert err.event_id == "evt-7"
    assert err.field == field
    assert words in str(err) and "evt-7" in str(err) and field in str(err)


def test_bounds_on_interval_and_signal_counts() -> None:
    many = wire_event(intervals=[(timedelta(seconds=1), 1.0)] * (MAX_INTERVALS + 1))
    assert refused(many).field == "event_signals[0].intervals"
    assert len(translate_event(wire_event(intervals=[(timedelta(seconds=1), 1.0)] * MAX_INTERVALS),
                               ven_key="v").signals[0].intervals) == MAX_INTERVALS
    too_many = wire_event(extra_signals=MAX_SIGNALS)
    err = refused(too_many)
    assert err.field == "event_signals" and f"{MAX_SIGNALS + 1} signals" in str(err)


def test_dates_at_the_end_of_the_calendar_are_refused_not_overflowed() -> None:
    raw = wire_event()
    late = datetime(9999, 12, 31, 23, 0, tzinfo=UTC)
    raw["active_period"]["dtstart"] = late
    for interval in raw["event_signals"][0]["intervals"]:
        del interval["dtstart"]
    assert refused(raw).field == "active_period.dtstart"


@pytest.mark.parametrize(("descriptor_edit", "field"), [
    ({"event_id": ""}, "event_descriptor.event_id"),
    ({"event_id": "   "}, "event_descriptor.event_id"),
    ({"event_id": None}, "event_descriptor.event_id"),
    ({"modification_number": None}, "event_descriptor.modification_number"),
    ({"modification_number": -1}, "event_descriptor.modification_number"),
])
def test_an_event_without_a_usable_identity_is_refused(descriptor_edit: dict[str, Any], field: str) -> None:
    raw = wire_event()
    raw["event_descriptor"].update(descriptor_edit)
    err = refused(raw)
    assert err.field == field and field in str(err)


def test_missing_descriptor() -> None:
    with pytest.raises(ProtocolError, match="event_descriptor"):
        event_identity({"active_period": {}})


def test_status_is_lower_case_and_defaults_to_far() -> None:
    raw = wire_event()
    raw["event_descriptor"]["event_status"] = "CANCELLED"
    assert event_status(raw) == "cancelled"
    assert translate_event(raw, ven_key="v").cancelled
    del raw["event_descriptor"]["event_status"]
    assert event_status(raw) == "far"


def test_jsonable_keeps_hostile_values_as_text() -> None:
    value = {"a": [math.nan, -math.inf, 1.5], "t": T0, "d": timedelta(minutes=2), "o": object, 3: None}
    out = jsonable(value)
    assert out == {"a": ["nan", "-inf", 1.5], "t": T0.isoformat(), "d": 120.0, "o": str(object), "3": None}
    json.dumps(out, allow_nan=False)
