"""Engine tests run the real engine against the simulated cluster (the shared fake) on a manual clock."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from adapters.guarded import GuardedScheduler
from gateway.clock import ManualClock
from gateway.config import DcflexConfig
from gateway.domain import GridEvent, Interval, Signal, Tier
from gateway.engine import Engine, EngineSettings
from gateway.journal import Journal
from gateway.power import PowerModel
from simulators.cluster import SimJobSpec, SimulatedCluster

T0 = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)


def small_mix() -> list[SimJobSpec]:
    """16 nodes x 8 GPUs: two critical jobs, and flexible jobs of every tier."""
    specs = [
        SimJobSpec("crit-1", Tier.CRITICAL, 16, "pt_mpt_7b_fast", work_s=50_000),
        SimJobSpec("crit-2", Tier.CRITICAL, 8, "infer_llama_8b", work_s=50_000),
        SimJobSpec("f10-1", Tier.FLEX_10, 16, "ft_llama_8b_dolly", work_s=50_000, elapsed_s=20_000),
        SimJobSpec("f25-1", Tier.FLEX_25, 16, "pt_mpt_13b_sm", work_s=50_000, elapsed_s=10_000),
        SimJobSpec("f25-2", Tier.FLEX_25, 8, "infer_llama_8b_48g", work_s=50_000),
        SimJobSpec("f50-1", Tier.FLEX_50, 16, "pt_mpt_13b_lg", work_s=50_000, elapsed_s=30_000),
        SimJobSpec("pre-1", Tier.PREEMPTIBLE, 16, "pt_mpt_7b_fast", work_s=50_000, checkpoint_s=60, restart_s=120),
        SimJobSpec("pre-2", Tier.PREEMPTIBLE, 8, "ft_llama_8b_p3", work_s=50_000, requeueable=False),
    ]
    return specs


@dataclass
class Collect:
    """A sink that keeps every record."""

    records: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    async def emit(self, kind: str, payload: Mapping[str, object]) -> None:
        self.records.append((kind, dict(payload)))

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [p for k, p in self.records if k == kind]


@dataclass
class Rig:
    clock: ManualClock
    cluster: SimulatedCluster
    journal_path: Path
    sink: Collect
    engine: Engine
    task: asyncio.Task[None] | None = None
    make_engine: Callable[[], Engine] | None = None

    async def start(self) -> None:
        self.task = asyncio.create_task(self.engine.run())
        await self.engine.wait_started()
        await settle()

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None

    async def restart(self) -> None:
        """Kill the engine task and start a new engine on the same journal (a crash and restart)."""
        await self.stop()
        self.engine.journal.close()
        assert self.make_engine is not None
        self.engine = self.make_engine()
        await self.start()

    async def run_for(self, seconds: float, step: float = 30.0) -> None:
        done = 0.0
        while done < seconds:
            d = min(step, seconds - done)
            await self.clock.advance(d)
            await settle()
            done += d
            if self.task is not None and self.task.done():
                self.task.result()

    async def run_until(self, t: datetime, step: float = 30.0) -> None:
        await self.run_for(max(0.0, (t - self.clock.now()).total_seconds()), step)


async def settle(rounds: int = 40) -> None:
    for _ in range(rounds):
        await asyncio.sleep(0)


def config(**policy: Any) -> DcflexConfig:
    return DcflexConfig.model_validate({
        "site": {"nodes": 16, "gpus_per_node": 8, "ramp_rate_kw_per_min": 20.0, "baseline_minutes": 10},
        "policy": {"replan_interval_s": 60.0, "tolerance_kw": 1.0, "replan_drift_kw": 3.0, **policy},
    })


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    clock = ManualClock(T0)
    model = PowerModel()
    cluster = SimulatedCluster(clock, model, 16, 8, small_mix(), seed=1)
    sink = Collect()
    journal_path = tmp_path / "journal.sqlite3"
    cfg = config()

    def make_engine(dry_run: bool = False) -> Engine:
        return Engine(
            scheduler=GuardedScheduler(cluster, timeout_s=0.5, retries=1, backoff_s=0.01),
            meter=cluster,
            journal=Journal(journal_path),
            clock=clock,
            settings=EngineSettings.from_config(cfg, sample_interval_s=30.0, restore_retry_s=60.0, dry_run=dry_run),
            model=model,
            sinks=[sink],
        )

    r = Rig(clock=clock, cluster=cluster, journal_path=journal_path, sink=sink, engine=make_engine(),
            make_engine=make_engine)
    await r.start()
    await r.run_for(600)  # ten minutes of power history for the baseline
    yield r
    await r.stop()
    r.engine.journal.close()


def event(
    event_id: str = "ev-1",
    *,
    start: datetime,
    minutes: float = 60,
    signal: str = "LOAD_CONTROL",
    signal_type: str = "x-loadControlPercentOffset",
    value: float = 20.0,
    modification: int = 0,
    ramp_min: float = 0.0,
) -> GridEvent:
    duration = timedelta(minutes=minutes)
    return GridEvent(
        event_id=event_id,
        modification=modification,
        start=start,
        duration=duration,
        signals=(Signal(name=signal, signal_type=signal_type, intervals=(Interval(start, duration, value),)),),
        ramp=timedelta(minutes=ramp_min),
    )
