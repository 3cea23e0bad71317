"""The writer against a real HTTP server on loopback standing in for the DB: batching, order, outbox
spill and drain, refused batches, timeouts, shutdown and cancellation."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp import web
from pydantic import SecretStr

from gateway.clock import SystemClock
from gateway.config.models import InfluxSinkConfig
from gateway.journal.outbox import Outbox
from gateway.sinks.tsdb import TsdbSink
from gateway.sinks.tsdb.writer import CHANNEL, TsdbWriter
from tests.waiting import until


class FakeDb:
    """``/api/v2/write`` on loopback; ``status`` is what it answers, ``reject`` a marker it answers 400 to."""

    def __init__(self) -> None:
        self.status = 204
        self.reject: str | None = None
        self.delay = 0.0
        self.requests: list[list[str]] = []
        self.queries: list[dict[str, str]] = []
        self.headers: list[str] = []
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def handle(self, request: web.Request) -> web.Response:
        body = (await request.read()).decode()
        if self.delay:
            await asyncio.sleep(self.delay)
        self.queries.append(dict(request.query))
        self.headers.append(request.headers.get("Authorization", ""))
        if self.reject is not None and self.reject in body:
            return web.Response(status=400, text='{"code":"invalid","message":"unable to parse"}')
        if self.status >= 300:
            return web.Response(status=self.status, text="try later")
        self.requests.append(body.split("\n"))
        return web.Response(status=204)

    @property
    def lines(self) -> list[str]:
        return [line for req in self.requests for line in req]

    async def start(self, port: int = 0) -> None:
        app = web.Application()
        app.router.add_post("/api/v2/write", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", port)
        await site.start()
        self.port = int(self.runner.addresses[0][1])

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


@pytest.fixture
async def db() -> AsyncIterator[FakeDb]:
    server = FakeDb()
    await server.start()
    yield server
    await server.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def config(port: int, **over: object) -> InfluxSinkConfig:
    values: dict[str, object] = {
        "enabled": True, "url": f"http://127.0.0.1:{port}", "org": "o", "bucket": "b", "batch_size": 3,
        "flush_interval_s": 0.05, "timeout_s": 2.0, "retry_min_s": 0.05, "retry_max_s": 0.2,
    }
    values.update(over)
    return InfluxSinkConfig.model_validate(values)


class Problems:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    async def __call__(self, code: str, message: str) -> None:
        self.seen.append((code, message))

    @property
    def codes(self) -> list[str]:
        return [code for code, _ in self.seen]


async def running(writer: TsdbWriter, body: Callable[[], Awaitable[None]]) -> None:
    """Run the writer's loop around ``body``, then stop it the way the gateway does (cancel, aclose)."""
    task = asyncio.create_task(writer.run())
    try:
        await body()
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await writer.aclose()


def lines(prefix: str, n: int, start: int = 0) -> list[str]:
    return [f"m,t={prefix} v={i} {1_000 + i}" for i in range(start, start + n)]


async def test_full_batches_go_at_once_and_the_rest_after_the_flush_interval(db: FakeDb) -> None:
    writer = TsdbWriter(config(db.port, flush_interval_s=0.5, token=SecretStr("s3cret")), Outbox(":memory:"),
                        clock=SystemClock())

    async def body() -> None:
        writer.add(lines("a", 7))
        await until("len(db.requests) == 2", lambda: len(db.requests) == 2, 5.0, every=0.01)
        assert [len(r) for r in db.requests] == [3, 3]  # two full batches, without waiting
        await asyncio.sleep(0.2)
        assert len(db.requests) == 2  # the seventh waits for the flush interval...
        await until("len(db.requests) == 3", lambda: len(db.requests) == 3, 5.0, every=0.01)  # ...and then goes
        # answered, too: a write cut off before its answer is sent again on the way out (at least once)
        await until("the writer to count 7 written", lambda: writer.stats()["written"] == 7, 5.0, every=0.01)

    await running(writer, body)
    assert db.lines == lines("a", 7)
    assert db.queries[0] == {"org": "o", "bucket": "b", "precision": "ms"}
    assert db.headers[0] == "Token s3cret"
    assert writer.stats()["written"] == 7 and writer.stats()["state"] == "ok"


