"""Advance notice end to end: one drop, announced the same way on all three channels.

A real ``Gateway`` on the wall clock with the simulated scheduler (no noise; four long critical jobs) and a
job submitted to end about 45 s later; lead times of 30 s and 12 s. The same notices (id, sequence, drop time and size) must reach
the real Mosquitto's ``…/notices`` topic, a webhook receiver on loopback that checks every signature,
and the real openleadr VTN as a Projected report it asked for (the drop in the report's sum, and under a data
point named after the notice, which the VEN registers when the notice goes out); when the job ends on time the drop is
counted as announced (coverage 1.0 in ``/status``).

Needs Mosquitto from ``scripts/services.sh up``.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from gateway.app import Gateway, power_model
from gateway.clock import SystemClock
from gateway.config import DcflexConfig
from gateway.domain import Tier
from gateway.sinks.mqtt.payloads import Notice
from gateway.ven.oadr20b.projections import PROJECTED_R_ID, PROJECTED_SPECIFIER_ID, notice_r_id
from simulators.cluster import SimJobSpec, SimulatedCluster
from simulators.vtn import ScriptedVtn
from tests.services import HINT, service_env
from tests.waiting import until
from tests.webhook_receiver import Receiver, receiving

pytestmark = pytest.mark.integration

VEN_ID = "ven-notices"
SECRET = "grid-shared-secret"
END_S = 45.0


@pytest.fixture
async def hook() -> AsyncIterator[Receiver]:
    async with receiving(SECRET) as rec:
        yield rec


async def test_a_jobs_end_is_announced_alike_on_mqtt_the_webhook_and_to_the_vtn(tmp_path: Path, hook: Receiver) -> None:
    host, port = service_env("DCFLEX_TEST_MQTT_HOST"), int(service_env("DCFLEX_TEST_MQTT_PORT"))
    prefix, site_id = f"dcflex-n{uuid.uuid4().hex[:6]}", "west"
    topic = f"{prefix}/{site_id}/notices"
    mqtt_got: list[Notice] = []
    try:
        sub = aiomqtt.Client(host, port, timeout=3)
        await sub.__aenter__()
    except aiomqtt.MqttError as exc:
        pytest.fail(f"Mosquitto is not reachable at {host}:{port} ({exc}): {HINT}")

    async def listen() -> None:
        async for msg in sub.messages:
            mqtt_got.append(Notice.model_validate_json(bytes(msg.payload)))

    await sub.subscribe(topic, qos=1)
    listener = asyncio.create_task(listen())
    async with ScriptedVtn(poll_interval_s=1.0) as vtn:
        clock = SystemClock()
        cfg = DcflexConfig.model_validate({
            "ven": {"vtn_url": vtn.vtn_url, "ven_name": VEN_ID, "ven_id": VEN_ID, "poll_interval_s": 0.25,
                    "report_granularity_s": 2.0},
            "site": {"site_id": site_id, "nodes": 10, "gpus_per_node": 8, "baseline_minutes": 5},
            "journal": {"path": str(tmp_path / "journal.sqlite3")},
            "api": {"enabled": False},
            "notices": {"threshold_kw": 2.0, "threshold_pct": None, "lead_times_min": [0.5, 0.2],
                        "snapshot_interval_s": 1.0, "webhook_url": hook.url, "webhook_secret": SECRET,
                        "webhook_backoff_s": 0.1},
            "sinks": {"mqtt": {"enabled": True, "host": host, "port": port, "topic_prefix": prefix, "site_id": site_id,
                               "client_id": f"gw-{prefix}", "reconnect_min_s": 0.2, "reconnect_max_s": 1.0}},
        })
        model = power_model(cfg)
        steady = [SimJobSpec(f"steady-{i}", Tier.CRITICAL, 16, "pt_mpt_13b_sm", work_s=100_000) for i in range(4)]
        # its scheduler places queued jobs every second, so the submitted job starts at once
        cluster = SimulatedCluster(clock, model, 10, 8, steady, seed=7, sched_interval_s=1.0)
        gateway = Gateway(cfg, scheduler=cluster, meter=cluster, clock=clock, model=model, sample_interval_s=0.5)
        task = asyncio.create_task(gateway.serve())
        try:
            await until("the VEN to register its reports", lambda: gateway.ven.registration_id is not None
                        and vtn._server.registered_reports.get(VEN_ID), 20, every=0.1)
            vtn.request_projections(VEN_ID, timedelta(seconds=2))
            cluster.submit(SimJobSpec("ending", Tier.FLEX_25, 16, "pt_mpt_7b_fast", work_s=END_S, name="short-run"))
            started = time.monotonic()
            await asyncio.sleep(1.5)
            assert cluster.job("ending").state.value == "running", "the free nodes should take it at once"

            def mine(n: Any) -> bool:
                return bool((n["notice_id"] if isinstance(n, dict) else n.notice_id) == "job:ending")

            await until("two notices on the webhook", lambda: len([n for n in hook.got if mine(n)]) >= 2, END_S + 20, every=0.1)
            await until("the same two on MQTT", lambda: len([n for n in mqtt_got if mine(n)]) >= 2, 10, every=0.1)
            hooked = [n for n in hook.got if mine(n)]
            mqtt = [n for n in mqtt_got if mine(n)]
            assert hook.bad == []
            assert [(n["seq"], n["action"]) for n in hooked[:2]] == [(1, "notice"), (2, "notice")]
            assert [(n.seq, n.action, n.drop_at, n.drop_kw, n.exact, n.source) for n in mqtt[:2]] == [
                (n["seq"], n["action"], datetime.fromisoformat(n["drop_at"]), n["drop_kw"], n["exact"], n["source"])
                for n in hooked[:2]]
            assert 25 <= mqtt[0].lead_s <= 31 and 8 <= mqtt[1].lead_s <= 13, [n.lead_s for n in mqtt]  # type: ignore[operator]
            drop_at, drop_kw = mqtt[0].drop_at, mqtt[0].drop_kw
            assert drop_kw > 2.0 and "short-run" in mqtt[0].reason and hooked[0]["site"] == site_id

            # the VTN asked for the Projected report: the same drop, at its time, with its size
            def projected() -> list[Any]:
                return [r for r in vtn.received_reports if r.source == PROJECTED_R_ID and r.value > 0]

            await until("the drop in a Projected report", projected, 15, every=0.1)
            seen = projected()[-1]
            assert abs((seen.at - drop_at).total_seconds()) < 1.0 and abs(seen.value - drop_kw) < 1e-3, seen
            # and under its own data point, named after the notice (the VEN registered the report again for it)
            def by_id() -> list[Any]:
                return [r for r in vtn.received_reports if r.source == notice_r_id("job:ending") and r.value > 0]

            await until("the notice's own data point", by_id, 15, every=0.1)
            own = by_id()[-1]
            assert abs((own.at - drop_at).total_seconds()) < 1.0 and abs(own.value - drop_kw) < 1e-3, own
            client = gateway.ven._client
            assert client is not None
            asked = [r for r in client.report_requests if r["report_specifier_id"] == PROJECTED_SPECIFIER_ID]
            assert len(asked) == 1, asked  # asked again after the re-registration: the older request is gone

            # the job ends on time: the measured fall was announced ahead, coverage 1.0
            await until("the drop to be measured", lambda: gateway.journal.log_entries(None, ("drop_observed",)),
                        END_S + 30 - (time.monotonic() - started), every=0.1)
            body = gateway.journal.log_entries(None, ("drop_observed",))[0][3]
            assert body["notice_id"] == "job:ending" and body["covered"] is True, body
            assert gateway.status()["notices"]["coverage_24h"]["coverage"] == 1.0  # type: ignore[index]
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)
            await sub.__aexit__(None, None, None)
