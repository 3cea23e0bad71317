"""The whole gateway (VEN + engine + journal + API) against a real openleadr VTN on loopback.

Time is compressed with a scaled clock (the simulated cluster runs on it too); every OpenADR
exchange is real HTTP. Each test waits on real conditions with a wall-clock bound.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest

from gateway.app import Gateway, power_model
from gateway.clock import ScaledClock
from gateway.config import DcflexConfig
from gateway.domain import EventState, JobState
from simulators.cluster import SimulatedCluster
from simulators.vtn import ScriptedVtn
from simulators.workloads import demo_mix
from tests.waiting import until

pytestmark = pytest.mark.integration

SPEED = 120.0  # one virtual minute per half wall second
VEN_ID = "ven-it"


@dataclass
class Site:
    vtn: ScriptedVtn
    clock: ScaledClock
    cluster: SimulatedCluster
    cfg: DcflexConfig
    gateway: Gateway
    task: asyncio.Task[None]

    def state(self, event_id: str) -> EventState | None:
        rec = self.gateway.journal.event(event_id)
        return rec.state if rec else None

    async def restart(self) -> None:
        """Kill the running gateway and start a new one on the same journal and cluster."""
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        self.gateway = Gateway(self.cfg, scheduler=self.cluster, meter=self.cluster, clock=self.clock,
                               model=power_model(self.cfg), sample_interval_s=15.0)
        self.task = asyncio.create_task(self.gateway.serve())
        await until("re-registration", lambda: self.gateway.ven.registration_id is not None, 30.0)


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    async with ScriptedVtn(poll_interval_s=0.25) as vtn:
        clock = ScaledClock(datetime.now(UTC), SPEED)
        cfg = DcflexConfig.model_validate({
            "ven": {"vtn_url": vtn.vtn_url, "ven_name": VEN_ID, "ven_id": VEN_ID, "poll_interval_s": 0.25,
                    "report_granularity_s": 1.0},
            "site": {"ramp_rate_kw_per_min": 60.0, "baseline_minutes": 5},
            "policy": {"replan_interval_s": 60.0, "tolerance_kw": 2.0, "replan_drift_kw": 8.0},
            "journal": {"path": str(tmp_path / "journal.sqlite3")},
            "api": {"enabled": True, "port": 0},
        })
        model = power_model(cfg)
        cluster = SimulatedCluster(clock, model, 64, 8, demo_mix(7), seed=7)
        gateway = Gateway(cfg, scheduler=cluster, meter=cluster, clock=clock, model=model, sample_interval_s=15.0)
        task = asyncio.create_task(gateway.serve())
        s = Site(vtn=vtn, clock=clock, cluster=cluster, cfg=cfg, gateway=gateway, task=task)
        await until("registration", lambda: gateway.ven.registration_id is not None, 30.0)
        yield s
        s.task.cancel()
        await asyncio.gather(s.task, return_exceptions=True)


def add(site: Site, *, in_min: float = 3, minutes: float = 10, pct: float = 20.0) -> str:
    return site.vtn.add_event(
        VEN_ID, "LOAD_CONTROL", "x-loadControlPercentOffset", [(timedelta(minutes=minutes), pct)],
        site.clock.now() + timedelta(minutes=in_min),
    )


async def assert_restored(site: Site) -> None:
    snap = await site.cluster.snapshot()
    for job in snap.jobs:
        assert job.power_cap_w is None, f"{job.job_id} still capped"
        assert job.state not in (JobState.SUSPENDED, JobState.STOPPED), f"{job.job_id} left {job.state}"
    assert not [n for n in snap.nodes if n.drained_by_gateway]


async def test_registration_opt_in_act_and_restore(site: Site) -> None:
    assert VEN_ID in site.vtn.registered_ven_ids
    eid = add(site)
    response = await site.vtn.wait_for_response(eid, within_s=10)
    assert response.opt_type == "optIn"
    await until("ramping", lambda: site.state(eid) in (EventState.RAMPING, EventState.HOLDING), 30.0)
    await until("first command", lambda: bool(site.cluster.commands), 30.0)
    await until("completion", lambda: site.state(eid) is EventState.COMPLETED, 40)
    critical = {j.job_id for j in (await site.cluster.snapshot()).jobs if j.tier.value == "critical"}
    assert not {c.job_id for c in site.cluster.commands} & critical
    await assert_restored(site)


async def test_status_endpoint_reports_the_event(site: Site) -> None:
    eid = add(site, in_min=2, minutes=20)
    await until("acceptance", lambda: site.state(eid) is not None, 30.0)
    assert site.gateway.api is not None
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{site.gateway.api.url}/healthz") as r:
            assert r.status == 200 and (await r.json())["ok"] is True
        async with http.get(f"{site.gateway.api.url}/status") as r:
            body = await r.json()
    assert [e["event_id"] for e in body["events"]] == [eid]
    assert body["events"][0]["target_kw"] < body["events"][0]["baseline_kw"]


async def test_modification_replans(site: Site) -> None:
    eid = add(site, in_min=2, minutes=30, pct=10.0)
    await until("ramping", lambda: site.state(eid) in (EventState.RAMPING, EventState.HOLDING), 30.0)
    before = site.gateway.journal.event(eid)
    assert before is not None and before.directive is not None
    mod = site.vtn.modify_event(eid, intervals=[(timedelta(minutes=30), 30.0)])
    response = await site.vtn.wait_for_response(eid, modification=mod, within_s=10)
    assert response.opt_type == "optIn"
    after = site.gateway.journal.event(eid)
    assert after is not None and after.modification == mod and after.directive is not None
    assert after.directive.strictest_kw < before.directive.strictest_kw  # type: ignore[operator]
    plans = [e for e in site.gateway.journal.log_entries(eid) if e[2] == "plan"]
    assert len(plans) >= 2


async def test_explicit_cancellation_restores(site: Site) -> None:
    eid = add(site, in_min=1, minutes=60)
    await until("first command", lambda: bool(site.cluster.commands), 30.0)
    site.vtn.cancel_event(eid)
    await until("cancellation", lambda: site.state(eid) is EventState.CANCELLED, 30)
    await assert_restored(site)


async def test_implied_cancellation_restores(site: Site) -> None:
    eid = add(site, in_min=1, minutes=60)
    await until("first command", lambda: bool(site.cluster.commands), 30.0)
    site.vtn.remove_event(eid)
    await until("implied cancellation", lambda: site.state(eid) is EventState.CANCELLED, 30)
    await assert_restored(site)


async def test_telemetry_faster_than_offered_sends_nothing_rather_than_empty_reports(
        site: Site, caplog: pytest.LogCaptureFixture) -> None:
    # the site offers one reading per 60 s at the fastest; a VTN asking for every second gets no
    # empty reports (which openleadr's VTN answers with an HTTP 500)
    site.cfg = site.cfg.model_copy(update={"ven": site.cfg.ven.model_copy(update={"report_granularity_s": 60.0})})
    await site.restart()
    caplog.set_level(logging.WARNING)
    site.vtn.request_telemetry(VEN_ID, timedelta(seconds=1))
    await until("the VEN to say the request asks for no data point it offers",
                lambda: any("asks for no data point" in r.getMessage() for r in caplog.records), 20.0)
    await asyncio.sleep(2.0)  # two of the VTN's 1 s report periods: an empty report would have gone by now
    assert not site.task.done()
    assert not [r for r in caplog.records if "VTN server encountered an error" in r.getMessage()]


async def test_telemetry_report_reaches_the_vtn(site: Site) -> None:
    await until("a power sample", lambda: site.gateway.engine.history.latest is not None, 30.0)
    site.vtn.request_telemetry(VEN_ID, timedelta(seconds=1))
    readings = await site.vtn.wait_for_reports(VEN_ID, count=1, within_s=20)
    measured = await site.cluster.read_kw()
    assert readings and abs(readings[-1].value - measured) < 0.25 * measured


async def test_restart_mid_event_sends_no_command_twice_and_restores(site: Site) -> None:
    eid = add(site, in_min=1, minutes=20, pct=25.0)
    await until("holding", lambda: site.state(eid) is EventState.HOLDING, 30)
    sent = len(site.cluster.commands)
    assert sent > 0
    await site.restart()
    await until("completion after restart", lambda: site.state(eid) is EventState.COMPLETED, 40)
    keys = Counter(c.key for c in site.cluster.commands)
    assert all(n == 1 for n in keys.values()), keys
    await assert_restored(site)


async def test_bad_events_are_opted_out_with_reasons_and_the_gateway_carries_on(site: Site) -> None:
    soon = site.clock.now() + timedelta(minutes=5)
    unknown = site.vtn.add_event(VEN_ID, "x-dcflexBogus", "level", [(timedelta(minutes=30), 1.0)], soon)
    absurd = site.vtn.add_event(VEN_ID, "LOAD_DISPATCH", "setpoint", [(timedelta(minutes=30), 5e8)], soon)
    negative = site.vtn.add_event(VEN_ID, "LOAD_DISPATCH", "setpoint",
                                  [(timedelta(minutes=30), 100.0), (timedelta(minutes=-5), 90.0)], soon)
    for eid in (unknown, absurd, negative):
        response = await site.vtn.wait_for_response(eid, within_s=10)
        assert response.opt_type == "optOut", (eid, response)
    assert site.state(unknown) is EventState.OPTED_OUT
    absurd_rec = site.gateway.journal.event(absurd)
    assert absurd_rec is not None and absurd_rec.state is EventState.OPTED_OUT and "5" in absurd_rec.reason
    assert site.gateway.journal.event(negative) is None  # rejected at the VEN: never reached the engine
    good = add(site)
    assert (await site.vtn.wait_for_response(good, within_s=10)).opt_type == "optIn"
    assert not site.task.done()