async def test_outage_spills_to_the_outbox_and_drains_in_order_with_one_alert_each_way(db: FakeDb, tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "journal.sqlite3")
    problems = Problems()
    writer = TsdbWriter(config(db.port), outbox, clock=SystemClock(), on_problem=problems)

    async def body() -> None:
        writer.add(lines("x", 3, 0))
        await until("len(db.lines) == 3", lambda: len(db.lines) == 3, 5.0, every=0.01)
        db.status = 503
        for k in range(1, 6):  # keeps producing through the outage, across several retries
            writer.add(lines("x", 3, 3 * k))
            await asyncio.sleep(0.1)
        await until("outbox.count(CHANNEL) >= 5", lambda: outbox.count(CHANNEL) >= 5, 5.0, every=0.01)
        assert writer.stats()["state"] == "unavailable"
        db.status = 204
        await until("len(db.lines) == 18 and outbox.count(CHANNEL) == 0",
                    lambda: len(db.lines) == 18 and outbox.count(CHANNEL) == 0, 5.0, every=0.01)
        await until('"tsdb_recovered" in problems.codes', lambda: "tsdb_recovered" in problems.codes, 5.0, every=0.01)

    await running(writer, body)
    assert db.lines == lines("x", 18)  # each once, in the order produced
    assert problems.codes == ["tsdb_unavailable", "tsdb_recovered"]
    assert f"127.0.0.1:{db.port}" in problems.seen[0][1] and "outbox" in problems.seen[0][1]
    assert "15 points" in problems.seen[1][1]
    stats = writer.stats()
    assert (stats["written"], stats["queued"], stats["drained"], stats["failed"]) == (18, 15, 15, 0)


