"""The MQTT sink against a real Mosquitto 2.0, watched by real aiomqtt subscribers.

Needs the test broker (``scripts/services.sh up``; ``DCFLEX_TEST_MQTT_HOST``/``DCFLEX_TEST_MQTT_PORT``,
default 127.0.0.1:18830). Every test works under its own topic prefix and clears the retained messages
it leaves. The outage test stops and restarts the broker (``scripts/services.d/mosquitto.sh
stop-broker``/``start-broker``), whose store (retained messages, persistent sessions and their queued
messages) survives that: the subscriber keeps a persistent session (clean_session=False, QoS 1), so
what the gateway publishes from its outbox after the restart waits for it at the broker however the
two reconnections interleave. That makes the exactly-once-in-order check deterministic.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from gateway.clock import SystemClock
from gateway.config.models import MqttSinkConfig
from gateway.exceptions import OverrideRefused
from gateway.journal.outbox import Outbox
from gateway.sinks.mqtt import CHANNEL, MqttSink
from tests.waiting import until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
MOSQUITTO_SH = ROOT / "scripts" / "services.d" / "mosquitto.sh"
HOST = os.environ.get("DCFLEX_TEST_MQTT_HOST", "127.0.0.1")
PORT = int(os.environ.get("DCFLEX_TEST_MQTT_PORT", "18830"))


@pytest.fixture
def broker() -> tuple[str, int]:
    try:
        socket.create_connection((HOST, PORT), timeout=2).close()
    except OSError as exc:
        pytest.fail(f"Mosquitto is not reachable at {HOST}:{PORT} ({exc}): run `scripts/services.sh up`")
    return HOST, PORT


@pytest.fixture
async def prefix(broker: tuple[str, int]) -> AsyncIterator[str]:
    """A fresh topic prefix; its retained messages are cleared afterwards."""
    p = f"dcflex-test-{uuid.uuid4().hex[:10]}"
    yield p
    retained: list[str] = []
    try:
        async with aiomqtt.Client(HOST, PORT) as client:
            await client.subscribe(f"{p}/#")
            messages = aiter(client.messages)
            while True:  # retained messages come at once on subscribing: stop at the first quiet 0.15 s
                try:
                    m = await asyncio.wait_for(anext(messages), 0.15)
                except TimeoutError:
                    break
                if m.retain:
                    retained.append(m.topic.value)
            for topic in retained:
                await client.publish(topic, b"", qos=1, retain=True)
    except aiomqtt.MqttError:
        pass  # the broker is gone (a failed outage test); `services.sh up` starts clean anyway


def config(prefix: str, **kw: Any) -> MqttSinkConfig:
    base: dict[str, Any] = {"enabled": True, "host": HOST, "port": PORT, "topic_prefix": prefix, "site_id": "site-a",
                            "client_id": f"gw-{prefix}", "keepalive_s": 10, "reconnect_min_s": 0.2, "reconnect_max_s": 1.0}
    return MqttSinkConfig(**(base | kw))


class Subscriber:
    """A real aiomqtt subscriber that keeps what it receives: (topic, retain, qos, payload as JSON or text)."""

    def __init__(self, topic_filter: str, *, identifier: str | None = None, persistent: bool = False) -> None:
        self.filter = topic_filter
        self.identifier = identifier
        self.persistent = persistent
        self.got: list[tuple[str, bool, int, Any]] = []
        self._client: aiomqtt.Client | None = None
        self._reader: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        self._client = aiomqtt.Client(HOST, PORT, identifier=self.identifier, clean_session=not self.persistent)
        await self._client.__aenter__()
        await self._client.subscribe(self.filter, qos=1)
        self._reader = asyncio.create_task(self._read(self._client))

    async def _read(self, client: aiomqtt.Client) -> None:
        try:
            async for m in client.messages:
                raw = m.payload if isinstance(m.payload, bytes) else str(m.payload).encode()
                try:
                    body: Any = json.loads(raw)
                except ValueError:
                    body = raw.decode("utf-8", "replace")
                self.got.append((m.topic.value, bool(m.retain), int(m.qos), body))
        except aiomqtt.MqttError:
            pass  # the broker went away; `reconnect` picks up

    async def reconnect(self, within: float = 15.0) -> None:
        await self.close()
        for _ in range(int(within / 0.2)):
            try:
                await self.connect()
                return
            except aiomqtt.MqttError:
                await asyncio.sleep(0.2)
        raise AssertionError(f"could not reconnect to {HOST}:{PORT} within {within} s")

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        if self._client is not None:
            try:
                await self._client.__aexit__(None, None, None)
            except aiomqtt.MqttError:
                pass
        self._client = self._reader = None

    async def forget(self) -> None:
        """End a persistent session at the broker (a clean-session connect under the same id)."""
        await self.close()
        async with aiomqtt.Client(HOST, PORT, identifier=self.identifier, clean_session=True):
            pass

    def on(self, suffix: str) -> list[tuple[str, bool, int, Any]]:
        return [g for g in self.got if g[0].endswith(suffix)]

    async def until(self, what: str, probe: Callable[[], bool], within: float = 10.0) -> None:
        await until(what, probe, within, every=0.02, detail=lambda: f"received {self.got[-5:]}")

    async def __aenter__(self) -> Subscriber:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


@asynccontextmanager
async def running(sink: MqttSink) -> AsyncIterator[MqttSink]:
    task = asyncio.create_task(sink.run())
    for _ in range(500):
        if sink.stats()["connected"] or task.done():
            break
        await asyncio.sleep(0.01)
    if task.done():
        task.result()
    assert sink.stats()["connected"], f"the sink did not connect: {sink.stats()}"
    try:
        yield sink
    finally:
        await sink.aclose()
        await asyncio.wait_for(task, 10)


def alert(i: int, code: str = "stream") -> dict[str, object]:
    return {"at": "2025-05-20T17:00:00+00:00", "event_id": "e1", "severity": "warning", "code": code,
            "message": f"alert {i}", "i": i}


# ------------------------------------------------------------------------------------------ tests


async def test_status_alerts_and_event_state_reach_subscribers(prefix: str) -> None:
    outbox = Outbox(":memory:")
    sink = MqttSink(config(prefix), outbox, None, clock=SystemClock())
    async with Subscriber(f"{prefix}/#") as sub:
        async with running(sink):
            await sub.until("the online status", lambda: bool(sub.on("/status")))
            topic, _, qos, status = sub.on("/status")[0]
            assert topic == f"{prefix}/site-a/status" and qos == 1
            assert (status["v"], status["state"], status["reason"], status["site"]) == (1, "online", "started", "site-a")
            for i in range(5):
                await sink.emit("alert", alert(i))
            await sink.emit("state", {"at": "2025-05-20T17:01:00+00:00", "event_id": "evt/1", "state": "holding",
                                      "detail": "held", "modification": 2, "target_kw": 800.0, "achieved_kw": 801.5})
            await sub.until("5 alerts and the state", lambda: len(sub.on("/alerts")) == 5 and bool(sub.on("/events/evt%2F1")))
            alerts = sub.on("/alerts")
            assert [a[3]["facts"]["i"] for a in alerts] == [0, 1, 2, 3, 4]
            assert all(a[2] == 1 and not a[1] for a in alerts)  # QoS 1, not retained
            assert len({a[3]["msg_id"] for a in alerts}) == 5
            await asyncio.wait_for(sink.drained(), 5)
            assert sink.stats()["queued"] == 0 and sink.stats()["published"] == 6
            async with Subscriber(f"{prefix}/site-a/#") as late:  # retained: a subscriber that comes later sees them
                await late.until("retained status and event", lambda: bool(late.on("/status") and late.on("/events/evt%2F1")))
                assert late.on("/status")[0][1] and late.on("/status")[0][3]["state"] == "online"
                ev = late.on("/events/evt%2F1")[0]
                assert ev[1] and ev[3]["state"] == "holding" and ev[3]["event_id"] == "evt/1" and ev[3]["achieved_kw"] == 801.5
        await sub.until("offline on a clean shutdown", lambda: len(sub.on("/status")) == 2)
        off = sub.on("/status")[1][3]
        assert (off["state"], off["reason"]) == ("offline", "shutdown") and off["since"] is not None


async def test_cancelling_run_still_says_offline(prefix: str) -> None:
    sink = MqttSink(config(prefix), Outbox(":memory:"), None, clock=SystemClock())
    async with Subscriber(f"{prefix}/site-a/status") as sub:
        task = asyncio.create_task(sink.run())
        await sub.until("online", lambda: bool(sub.got) and sub.got[-1][3]["state"] == "online")
        task.cancel()  # e.g. the gateway's task group ends without calling aclose()
        with pytest.raises(asyncio.CancelledError):
            await task
        await sub.until("offline", lambda: sub.got[-1][3]["state"] == "offline")
        assert sub.got[-1][3]["reason"] == "shutdown"  # published by the sink, not the broker's last will


CHILD = """
import asyncio, json, sys
from gateway.clock import SystemClock
from gateway.config.models import MqttSinkConfig
from gateway.journal.outbox import Outbox
from gateway.sinks.mqtt import MqttSink

