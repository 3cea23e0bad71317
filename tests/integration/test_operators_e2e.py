"""Issue 4 end to end: the whole gateway with its operators' outputs on the real services.

A real ``Gateway`` (VEN + engine + journal + MQTT sink + time-series sink) on the wall clock, with the
simulated scheduler of a small site (8 nodes x 8 GPUs, the demo mix), registered with a real
``ScriptedVtn`` on loopback, publishing to the real Mosquitto and writing to the real VictoriaMetrics
that ``scripts/services.sh up`` started (host, port and URL from the environment, else from
``var/services/env``). Each test uses its own topic prefix and site id (a uuid), so neither retained
messages nor exported points of another run can answer for it.

1. An operator opts the site out of a running event over MQTT: accepted, answered, journaled, told to
   the VTN, everything undone; an unknown client is refused and alerted on.
2. The broker and the DB are stopped in the middle of an event and started again: the event keeps
   going, and every alert (MQTT, deduplicated by ``msg_id``) and every site-power point (exported from
   VictoriaMetrics) arrives exactly once, in order, with its original time.

The outage test stops and starts the services with ``scripts/services.d/mosquitto.sh stop-broker`` /
``start-broker`` and ``scripts/services.d/victoriametrics.sh stop-db`` / ``start-db``, which keep their
stores, and always starts them again, also when it fails.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, cast

import aiohttp
import aiomqtt
import pytest

from gateway.app import Gateway, build_scheduler, power_model
from gateway.clock import SystemClock
from gateway.config import DcflexConfig
from gateway.domain import EventState, JobState
from gateway.jobchannel import CheckpointAcks
from gateway.sinks.mqtt import MqttSink
from gateway.sinks.mqtt.payloads import to_topic_level
from gateway.sinks.tsdb import TsdbSink
from simulators.cluster import SimulatedCluster
from simulators.vtn import ScriptedVtn
from tests.services import HINT, service_env
from tests.waiting import until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
MOSQUITTO_SH = ROOT / "scripts" / "services.d" / "mosquitto.sh"
VM_SH = ROOT / "scripts" / "services.d" / "victoriametrics.sh"

VEN_ID = "ven-e2e"
ALLOWED = "ops-alice"  # the one identity in override_allow
SAMPLE_S = 0.5  # the engine reads site power twice per power interval, so no interval is left empty
POWER_INTERVAL_S = 1.0
POWER_INTERVAL_MS = 1000


async def script(path: Path, command: str) -> None:
    proc = await asyncio.create_subprocess_exec(str(path), command, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, f"{path.name} {command} failed: {out.decode()}"


# ------------------------------------------------------------------------------------------ the services


@dataclass(frozen=True)
class Services:
    mqtt_host: str
    mqtt_port: int
    tsdb_url: str


@pytest.fixture
async def services() -> Services:
    svc = Services(service_env("DCFLEX_TEST_MQTT_HOST"), int(service_env("DCFLEX_TEST_MQTT_PORT")),
                   service_env("DCFLEX_TEST_TSDB_URL"))
    try:
        async with aiomqtt.Client(svc.mqtt_host, svc.mqtt_port, timeout=3):
            pass
    except aiomqtt.MqttError as exc:
        pytest.fail(f"Mosquitto is not reachable at {svc.mqtt_host}:{svc.mqtt_port} ({exc}): {HINT}")
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http, \
                http.get(f"{svc.tsdb_url}/health") as health:
            assert health.status == 200, f"{svc.tsdb_url}/health answered {health.status}: {HINT}"
    except aiohttp.ClientError as exc:
        pytest.fail(f"VictoriaMetrics is not reachable at {svc.tsdb_url} ({exc}): {HINT}")
    return svc


@pytest.fixture
async def names(services: Services) -> AsyncIterator[tuple[str, str]]:
    """(topic prefix, site id), fresh for the test; the retained messages under the prefix are cleared after."""
    run = uuid.uuid4().hex[:12]
    prefix, site = f"dcflex-e2e-{run}", f"site-{run}"
    yield prefix, site
    retained: list[str] = []
    try:
        async with aiomqtt.Client(services.mqtt_host, services.mqtt_port, timeout=5) as client:
            await client.subscribe(f"{prefix}/#")
            messages = aiter(client.messages)
            while True:  # retained messages come at once on subscribing: stop at the first quiet 0.2 s
                try:
                    m = await asyncio.wait_for(anext(messages), 0.2)
                except TimeoutError:
                    break
                if m.retain:
                    retained.append(m.topic.value)
            for topic in retained:
                await client.publish(topic, b"", qos=1, retain=True)
    except aiomqtt.MqttError:
        pass  # the broker is gone (a failed outage test); `services.sh up` starts clean anyway


class Subscriber:
    """A real aiomqtt subscriber keeping (topic, retain, payload as JSON) of what it receives.

    ``persistent``: a fixed client id and clean_session=False, so the broker queues QoS 1 messages for it
    while it (or the broker) is away; ``reconnect`` resumes that session without subscribing again
    (the broker kept the subscriptions), so no retained copy is re-sent on top of the queued ones.
    """

    def __init__(self, svc: Services, *filters: str, persistent: bool = False) -> None:
        self.svc = svc
        self.filters = filters
        self.persistent = persistent
        self.identifier = f"sub-{uuid.uuid4().hex[:12]}"
        self.got: list[tuple[str, bool, Any]] = []
        self._client: aiomqtt.Client | None = None
        self._reader: asyncio.Task[None] | None = None

    async def connect(self, *, subscribe: bool = True) -> None:
        self._client = aiomqtt.Client(self.svc.mqtt_host, self.svc.mqtt_port, identifier=self.identifier,
                                      clean_session=not self.persistent, timeout=5)
        await self._client.__aenter__()
        self._reader = asyncio.create_task(self._read(self._client))
        if subscribe:
            for f in self.filters:
                await self._client.subscribe(f, qos=1)

    async def _read(self, client: aiomqtt.Client) -> None:
        try:
            async for m in client.messages:
                raw = m.payload if isinstance(m.payload, bytes) else str(m.payload).encode()
                self.got.append((m.topic.value, bool(m.retain), json.loads(raw) if raw else None))
        except aiomqtt.MqttError:
            pass  # the broker went away; `reconnect` picks up

    async def reconnect(self, within: float = 20.0) -> None:
        await self.close()
        deadline = time.monotonic() + within
        while True:
            try:
                await self.connect(subscribe=not self.persistent)
                return
            except aiomqtt.MqttError as exc:
                if time.monotonic() > deadline:
                    raise AssertionError(f"could not reconnect to the broker within {within:g} s: {exc}") from exc
                await asyncio.sleep(0.2)

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        if self._client is not None:
            try:
                await self._client.__aexit__(None, None, None)
            except aiomqtt.MqttError:
                pass
        self._client = self._reader = None

    async def forget(self) -> None:
        """End a persistent session at the broker (a clean-session connect under the same id)."""
        await self.close()
        try:
            async with aiomqtt.Client(self.svc.mqtt_host, self.svc.mqtt_port, identifier=self.identifier,
                                      clean_session=True, timeout=5):
                pass
        except aiomqtt.MqttError:
            pass

    def on(self, suffix: str) -> list[Any]:
        return [g[2] for g in self.got if g[0].endswith(suffix)]

    def first_copies(self, part: str) -> list[Any]:
        """Payloads on topics containing ``part``, each ``msg_id`` once (its first copy), in arrival order."""
        seen: set[str] = set()
        out = []
        for topic, _, body in self.got:
            if part in topic and isinstance(body, dict) and body["msg_id"] not in seen:
                seen.add(body["msg_id"])
                out.append(body)
        return out


# ------------------------------------------------------------------------------------------ the gateway


class Recorder:
    """An extra sink beside MQTT and the DB: what the engine handed its outputs (power samples, alerts)."""

    def __init__(self) -> None:
        self.records: list[tuple[str, dict[str, object]]] = []

    async def emit(self, kind: str, payload: Mapping[str, object]) -> None:
        self.records.append((kind, dict(payload)))

    def power(self) -> list[tuple[int, float]]:
        """(ms since the epoch, kW) of every site-power sample."""
        out = []
        for kind, body in self.records:
            if kind == "power":
                at = datetime.fromisoformat(str(body["at"]))
                out.append((math.floor(at.timestamp() * 1000), float(cast(float, body["kw"]))))
        return out


@dataclass
class Site:
    vtn: ScriptedVtn
    cfg: DcflexConfig
    clock: SystemClock
    cluster: SimulatedCluster
    gateway: Gateway
    recorder: Recorder
    task: asyncio.Task[None] | None = None
    base: str = ""
    stopped: bool = False

    def check(self) -> None:
        """Fail at once, saying why, when the gateway stopped on its own (it closes its journal then)."""
        if self.task is not None and self.task.done() and not self.stopped:
            exc = None if self.task.cancelled() else self.task.exception()
            raise AssertionError(f"the gateway stopped on its own: {exc!r}") from exc

    @property
    def mqtt(self) -> MqttSink:
        self.check()
        return cast(MqttSink, self.gateway.outputs["mqtt"])

    @property
    def tsdb(self) -> TsdbSink:
        self.check()
        return cast(TsdbSink, self.gateway.outputs["tsdb"])

    def state(self, event_id: str) -> EventState | None:
        self.check()
        rec = self.gateway.journal.event(event_id)
        return rec.state if rec else None

    def add_event(self, intervals: list[tuple[float, float]], in_s: float = 3.0) -> str:
        """A LOAD_CONTROL percent-offset event of ``(seconds, percent)`` intervals, starting in ``in_s``."""
        return self.vtn.add_event(VEN_ID, "LOAD_CONTROL", "x-loadControlPercentOffset",
                                  [(timedelta(seconds=s), pct) for s, pct in intervals],
                                  self.clock.now() + timedelta(seconds=in_s))

    async def stop(self) -> None:
        """Stop the gateway as `dcflex run` stops (cancelled): the outputs flush what is waiting."""
        if self.task is not None and not self.stopped:
            self.stopped = True
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)


@asynccontextmanager
async def running_site(tmp_path: Path, svc: Services, prefix: str, site_id: str) -> AsyncIterator[Site]:
    async with ScriptedVtn(poll_interval_s=1.0) as vtn:
        clock = SystemClock()
        cfg = DcflexConfig.model_validate({
            "ven": {"vtn_url": vtn.vtn_url, "ven_name": VEN_ID, "ven_id": VEN_ID, "poll_interval_s": 0.25},
            "site": {"site_id": site_id, "nodes": 8, "gpus_per_node": 8, "ramp_rate_kw_per_min": 120.0,
                     "baseline_minutes": 5},
            "policy": {"default_ramp_s": 2.0, "default_recovery_s": 10.0, "tolerance_kw": 0.5, "replan_drift_kw": 2.0,
                       "replan_interval_s": 5.0},
            "scheduler": {"kind": "simulated", "simulated": {"workload_mix": "demo", "seed": 7}},
            "journal": {"path": str(tmp_path / "journal.sqlite3")},
            "api": {"enabled": False},
            "sinks": {
                "mqtt": {"enabled": True, "host": svc.mqtt_host, "port": svc.mqtt_port, "topic_prefix": prefix,
                         "site_id": site_id, "client_id": f"gw-{site_id}", "keepalive_s": 10, "reconnect_min_s": 0.2,
                         "reconnect_max_s": 1.0, "override_allow": [ALLOWED]},
                "influxdb": {"enabled": True, "url": svc.tsdb_url, "org": "dcflex", "bucket": "dcflex", "token": "t",
                             "batch_size": 500, "flush_interval_s": 0.25, "power_interval_s": POWER_INTERVAL_S,
                             "timeout_s": 2.0, "retry_min_s": 0.2, "retry_max_s": 1.0},
            },
        })
        model = power_model(cfg)
        acks = CheckpointAcks()
        parts = build_scheduler(cfg, clock, model, acks)
        assert isinstance(parts.scheduler, SimulatedCluster)
        recorder = Recorder()
        gateway = Gateway(cfg, scheduler=parts.scheduler, meter=parts.meter, clock=clock, model=model, sinks=[recorder],
                          sample_interval_s=SAMPLE_S, guard=parts.guarded, acks=acks)
        site = Site(vtn=vtn, cfg=cfg, clock=clock, cluster=parts.scheduler, gateway=gateway, recorder=recorder,
                    base=f"{prefix}/{site_id}")
        site.task = asyncio.create_task(gateway.serve())
        try:
            await until("the VEN registers with the VTN", lambda: gateway.ven.registration_id is not None, 15,
                        detail=lambda: f"gateway task done: {site.task is not None and site.task.done()}")
            await until("the MQTT sink connects", lambda: bool(site.mqtt.stats()["connected"]), 10,
                        detail=lambda: site.mqtt.stats())
            yield site
        finally:
            await site.stop()


async def assert_restored(site: Site) -> None:
    snap = await site.cluster.snapshot()
    for job in snap.jobs:
        assert job.power_cap_w is None, f"{job.job_id} still capped"
        assert job.state not in (JobState.SUSPENDED, JobState.STOPPED), f"{job.job_id} left {job.state}"
    assert not [n.name for n in snap.nodes if n.drained_by_gateway], "nodes left drained by the gateway"


async def export(svc: Services, site_id: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], list[tuple[int, float]]]:
    """Every series tagged ``site``: (name, other labels) → [(ms, value)] as exported (not re-sorted)."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        async with http.get(f"{svc.tsdb_url}/internal/force_flush") as flushed:
            assert flushed.status == 200
        params = {"match[]": f'{{__name__=~"dcflex_.*",site="{site_id}"}}', "start": "0"}
        async with http.get(f"{svc.tsdb_url}/api/v1/export", params=params) as resp:
            assert resp.status == 200, await resp.text()
            rows: list[dict[str, Any]] = [json.loads(line) for line in (await resp.text()).splitlines()]
    out = {}
    for row in rows:
        labels = dict(row["metric"])
        name = labels.pop("__name__")
        labels.pop("site")
        out[(name, tuple(sorted(labels.items())))] = list(zip(row["timestamps"], row["values"], strict=True))
    return out


