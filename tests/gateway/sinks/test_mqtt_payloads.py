"""MQTT payloads, schema files, topics, record mapping and override parsing (no broker needed)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiomqtt import Topic, Wildcard
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from gateway.domain import EventState
from gateway.exceptions import ConfigError, OverrideRefused
from gateway.sinks.mqtt import (
    Alert,
    EventStatus,
    MessageIds,
    Notice,
    OutMessage,
    Override,
    OverrideHandler,
    OverrideReply,
    RecordMapper,
    Status,
    Topics,
    from_topic_level,
    parse_override,
    to_topic_level,
)
from gateway.sinks.mqtt.schemas import DOCS_SCHEMAS, render_schemas, write_schemas

AT = datetime(2025, 5, 20, 17, 0, tzinfo=UTC)
TOPICS = Topics("dcflex", "phx-1")


# ------------------------------------------------------------------------------ models and schemas


def test_every_published_payload_is_versioned_and_round_trips() -> None:
    base: dict[str, Any] = {"msg_id": "n-1", "site": "phx-1", "at": AT}
    payloads = [
        Status(**base, state="online", since=AT, version="0.1.0", reason="started"),
        Alert(**base, severity="error", code="command_failed", message="scancel failed", event_id="e1", facts={"exit": 1}),
        EventStatus(**base, event_id="e1", state=EventState.HOLDING, modification=2, target_kw=800.0, achieved_kw=795.5),
        Notice(**base, notice_id="e1/2", event_id="e1", drop_at=AT, drop_kw=120.0, reason="DR", exact=True),
        OverrideReply(**base, request_id="r1", command="pause", accepted=True, answer="paused"),
    ]
    for p in payloads:
        data = json.loads(p.model_dump_json())
        assert data["v"] == 1 and data["msg_id"] == "n-1" and data["at"] == "2025-05-20T17:00:00Z"
        assert type(p).model_validate_json(p.model_dump_json()) == p
    with pytest.raises(ValidationError):
        Status(**base, v=2, state="online", since=AT, version="0.1.0", reason="started")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):  # naive times are refused: every time is UTC-aware
        Alert(msg_id="n", site="s", at=datetime(2025, 1, 1), severity="info", code="c", message="m", event_id=None)


def test_schema_files_in_docs_are_what_the_models_export_now(tmp_path: Path) -> None:
    rendered = render_schemas()
    assert set(rendered) == {f"{n}.v1.json" for n in ("status", "alert", "event", "notice", "override", "override_reply")}
    fix = "run .venv/bin/python -m gateway.sinks.mqtt.schemas"
    for name, text in rendered.items():
        committed = DOCS_SCHEMAS / name
        assert committed.is_file(), f"{committed} is missing: {fix}"
        assert committed.read_text(encoding="utf-8") == text, f"{name} is stale: {fix}"
    # The writer writes exactly those texts.
    written = write_schemas(tmp_path)
    assert {p.name: p.read_text(encoding="utf-8") for p in written} == rendered
    override = json.loads(rendered["override.v1.json"])
    assert override["additionalProperties"] is False and override["required"] == ["command"]
    alert = json.loads(rendered["alert.v1.json"])
    assert {"v", "msg_id", "site", "at", "severity", "code", "message", "event_id", "facts"} <= set(alert["required"])


# ------------------------------------------------------------------------------ topics


@pytest.mark.parametrize(("event_id", "level"), [
    ("evt-42", "evt-42"),
    ("a/b", "a%2Fb"),
    ("x+y#z", "x%2By%23z"),
    ("100%", "100%25"),
    ("tab\there", "tab%09here"),
    ("événement", "événement"),
])
def test_event_ids_become_one_safe_topic_level(event_id: str, level: str) -> None:
    assert to_topic_level(event_id) == level
    assert from_topic_level(level) == event_id
    assert TOPICS.event(event_id) == f"dcflex/phx-1/events/{level}"


@given(st.text(min_size=1, max_size=80))
def test_topic_level_mapping_is_safe_and_reversible(event_id: str) -> None:
    level = to_topic_level(event_id)
    assert not any(c in level for c in "/+#\x00")
    assert from_topic_level(level) == event_id


def test_empty_event_id_is_no_topic_level() -> None:
    with pytest.raises(ValueError, match="empty"):
        to_topic_level("")


def test_topics_and_the_override_filter_match_exactly_one_identity_level() -> None:
    assert TOPICS.status == "dcflex/phx-1/status"
    assert (TOPICS.alerts, TOPICS.notices) == ("dcflex/phx-1/alerts", "dcflex/phx-1/notices")
    sub = Wildcard(TOPICS.override_filter)
    assert sub.value == "dcflex/phx-1/override/+"
    assert Topic("dcflex/phx-1/override/alice").matches(sub)
    assert not Topic(TOPICS.reply("alice")).matches(sub)  # the gateway never hears its own replies
    assert TOPICS.identity_of("dcflex/phx-1/override/alice") == "alice"
    assert TOPICS.identity_of(TOPICS.reply("alice")) is None
    assert TOPICS.identity_of("dcflex/phx-2/override/alice") is None
    assert Topics("acme/dr", "s").status == "acme/dr/s/status"  # a prefix may have several levels


@pytest.mark.parametrize("prefix", ["", "/dcflex", "dcflex/", "a//b", "a/+/b", "a/#", "$SYS", "a\nb"])
def test_unusable_topic_prefixes_are_configuration_errors(prefix: str) -> None:
    with pytest.raises(ConfigError, match="topic_prefix"):
        Topics(prefix, "site")


# ------------------------------------------------------------------------------ records → messages


def mapper() -> RecordMapper:
    return RecordMapper(TOPICS, MessageIds("abc"))


def test_alert_record_becomes_an_alert_with_its_facts() -> None:
    rec = {"at": "2025-05-20T17:00:00+00:00", "event_id": "e1", "severity": "error", "code": "command_failed",
           "message": "scancel failed", "job_id": "42", "nodes": ["n1"], "when": AT, "script": Path("/opt/x.sh")}
    msg = mapper().map("alert", rec, AT)
    assert msg is not None and msg.topic == "dcflex/phx-1/alerts" and not msg.retain
    alert = Alert.model_validate_json(msg.payload)
    assert (alert.severity, alert.code, alert.event_id, alert.msg_id) == ("error", "command_failed", "e1", "abc-1")
    # Facts that are not JSON values become JSON: a datetime ISO-8601, anything else its str().
    assert alert.facts == {"job_id": "42", "nodes": ["n1"], "when": "2025-05-20T17:00:00+00:00", "script": "/opt/x.sh"}
    odd = mapper().map("alert", {"event_id": "", "severity": "notice", "code": "x", "message": "m"}, AT)
    assert odd is not None
    parsed = Alert.model_validate_json(odd.payload)
    assert parsed.severity == "warning" and parsed.facts == {"given_severity": "notice"} and parsed.event_id is None
    assert parsed.at == AT  # no `at` in the record: the clock's time


def test_state_record_becomes_the_retained_event_status() -> None:
    rec = {"at": "2025-05-20T17:05:00+00:00", "event_id": "evt/7", "state": "holding", "detail": "holding 800 kW",
           "modification": 3, "target_kw": 800.0, "achieved_kw": 790.25}
    msg = mapper().map("state", rec, AT)
    assert msg is not None and msg.retain and msg.topic == "dcflex/phx-1/events/evt%2F7"
    st_ = EventStatus.model_validate_json(msg.payload)
    assert (st_.event_id, st_.state, st_.modification, st_.target_kw, st_.achieved_kw) == ("evt/7", "holding", 3, 800.0, 790.25)
    assert mapper().map("state", {"event_id": "", "state": "holding"}, AT) is None


def test_notice_record_and_ignored_kinds() -> None:
    rec = {"at": "2025-05-20T17:00:00+00:00", "event_id": "e1", "notice_id": "e1/0", "drop_at": "2025-05-20T18:00:00+00:00",
           "drop_kw": 250.5, "reason": "demand-response event e1", "exact": True, "modified": False}
    msg = mapper().map("notice", rec, AT)
    assert msg is not None and msg.topic == "dcflex/phx-1/notices" and not msg.retain
    notice = Notice.model_validate_json(msg.payload)
    assert notice.drop_at == datetime(2025, 5, 20, 18, 0, tzinfo=UTC) and notice.drop_kw == 250.5 and notice.exact
    for kind in ("power", "plan", "opt", "action", "impact", "override", "resumed", "target_reached"):
        assert mapper().map(kind, {"event_id": "e1", "kw": 1.0}, AT) is None


def test_outbox_text_form_round_trips_and_ids_do_not_repeat() -> None:
    for m in (OutMessage("a/b/status", '{"x":"line\\nbreak"}', retain=True), OutMessage("a/b/alerts", "{}")):
        assert OutMessage.decode(m.encode()) == m
    ids = MessageIds()
    assert len({ids.next() for _ in range(1000)}) == 1000
    assert MessageIds().nonce != ids.nonce


# ------------------------------------------------------------------------------ override parsing


@pytest.mark.parametrize(("payload", "reason"), [
    (b"{not json", "payload is not valid JSON"),
    (b"\xff\xfe", "payload is not valid JSON"),
    (b"[1, 2]", "payload must be a JSON object, not list"),
    (b'{"command": "reboot"}', "command: Input should be 'opt_out', 'pause' or 'resume'"),
    (b'{"command": "opt_out"}', "opt_out needs an event_id"),
    (b'{"command": "pause", "event_id": "e1"}', "pause applies to the whole site and takes no event_id"),
    (b'{"command": "pause", "force": true}', "force: Extra inputs are not permitted"),
    (b'{"command": "opt_out", "event_id": 42}', "event_id: Input should be a valid string"),
    (b'{"v": 2, "command": "pause"}', "v: Input should be 1"),
    (b'{"command": "pause", "request_id": ""}', "request_id: String should have at least 1 character"),
    (b'{"command": "pause", "reason": "' + b"r" * 5000 + b'"}', "payload is 5034 bytes; at most 4096 are accepted"),
])
def test_bad_override_payloads_are_refused_with_their_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(OverrideRefused) as err:
        parse_override(payload, 4096)
    assert reason in str(err.value)


def test_good_override_payloads_parse() -> None:
    cmd = parse_override(b'{"v": 1, "command": "opt_out", "event_id": "e1", "reason": "maintenance", "request_id": "r-1"}', 4096)
    assert cmd == Override(command="opt_out", event_id="e1", reason="maintenance", request_id="r-1")
    assert parse_override(b'{"command": "resume"}', 4096).reason == ""


class RecordingControl:
    """The port's other side, recording calls; refuses an unknown event like the engine does."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    async def opt_out(self, event_id: str, reason: str) -> str:
        self.calls.append(("opt_out", event_id, reason))
        if event_id != "e1":
            raise OverrideRefused(f"no event {event_id!r} is known to this gateway")
        return f"opted out of {event_id}"

    async def pause_actions(self, reason: str) -> str:
        self.calls.append(("pause", reason))
        return "paused"

    async def resume_actions(self, reason: str) -> str:
        self.calls.append(("resume", reason))
        raise RuntimeError("boom")


