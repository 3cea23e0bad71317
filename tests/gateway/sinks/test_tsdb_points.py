"""Records → line protocol: which fields and tags each measurement gets, escaping, timestamps, power means."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from influxdb_client.client.write.point import Point
from influxdb_client.domain.write_precision import WritePrecision

from gateway.sinks.tsdb.points import (
    STATE_CODES,
    LineMapper,
    PowerDownsampler,
    PowerMean,
    escape_string,
    escape_tag,
    timestamp_ms,
)

T0 = datetime(2025, 5, 3, 14, 0, 0, 123456, tzinfo=UTC)
T0_MS = 1746280800123


# ---------------------------------------------------------------- a small line-protocol reader
def _unescape_until(s: str, i: int, stops: str) -> tuple[str, int]:
    """Read an unquoted token from ``s[i:]`` up to an unescaped character of ``stops`` (docs' rules:
    a backslash escapes a backslash, comma, equals sign or space; before anything else it is literal)."""
    out: list[str] = []
    while i < len(s) and s[i] not in stops:
        if s[i] == "\\" and i + 1 < len(s) and s[i + 1] in "\\,= ":
            out.append(s[i + 1])
            i += 2
        else:
            out.append(s[i])
            i += 1
    return "".join(out), i


def parse_line(line: str) -> tuple[str, dict[str, str], dict[str, object], int]:
    """(measurement, tags, fields, timestamp) of one line; fields typed as line protocol says."""
    assert "\n" not in line and "\r" not in line
    measurement, i = _unescape_until(line, 0, ", ")
    tags: dict[str, str] = {}
    while line[i] == ",":
        key, i = _unescape_until(line, i + 1, "=")
        value, i = _unescape_until(line, i + 1, ", ")
        tags[key] = value
    assert line[i] == " "
    i += 1
    fields: dict[str, object] = {}
    while True:
        key, i = _unescape_until(line, i, "=")
        i += 1
        if line[i] == '"':
            out: list[str] = []
            i += 1
            while line[i] != '"':
                if line[i] == "\\" and line[i + 1] in '"\\':
                    i += 1
                out.append(line[i])
                i += 1
            fields[key] = "".join(out)
            i += 1
        else:
            raw, i = _unescape_until(line, i, ", ")
            if raw in ("true", "false"):
                fields[key] = raw == "true"
            elif raw.endswith("i"):
                fields[key] = int(raw[:-1])
            else:
                fields[key] = float(raw)
        if line[i] == ",":
            i += 1
            continue
        break
    assert line[i] == " "
    return measurement, tags, fields, int(line[i + 1 :])


def only(line: str | None) -> tuple[str, dict[str, str], dict[str, object], int]:
    assert line is not None
    return parse_line(line)


# ---------------------------------------------------------------- the measurements
def action(**over: object) -> dict[str, object]:
    base: dict[str, object] = {
        "at": T0.isoformat(), "event_id": "ev-1", "key": "ev-1/0/cap/j1", "kind": "cap", "job_id": "j1",
        "nodes": ["n1", "n2"], "watts": 250, "delta_kw": -1.5, "tier": "flex-25", "reason": "shed",
        "outcome": "done", "latency_s": 0.25, "scheduler": "slurm",
    }
    base.update(over)
    return base


def test_action_becomes_one_point_with_its_tags_fields_and_own_time() -> None:
    line = LineMapper().line("action", action())
    assert line == (
        "dcflex_action,event_id=ev-1,job_id=j1,kind=cap,outcome=done,scheduler=slurm,tier=flex-25 "
        "nodes=2i,delta_kw=-1.5,watts=250,latency_s=0.25 1746280800123"
    )


def test_failed_command_alert_is_an_action_point_with_outcome_failed() -> None:
    alert = action(outcome=None, latency_s=None, severity="error", code="command_failed",
                   message='cap j1 failed: scontrol said "no"', command=["scontrol"])
    m, tags, fields, ts = only(LineMapper().line("alert", alert))
    assert (m, tags["outcome"], ts) == ("dcflex_action", "failed", T0_MS)
    assert fields == {"nodes": 2, "delta_kw": -1.5, "watts": 250.0, "message": 'cap j1 failed: scontrol said "no"'}


@pytest.mark.parametrize("kind", ["alert", "plan", "opt", "resumed", "override", "target_reached", "unknown"])
def test_other_records_have_no_point(kind: str) -> None:
    payload = {"at": T0.isoformat(), "event_id": "e", "code": "meter_unavailable", "severity": "warning"}
    assert LineMapper().line(kind, payload) is None


def test_state_record_becomes_an_event_point() -> None:
    rec = {"at": T0.isoformat(), "event_id": "ev 1", "state": "holding", "detail": 'target "reached", 40\\60',
           "modification": 2, "target_kw": 600.0, "achieved_kw": None}
    m, tags, fields, ts = only(LineMapper().line("state", rec))
    assert (m, tags, ts) == ("dcflex_event", {"event_id": "ev 1", "state": "holding"}, T0_MS)
    assert fields == {"state_code": STATE_CODES["holding"], "modification": 2, "target_kw": 600.0,
                      "detail": 'target "reached", 40\\60'}


def test_impact_and_notice_points() -> None:
    mapper = LineMapper(site="dc 1")
    impact = {"at": T0.isoformat(), "event_id": "ev-1", "job_id": "j7", "tier": "flex-50", "gpus": 16,
              "throughput_kept": 0.8125, "lost_gpu_hours": 3.5}
    m, tags, fields, _ = only(mapper.line("impact", impact))
    assert (m, tags) == ("dcflex_job_impact", {"event_id": "ev-1", "job_id": "j7", "site": "dc 1", "tier": "flex-50"})
    assert fields == {"throughput_kept": 0.8125, "lost_gpu_hours": 3.5, "gpus": 16}
    notice = {"at": T0.isoformat(), "event_id": "ev-1", "notice_id": "ev-1/0",
              "drop_at": (T0 + timedelta(minutes=15)).isoformat(), "drop_kw": 420.0,
              "reason": "demand-response event ev-1", "exact": True, "modified": False}
    m, tags, fields, ts = only(mapper.line("notice", notice))
    assert (m, tags, ts) == ("dcflex_notice", {"event_id": "ev-1", "site": "dc 1"}, T0_MS)
    assert fields == {"drop_kw": 420.0, "lead_s": 900.0, "exact": True, "modified": False, "notice_id": "ev-1/0",
                      "reason": "demand-response event ev-1"}
    update = {**notice, "action": "update", "source": "event"}
    assert only(mapper.line("notice", update))[2] | {} == {**fields, "action": "update", "source": "event"}


def test_drop_points_carry_the_covered_kw_coverage_is_summed_from() -> None:
    mapper = LineMapper(site="dc 1")
    covered = {"at": T0.isoformat(), "event_id": "ev-1", "kw": 120.5, "from_kw": 900.0, "notice_id": "event:ev-1",
               "lead_s": 1800.0, "covered": True}
    m, tags, fields, ts = only(mapper.line("drop", covered))
    assert (m, tags, ts) == ("dcflex_drop", {"event_id": "ev-1", "site": "dc 1"}, T0_MS)
    assert fields == {"kw": 120.5, "covered_kw": 120.5, "covered": True, "lead_s": 1800.0, "notice_id": "event:ev-1"}
    bare = {"at": T0.isoformat(), "event_id": "", "kw": 80, "lead_s": 0.0, "covered": False, "notice_id": None}
    _, tags, fields, _ = only(mapper.line("drop", bare))
    assert tags == {"site": "dc 1"} and fields == {"kw": 80.0, "covered_kw": 0.0, "covered": False, "lead_s": 0.0}
    assert mapper.line("drop", {"at": T0.isoformat(), "kw": "much"}) is None


def test_field_types_never_change_and_bad_numbers_are_left_out() -> None:
    mapper = LineMapper()
    as_int = only(mapper.line("action", action(watts=300, delta_kw=-2, job_id="a")))[2]
    as_float = only(mapper.line("action", action(watts=300.5, delta_kw=-2.0, job_id="b")))[2]
    assert {type(v) for k, v in as_int.items() if k != "nodes"} == {float}
    assert {type(v) for k, v in as_float.items() if k != "nodes"} == {float}
    odd = action(watts=float("nan"), delta_kw=float("inf"), latency_s=True, nodes=None, job_id="c")
    assert only(mapper.line("action", odd))[2] == {"nodes": 0}
    state = {"at": T0.isoformat(), "event_id": "e", "state": "x", "modification": 1.0}
    assert only(mapper.line("state", state))[2] == {"modification": 1}


def test_empty_tags_are_left_out_and_site_is_sorted_in() -> None:
    line = LineMapper(site="dc1").line("action", action(event_id="", job_id="", tier=None, scheduler="", kind="hold_nodes"))
    assert line is not None and line.startswith("dcflex_action,kind=hold_nodes,outcome=done,site=dc1 ")


def test_record_without_a_time_is_refused() -> None:
    with pytest.raises(ValueError):
        LineMapper().line("action", action(at=None))
    with pytest.raises(ValueError):
        LineMapper().line("action", action(at="2025-05-03T14:00:00"))  # naive: not UTC
    assert timestamp_ms(T0) == timestamp_ms(T0.isoformat()) == T0_MS


def test_points_of_one_series_and_instant_are_kept_apart_by_a_millisecond() -> None:
    mapper = LineMapper()
    same = [only(mapper.line("action", action(key=f"k{i}")))[3] for i in range(3)]
    assert same == [T0_MS, T0_MS + 1, T0_MS + 2]
    other_series = only(mapper.line("action", action(job_id="j2")))[3]
    assert other_series == T0_MS  # another job's series: its own time
    late = only(mapper.line("action", action(at=(T0 - timedelta(milliseconds=1)).isoformat())))[3]
    assert late == T0_MS + 3  # never on or before the series' last point
    later = only(mapper.line("action", action(at=(T0 + timedelta(seconds=1)).isoformat())))[3]
    assert later == T0_MS + 1000


# ---------------------------------------------------------------- escaping
_text = st.text(st.characters(codec="utf-8"), min_size=1, max_size=40)


@given(event_id=_text, job_id=_text, message=_text)
def test_escaping_round_trips_through_a_line_protocol_reader(event_id: str, job_id: str, message: str) -> None:
    alert = action(event_id=event_id, job_id=job_id, code="command_failed", message=message)
    line = LineMapper().line("alert", alert)
    assert line is not None and "\n" not in line and "\r" not in line
    _, tags, fields, ts = parse_line(line)

    def as_tag(s: str) -> str:  # line breaks and tabs cannot be in a tag: they become spaces
        return s.replace("\n", " ").replace("\r", " ").replace("\t", " ")

    assert tags["event_id"] == as_tag(event_id) and tags["job_id"] == as_tag(job_id)
    assert fields["message"] == message.replace("\n", " ").replace("\r", " ")
    assert ts == T0_MS


@given(value=st.text(st.characters(codec="utf-8", exclude_characters="\\\n\r\t"), min_size=1),
       text=st.text(st.characters(codec="utf-8", exclude_characters="\n\r")))
def test_escaping_matches_influxdb_clients_point_serializer(value: str, text: str) -> None:
    """Where the client's rules are defined the same way (no backslash or control character in tags)."""
    ours = f"m,t={escape_tag(value)} s=\"{escape_string(text)}\" 1"
    theirs = Point("m").tag("t", value).field("s", text).time(1, WritePrecision.MS).to_line_protocol()
    assert ours == theirs