# ------------------------------------------------------------------------------------------ tests


async def test_operator_opts_the_site_out_over_mqtt_and_the_vtn_hears_it(
        tmp_path: Path, services: Services, names: tuple[str, str]) -> None:
    prefix, site_id = names
    async with running_site(tmp_path, services, prefix, site_id) as site:
        base = site.base
        sub = Subscriber(services, f"{base}/#")
        await sub.connect()
        try:
            eid = site.add_event([(60.0, 25.0)])
            response = await site.vtn.wait_for_response(eid, within_s=10)
            assert response.opt_type == "optIn", response
            await until("the gateway sheds (commands reach the simulated cluster)",
                        lambda: bool(site.cluster.commands) and site.state(eid) in (EventState.RAMPING, EventState.HOLDING), 15,
                        detail=lambda: f"state {site.state(eid)}, commands {site.cluster.commands}")
            shed = len(site.cluster.commands)

            async def send(identity: str, body: dict[str, object]) -> None:
                async with aiomqtt.Client(services.mqtt_host, services.mqtt_port,
                                          identifier=f"{identity}-{site_id}", timeout=5) as operator:
                    await operator.publish(f"{base}/override/{identity}", json.dumps(body).encode(), qos=1)

            await send(ALLOWED, {"command": "opt_out", "event_id": eid, "reason": "cooling fault", "request_id": "r-1"})
            await send("mallory", {"command": "opt_out", "event_id": eid, "request_id": "r-2"})
            await until("both replies",
                        lambda: bool(sub.on(f"/override/{ALLOWED}/reply") and sub.on("/override/mallory/reply")), 15,
                        detail=lambda: sub.got[-5:])
            [ok] = sub.on(f"/override/{ALLOWED}/reply")
            assert (ok["request_id"], ok["command"], ok["accepted"]) == ("r-1", "opt_out", True), ok
            assert ok["answer"].startswith(f"opted out of {eid}: undoing ") and ok["answer"].endswith("the VTN was told"), ok
            [no] = sub.on("/override/mallory/reply")
            assert (no["request_id"], no["accepted"]) == ("r-2", False), no
            assert "client 'mallory' may not send overrides" in no["answer"], no
            await until("the refusal's alert", lambda: any(a["code"] == "override_refused" for a in sub.on("/alerts")), 10,
                        detail=lambda: sub.on("/alerts"))
            refused = [a for a in sub.on("/alerts") if a["code"] == "override_refused"]
            assert len(refused) == 1 and "mallory" in refused[0]["message"] and refused[0]["severity"] == "warning", refused

            # the VTN heard the opt-out (oadrCreateOpt; OpenADR's optReason for an operator's decision)
            opts = [o for o in site.vtn.opts if o.event_id == eid]
            assert [(o.opt_type, o.opt_reason, o.modification) for o in opts] == [("optOut", "overrideStatus", 0)], site.vtn.opts

            # everything the event changed is undone, and the event ends opted out
            await until("the event ends opted out", lambda: site.state(eid) is EventState.OPTED_OUT, 30,
                        detail=lambda: f"state {site.state(eid)}, transitions {site.gateway.journal.transitions(eid)}")
            assert len(site.cluster.commands) > shed, "nothing was undone"
            await assert_restored(site)
            states = [body["state"] for _, _, kind, body in site.gateway.journal.log_entries(eid, ("state",))]
            assert states[-2:] == ["restoring", "opted_out"], states

            # journaled: both commands, with who sent them and what became of them
            overrides = [body for _, _, _, body in site.gateway.journal.log_entries(eid, ("override",))]
            assert [(o["client"], o["accepted"]) for o in overrides] == [(ALLOWED, True), ("mallory", False)], overrides
            assert overrides[0]["command"]["command"] == "opt_out" and overrides[0]["answer"] == ok["answer"]

            # the retained lifecycle message says opted_out to a dashboard that subscribes now
            await asyncio.wait_for(site.mqtt.drained(), 10)
            late = Subscriber(services, f"{base}/events/{to_topic_level(eid)}")
            await late.connect()
            try:
                await until("the retained event state", lambda: bool(late.got), 5)
                _, retained, body = late.got[0]
                assert retained and body["event_id"] == eid and body["state"] == "opted_out", late.got
            finally:
                await late.close()
        finally:
            await sub.close()
    assert site.task is not None and site.task.done()