class Hooks:
    def __init__(self) -> None:
        self.overrides: list[tuple[str, dict[str, object], bool, str]] = []
        self.problems: list[tuple[str, str]] = []

    async def on_override(self, identity: str, command: Mapping[str, object], accepted: bool, answer: str) -> None:
        self.overrides.append((identity, dict(command), accepted, answer))

    async def on_problem(self, code: str, message: str) -> None:
        self.problems.append((code, message))


def handler(control: RecordingControl | None, hooks: Hooks) -> OverrideHandler:
    return OverrideHandler(allow=("alice", "ops-bot"), max_bytes=256, control=control,
                           on_override=hooks.on_override, on_problem=hooks.on_problem)


async def test_accepted_override_calls_the_control_and_is_journaled() -> None:
    control, hooks = RecordingControl(), Hooks()
    h = handler(control, hooks)
    out = await h.handle("alice", orjson.dumps({"command": "opt_out", "event_id": "e1", "reason": "heat", "request_id": "r1"}))
    assert out.accepted and out.answer == "opted out of e1" and out.request_id == "r1" and out.command_name == "opt_out"
    assert control.calls == [("opt_out", "e1", "heat (by alice)")]
    assert hooks.overrides == [("alice", {"v": 1, "command": "opt_out", "event_id": "e1", "reason": "heat", "request_id": "r1"},
                                True, "opted out of e1")]
    assert hooks.problems == []
    # The same request again (a QoS 1 re-delivery, a retry): answered from memory, not run or journaled twice.
    again = await h.handle("alice", orjson.dumps({"command": "opt_out", "event_id": "e1", "reason": "heat", "request_id": "r1"}))
    assert again.repeat and again.accepted and again.answer == "opted out of e1"
    assert len(control.calls) == 1 and len(hooks.overrides) == 1


