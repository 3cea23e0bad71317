"""MQTT sink benchmark: ``.venv/bin/python -m benchmarks.mqtt_bench [--alerts 20000] [--inflight 100] [--rounds 3]``.

Needs the test broker (``scripts/services.sh up``; ``DCFLEX_TEST_MQTT_HOST``/``DCFLEX_TEST_MQTT_PORT``,
default 127.0.0.1:18830). In the same run, alternating, ``--rounds`` times each:

- ``sink``: ``MqttSink.emit("alert", ...)`` N times (each a pydantic payload and a JSON text, written to
  an outbox in a SQLite file under a temp dir in one transaction per loop turn or per 1,000, as in
  production), then wait until every message has its PUBACK and is gone from the outbox. Timed from
  the first ``emit`` to that moment.
- ``raw``: aiomqtt publishing N pre-serialized payloads of the same size at QoS 1 with the same
  in-flight window (``--inflight`` publishers, each awaiting its PUBACK; paho's window set the same).

Prints one JSON object: alerts/s per round, each round's sink/raw ratio, the median of each and the
ratio of the medians, the median CPU time this process spent per alert in each mode, and whether the
targets (sink ≥ 5,000 alerts/s and ≥ 0.6 × raw, on the medians) are met. Nothing subscribes, so the
broker only acknowledges. The machine's other load shows in the spread between rounds: compare
rounds, not single figures; the CPU time per alert is the steadier measure of what the sink adds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import aiomqtt

from gateway.clock import SystemClock
from gateway.config.models import MqttSinkConfig
from gateway.journal.outbox import Outbox
from gateway.sinks.mqtt import MqttSink

HOST = os.environ.get("DCFLEX_TEST_MQTT_HOST", "127.0.0.1")
PORT = int(os.environ.get("DCFLEX_TEST_MQTT_PORT", "18830"))
TARGET_RATE = 5000.0
TARGET_RATIO = 0.6


def alert(i: int) -> dict[str, object]:
    return {"at": "2025-05-20T17:00:00+00:00", "event_id": "bench-event", "severity": "warning",
            "code": "command_failed", "message": f"scancel of job {1000 + i} failed (exit 1)",
            "job_id": str(1000 + i), "tier": "flex-25", "attempt": 1}


async def sink_round(n: int, inflight: int, workdir: Path) -> tuple[float, float]:
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    cfg = MqttSinkConfig(enabled=True, host=HOST, port=PORT, topic_prefix=prefix, site_id="bench",
                         client_id=f"gw-{prefix}", max_inflight=inflight)
    outbox = Outbox(workdir / f"{prefix}.sqlite")
    sink = MqttSink(cfg, outbox, None, clock=SystemClock())
    task = asyncio.create_task(sink.run())
    try:
        while not sink.stats()["connected"]:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        records = [alert(i) for i in range(n)]
        t0, c0 = time.perf_counter(), time.process_time()
        for rec in records:
            await sink.emit("alert", rec)
        await sink.drained()
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
        if sink.stats()["published"] != n:
            raise RuntimeError(f"the sink published {sink.stats()['published']} messages for {n} alerts")
    finally:
        await sink.aclose()
        await task
        outbox.close()
        async with aiomqtt.Client(HOST, PORT) as client:  # leave no retained status behind
            await client.publish(sink.topics.status, b"", qos=1, retain=True)
    return n / elapsed, cpu / n * 1e6


async def raw_round(n: int, inflight: int, payload: str) -> tuple[float, float]:
    topic = f"bench-{uuid.uuid4().hex[:8]}/raw/alerts"
    async with aiomqtt.Client(HOST, PORT, max_inflight_messages=inflight) as client:
        client.pending_calls_threshold = inflight + 16
        todo = iter(range(n))

        async def publisher() -> None:
            for _ in todo:
                await client.publish(topic, payload, qos=1)

        t0, c0 = time.perf_counter(), time.process_time()
        async with asyncio.TaskGroup() as tg:
            for _ in range(inflight):
                tg.create_task(publisher())
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    return n / elapsed, cpu / n * 1e6


async def main(n: int, inflight: int, rounds: int) -> dict[str, object]:
    # The raw payload has the size of the sink's (same text as an alert message would carry).
    sample = json.dumps({"v": 1, "msg_id": "0123456789ab-12345", "site": "bench", "at": "2025-05-20T17:00:00Z",
                         "severity": "warning", "code": "command_failed", "message": "scancel of job 1000 failed (exit 1)",
                         "event_id": "bench-event", "facts": {"job_id": "1000", "tier": "flex-25", "attempt": 1}})
    sink_rates: list[float] = []
    raw_rates: list[float] = []
    sink_cpu: list[float] = []
    raw_cpu: list[float] = []
    with tempfile.TemporaryDirectory(prefix="mqtt-bench-") as tmp:
        for _ in range(rounds):
            rate, cpu = await raw_round(n, inflight, sample)
            raw_rates.append(rate)
            raw_cpu.append(cpu)
            rate, cpu = await sink_round(n, inflight, Path(tmp))
            sink_rates.append(rate)
            sink_cpu.append(cpu)
    sink_med = statistics.median(sink_rates)
    raw_med = statistics.median(raw_rates)
    ratio = sink_med / raw_med
    pair_ratios = [s / r for s, r in zip(sink_rates, raw_rates, strict=True)]  # each sink round beside the raw one before it
    return {
        "broker": f"{HOST}:{PORT}", "alerts": n, "inflight": inflight, "rounds": rounds, "payload_bytes": len(sample),
        "sink_alerts_per_s": [round(r) for r in sink_rates], "raw_alerts_per_s": [round(r) for r in raw_rates],
        "pair_ratios": [round(r, 3) for r in pair_ratios],
        # CPU time of this process per alert: what the sink adds, little affected by the machine's other load
        "sink_cpu_us_per_alert": round(statistics.median(sink_cpu), 1),
        "raw_cpu_us_per_alert": round(statistics.median(raw_cpu), 1),
        "sink_median": round(sink_med), "raw_median": round(raw_med), "ratio": round(ratio, 3),
        "target": {"sink_alerts_per_s": TARGET_RATE, "ratio": TARGET_RATIO},
        "met": sink_med >= TARGET_RATE and ratio >= TARGET_RATIO,
    }


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--alerts", type=int, default=20_000)
    ap.add_argument("--inflight", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    print(json.dumps(asyncio.run(main(args.alerts, args.inflight, args.rounds)), indent=2))