async def test_broker_and_db_down_mid_event_lose_nothing(
        tmp_path: Path, services: Services, names: tuple[str, str]) -> None:
    prefix, site_id = names
    base = f"{prefix}/{site_id}"
    # subscribed before the gateway starts, with a persistent session: nothing the gateway publishes can
    # pass it by, however its reconnection and the gateway's interleave after the broker's restart
    sub = Subscriber(services, f"{base}/alerts", f"{base}/events/+", persistent=True)
    await sub.connect()
    broker_down = db_down = False
    try:
        async with running_site(tmp_path, services, prefix, site_id) as site:
            journal, engine, cluster = site.gateway.journal, site.gateway.engine, site.cluster
            # a milder first interval, a stricter second one that starts while the services are down
            eid = site.add_event([(9.0, 15.0), (60.0, 30.0)])
            assert (await site.vtn.wait_for_response(eid, within_s=10)).opt_type == "optIn"
            await until("the event is shedding", lambda: bool(cluster.commands)
                        and site.state(eid) in (EventState.RAMPING, EventState.HOLDING), 15,
                        detail=lambda: f"state {site.state(eid)}")
            directive = journal.event(eid).directive  # type: ignore[union-attr]
            assert directive is not None
            step_at = directive.start + timedelta(seconds=9.0)

            # ---- take both services away, mid-event
            broker_down = db_down = True
            await asyncio.gather(script(MOSQUITTO_SH, "stop-broker"), script(VM_SH, "stop-db"))
            down_at = site.clock.now()
            assert down_at < step_at, f"the services went down at {down_at}, after the stricter interval began ({step_at})"
            await until("both sinks notice the outage",
                        lambda: not site.mqtt.stats()["connected"] and site.tsdb.stats()["state"] == "unavailable", 10,
                        detail=lambda: (site.mqtt.stats(), site.tsdb.stats()))
            await engine.pause_actions("x")  # operators' alerts produced while nothing can carry them
            await asyncio.sleep(0.5)
            await engine.resume_actions("y")
            commands_before_step = len(cluster.commands)
            await until("the stricter interval's commands reach the cluster during the outage",
                        lambda: site.clock.now() >= step_at and len(cluster.commands) > commands_before_step, 20,
                        detail=lambda: f"state {site.state(eid)}, {len(cluster.commands)} commands")
            await asyncio.sleep(max(0.0, 6.0 - (site.clock.now() - down_at).total_seconds()))  # >= 6 s of outage
            assert site.state(eid) in (EventState.RAMPING, EventState.HOLDING), "the event did not keep running"
            assert site.mqtt.stats()["queued"] > 0 and site.tsdb.stats()["state"] == "unavailable"
            up_at = site.clock.now()

            # ---- bring them back
            await asyncio.gather(script(MOSQUITTO_SH, "start-broker"), script(VM_SH, "start-db"))
            broker_down = db_down = False
            await sub.reconnect()
            during = [c for c in cluster.commands if down_at <= c.at <= up_at]
            assert during, "no command reached the cluster while the services were down"

            def alert_codes() -> list[str]:
                site.check()
                return [body["code"] for _, _, _, body in journal.log_entries(kinds=("alert",))]

            def outboxes_empty() -> bool:
                mq, ts = site.mqtt.stats(), site.tsdb.stats()
                return (bool(mq["connected"]) and mq["queued"] == 0 and ts["state"] == "ok" and ts["outbox_batches"] == 0
                        and {"mqtt_recovered", "tsdb_recovered"} <= set(alert_codes()))

            await until("both outboxes are empty again", outboxes_empty, 30,
                        detail=lambda: (site.mqtt.stats(), site.tsdb.stats(), alert_codes()))
            assert site.state(eid) in (EventState.RAMPING, EventState.HOLDING)

            # ---- MQTT: every journaled alert and state change once (by msg_id), in the journal's order
            def journaled() -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
                site.check()
                entries = journal.log_entries(kinds=("alert", "state"))
                alerts = [(b["code"], b["message"]) for _, _, k, b in entries if k == "alert"]
                states = [(e, b["state"]) for _, e, k, b in entries if k == "state"]
                return alerts, states

            def received() -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
                alerts = [(a["code"], a["message"]) for a in sub.first_copies("/alerts")]
                states = [(s["event_id"], s["state"]) for s in sub.first_copies("/events/")]
                return alerts, states

            await until("every journaled alert and state change on MQTT", lambda: received() == journaled(), 15,
                        detail=lambda: f"journaled {journaled()}\nreceived {received()}")
            want_alerts, want_states = journaled()
            codes = [code for code, _ in want_alerts]
            for code in ("mqtt_unavailable", "tsdb_unavailable", "actions_paused", "actions_resumed",
                         "mqtt_recovered", "tsdb_recovered"):
                assert codes.count(code) == 1, f"{code} journaled {codes.count(code)} time(s): {codes}"
            assert codes.index("actions_paused") < codes.index("actions_resumed") < codes.index("mqtt_recovered")
            assert [s for e, s in want_states if e == eid][:2] == ["noticed", "ramping"], want_states
            deliveries = [g for g in sub.got if "/alerts" in g[0] or "/events/" in g[0]]
            duplicates = len(deliveries) - len(sub.first_copies("/alerts")) - len(sub.first_copies("/events/"))
            print(f"\nMQTT: {len(want_alerts)} alerts and {len(want_states)} state changes, each received once "
                  f"after dropping {duplicates} duplicate(s) by msg_id")
            assert duplicates <= site.cfg.sinks.mqtt.max_inflight, f"{duplicates} duplicates: more than the in-flight window"

            tsdb_stats = site.tsdb.stats()
            assert isinstance(tsdb_stats["queued"], int) and tsdb_stats["queued"] > 0, tsdb_stats  # went through the outbox
            assert isinstance(tsdb_stats["drained"], int) and tsdb_stats["drained"] >= tsdb_stats["queued"], tsdb_stats
            await site.stop()  # a clean stop writes the open power interval too: every sample is then in the DB
            assert site.tsdb.stats()["state"] == "ok" and site.tsdb.stats()["failed"] == 0, site.tsdb.stats()
            samples = site.recorder.power()
    finally:
        try:
            if broker_down:
                await script(MOSQUITTO_SH, "start-broker")
        finally:
            if db_down:
                await script(VM_SH, "start-db")
            await sub.forget()

    # ---- the DB: one point per power interval, no gap across the outage, every sample counted once
    got = await export(services, site_id)
    actual = got.get(("dcflex_site_power_actual_kw", ()), [])
    counts = dict(got.get(("dcflex_site_power_samples", ()), []))
    stamps = [ms for ms, _ in actual]
    assert stamps and all(a < b for a, b in itertools.pairwise(stamps)), \
        f"site-power timestamps not strictly increasing and unique: {stamps}"
    first, last = stamps[0], stamps[-1]
    holes = sorted(set(range(first, last + 1, POWER_INTERVAL_MS)) - set(stamps))
    assert len(stamps) == (last - first) // POWER_INTERVAL_MS + 1, \
        f"{len(stamps)} points from {first} to {last}: the interval grid has gaps at {holes}"
    assert all(ms % POWER_INTERVAL_MS == 0 for ms in stamps), "points not stamped at their interval's start"
    assert first == samples[0][0] - samples[0][0] % POWER_INTERVAL_MS, "the first interval is missing"
    assert last == samples[-1][0] - samples[-1][0] % POWER_INTERVAL_MS, "the last interval is missing"
    assert sum(counts.values()) == len(samples), f"{sum(counts.values())} samples in the DB, {len(samples)} produced"
    written_kw = sum(kw * counts[ms] for ms, kw in actual)
    assert math.isclose(written_kw, sum(kw for _, kw in samples), rel_tol=1e-9), "the means do not add up to the samples"
    down_ms, up_ms = (math.floor(t.timestamp() * 1000) for t in (down_at, up_at))
    in_outage = [ms for ms in stamps if down_ms <= ms and ms + POWER_INTERVAL_MS <= up_ms]
    produced_in_outage = {ms - ms % POWER_INTERVAL_MS for ms, _ in samples if down_ms <= ms - ms % POWER_INTERVAL_MS
                          and ms - ms % POWER_INTERVAL_MS + POWER_INTERVAL_MS <= up_ms}
    assert len(in_outage) >= (up_ms - down_ms) // POWER_INTERVAL_MS - 1, (in_outage, down_ms, up_ms)
    assert set(in_outage) == produced_in_outage, "points of the outage are not at their original times"
    print(f"DB: {len(stamps)} site-power points, {len(in_outage)} of them produced during the "
          f"{(up_ms - down_ms) / 1000:.1f} s outage and written later from the outbox")
