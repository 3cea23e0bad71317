"""Time-series sink throughput and outbox drain, against the real VictoriaMetrics. Prints one JSON object.

    scripts/services.sh up   # once: the test VictoriaMetrics on 127.0.0.1:18428
    .venv/bin/python -m benchmarks.tsdb_bench [--url URL] [--points 300000] [--rounds 3] [--outage-s 300 --rate 1000]

1. Sustained points/s from the gateway's sink: pre-built engine ``action`` records (fresh series per
   run) go through ``TsdbSink.emit`` (200 per turn of the event loop, then it yields) → writer →
   VictoriaMetrics; timed from the first emit until ``aclose`` has written everything. A task that
   sleeps 10 ms and records its overshoot measures the event loop's lag meanwhile (p50/p99/max).
2. Beside it, in the same run and alternating with it: the raw influxdb-client async API writing the
   same lines, formatted before the clock starts, one request at a time, in batches of 1,000 and 5,000,
   two ways: ``lines`` hands each batch over as a list of line-protocol strings (the client's documented
   form, and the baseline the issue measured at ~150k points/s), ``joined`` joins and encodes each
   batch itself and hands over bytes (the client then does nothing but send them: the HTTP and
   database floor, which is also what the sink's writer does after mapping the records).
   Targets: sink ≥ 100k points/s, ≥ 0.6 × raw (``lines``) at the sink's batch size, lag p99 ≤ 50 ms;
   ``ratio_to_joined`` is reported beside it. Each figure is the median over the rounds.
3. Outbox drain after an outage: ``--outage-s`` seconds at ``--rate`` points/s (default 5 min at 1k/s:
   300k points, timestamps spread over those 5 minutes) go through a sink whose DB is a closed port, so
   they land in the outbox as a real outage leaves them (one row per flush, ``--rate`` points each);
   then a sink pointed at the real DB drains them: points/s and the loop's lag while it does.

The machine's other work (and VictoriaMetrics itself, which shares the CPUs with this process) moves
these figures; ``cpu_us_per_point`` is this process's CPU time per point.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync

from gateway.clock import SystemClock
from gateway.config.models import InfluxSinkConfig
from gateway.journal.outbox import Outbox
from gateway.sinks.tsdb import TsdbSink
from gateway.sinks.tsdb.points import LineMapper
from gateway.sinks.tsdb.writer import CHANNEL

TARGETS = {"sink_points_per_s": 100_000, "ratio_to_raw": 0.6, "lag_p99_ms": 50.0}
Record = tuple[str, Mapping[str, object]]
CHUNK = 200  # records the producer emits per turn of the event loop (about 1 ms of work)


def records(n: int, start: datetime, step: timedelta, tag: str) -> list[Record]:
    """``n`` engine action records, ``step`` apart, over 200 jobs of one event (the shape executor.py emits)."""
    tiers = ("flex-10", "flex-25", "flex-50", "preemptible")
    out: list[Record] = []
    for i in range(n):
        job = i % 200
        out.append(("action", {
            "at": (start + step * i).isoformat(), "event_id": f"bench-{tag}", "key": f"bench-{tag}/0/cap/{i}",
            "kind": "cap", "job_id": f"job-{job}", "nodes": [f"gpu{job:03d}"], "watts": 150.0 + i % 200,
            "delta_kw": -round(0.01 * (i % 97), 3), "tier": tiers[job % 4], "reason": "shed for event",
            "outcome": "done", "latency_s": 0.001 * (i % 1000), "scheduler": "slurm",
        }))
    return out


class LagProbe:
    """Sleeps 10 ms in a loop and records how late it wakes."""

    def __init__(self) -> None:
        self.lags: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            t = time.perf_counter()
            await asyncio.sleep(0.010)
            self.lags.append(max(0.0, time.perf_counter() - t - 0.010))

    def __enter__(self) -> LagProbe:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()

    def summary(self) -> dict[str, float]:
        lags = sorted(self.lags) or [0.0]

        def pick(q: float) -> float:
            return round(1000 * lags[min(len(lags) - 1, int(q * len(lags)))], 2)

        return {"p50_ms": pick(0.50), "p99_ms": pick(0.99), "max_ms": round(1000 * lags[-1], 2), "samples": len(self.lags)}


def sink_config(url: str, batch: int, flush_s: float = 1.0) -> InfluxSinkConfig:
    return InfluxSinkConfig(enabled=True, url=url, org="dcflex", bucket="dcflex", batch_size=batch,
                            flush_interval_s=flush_s, timeout_s=30.0, retry_min_s=0.5, retry_max_s=5.0)


async def run_sink(url: str, recs: list[Record], batch: int, site: str) -> dict[str, Any]:
    sink = TsdbSink(sink_config(url, batch), Outbox(":memory:"), clock=SystemClock(), site=site)
    task = asyncio.create_task(sink.run())
    with LagProbe() as probe:
        cpu, t = time.process_time(), time.perf_counter()
        for i in range(0, len(recs), CHUNK):
            for kind, payload in recs[i : i + CHUNK]:
                await sink.emit(kind, payload)
            await asyncio.sleep(0)
        emitted = time.perf_counter() - t
        # Until the writer has the last full batch written (through the outbox, if it had to spill),
        # then aclose writes the rest.
        full = len(recs) - len(recs) % batch
        await until(lambda: sink.stats()["written"] >= full and not sink.stats()["outbox_batches"], within=300)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await sink.aclose()
        elapsed, cpu = time.perf_counter() - t, time.process_time() - cpu
    stats = sink.stats()
    assert stats["written"] == len(recs), stats
    return {"points_per_s": round(len(recs) / elapsed), "emit_only_per_s": round(len(recs) / emitted),
            "cpu_us_per_point": round(1e6 * cpu / len(recs), 2), "queued_in_outbox": stats["queued"], "lag": probe.summary()}


async def run_raw(url: str, lines: list[str], batch: int, joined: bool) -> dict[str, Any]:
    async with InfluxDBClientAsync(url=url, token="bench", org="dcflex", timeout=30_000) as client:
        api = client.write_api()
        cpu, t = time.process_time(), time.perf_counter()
        for i in range(0, len(lines), batch):
            chunk = lines[i : i + batch]
            record: Any = "\n".join(chunk).encode() if joined else chunk
            await api.write("dcflex", "dcflex", record=record, write_precision="ms")  # type: ignore[arg-type]
        elapsed, cpu = time.perf_counter() - t, time.process_time() - cpu
    return {"points_per_s": round(len(lines) / elapsed), "cpu_us_per_point": round(1e6 * cpu / len(lines), 2)}


async def throughput(url: str, n: int, rounds: int, batch: int) -> dict[str, Any]:
    start = datetime.now(UTC) - timedelta(days=2)
    sink_runs: list[dict[str, Any]] = []
    raw_runs: dict[tuple[str, int], list[dict[str, Any]]] = {(form, size): [] for form in ("lines", "joined")
                                                            for size in (1000, 5000)}
    for r in range(rounds):
        tag = uuid.uuid4().hex[:10]
        base = start + timedelta(hours=r)
        for form, size in raw_runs:  # the same records the sink maps, as lines, tagged apart
            mapper = LineMapper(site=f"raw-{form}{size}-{tag}")
            lines = [line for kind, p in records(n, base, timedelta(milliseconds=1), tag)
                     if (line := mapper.line(kind, p)) is not None]
            raw_runs[(form, size)].append(await run_raw(url, lines, size, joined=form == "joined"))
        sink_runs.append(await run_sink(url, records(n, base, timedelta(milliseconds=1), tag), batch, f"sink-{tag}"))

    def median(runs: list[dict[str, Any]], key: str) -> float:
        return float(statistics.median(float(run[key]) for run in runs))

    sink_pps = median(sink_runs, "points_per_s")
    raw = {f"{form}_{size}": {"points_per_s": round(median(runs, "points_per_s")),
                              "cpu_us_per_point": median(runs, "cpu_us_per_point")} for (form, size), runs in raw_runs.items()}
    size = batch if ("lines", batch) in raw_runs else 5000
    raw_same = median(raw_runs[("lines", size)], "points_per_s")
    joined_same = median(raw_runs[("joined", size)], "points_per_s")
    lag = {k: median([run["lag"] for run in sink_runs], k) for k in ("p50_ms", "p99_ms", "max_ms")}
    return {
        "points_per_round": n,
        "sink": {"batch_size": batch, "points_per_s": round(sink_pps),
                 "emit_only_per_s": round(median(sink_runs, "emit_only_per_s")),
                 "cpu_us_per_point": median(sink_runs, "cpu_us_per_point"), "event_loop_lag": lag, "rounds": sink_runs},
        "raw_influxdb_client": raw,
        "ratio_to_raw": round(sink_pps / raw_same, 3),
        "ratio_to_joined": round(sink_pps / joined_same, 3),
    }


async def until(check: Callable[[], bool], within: float = 30.0) -> None:
    for _ in range(int(within / 0.002)):
        if check():
            return
        await asyncio.sleep(0.002)
    raise AssertionError(f"not within {within} s")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def drain(url: str, outage_s: int, rate: int, batch: int) -> dict[str, Any]:
    """Fill an outbox the way an outage does, then time how fast a sink drains it into the DB."""
    n = outage_s * rate
    tag = uuid.uuid4().hex[:10]
    start = datetime.now(UTC) - timedelta(days=1)
    recs = records(n, start, timedelta(seconds=1 / rate), tag)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "journal.sqlite3"
        down = TsdbSink(sink_config(f"http://127.0.0.1:{closed_port()}", batch, flush_s=0.01), Outbox(path),
                        clock=SystemClock(), site=f"drain-{tag}")
        task = asyncio.create_task(down.run())
        t = time.perf_counter()
        for second in range(outage_s):  # one flush per second of the outage: ``rate`` points per outbox row
            for kind, payload in recs[second * rate : (second + 1) * rate]:
                await down.emit(kind, payload)
            await until(lambda: down.stats()["queued"] == (second + 1) * rate)  # noqa: B023 (awaited at once)
        fill_s = time.perf_counter() - t
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await down.aclose()
        rows = Outbox(path).count(CHANNEL)

        outbox = Outbox(path)
        up = TsdbSink(sink_config(url, batch), outbox, clock=SystemClock(), site=f"drain-{tag}")
        with LagProbe() as probe:
            t = time.perf_counter()
            task = asyncio.create_task(up.run())
            await until(lambda: up.stats()["outbox_batches"] == 0, within=600)
            drain_s = time.perf_counter() - t
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await up.aclose()
        stats = up.stats()
    assert stats["drained"] == n and outbox.count(CHANNEL) == 0, stats
    return {"points": n, "outage_s": outage_s, "rate_per_s": rate, "outbox_rows": rows, "fill_s": round(fill_s, 2),
            "drain_s": round(drain_s, 2), "drain_points_per_s": round(n / drain_s), "event_loop_lag": probe.summary()}


async def main(url: str, n: int, rounds: int, batch: int, outage_s: int, rate: int) -> dict[str, Any]:
    result = await throughput(url, n, rounds, batch)
    sink = result["sink"]
    measured = {"sink_points_per_s": sink["points_per_s"], "ratio_to_raw": result["ratio_to_raw"],
                "lag_p99_ms": sink["event_loop_lag"]["p99_ms"]}
    met = {"sink_points_per_s": measured["sink_points_per_s"] >= TARGETS["sink_points_per_s"],
           "ratio_to_raw": measured["ratio_to_raw"] >= TARGETS["ratio_to_raw"],
           "lag_p99_ms": measured["lag_p99_ms"] <= TARGETS["lag_p99_ms"]}
    return {"url": url, "cpus": os.cpu_count(), "throughput": result, "outbox_drain": await drain(url, outage_s, rate, batch),
            "targets": TARGETS, "measured": measured, "met": met, "all_met": all(met.values())}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--url", default=os.environ.get("DCFLEX_TEST_TSDB_URL", "http://127.0.0.1:18428"))
    ap.add_argument("--points", type=int, default=300_000, help="per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=5000, help="the sink's batch_size")
    ap.add_argument("--outage-s", type=int, default=300)
    ap.add_argument("--rate", type=int, default=1000, help="points/s during the outage")
    args = ap.parse_args()
    print(json.dumps(asyncio.run(main(args.url, args.points, args.rounds, args.batch, args.outage_s, args.rate)), indent=2))
