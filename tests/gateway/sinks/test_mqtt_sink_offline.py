"""The MQTT sink without a broker: what ``emit`` stores, and how ``run`` waits for one (backoff, one alert).

Runs against a loopback port nobody listens on, so it needs no service; the broker's side is in
``tests/integration/test_mqtt_sink.py``.
"""

from __future__ import annotations

import asyncio
import socket
from datetime import UTC, datetime
from pathlib import Path

from gateway.clock import ManualClock
from gateway.config.models import MqttSinkConfig
from gateway.journal.outbox import Outbox
from gateway.sinks.mqtt import CHANNEL, MqttSink, OutMessage
from tests.waiting import until

T0 = datetime(2025, 5, 20, 17, 0, tzinfo=UTC)


class RecordingClock(ManualClock):
    """A manual clock that remembers what was slept for."""

    def __init__(self) -> None:
        super().__init__(T0)
        self.slept: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        await super().sleep(seconds)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def alert(i: int) -> dict[str, object]:
    return {"at": T0.isoformat(), "event_id": "e1", "severity": "warning", "code": "test", "message": f"alert {i}"}


async def test_emit_stores_in_order_by_the_end_of_the_loop_turn(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "journal.sqlite3")
    sink = MqttSink(MqttSinkConfig(topic_prefix="t", site_id="s"), outbox, None, clock=ManualClock(T0))
    for i in range(3):
        await sink.emit("alert", alert(i))
    await sink.emit("power", {"at": T0.isoformat(), "event_id": "", "kw": 5.0})  # not an MQTT message
    await sink.emit("state", {"at": T0.isoformat(), "event_id": "e1", "state": "holding", "detail": ""})
    assert sink.stats()["queued"] == 4  # counted while still in memory
    await asyncio.sleep(0)  # the end of this loop turn
    rows = outbox.pending(CHANNEL)
    msgs = [OutMessage.decode(b) for _, b in rows]
    assert [m.topic for m in msgs] == ["t/s/alerts"] * 3 + ["t/s/events/e1"]
    assert [m.retain for m in msgs] == [False, False, False, True]
    assert '"alert 0"' in msgs[0].payload and '"alert 2"' in msgs[2].payload
    assert sink.stats() == {"connected": False, "queued": 4, "published": 0, "connects": 0, "last_error": None,
                            "overrides_handled": 0, "overrides_refused": 0}
    # 1,000 messages in one turn are written without waiting for its end.
    for i in range(1000):
        await sink.emit("alert", alert(i))
    assert outbox.count(CHANNEL) == 1004
    outbox.close()


async def test_unreachable_broker_backs_off_and_alerts_once(tmp_path: Path) -> None:
    clock = RecordingClock()
    problems: list[tuple[str, str]] = []

    async def on_problem(code: str, message: str) -> None:
        problems.append((code, message))

    cfg = MqttSinkConfig(host="127.0.0.1", port=closed_port(), topic_prefix="t", site_id="s",
                         reconnect_min_s=1.0, reconnect_max_s=4.0)
    outbox = Outbox(tmp_path / "journal.sqlite3")
    sink = MqttSink(cfg, outbox, None, clock=clock, on_problem=on_problem)
    task = asyncio.create_task(sink.run())
    for n in range(1, 6):
        await until(f"retry {n} waits", lambda n=n: len(clock.slept) == n, 5.0, every=0.01)  # type: ignore[misc]
        await sink.emit("alert", alert(n))
        await clock.advance(clock.slept[-1])
    assert clock.slept == [1.0, 2.0, 4.0, 4.0, 4.0]  # doubling, capped at reconnect_max_s
    assert [p[0] for p in problems] == ["mqtt_unavailable"]  # once, not per retry
    assert f"127.0.0.1:{cfg.port}" in problems[0][1] and "outbox" in problems[0][1]
    stats = sink.stats()
    assert stats["connected"] is False and stats["queued"] == 5 and "refused" in str(stats["last_error"]).lower()
    await sink.aclose()  # stops the wait at once, even on a clock that does not move
    await asyncio.wait_for(task, 2.0)
    assert outbox.count(CHANNEL) == 5  # kept for the next start
    outbox.close()


async def test_hooks_that_fail_do_not_stop_the_sink(tmp_path: Path) -> None:
    clock = RecordingClock()
    calls: list[str] = []

    async def broken(code: str, message: str) -> None:
        calls.append(code)
        raise RuntimeError("alerting is down")

    cfg = MqttSinkConfig(host="127.0.0.1", port=closed_port(), topic_prefix="t", site_id="s")
    sink = MqttSink(cfg, Outbox(":memory:"), None, clock=clock, on_problem=broken)
    task = asyncio.create_task(sink.run())
    await until("first retry waits", lambda: len(clock.slept) == 1, 5.0, every=0.01)
    assert calls == ["mqtt_unavailable"] and not task.done()
    await sink.aclose()
    await asyncio.wait_for(task, 2.0)