async def main(args):
    sink = MqttSink(MqttSinkConfig(**args["config"]), Outbox(args["outbox"]), None, clock=SystemClock())
    task = asyncio.create_task(sink.run())
    for i in range(args["alerts"]):
        await sink.emit("alert", {"at": "2025-05-20T17:00:00+00:00", "event_id": "", "severity": "info",
                                  "code": "stream", "message": f"alert {i}", "i": i})
    await asyncio.sleep(0)  # the end of the loop turn: the alerts are in the outbox
    while args["wait_connected"] and not sink.stats()["connected"]:
        await asyncio.sleep(0.01)
    print("ready", flush=True)
    await task

asyncio.run(main(json.loads(sys.argv[1])))
"""


async def run_child(cfg: MqttSinkConfig, outbox: Path, alerts: int, wait_connected: bool) -> asyncio.subprocess.Process:
    """A gateway's MQTT sink in its own process, so it can die without a DISCONNECT; returns once it is ready."""
    args = {"config": cfg.model_dump(mode="json"), "outbox": str(outbox), "alerts": alerts, "wait_connected": wait_connected}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", CHILD, json.dumps(args), cwd=ROOT,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 15)
    assert line.strip() == b"ready", f"the child sink did not start: {line!r}"
    return proc


async def kill(proc: asyncio.subprocess.Process) -> None:
    proc.send_signal(signal.SIGKILL)
    await proc.wait()