# ---------------------------------------------------------------- site power
def test_power_is_the_mean_per_interval_stamped_at_its_start() -> None:
    down = PowerDownsampler(60)
    start = T0_MS - T0_MS % 60_000
    assert down.add(start + 1_000, 100.0, None, None, None) is None
    assert down.add(start + 20_000, 90.0, 80.0, 120.0, 30.0) is None
    assert down.add(start + 40_000, 80.0, 80.0, 120.0, 40.0) is None
    closed = down.add(start + 61_000, 50.0, 80.0, 120.0, 70.0)
    assert closed == PowerMean(start, 90.0, 120.0, 80.0, 35.0, 3)
    mapper = LineMapper()
    m, tags, fields, ts = only(mapper.power_line(closed))
    assert (m, tags, ts) == ("dcflex_site_power", {}, start)
    assert fields == {"actual_kw": 90.0, "baseline_kw": 120.0, "target_kw": 80.0, "shed_kw": 35.0, "samples": 3}
    assert down.flush() == PowerMean(start + 60_000, 50.0, 120.0, 80.0, 70.0, 1)
    assert down.flush() is None


def test_power_interval_closes_on_time_and_a_late_sample_is_never_a_second_point() -> None:
    down = PowerDownsampler(10)
    start = 1_000_000
    down.add(start + 5_000, 10.0, None, None, None)
    assert down.close_due(start + 9_999) is None
    closed = down.close_due(start + 10_000)
    assert closed is not None and closed.start_ms == start
    down.add(start + 9_000, 20.0, None, None, None)  # belongs to the closed interval: goes to the next one
    late = down.flush()
    assert late is not None and late.start_ms == start + 10_000 and late.actual_kw == 20.0
    with pytest.raises(ValueError):
        PowerDownsampler(0)


def test_series_memory_is_bounded_and_recent_series_keep_their_last_time(monkeypatch: pytest.MonkeyPatch) -> None:
    import gateway.sinks.tsdb.points as points

    monkeypatch.setattr(points, "_SERIES_MAX", 10)
    mapper = LineMapper()
    for i in range(40):  # one new job series a minute: the old ones fall out of the ten-minute window
        mapper.line("action", action(job_id=f"old-{i}", at=(T0 + timedelta(minutes=i)).isoformat()))
    assert len(mapper._series) <= 20
    recent = (T0 + timedelta(minutes=39)).isoformat()
    assert only(mapper.line("action", action(job_id="old-39", at=recent)))[3] == T0_MS + 39 * 60_000 + 1
    same_series_other_spelling = action(job_id="x", event_id="", at=T0.isoformat())
    first = only(mapper.line("action", same_series_other_spelling))[3]
    assert only(mapper.line("action", {**same_series_other_spelling, "event_id": None}))[3] == first + 1
