"""Advance notice end to end in the engine, on the simulated cluster and a manual clock: jobs' ends announced
at each lead time, moved, withdrawn; an event's shed announced when planned and ramped minute by minute; a
crash-like drop alerted; coverage counted."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from adapters.guarded import GuardedScheduler
from gateway.clock import ManualClock
from gateway.config import DcflexConfig
from gateway.domain import Tier
from gateway.engine import Engine, EngineSettings
from gateway.journal import Journal
from gateway.power import PowerModel
from gateway.report import build_report, render
from simulators.cluster import SimJobSpec, SimulatedCluster
from tests.gateway.engine.conftest import T0, Collect, Rig, event

END_S = 95 * 60  # the "ends" job finishes 95 minutes after the start


def jobs() -> list[SimJobSpec]:
    return [
        SimJobSpec("ends", Tier.FLEX_25, 48, "pt_mpt_7b_fast", work_s=END_S, name="finetune-a"),
        SimJobSpec("steady", Tier.CRITICAL, 32, "pt_mpt_13b_sm", work_s=500_000),
        SimJobSpec("victim", Tier.CRITICAL, 32, "ft_llama_8b_dolly", work_s=500_000),
        SimJobSpec("flex", Tier.FLEX_50, 16, "pt_mpt_13b_lg", work_s=500_000, elapsed_s=30_000),
    ]


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    async with built(tmp_path) as r:
        yield r


@pytest.fixture
async def deferring(tmp_path: Path) -> AsyncIterator[Rig]:
    async with built(tmp_path, defer_drops=True) as r:
        yield r


@contextlib.asynccontextmanager
async def built(tmp_path: Path, **notices: object) -> AsyncIterator[Rig]:
    clock = ManualClock(T0)
    model = PowerModel()
    cluster = SimulatedCluster(clock, model, 16, 8, jobs(), seed=1, noise_kw=0.0)
    sink = Collect()
    cfg = DcflexConfig.model_validate({
        "site": {"nodes": 16, "gpus_per_node": 8, "ramp_rate_kw_per_min": 4.0, "baseline_minutes": 10},
        "policy": {"replan_interval_s": 60.0, "tolerance_kw": 0.5, "replan_drift_kw": 3.0},
        "notices": {"threshold_pct": 10.0, "lead_times_min": [60, 15], "snapshot_interval_s": 60, **notices},
    })

    def make_engine() -> Engine:
        return Engine(scheduler=GuardedScheduler(cluster, timeout_s=0.5, retries=1, backoff_s=0.01), meter=cluster,
                      journal=Journal(tmp_path / "journal.sqlite3"), clock=clock,
                      settings=EngineSettings.from_config(cfg, sample_interval_s=30.0), model=model, sinks=[sink])

    r = Rig(clock=clock, cluster=cluster, journal_path=tmp_path / "journal.sqlite3", sink=sink, engine=make_engine(),
            make_engine=make_engine)
    await r.start()
    yield r
    with contextlib.suppress(Exception):
        await r.stop()
    r.engine.journal.close()


def notices(rig: Rig, notice_id: str) -> list[dict[str, Any]]:
    return [n for n in rig.sink.of("notice") if n["notice_id"] == notice_id]


async def test_a_jobs_end_is_announced_at_each_lead_time_then_counted_as_covered(rig: Rig) -> None:
    end = T0 + timedelta(seconds=END_S)
    await rig.run_until(end - timedelta(minutes=61))
    assert notices(rig, "job:ends") == []  # beyond the longest lead time: nothing yet
    await rig.run_until(end - timedelta(minutes=58))
    first = notices(rig, "job:ends")
    assert len(first) == 1
    n = first[0]
    assert (n["action"], n["source"], n["exact"], n["seq"]) == ("notice", "job", False, 1)
    drop_at = n["drop_at"] if isinstance(n["drop_at"], str) else n["drop_at"].isoformat()
    assert abs((_dt(drop_at) - end).total_seconds()) < 60, (drop_at, end)
    assert 58.0 <= n["lead_s"] / 60.0 <= 60.0
    assert n["drop_kw"] > 0.1 * rig.engine.history.latest[1]  # type: ignore[index]
    assert "finetune-a" in n["reason"] and "end time" in n["reason"]

    await rig.run_until(end - timedelta(minutes=14))
    second = notices(rig, "job:ends")
    assert [x["seq"] for x in second] == [1, 2] and second[1]["action"] == "notice"
    assert 14.0 <= second[1]["lead_s"] / 60.0 <= 15.0

    await rig.run_until(end + timedelta(minutes=3))
    assert len(notices(rig, "job:ends")) == 2  # ended on time: no update, no cancel
    seen = [b for _, _, _, b in rig.engine.journal.log_entries(None, ("drop_observed",))]
    assert len(seen) == 1 and seen[0]["notice_id"] == "job:ends" and seen[0]["covered"] is True, seen
    assert not rig.sink.of("alert") or all(a["code"] != "unannounced_drop" for a in rig.sink.of("alert"))
    cover = rig.engine.status()["notices"]["coverage_24h"]  # type: ignore[index]
    assert cover["coverage"] == 1.0 and cover["drops"] == 1, cover


async def test_an_extended_job_gets_an_update_and_one_extended_past_the_horizon_a_cancel(rig: Rig) -> None:
    end = T0 + timedelta(seconds=END_S)
    await rig.run_until(end - timedelta(minutes=50))
    assert [n["action"] for n in notices(rig, "job:ends")] == ["notice"]
    rig.cluster.extend("ends", 20 * 60)  # the user asked for 20 more minutes
    await rig.run_for(120)
    moved = notices(rig, "job:ends")
    assert [n["action"] for n in moved] == ["notice", "update"]
    assert abs((_dt(moved[1]["drop_at"]) - (end + timedelta(minutes=20))).total_seconds()) < 60
    assert moved[1]["modified"] is True and moved[1]["seq"] == 2

    rig.cluster.extend("ends", 5 * 3600)  # now hours away: the drop no longer stands (the forecast looks 2 h ahead)
    await rig.run_for(120)
    assert [n["action"] for n in notices(rig, "job:ends")] == ["notice", "update", "cancel"]


async def test_a_crash_like_drop_without_notice_is_alerted_and_counted_as_uncovered(rig: Rig) -> None:
    await rig.run_for(600)
    rig.cluster.crash("victim")
    await rig.run_for(90)
    alerts = [a for a in rig.sink.of("alert") if a["code"] == "unannounced_drop"]
    assert len(alerts) == 1 and alerts[0]["severity"] == "warning"
    assert "no notice to the grid" in alerts[0]["message"] and alerts[0]["kw"] > 5.0
    seen = [b for _, _, _, b in rig.engine.journal.log_entries(None, ("drop_observed",))]
    assert [(b["covered"], b["notice_id"]) for b in seen] == [(False, None)]
    assert rig.engine.status()["notices"]["coverage_24h"]["coverage"] == 0.0  # type: ignore[index]


async def test_an_events_shed_is_announced_when_planned_and_ramps_within_the_limit(rig: Rig) -> None:
    await rig.run_for(600)
    start = rig.clock.now() + timedelta(minutes=30)
    await rig.engine.on_event(event(start=start, minutes=40, value=25.0))
    announced = notices(rig, "event:ev-1")
    assert len(announced) == 1, rig.sink.of("notice")
    n = announced[0]
    assert (n["action"], n["source"], n["exact"], n["event_id"]) == ("notice", "event", True, "ev-1")
    assert _dt(n["drop_at"]) == start and n["drop_kw"] > 0 and 29.0 <= n["lead_s"] / 60.0 <= 30.0

    await rig.run_until(start + timedelta(minutes=70))
    # every command the event sent and undid, minute by minute: at most the ramp rate plus one command
    rate = 4.0
    done = [r for r in rig.engine.journal.actions("ev-1") if r.state in ("done", "undone")]
    assert done
    biggest = max(abs(r.action.delta_kw) for r in done)
    by_minute: dict[int, float] = {}
    for r in done:
        minute = int((r.action.at - start).total_seconds() // 60)
        by_minute[minute] = by_minute.get(minute, 0.0) + abs(r.action.delta_kw)
    assert max(by_minute.values()) <= rate + biggest + 1e-6, by_minute
    # and as measured: from one minute's mean power to the next, no step beyond the rate and one command
    # (the simulated site has no noise; no job ends in this window)
    minutes = rig.engine.journal.power.minutes(start - timedelta(minutes=2), start + timedelta(minutes=58))
    steps = [abs(b[1] - a[1]) for a, b in itertools.pairwise(minutes)]
    assert len(minutes) >= 55 and max(steps) <= rate + biggest + 1e-6, steps
    assert sum(steps) > 2 * rate  # it did shed and restore
    # the shed was announced: its measured drop(s) count as covered, none alerted
    assert all(a["code"] != "unannounced_drop" for a in rig.sink.of("alert"))


def _dt(value: object) -> Any:
    from datetime import datetime

    return value if not isinstance(value, str) else datetime.fromisoformat(value)


async def test_a_cancelled_event_withdraws_its_notice(rig: Rig) -> None:
    await rig.run_for(600)
    start = rig.clock.now() + timedelta(minutes=45)
    await rig.engine.on_event(event(start=start, minutes=40, value=25.0))
    await rig.run_for(60)
    await rig.engine.on_cancel("ev-1", "the utility cancelled it")
    await rig.run_for(60)
    assert [n["action"] for n in notices(rig, "event:ev-1")] == ["notice", "cancel"]
    assert rig.engine.status()["notices"]["announced"] == []  # type: ignore[index]


async def test_small_drops_need_no_notice(rig: Rig) -> None:
    book = rig.engine.notices.book
    assert book.threshold_kw(200.0) == pytest.approx(20.0)  # 10 % of the site's load
    await rig.run_until(T0 + timedelta(seconds=END_S) - timedelta(minutes=30))
    assert {n["notice_id"] for n in rig.sink.of("notice")} == {"job:ends"}  # "flex" and the others run on


async def test_a_drop_can_wait_for_its_notice_when_the_ramp_leaves_room(deferring: Rig) -> None:
    rig = deferring
    await rig.run_for(600)
    now = rig.clock.now()
    start = now + timedelta(minutes=30)  # its 20-minute ramp starts in 10 minutes: 10 minutes of notice, 15 wanted
    await rig.engine.on_event(event(start=start, minutes=60, value=25.0, ramp_min=20.0))
    n = notices(rig, "event:ev-1")[0]
    assert _dt(n["drop_at"]) == now + timedelta(minutes=15) and n["lead_s"] == 900.0
    deferred = [b for _, _, _, b in rig.engine.journal.log_entries("ev-1", ("deferred",))]
    assert deferred == [{"ramp_start": (now + timedelta(minutes=10)).isoformat(),
                         "deferred_to": (now + timedelta(minutes=15)).isoformat()}]
    await rig.run_until(start + timedelta(minutes=40))
    sheds = [r for r in rig.engine.journal.actions("ev-1") if r.action.kind.sheds]
    assert sheds and min(r.action.at for r in sheds) >= now + timedelta(minutes=15)
    assert rig.engine.journal.event("ev-1").directive.target_by == start  # type: ignore[union-attr]  # still due then
    seen = [b for _, _, _, b in rig.engine.journal.log_entries(None, ("drop_observed",))]
    assert seen and all(b["covered"] for b in seen), seen
    report = build_report(rig.engine.journal, "ev-1", rig.engine.settings.site, 0.5)
    assert report["notices"]["coverage"] == 1.0 and report["notices"]["unannounced"] == []
    assert "100% of it announced ahead; 0 unannounced" in render(report)

    # no room: an event due at once with no ramp is not deferred
    await rig.engine.on_event(event("ev-2", start=rig.clock.now() + timedelta(minutes=1), minutes=30, value=10.0))
    assert rig.engine.journal.log_entries("ev-2", ("deferred",)) == []


async def test_a_crash_during_an_event_is_not_taken_for_its_announced_shed(rig: Rig) -> None:
    await rig.run_for(600)
    start = rig.clock.now() + timedelta(minutes=20)
    await rig.engine.on_event(event(start=start, minutes=60, value=15.0))
    await rig.run_until(start + timedelta(minutes=25))  # shed done long ago: the event holds
    assert not [a for a in rig.sink.of("alert") if a["code"] == "unannounced_drop"]
    rig.cluster.crash("victim")
    await rig.run_for(90)
    alerts = [a for a in rig.sink.of("alert") if a["code"] == "unannounced_drop"]
    assert len(alerts) == 1 and alerts[0]["notice_id"] is None, alerts


async def test_a_job_cancelled_before_its_announced_end_withdraws_the_notice_and_is_alerted(rig: Rig) -> None:
    end = T0 + timedelta(seconds=END_S)
    await rig.run_until(end - timedelta(minutes=50))
    assert [n["action"] for n in notices(rig, "job:ends")] == ["notice"]
    rig.cluster.crash("ends")  # scancel: it ends now, 50 minutes early
    await rig.run_for(120)
    assert [n["action"] for n in notices(rig, "job:ends")] == ["notice", "cancel"]
    alerts = [a for a in rig.sink.of("alert") if a["code"] == "unannounced_drop"]
    assert len(alerts) == 1  # the drop came, but not when announced
