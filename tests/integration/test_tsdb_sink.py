"""The time-series sink against a real VictoriaMetrics: points exported back with their own times and
values, and a DB outage in the middle of a stream that loses and duplicates nothing.

Needs the test DB (``scripts/services.sh up``; ``DCFLEX_TEST_TSDB_URL``, default http://127.0.0.1:18428).
Every test tags its points with its own ``site`` (a uuid), so reruns never see old data. The outage
test stops and starts the DB with ``scripts/services.d/victoriametrics.sh stop-db`` / ``start-db``,
which keep its data.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.clock import SystemClock
from gateway.config.models import InfluxSinkConfig
from gateway.journal.outbox import Outbox
from gateway.sinks.tsdb import TsdbSink
from gateway.sinks.tsdb.writer import CHANNEL
from tests.waiting import until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
VM_SH = ROOT / "scripts" / "services.d" / "victoriametrics.sh"
URL = os.environ.get("DCFLEX_TEST_TSDB_URL", "http://127.0.0.1:18428")
HINT = "run `scripts/services.sh up`"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        try:
            async with session.get(f"{URL}/health") as health:
                assert health.status == 200, f"{URL}/health answered {health.status}: {HINT}"
        except aiohttp.ClientError as exc:
            pytest.fail(f"VictoriaMetrics is not reachable at {URL} ({exc}): {HINT}")
        yield session


Series = dict[tuple[str, tuple[tuple[str, str], ...]], list[tuple[int, float]]]


async def export(http: aiohttp.ClientSession, site: str) -> Series:
    """Every series tagged ``site``: (name, other labels) → [(ms, value)] in time order."""
    async with http.get(f"{URL}/internal/force_flush") as flushed:
        assert flushed.status == 200
    params = {"match[]": f'{{__name__=~"dcflex_.*",site="{site}"}}', "start": "0"}
    async with http.get(f"{URL}/api/v1/export", params=params) as resp:
        assert resp.status == 200, await resp.text()
        rows: list[dict[str, Any]] = [json.loads(line) for line in (await resp.text()).splitlines()]
    out = {}
    for row in rows:
        labels = dict(row["metric"])
        name = labels.pop("__name__")
        labels.pop("site")
        out[(name, tuple(sorted(labels.items())))] = sorted(zip(row["timestamps"], row["values"], strict=True))
    return out


def config(**over: object) -> InfluxSinkConfig:
    values: dict[str, object] = {"enabled": True, "url": URL, "org": "dcflex", "bucket": "dcflex", "token": "t",
                                 "batch_size": 50, "flush_interval_s": 0.1, "power_interval_s": 60, "timeout_s": 2,
                                 "retry_min_s": 0.2, "retry_max_s": 1}
    values.update(over)
    return InfluxSinkConfig.model_validate(values)


async def vm(command: str) -> None:
    proc = await asyncio.create_subprocess_exec(str(VM_SH), command, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    assert proc.returncode == 0, f"{VM_SH} {command} failed: {out.decode()}"


async def test_points_are_exported_with_their_own_times_values_and_tags(http: aiohttp.ClientSession) -> None:
    site = f"it-{uuid.uuid4().hex[:12]}"
    event = 'ev 1,"odd"=\\'  # every character line protocol must escape in a tag
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    t0 -= timedelta(seconds=t0.timestamp() % 60)  # on a power-interval boundary
    t0_ms = int(t0.timestamp()) * 1000

    def at(s: float) -> str:
        return (t0 + timedelta(seconds=s)).isoformat()

    sink = TsdbSink(config(), Outbox(":memory:"), clock=SystemClock(), site=site)
    task = asyncio.create_task(sink.run())
    await sink.emit("state", {"at": at(0.5), "event_id": event, "state": "holding", "detail": "ok", "modification": 1,
                              "target_kw": 600.0, "achieved_kw": 590.5})
    for s, kw in ((1, 700.0), (21, 650.0), (41, 600.0), (61, 590.0)):
        await sink.emit("power", {"at": at(s), "event_id": "", "kw": kw, "target_kw": 600.0, "baseline_kw": 800.0,
                                  "shed_kw": 800.0 - kw})
    await sink.emit("action", {"at": at(2.25), "event_id": event, "kind": "cap", "job_id": "j1", "nodes": ["n1"],
                               "watts": 250.0, "delta_kw": -1.5, "tier": "flex-25", "outcome": "done", "latency_s": 0.125,
                               "scheduler": "slurm"})
    await sink.emit("action", {"at": at(2.25), "event_id": event, "kind": "cap", "job_id": "j1", "nodes": ["n1"],
                               "watts": 200.0, "delta_kw": -0.5, "tier": "flex-25", "outcome": "done", "latency_s": 0.25,
                               "scheduler": "slurm"})  # same series, same instant: kept apart by one ms
    await sink.emit("impact", {"at": at(90), "event_id": event, "job_id": "j1", "tier": "flex-25", "gpus": 8,
                               "throughput_kept": 0.9, "lost_gpu_hours": 0.4})
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await sink.aclose()
    assert sink.stats()["written"] == 6 and sink.stats()["state"] == "ok"

    got = await export(http, site)
    ev = (("event_id", event), ("state", "holding"))
    act = (("event_id", event), ("job_id", "j1"), ("kind", "cap"), ("outcome", "done"), ("scheduler", "slurm"),
           ("tier", "flex-25"))
    imp = (("event_id", event), ("job_id", "j1"), ("tier", "flex-25"))
    assert got[("dcflex_event_target_kw", ev)] == [(t0_ms + 500, 600.0)]
    assert got[("dcflex_event_achieved_kw", ev)] == [(t0_ms + 500, 590.5)]
    assert got[("dcflex_event_state_code", ev)] == [(t0_ms + 500, 4.0)]
    assert got[("dcflex_site_power_actual_kw", ())] == [(t0_ms, 650.0), (t0_ms + 60_000, 590.0)]
    assert got[("dcflex_site_power_shed_kw", ())] == [(t0_ms, 150.0), (t0_ms + 60_000, 210.0)]
    assert got[("dcflex_site_power_samples", ())] == [(t0_ms, 3.0), (t0_ms + 60_000, 1.0)]
    assert got[("dcflex_action_watts", act)] == [(t0_ms + 2250, 250.0), (t0_ms + 2251, 200.0)]
    assert got[("dcflex_action_latency_s", act)] == [(t0_ms + 2250, 0.125), (t0_ms + 2251, 0.25)]
    assert got[("dcflex_job_impact_lost_gpu_hours", imp)] == [(t0_ms + 90_000, 0.4)]


async def test_db_outage_mid_stream_every_point_arrives_once_in_order(http: aiohttp.ClientSession, tmp_path: Path) -> None:
    site = f"it-{uuid.uuid4().hex[:12]}"
    t0_ms = (int(datetime.now(UTC).timestamp()) - 3600) * 1000
    problems: list[tuple[str, str]] = []

    async def on_problem(code: str, message: str) -> None:
        problems.append((code, message))

    outbox = Outbox(tmp_path / "journal.sqlite3")
    sink = TsdbSink(config(), outbox, clock=SystemClock(), site=site, on_problem=on_problem)
    task = asyncio.create_task(sink.run())
    n = 600

    async def produce() -> None:
        for i in range(n):  # about 6 s of records, one series per job, the sequence number as the value
            at = datetime.fromtimestamp((t0_ms + i * 10) / 1000, UTC).isoformat()
            await sink.emit("action", {"at": at, "event_id": "outage", "kind": "cap", "job_id": f"j{i % 3}",
                                       "nodes": [], "delta_kw": float(i), "tier": "flex-10", "outcome": "done",
                                       "latency_s": 0.01, "scheduler": "sim"})
            await asyncio.sleep(0.01)

    producer = asyncio.create_task(produce())
    try:
        await asyncio.sleep(1.0)
        await vm("stop-db")
        await until("the sink notices the outage", lambda: sink.stats()["state"] == "unavailable", 10)
        await asyncio.sleep(1.5)  # keeps emitting into the outbox
        assert outbox.count(CHANNEL) > 0
    finally:
        await vm("start-db")
    await producer
    await until("the outbox is drained", lambda: sink.stats()["state"] == "ok" and outbox.count(CHANNEL) == 0, 15)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await sink.aclose()

    assert [code for code, _ in problems] == ["tsdb_unavailable", "tsdb_recovered"]
    stats = sink.stats()
    assert stats["written"] == n and stats["failed"] == 0 and isinstance(stats["drained"], int) and stats["drained"] > 0
    got = await export(http, site)
    seen: list[tuple[int, float]] = []
    for j in range(3):
        labels = (("event_id", "outage"), ("job_id", f"j{j}"), ("kind", "cap"), ("outcome", "done"), ("scheduler", "sim"),
                  ("tier", "flex-10"))
        series = got[("dcflex_action_delta_kw", labels)]
        assert series == [(t0_ms + i * 10, float(i)) for i in range(j, n, 3)]  # each once, original time, nothing else
        seen += series
    assert sorted(seen) == [(t0_ms + i * 10, float(i)) for i in range(n)]