async def test_unreachable_db_loses_nothing_across_a_restart(db: FakeDb, tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    problems = Problems()
    closed = TsdbWriter(config(free_port()), Outbox(path), clock=SystemClock(), on_problem=problems)

    async def body() -> None:
        closed.add(lines("r", 4))
        await until('closed.stats()["state"] == "unavailable"', lambda: closed.stats()["state"] == "unavailable", 5.0, every=0.01)
        closed.add(lines("r", 2, 4))  # buffered when the gateway stops

    await running(closed, body)
    assert problems.codes == ["tsdb_unavailable"] and "ClientConnectorError" in problems.seen[0][1]
    assert Outbox(path).count(CHANNEL) >= 2  # aclose put the rest in the outbox, not on the floor

    again = TsdbWriter(config(db.port), Outbox(path), clock=SystemClock(), on_problem=problems)
    await running(again, lambda: until("the outbox drained and answered", lambda: len(db.lines) == 6
                                       and Outbox(path).count(CHANNEL) == 0, 5.0, every=0.01))
    assert db.lines == lines("r", 6)
    assert Outbox(path).count(CHANNEL) == 0
    assert problems.codes == ["tsdb_unavailable"]  # the new process never saw it down: nothing to announce


async def test_a_malformed_batch_is_dropped_and_does_not_block_the_rest(db: FakeDb) -> None:
    problems = Problems()
    writer = TsdbWriter(config(db.port), Outbox(":memory:"), clock=SystemClock(), on_problem=problems)
    db.reject = "BAD"

    async def body() -> None:
        bad = ["m,t=BAD v=1 1", *lines("b", 2), "m,t=BAD v=2 2", *lines("b", 2, 2)]  # two batches of 3
        writer.add([*lines("g", 3, 0), *bad, *lines("g", 3, 3)])
        await until('writer.stats()["failed"] == 6 and len(db.lines) == 6',
                    lambda: writer.stats()["failed"] == 6 and len(db.lines) == 6, 5.0, every=0.01)

    await running(writer, body)
    assert db.lines == lines("g", 6)
    assert problems.codes == ["tsdb_rejected"]  # once per streak, not once per batch
    assert "HTTP 400" in problems.seen[0][1] and "First line: m,t=BAD v=1 1" in problems.seen[0][1]


async def test_a_malformed_batch_in_the_outbox_is_dropped_and_the_rest_drained(db: FakeDb) -> None:
    outbox = Outbox(":memory:")
    outbox.put(CHANNEL, ["\n".join(lines("o", 2, 0)), "m,t=BAD v=1 1", "\n".join(lines("o", 1, 2)), "\n".join(lines("o", 3, 3))])
    db.reject = "BAD"
    writer = TsdbWriter(config(db.port), outbox, clock=SystemClock())
    await running(writer, lambda: until("outbox.count(CHANNEL) == 0 and len(db.lines) == 6",
                                        lambda: outbox.count(CHANNEL) == 0 and len(db.lines) == 6, 5.0, every=0.01))
    assert db.lines == lines("o", 6)
    assert writer.stats()["failed"] == 1 and writer.stats()["drained"] == 6


@pytest.mark.parametrize("status", [401, 404, 429, 500])
async def test_auth_bucket_and_server_errors_keep_the_points(db: FakeDb, status: int) -> None:
    outbox = Outbox(":memory:")
    writer = TsdbWriter(config(db.port), outbox, clock=SystemClock())
    db.status = status

    async def body() -> None:
        writer.add(lines("k", 3))
        await until("outbox.count(CHANNEL) == 1", lambda: outbox.count(CHANNEL) == 1, 5.0, every=0.01)
        assert writer.stats()["last_error"] is not None and f"HTTP {status}" in str(writer.stats()["last_error"])
        db.status = 204
        await until("outbox.count(CHANNEL) == 0", lambda: outbox.count(CHANNEL) == 0, 5.0, every=0.01)

    await running(writer, body)
    assert db.lines == lines("k", 3) and writer.stats()["failed"] == 0


async def test_a_write_that_times_out_is_kept_and_sent_again(db: FakeDb) -> None:
    outbox = Outbox(":memory:")
    problems = Problems()
    writer = TsdbWriter(config(db.port, timeout_s=0.2), outbox, clock=SystemClock(), on_problem=problems)
    db.delay = 1.0

    async def body() -> None:
        writer.add(lines("s", 3))
        await until("outbox.count(CHANNEL) == 1", lambda: outbox.count(CHANNEL) == 1, 5.0, every=0.01)
        db.delay = 0.0
        await until("outbox.count(CHANNEL) == 0", lambda: outbox.count(CHANNEL) == 0, 5.0, every=0.01)
        await until("len(db.lines) == 6", lambda: len(db.lines) == 6, 5.0, every=0.01)

    await running(writer, body)
    assert "no answer within 0.2 s" in problems.seen[0][1]
    # The slow request still landed after the writer gave up on it, so the DB got the batch twice: what
    # deduplication in the DB (same series, same millisecond) is for.
    assert sorted(db.lines) == sorted(lines("s", 3) * 2)


async def test_a_clean_shutdown_writes_what_is_buffered(db: FakeDb) -> None:
    writer = TsdbWriter(config(db.port, flush_interval_s=30.0, batch_size=100), Outbox(":memory:"), clock=SystemClock())

    async def body() -> None:
        writer.add(lines("c", 5))
        await asyncio.sleep(0.1)
        assert db.requests == []  # neither full nor old enough yet

    await running(writer, body)
    assert db.lines == lines("c", 5)


async def test_cancelled_in_the_middle_of_a_write_the_batch_is_still_delivered(db: FakeDb) -> None:
    writer = TsdbWriter(config(db.port), Outbox(":memory:"), clock=SystemClock())
    db.delay = 0.3

    async def body() -> None:
        writer.add(lines("z", 3))
        await asyncio.sleep(0.1)  # the request is in flight when the loop is cancelled

    await running(writer, body)
    assert set(db.lines) == set(lines("z", 3))


async def test_aclose_without_a_db_puts_everything_in_the_outbox() -> None:
    outbox = Outbox(":memory:")
    writer = TsdbWriter(config(free_port(), batch_size=2), outbox, clock=SystemClock())
    writer.add(lines("q", 5))
    await writer.aclose()
    assert [body for _, body in outbox.pending(CHANNEL)] == ["\n".join(lines("q", 2)), "\n".join(lines("q", 2, 2)),
                                                              lines("q", 1, 4)[0]]
    assert writer.stats()["queued"] == 5 and writer.stats()["written"] == 0


# ---------------------------------------------------------------- the sink around the writer
async def test_sink_maps_records_averages_power_and_skips_what_it_cannot_map(db: FakeDb) -> None:
    sink = TsdbSink(config(db.port, batch_size=100, power_interval_s=60), Outbox(":memory:"), clock=SystemClock(), site="dc1")
    t0 = datetime(2025, 5, 3, 14, 0, tzinfo=UTC)

    def at(s: float) -> str:
        return (t0 + timedelta(seconds=s)).isoformat()

    task = asyncio.create_task(sink.run())
    await sink.emit("state", {"at": at(0), "event_id": "e1", "state": "ramping", "detail": "", "modification": 0})
    for s, kw in ((1, 100.0), (30, 80.0), (59, 60.0), (61, 40.0)):
        await sink.emit("power", {"at": at(s), "event_id": "", "kw": kw, "target_kw": 50.0, "baseline_kw": 100.0,
                                  "shed_kw": 100.0 - kw})
    await sink.emit("power", {"at": at(62), "event_id": "", "kw": None})  # no reading: skipped, counted
    await sink.emit("plan", {"at": at(62), "event_id": "e1"})  # no point for plans
    await until("two points written and answered", lambda: len(db.lines) == 2 and sink.stats()["written"] == 2, 5.0,
                every=0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await sink.aclose()  # writes the open interval (one sample, at 61 s)
    assert db.lines == [
        "dcflex_event,event_id=e1,site=dc1,state=ramping state_code=3i,modification=0i 1746280800000",
        "dcflex_site_power,site=dc1 actual_kw=80.0,baseline_kw=100.0,target_kw=50.0,shed_kw=20.0,samples=3i 1746280800000",
        "dcflex_site_power,site=dc1 actual_kw=40.0,baseline_kw=100.0,target_kw=50.0,shed_kw=60.0,samples=1i 1746280860000",
    ]
    assert sink.stats()["skipped"] == 1 and sink.stats()["written"] == 3