async def test_last_will_marks_a_killed_gateway_offline(prefix: str, tmp_path: Path) -> None:
    async with Subscriber(f"{prefix}/site-a/status") as sub:
        proc = await run_child(config(prefix), tmp_path / "journal.sqlite3", 0, wait_connected=True)
        try:
            await sub.until("online", lambda: any(s[3]["state"] == "online" for s in sub.got))
        finally:
            await kill(proc)  # no DISCONNECT: the broker publishes the will
        await sub.until("the last will", lambda: sub.got[-1][3]["state"] == "offline")
        will = sub.got[-1][3]
        assert (will["reason"], will["since"], will["v"]) == ("connection lost", None, 1)
    async with Subscriber(f"{prefix}/site-a/status") as late:
        await late.until("the retained will", lambda: bool(late.got))
        assert late.got[0][1] and late.got[0][3]["state"] == "offline" and late.got[0][3]["reason"] == "connection lost"


async def test_a_restarted_gateway_delivers_what_a_killed_one_stored(prefix: str, tmp_path: Path) -> None:
    journal = tmp_path / "journal.sqlite3"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        nowhere = int(s.getsockname()[1])
    proc = await run_child(config(prefix, port=nowhere), journal, 50, wait_connected=False)  # its broker is unreachable
    await kill(proc)
    outbox = Outbox(journal)
    assert outbox.count(CHANNEL) == 50
    async with Subscriber(f"{prefix}/site-a/alerts") as sub, running(MqttSink(config(prefix), outbox, None, clock=SystemClock())):
        await sub.until("the 50 stored alerts", lambda: len(sub.got) >= 50)
        await asyncio.sleep(0.2)  # room for a duplicate to show
    assert [g[3]["facts"]["i"] for g in sub.got] == list(range(50))
    assert outbox.count(CHANNEL) == 0
    outbox.close()


