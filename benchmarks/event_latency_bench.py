"""Event to first command: the gateway (VEN + engine + planner + journal) against a bare openleadr VEN.

Both poll the same local VTN (openleadr, loopback) at the same interval, in alternating trials.
For each trial the VTN makes an event available that starts at once; the bare VEN's figure is the
moment its ``on_event`` handler runs, the gateway's the moment its first scheduler command reaches
the (simulated) cluster. Both are measured from the VTN's delivery of the event (which removes the
poll phase both share) and from the moment it was made available. The gateway's added latency is
the difference of the medians. Prints one JSON object.

    .venv/bin/python -m benchmarks.event_latency_bench [--trials N] [--poll S]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from openleadr import OpenADRClient

from gateway.app import Gateway, power_model
from gateway.clock import SystemClock
from gateway.config import DcflexConfig
from gateway.domain import Action
from gateway.ports import Facts, Recall
from simulators.cluster import SimulatedCluster
from simulators.vtn import ScriptedVtn
from simulators.workloads import demo_mix


class FirstCommand:
    """Wraps the simulated cluster and notes when the first command arrives."""

    def __init__(self, inner: SimulatedCluster) -> None:
        self.inner = inner
        self.name = inner.name
        self.first_at: float | None = None

    async def snapshot(self) -> Any:
        return await self.inner.snapshot()

    async def apply(self, action: Action) -> Facts | None:
        if self.first_at is None:
            self.first_at = time.perf_counter()
        await self.inner.apply(action)
        return None

    def describe(self, action: Action) -> list[str]:
        return self.inner.describe(action)

    def prepare(self, actions: Sequence[Action]) -> None:
        self.inner.prepare(actions)

    def recall(self, memory: Recall) -> None:
        self.inner.recall(memory)

    async def read_kw(self) -> float:
        return await self.inner.read_kw()


async def _wait(pred: Any, within: float = 30.0) -> None:
    deadline = time.perf_counter() + within
    while not pred():
        if time.perf_counter() > deadline:
            raise TimeoutError("benchmark trial timed out")
        await asyncio.sleep(0.001)


def _event(vtn: ScriptedVtn, ven_id: str) -> str:
    return vtn.add_event(
        ven_id=ven_id, signal_name="LOAD_CONTROL", signal_type="x-loadControlPercentOffset",
        intervals=[(timedelta(minutes=30), 20.0)], start=datetime.now(UTC), ramp=timedelta(0),
    )


async def gateway_trial(vtn: ScriptedVtn, poll: float, tmp: Path, n: int) -> tuple[float, float]:
    clock = SystemClock()
    ven_id = f"gw-{n}"
    cfg = DcflexConfig.model_validate({
        "ven": {"vtn_url": vtn.vtn_url, "ven_name": ven_id, "ven_id": ven_id, "poll_interval_s": poll},
        "site": {"ramp_rate_kw_per_min": 100_000.0},
        "journal": {"path": str(tmp / f"journal-{n}.sqlite3")},
        "api": {"enabled": False},
    })
    model = power_model(cfg)
    cluster = FirstCommand(SimulatedCluster(clock, model, 64, 8, demo_mix(7), seed=7))
    gw = Gateway(cfg, scheduler=cluster, meter=cluster.inner, clock=clock, model=model)
    task = asyncio.create_task(gw.serve())
    try:
        await _wait(lambda: gw.ven.registration_id is not None)
        await asyncio.sleep(poll * 1.5)
        eid = _event(vtn, ven_id)
        await _wait(lambda: cluster.first_at is not None)
        assert cluster.first_at is not None
        return cluster.first_at - vtn.event_delivered_at[eid], cluster.first_at - vtn.event_available_at[eid]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def bare_trial(vtn: ScriptedVtn, poll: float, n: int) -> tuple[float, float]:
    ven_id = f"bare-{n}"
    seen: dict[str, float] = {}

    async def on_event(event: dict[str, Any]) -> str:
        seen[event["event_descriptor"]["event_id"]] = time.perf_counter()
        return "optIn"

    client = OpenADRClient(ven_name=ven_id, vtn_url=vtn.vtn_url, ven_id=ven_id, show_fingerprint=False)
    client.add_handler("on_event", on_event)
    await client.run()
    try:
        await asyncio.sleep(poll * 1.5)
        eid = _event(vtn, ven_id)
        await _wait(lambda: eid in seen)
        return seen[eid] - vtn.event_delivered_at[eid], seen[eid] - vtn.event_available_at[eid]
    finally:
        await client.stop()


async def main(trials: int, poll: float) -> dict[str, Any]:
    gw_deliv: list[float] = []
    gw_avail: list[float] = []
    bare_deliv: list[float] = []
    bare_avail: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        async with ScriptedVtn(poll_interval_s=poll) as vtn:
            for n in range(trials):
                d, a = await bare_trial(vtn, poll, n)
                bare_deliv.append(d)
                bare_avail.append(a)
                d, a = await gateway_trial(vtn, poll, Path(tmp), n)
                gw_deliv.append(d)
                gw_avail.append(a)

    def ms(xs: list[float]) -> float:
        return round(statistics.median(xs) * 1000, 2)

    added = ms(gw_deliv) - ms(bare_deliv)
    return {
        "benchmark": "event_to_first_command",
        "trials": trials,
        "poll_interval_s": poll,
        "bare_ven_from_delivery_ms_median": ms(bare_deliv),
        "gateway_from_delivery_ms_median": ms(gw_deliv),
        "bare_ven_from_available_ms_median": ms(bare_avail),
        "gateway_from_available_ms_median": ms(gw_avail),
        "gateway_added_ms": round(added, 2),
        "target_added_ms": 20.0,
        "ratio_gateway_to_bare_from_available": round(ms(gw_avail) / ms(bare_avail), 3) if ms(bare_avail) else None,
        "meets_target": added <= 20.0,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=7)
    parser.add_argument("--poll", type=float, default=1.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    import openleadr  # noqa: F401

    for name in ("openleadr", "dcflex", "apscheduler"):
        logging.getLogger(name).setLevel(logging.ERROR)
    print(json.dumps(asyncio.run(main(args.trials, args.poll)), indent=2))