async def test_refusals_are_answered_journaled_and_alerted() -> None:
    control, hooks = RecordingControl(), Hooks()
    h = handler(control, hooks)
    cases = [
        ("mallory", b'{"command": "pause", "request_id": "m1"}', {}, "client 'mallory' may not send overrides"),
        ("alice", b"{oops", {}, "payload is not valid JSON"),
        ("alice", b'{"command": "opt_out", "event_id": "e9"}', {}, "no event 'e9' is known to this gateway"),
        ("alice", b'{"command": "resume"}', {}, "the gateway failed to carry out resume: RuntimeError: boom"),
        ("alice", b'{"command": "pause"}', {"retained": True}, "retained override commands are ignored"),
        ("alice", b'{"command": "pause", "pad": "' + b"x" * 300 + b'"}', {}, "at most 256 are accepted"),
    ]
    for identity, payload, kw, reason in cases:
        out = await h.handle(identity, payload, **kw)
        assert not out.accepted and reason in out.answer, out.answer
    assert control.calls == [("opt_out", "e9", "by alice"), ("resume", "by alice")]  # nothing refused earlier reached it
    assert [o[2] for o in hooks.overrides] == [False] * len(cases)
    assert hooks.overrides[0][:2] == ("mallory", {"command": "pause", "request_id": "m1"})
    assert hooks.overrides[1][1] == {"raw": "{oops"}
    assert [p[0] for p in hooks.problems] == ["override_refused"] * len(cases)
    assert "mallory" in hooks.problems[0][1] and "not in sinks.mqtt.override_allow" in hooks.problems[0][1]
    assert (h.handled, h.refused) == (len(cases), len(cases))


async def test_without_a_control_every_command_is_refused() -> None:
    hooks = Hooks()
    out = await handler(None, hooks).handle("alice", b'{"command": "pause"}')
    assert not out.accepted and "no operator control" in out.answer