class RecordingControl:
    """The other side of ``OperatorControl``: records calls, knows one event (``e1``)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    async def opt_out(self, event_id: str, reason: str) -> str:
        self.calls.append(("opt_out", event_id, reason))
        if event_id != "e1":
            raise OverrideRefused(f"no event {event_id!r} is known to this gateway")
        return f"opted out of {event_id}: undoing 3 command(s)"

    async def pause_actions(self, reason: str) -> str:
        self.calls.append(("pause", reason))
        return "actions paused"

    async def resume_actions(self, reason: str) -> str:
        self.calls.append(("resume", reason))
        return "actions resumed"


async def test_overrides_are_checked_run_answered_journaled_and_alerted(prefix: str) -> None:
    control = RecordingControl()
    journaled: list[tuple[str, Mapping[str, object], bool, str]] = []
    sink: MqttSink

    async def on_override(identity: str, command: Mapping[str, object], accepted: bool, answer: str) -> None:
        journaled.append((identity, dict(command), accepted, answer))

    async def on_problem(code: str, message: str) -> None:  # as the gateway does: an alert, through every sink
        await sink.emit("alert", {"at": "2025-05-20T17:00:00+00:00", "event_id": "", "severity": "warning",
                                  "code": code, "message": message})

    cfg = config(prefix, override_allow=("alice", "ops-bot"), max_override_bytes=256)
    sink = MqttSink(cfg, Outbox(":memory:"), control, clock=SystemClock(), on_problem=on_problem, on_override=on_override)
    base = f"{prefix}/site-a"
    sent = [
        ("alice", {"command": "opt_out", "event_id": "e1", "reason": "cooling fault", "request_id": "r1"}),
        ("alice", {"command": "pause", "request_id": "r2"}),
        ("mallory", {"command": "resume", "request_id": "r3"}),
        ("alice", b"{this is not json"),
        ("alice", {"command": "pause", "request_id": "r5", "reason": "x" * 300}),
        ("alice", {"command": "reboot", "request_id": "r6"}),
        ("alice", {"command": "opt_out", "request_id": "r7"}),
        ("ops-bot", {"command": "opt_out", "event_id": "e2", "request_id": "r8"}),
        ("alice", {"command": "pause", "request_id": "r2"}),  # a repeat: answered again, not run again
    ]
    async with running(sink), Subscriber(f"{base}/#") as sub:
        for identity, body in sent:
            payload = body if isinstance(body, bytes) else json.dumps(body).encode()
            async with aiomqtt.Client(HOST, PORT, identifier=f"{identity}-{prefix}") as operator:
                await operator.publish(f"{base}/override/{identity}", payload, qos=1)
        await sub.until("9 replies", lambda: len([g for g in sub.got if g[0].endswith("/reply")]) == len(sent))
        await sub.until("the refusals' alerts", lambda: len(sub.on("/alerts")) == 6)
        replies = [g for g in sub.got if g[0].endswith("/reply")]
    assert [r[0] for r in replies] == [f"{base}/override/{i}/reply" for i, _ in sent]
    answers = [(r[3]["request_id"], r[3]["accepted"], r[3]["answer"]) for r in replies]
    assert answers[0] == ("r1", True, "opted out of e1: undoing 3 command(s)")
    assert answers[1] == ("r2", True, "actions paused")
    assert answers[2][:2] == ("r3", False) and "client 'mallory' may not send overrides" in answers[2][2]
    assert answers[3][:2] == (None, False) and answers[3][2].startswith("payload is not valid JSON")
    assert answers[4][:2] == (None, False) and "bytes; at most 256 are accepted" in answers[4][2]  # too big to be read
    assert answers[5][:2] == ("r6", False) and "command: Input should be 'opt_out', 'pause' or 'resume'" in answers[5][2]
    assert answers[6] == ("r7", False, "opt_out needs an event_id")
    assert answers[7] == ("r8", False, "no event 'e2' is known to this gateway")
    assert answers[8] == ("r2", True, "actions paused")
    assert control.calls == [("opt_out", "e1", "cooling fault (by alice)"), ("pause", "by alice"),
                             ("opt_out", "e2", "by ops-bot")]
    assert [(j[0], j[2]) for j in journaled] == [("alice", True), ("alice", True), ("mallory", False), ("alice", False),
                                                 ("alice", False), ("alice", False), ("alice", False), ("ops-bot", False)]
    assert journaled[0][1] == {"v": 1, "command": "opt_out", "event_id": "e1", "reason": "cooling fault", "request_id": "r1"}
    alerts = [a[3] for a in sub.on("/alerts")]
    assert {a["code"] for a in alerts} == {"override_refused"}
    assert "mallory" in alerts[0]["message"] and "override_allow" in alerts[0]["message"]
    # The gateway never took its own replies on override/<id>/reply for commands.
    assert sink.stats()["overrides_handled"] == len(sent) - 1  # the repeat is not counted again


async def test_aclose_lets_a_command_being_carried_out_finish(prefix: str) -> None:
    started, finished = asyncio.Event(), asyncio.Event()
    journaled: list[tuple[str, bool, str]] = []

    class SlowControl(RecordingControl):
        async def pause_actions(self, reason: str) -> str:
            started.set()
            await asyncio.sleep(0.5)  # e.g. the engine undoing commands
            finished.set()
            return "actions paused"

    async def on_override(identity: str, command: Mapping[str, object], accepted: bool, answer: str) -> None:
        journaled.append((identity, accepted, answer))

    sink = MqttSink(config(prefix, override_allow=("alice",)), Outbox(":memory:"), SlowControl(), clock=SystemClock(),
                    on_override=on_override)
    task = asyncio.create_task(sink.run())
    async with Subscriber(f"{prefix}/site-a/status") as sub:
        await sub.until("online", lambda: bool(sub.got))
    async with aiomqtt.Client(HOST, PORT, identifier=f"alice-{prefix}") as operator:
        await operator.publish(f"{prefix}/site-a/override/alice", b'{"command": "pause"}', qos=1)
    await asyncio.wait_for(started.wait(), 5)
    await sink.aclose()
    await asyncio.wait_for(task, 5)
    assert finished.is_set() and journaled == [("alice", True, "actions paused")]


async def services(cmd: str) -> None:
    proc = await asyncio.create_subprocess_exec(str(MOSQUITTO_SH), cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, f"mosquitto.sh {cmd} failed: {err.decode()}"


async def test_broker_outage_mid_stream_delivers_every_alert_once_in_order(prefix: str, tmp_path: Path) -> None:
    total, stop_at, start_at = 300, 80, 180
    emitted: list[str] = []
    problems: list[str] = []
    sink: MqttSink

    async def on_problem(code: str, message: str) -> None:
        problems.append(code)
        await sink.emit("alert", alert(-1, code) | {"message": message})

    outbox = Outbox(tmp_path / "journal.sqlite3")
    sink = MqttSink(config(prefix), outbox, None, clock=SystemClock(), on_problem=on_problem)
    sub = Subscriber(f"{prefix}/site-a/alerts", identifier=f"sub-{prefix}", persistent=True)
    await sub.connect()
    broker_down = False
    try:
        async with running(sink):
            for i in range(total):
                await sink.emit("alert", alert(i))
                emitted.append(f"alert {i}")
                if i == stop_at:
                    await services("stop-broker")  # mid-stream: earlier alerts may still be in flight
                    broker_down = True
                elif i == start_at:
                    assert sink.stats()["connected"] is False and sink.stats()["queued"] > 0
                    await services("start-broker")
                    broker_down = False
                    await sub.reconnect()  # the same persistent session: what was queued for it is delivered
                await asyncio.sleep(0.004)
            await sub.until("every alert", lambda: len([g for g in sub.got if g[3]["code"] == "stream"]) >= total, within=15)
            await asyncio.wait_for(sink.drained(), 10)
            await asyncio.sleep(0.3)  # room for a late duplicate to show
    finally:
        if broker_down:
            await services("start-broker")
        await sub.forget()
    stream = [g[3] for g in sub.got if g[3]["code"] == "stream"]
    ids = [s["msg_id"] for s in stream]
    assert len(ids) == len(set(ids)), f"{len(ids) - len(set(ids))} duplicate(s) received"
    assert [s["message"] for s in stream] == emitted  # every one, once, in order
    assert problems == ["mqtt_unavailable", "mqtt_recovered"]  # once each, not per retry
    codes = [g[3]["code"] for g in sub.got if g[3]["code"] != "stream"]
    assert codes == ["mqtt_unavailable", "mqtt_recovered"]  # the outage's own alerts went out through the outbox
    assert outbox.count(CHANNEL) == 0 and sink.stats()["connects"] >= 2
    outbox.close()


async def test_broker_killed_with_publishes_in_flight_dedupes_by_msg_id(prefix: str, tmp_path: Path) -> None:
    """The hard case: the broker stops while a full window of publishes awaits its PUBACKs. Those without
    one are published again after the reconnect; the few the broker had already taken arrive twice,
    with the same msg_id. Deduplicated by msg_id, the consumer has every alert once, in order."""
    total, stop_at = 1500, 500
    outbox = Outbox(tmp_path / "journal.sqlite3")
    sink = MqttSink(config(prefix), outbox, None, clock=SystemClock())
    sub = Subscriber(f"{prefix}/site-a/alerts", identifier=f"sub-{prefix}", persistent=True)
    await sub.connect()
    stopping: asyncio.Task[None] | None = None
    try:
        async with running(sink):
            for i in range(total):
                await sink.emit("alert", alert(i))
                if i % 50 == 49:
                    await asyncio.sleep(0.002)  # let the publishers run: the window stays full
                if i == stop_at:
                    stopping = asyncio.create_task(services("stop-broker"))  # emitting goes on meanwhile
            assert stopping is not None
            await stopping
            assert sink.stats()["connected"] is False and sink.stats()["queued"] > 0
            await services("start-broker")
            stopping = None
            await sub.reconnect()
            await sub.until("every alert", lambda: len({g[3]["msg_id"] for g in sub.got}) >= total, within=15)
            await asyncio.wait_for(sink.drained(), 10)
            await asyncio.sleep(0.3)  # room for a late duplicate to show
    finally:
        if stopping is not None:
            await asyncio.gather(stopping, return_exceptions=True)
            await services("start-broker")
        await sub.forget()
    seen: set[str] = set()
    first_copies = []
    for g in sub.got:
        if g[3]["msg_id"] not in seen:
            seen.add(g[3]["msg_id"])
            first_copies.append(g[3]["message"])
    assert first_copies == [f"alert {i}" for i in range(total)]  # every one, in order, once deduplicated
    duplicates = len(sub.got) - len(seen)
    assert duplicates <= sink.config.max_inflight  # at most the window that was in flight when the broker died
    outbox.close()
