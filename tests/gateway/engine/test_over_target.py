"""A reading over the target is acted on at once, not at the next periodic check."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from gateway.clock import ManualClock
from gateway.domain import EventState, Tier
from gateway.engine import Engine, EngineSettings
from gateway.journal import Journal
from gateway.power import PowerModel
from simulators.cluster import SimJobSpec, SimulatedCluster
from tests.gateway.engine.conftest import T0, Collect, Rig, config, event, small_mix


@pytest.fixture
async def slow_checks(tmp_path: Path) -> AsyncIterator[Rig]:
    """The rig, but the periodic check comes only every 10 minutes (readings every 30 s)."""
    clock = ManualClock(T0)
    model = PowerModel()
    specs = [s for s in small_mix() if s.job_id != "crit-2"]  # 8 GPUs left free for a newcomer
    cluster = SimulatedCluster(clock, model, 16, 8, specs, seed=1)
    sink = Collect()
    cfg = config(replan_interval_s=600.0, replan_drift_kw=50.0)

    def make_engine() -> Engine:
        return Engine(scheduler=cluster, meter=cluster, journal=Journal(tmp_path / "j.sqlite3"), clock=clock,
                      settings=EngineSettings.from_config(cfg, sample_interval_s=30.0), model=model, sinks=[sink])

    r = Rig(clock=clock, cluster=cluster, journal_path=tmp_path / "j.sqlite3", sink=sink, engine=make_engine())
    await r.start()
    await r.run_for(600)
    yield r
    await r.stop()
    r.engine.journal.close()


async def test_a_job_starting_mid_event_is_answered_at_the_next_reading(slow_checks: Rig) -> None:
    rig = slow_checks
    start = rig.clock.now() + timedelta(minutes=1)
    await rig.engine.on_event(event(start=start, minutes=60, value=15.0))
    await rig.run_until(start + timedelta(minutes=20), step=10.0)
    assert rig.engine.runs["ev-1"].state is EventState.HOLDING
    rig.cluster.submit(SimJobSpec("newcomer", Tier.CRITICAL, 8, "pt_mpt_7b_fast", work_s=50_000))
    submitted = rig.clock.now()
    await rig.run_for(120, step=10.0)
    over = [(datetime.fromisoformat(at), body) for at, _, _, body in rig.engine.journal.log_entries("ev-1", ("over_target",))]
    assert over, "the site went over the target and nothing re-planned it"
    first, body = over[0]
    assert body["jobs_changed"] is True
    # placed at the next scheduler pass (30 s), read at the next sample (30 s): well before the 10-minute check
    assert (first - submitted).total_seconds() <= 75, (first, submitted)
