"""dcflex end to end: a real OpenADR VTN (openleadr, loopback) → the whole gateway → a real Ray head.

The gateway is built the way ``dcflex run`` builds it (``build_scheduler`` with ``scheduler.kind = "ray"``,
the directive store shared between the Ray adapter and the HTTP API, a power meter modelled from the
adapter's snapshots: the GPUs are a custom Ray resource, so site power is the model's) and runs on the wall
clock. Its API listens on a port chosen before the gateway is built, because the adapter hands
``DCFLEX_GATEWAY_URL`` to every job it submits (``scheduler.ray.gateway_url``), before the API is up.

Real Ray jobs (a working_dir of their own holding ``train.py``, run by this virtualenv's Python so they import
``gateway.jobside``) count training steps, write their step counter as a checkpoint when the helper says so,
acknowledge, then wait to be stopped; resubmitted with ``DCFLEX_RESUME_FROM`` they carry on from that step.
Tiers come from the jobs' metadata. The flexible jobs are ``preemptible``: Ray reports no remaining time, so a
flex tier's allowance (max_loss × (elapsed + the event)) covers a stop only once the job has run longer than
the event plus twice its checkpoint and restart, far longer than a test can wait. Every check reads Ray's own
answers (status, logs), the jobs' files and the gateway's journal, besides the adapter's record of each stop.

The test Ray head is shared (other sessions' tests and benchmarks submit dcflex jobs to it), and a gateway plans
over every job its cluster runs, so each gateway here is shown only this run's jobs (``OwnJobs``: a filter on the
adapter's snapshot; commands and the adapter are untouched).

A Ray Serve application (four replicas of one deployment, ``flex-50`` by a ``[[scheduler.ray.serve]]`` rule,
one GPU per replica by the same rule: the replicas reserve none) stands for an inference service: the event
takes two of its replicas, and gives them back one at a time after it.

Needs the test Ray head (``scripts/services.sh up``); without it these tests fail, saying so.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from adapters.ray.adapter import RayAdapter
from adapters.ray.client import RayDashboardClient
from adapters.ray.hold import hold_id
from adapters.ray.levers import KEY_RESUMED_FROM, resubmission_id
from adapters.ray.model import JobSpec
from gateway.app import Gateway, build_scheduler, power_model
from gateway.clock import SystemClock
from gateway.config import DcflexConfig
from gateway.domain import Action, ActionKind, ClusterSnapshot, EventState, Tier
from gateway.jobchannel import CheckpointAcks, JobDirectives
from gateway.ports import Facts, Recall
from gateway.power.meter import ModelledMeter
from simulators.vtn import ScriptedVtn
from tests.adapters.ray.apps import serve_app
from tests.adapters.ray.holds import placement_groups, release_holds
from tests.services import HINT, service_env
from tests.waiting import until

pytestmark = pytest.mark.integration

RUN = f"dcflex-e2e{uuid.uuid4().hex[:6]}"  # every job of this run starts with it (resubmissions too)
VEN_ID = "ven-ray-e2e"
GRACE_SILENT = 3.0
RAMP_KW_PER_MIN = 18.0  # a replica's GPU (0.31 kW) comes back about a second after the one before

TRAIN = '''\
import os, sys, time
from gateway import jobside

mode, out = sys.argv[1], sys.argv[2]      # "ack" answers a checkpoint request, "ignore" never does, "done" ends
job_id = os.environ.get("DCFLEX_JOB_ID", "")
for key in ("DCFLEX_JOB_ID", "DCFLEX_GATEWAY_URL"):
    print(f"env {key}={os.environ.get(key, '')}", flush=True)
resume = jobside.resume_from()
step = int(open(resume).read()) if resume else 0
print(f"start step={step} resume={resume or '-'}", flush=True)
if mode == "done":
    sys.exit(0)


def save(path, value):
    with open(path + ".tmp", "w") as f:
        f.write(str(value))
    os.replace(path + ".tmp", path)


told = False
deadline = time.monotonic() + 150          # never outlive the test run by much
while time.monotonic() < deadline:
    time.sleep(0.1)                        # one training step
    step += 1
    save(os.path.join(out, job_id + ".progress"), step)
    if not jobside.should_checkpoint():
        continue
    asked = jobside.current()
    if not told:
        print(f"directive event={asked.event_id if asked else '?'} step={step}", flush=True)
        told = True
    if mode == "ignore":
        continue                           # keeps training, never acknowledges
    path = os.path.join(out, job_id + ".ckpt")
    save(path, step)
    jobside.acknowledge(path)
    jobside.flush(5)
    print(f"checkpoint step={step} path={path}", flush=True)
    while time.monotonic() < deadline:     # it will be stopped: train no further than the checkpoint
        time.sleep(0.2)
'''

FLEX_MD = {"dcflex.tier": "preemptible", "dcflex.gpus": "2", "dcflex.resumable": "true",
           "dcflex.checkpoint_grace_s": "15", "dcflex.restart_s": "2"}
CRITICAL_MD = {**FLEX_MD, "dcflex.tier": "critical", "job_name": "toy-critical"}  # resumable, yet never touched
SILENT_MD = {**FLEX_MD, "dcflex.checkpoint_grace_s": f"{GRACE_SILENT:g}"}
FINISHED_MD = {**FLEX_MD, "dcflex.gpus": "8"}  # a large job that ended before the event, as Ray keeps listing it
CHAT = f"{RUN}-chat"
SERVE_APP = serve_app("Model", 0.05)


# ------------------------------------------------------------------------------------ plumbing


async def held(site: Site, name: str, state: str) -> bool:
    """Whether Ray's state API lists the placement group ``name`` in ``state``."""
    groups = [g for g in await placement_groups(site.url) if g.get("name") == name]
    return bool(groups) and groups[-1]["state"] == state


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Collector:
    """A ``Sink`` that keeps every record the engine emits."""

    def __init__(self) -> None:
        self.records: list[tuple[str, dict[str, object]]] = []

    async def emit(self, kind: str, payload: Mapping[str, object]) -> None:
        self.records.append((kind, dict(payload)))

    def alerts(self, code: str) -> list[dict[str, object]]:
        return [p for k, p in self.records if k == "alert" and p.get("code") == code]


class Cable:
    """A TCP forwarder in front of the real dashboard that a test can unplug (new connections refused,
    open ones cut, as when the dashboard's host goes away) and plug back in on the same port."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self._to = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def plug(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def unplug(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._open):
            writer.close()
        if server is not None:
            await server.wait_closed()
        await until("the cut connections to close", lambda: not self._open, 5, every=0.05)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._open.add(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._to)
        except OSError:
            await _close(writer)
            self._open.discard(writer)
            return
        self._open.add(up_writer)
        try:
            await asyncio.gather(_pipe(reader, up_writer, writer), _pipe(up_reader, writer, up_writer))
        finally:
            for w in (writer, up_writer):
                await _close(w)
                self._open.discard(w)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, own: asyncio.StreamWriter) -> None:
    """Copy until either side ends; then close both, so the other direction ends too."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()
        own.close()


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass


class OwnJobs:
    """The Ray adapter, its snapshots filtered to this run's jobs (see the module docstring)."""

    name = "ray"

    def __init__(self, adapter: RayAdapter) -> None:
        self.adapter = adapter

    async def snapshot(self) -> ClusterSnapshot:
        snap = await self.adapter.snapshot()
        return replace(snap, jobs=tuple(j for j in snap.jobs if j.job_id.startswith((RUN, f"serve:{RUN}"))))

    async def apply(self, action: Action) -> Facts | None:
        return await self.adapter.apply(action)

    def describe(self, action: Action) -> list[str]:
        return self.adapter.describe(action)

    def prepare(self, actions: Sequence[Action]) -> None:
        self.adapter.prepare(actions)

    def recall(self, memory: Recall) -> None:
        self.adapter.recall(memory)

    async def aclose(self) -> None:
        await self.adapter.aclose()


@dataclass
class Running:
    """One gateway, built as ``dcflex run`` builds it with ``kind = "ray"``; ``task`` once it serves."""

    gateway: Gateway
    adapter: RayAdapter
    sink: Collector
    task: asyncio.Task[None] | None = None

    def state(self, event_id: str) -> EventState | None:
        rec = self.gateway.journal.event(event_id)
        return rec.state if rec else None

    def actions(self, event_id: str, kind: ActionKind) -> dict[str, tuple[str, int]]:
        """``{job id: (journal state, attempts)}`` of the event's commands of one kind."""
        return {r.action.job_id: (r.state, r.attempts) for r in self.gateway.journal.actions(event_id)
                if r.action.kind is kind}

    def alive(self) -> bool:
        return self.task is not None and not self.task.done()

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        else:  # built, never served: close what the Gateway opened
            await self.adapter.aclose()
            self.gateway.outbox.close()
            self.gateway.journal.close()


@dataclass
class Site:
    url: str                      # the real dashboard
    client: RayDashboardClient    # the test's own view of Ray, never the gateway's
    vtn: ScriptedVtn
    dir: Path
    workdir: str                  # the jobs' working_dir, uploaded (gcs://)
    gpu_resource: str
    gateways: list[Running] = field(default_factory=list)

    @property
    def out(self) -> Path:
        return self.dir / "out"

    def build(self, dashboard_url: str) -> Running:
        """A gateway whose API port (and so the URL jobs are given) is fixed before it is built."""
        port = free_port()
        cfg = DcflexConfig.model_validate({
            "ven": {"vtn_url": self.vtn.vtn_url, "ven_name": VEN_ID, "ven_id": VEN_ID, "poll_interval_s": 0.5},
            "site": {"nodes": 2, "gpus_per_node": 8, "ramp_rate_kw_per_min": RAMP_KW_PER_MIN, "max_shed_fraction": 0.9,
                     "baseline_minutes": 1},
            "policy": {"default_ramp_s": 2.0, "default_recovery_s": 10.0, "replan_interval_s": 2.0,
                       "tolerance_kw": 0.05, "replan_drift_kw": 0.3},
            "tiers": {"default": "critical"},
            "scheduler": {"kind": "ray", "retries": 1, "command_timeout_s": 10.0, "ray": {
                "dashboard_url": dashboard_url, "gateway_url": f"http://127.0.0.1:{port}", "retry_backoff_s": 0.2,
                "gpu_resource": self.gpu_resource, "hold_python": sys.executable,
                "serve": [{"deployment": f"{CHAT}/*", "tier": "flex-50", "gpus_per_replica": 1}]}},
            "journal": {"path": str(self.dir / f"journal-{len(self.gateways)}.sqlite3")},
            "api": {"enabled": True, "host": "127.0.0.1", "port": port},
        })
        clock, acks = SystemClock(), CheckpointAcks()
        directives = JobDirectives(clock)
        model = power_model(cfg)
        parts = build_scheduler(cfg, clock, model, acks, directives=directives)
        assert isinstance(parts.scheduler, RayAdapter) and not parts.guarded
        sink = Collector()
        own = OwnJobs(parts.scheduler)
        meter = ModelledMeter(own, model, nodes=cfg.site.nodes, gpus_per_node=cfg.site.gpus_per_node)
        assert isinstance(parts.meter, ModelledMeter)  # the meter build_scheduler gives a Ray site, over our jobs only
        gateway = Gateway(cfg, scheduler=own, meter=meter, clock=clock, model=model, sinks=[sink],
                          sample_interval_s=1.0, guard=parts.guarded, acks=acks, directives=directives)
        running = Running(gateway, parts.scheduler, sink)
        self.gateways.append(running)
        return running

    async def serve(self, running: Running) -> None:
        gateway = running.gateway
        running.task = asyncio.create_task(gateway.serve())
        await until("the gateway to register, serve its API and read site power", lambda: (
            gateway.ven.registration_id is not None and gateway.api is not None
            and gateway.engine.history.latest is not None), 20, every=0.25)
        assert gateway.api is not None and gateway.api.url == running.adapter.gateway_url

    async def submit(self, running: Running, name: str, mode: str, metadata: Mapping[str, str]) -> str:
        """A toy training job, through the gateway's adapter (which adds the helper's environment)."""
        spec = JobSpec(f"{sys.executable} train.py {mode} {self.out}", f"{RUN}-{name}",
                       {"working_dir": self.workdir, "env_vars": {"DCFLEX_POLL_S": "0.2"}}, dict(metadata),
                       entrypoint_num_cpus=0.25, entrypoint_resources={self.gpu_resource: 1.0})
        return await running.adapter.submit(spec)

    async def started(self, sid: str) -> str:
        """Wait until Ray runs the job and it has printed its start line; its logs."""
        logs, last = "", ""

        async def probe() -> bool:
            nonlocal logs, last
            job = await self.client.get_job(sid)
            assert job is not None and job.status in ("PENDING", "RUNNING"), f"{sid}: {job}"
            last = f"{job.status}: {job.message}"
            logs = await self.client.job_logs(sid) if job.status == "RUNNING" else ""
            return "start step=" in logs

        try:
            await until(f"job {sid} to start", probe, 45, every=0.5)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; Ray says {last} (is the test Ray head busy with other jobs?)") from None
        return logs

    async def deploy_chat(self) -> None:
        """The inference service: four replicas of one deployment, up before the gateway reads its baseline."""
        (self.dir / "serve").mkdir()
        (self.dir / "serve" / "chat_app.py").write_text(SERVE_APP)
        wd = await self.client.upload_working_dir(self.dir / "serve")
        await self.client.deploy_serve_app(
            {"name": CHAT, "route_prefix": f"/{CHAT}", "import_path": "chat_app:app", "runtime_env": {"working_dir": wd},
             "deployments": [{"name": "Model", "num_replicas": 4}]},
            http_options={"host": "127.0.0.1", "port": free_port()},
        )
        await until("4 chat replicas", partial(self.replicas, 4), 90, every=0.5)

    async def replicas(self, n: int) -> bool:
        """Whether Serve's target and running replicas of the chat deployment are both ``n``."""
        app = (await self.client.serve_details()).apps.get(CHAT)
        assert app is None or app.status != "DEPLOY_FAILED", app
        dep = app.deployments.get("Model") if app is not None else None
        return dep is not None and dep.target_num_replicas == n == dep.running_replicas == len(dep.replicas)

    async def status(self, sid: str) -> str:
        job = await self.client.get_job(sid)
        return job.status if job is not None else "GONE"

    async def has_status(self, sid: str, status: str) -> bool:
        return await self.status(sid) == status

    def add_event(self, *, in_s: float, ramp_s: float, duration_s: float, pct: float) -> str:
        eid = f"{RUN}-ev{uuid.uuid4().hex[:4]}"
        self.vtn.add_event(VEN_ID, "LOAD_CONTROL", "x-loadControlPercentOffset", [(timedelta(seconds=duration_s), pct)],
                           datetime.now(UTC) + timedelta(seconds=in_s), ramp=timedelta(seconds=ramp_s), event_id=eid)
        return eid

    def read(self, name: str) -> str:
        path = self.out / name
        return path.read_text() if path.exists() else ""

    def step(self, name: str) -> int:
        text = self.read(name).strip()
        return int(text) if text.isdigit() else -1

    def counted_past(self, sid: str, step: int) -> bool:
        return self.step(f"{sid}.progress") > step


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    url = service_env("DCFLEX_TEST_RAY_DASHBOARD")
    client = RayDashboardClient(url, timeout_s=20.0, retries=2, backoff_s=0.2)
    try:
        version = await client.version()
    except Exception as exc:
        await client.aclose()
        pytest.fail(f"no Ray dashboard answers at {url} ({exc}): {HINT}")
    assert str(version.get("ray_version", "")).startswith("2.")

    try:
        (tmp_path / "job").mkdir()
        (tmp_path / "job" / "train.py").write_text(TRAIN)
        (tmp_path / "out").mkdir()
        workdir = await client.upload_working_dir(tmp_path / "job")
        async with ScriptedVtn(poll_interval_s=1.0) as vtn:
            s = Site(url, client, vtn, tmp_path, workdir, service_env("DCFLEX_TEST_RAY_GPU_RESOURCE"))
            try:
                yield s
            finally:
                for running in s.gateways:
                    await running.stop()
                await client.remove_serve_app(CHAT)
                await release_holds(client, RUN)
                ours = [j.submission_id or "" for j in await client.list_jobs()
                        if (j.submission_id or "").startswith(RUN) and not j.terminal]
                for sid in ours:
                    await client.stop_job(sid)

                async def ended() -> bool:
                    return all(j.terminal for j in await client.list_jobs() if (j.submission_id or "") in ours)

                try:  # best effort: Ray stops a job still starting only once it has started; each ends by itself anyway
                    await until("this test's Ray jobs to stop", ended, 10, every=0.5)
                except AssertionError as exc:
                    print(f"\n{exc}; stop requested for {ours}")
    finally:
        await client.aclose()


# ------------------------------------------------------------------------------------ the tests


async def test_an_event_checkpoints_stops_and_resumes_flexible_ray_jobs(site: Site, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="dcflex.adapters.ray")
    gw = site.build(site.url)
    # Jobs hear checkpoint requests only if the HTTP API serves the store the adapter writes them to.
    assert gw.gateway.directives is gw.adapter.directives, "the Gateway does not serve the JobDirectives it was given"
    finished = await site.submit(gw, "finished", "done", FINISHED_MD)
    critical = await site.submit(gw, "critical", "ack", CRITICAL_MD)
    flex = [await site.submit(gw, f"flex-{x}", "ack", FLEX_MD) for x in "ab"]
    silent = await site.submit(gw, "silent", "ignore", SILENT_MD)
    stoppable = [*flex, silent]
    logs = {sid: await site.started(sid) for sid in (critical, *stoppable)}
    await until("the finished job to end", partial(site.has_status, finished, "SUCCEEDED"), 30, every=0.25)
    await site.deploy_chat()
    chat = f"serve:{CHAT}/Model"
    await site.serve(gw)  # after the jobs and the service run: the baseline is their load
    assert gw.gateway.api is not None
    for sid, text in logs.items():
        assert f"env DCFLEX_JOB_ID={sid}\n" in text and f"env DCFLEX_GATEWAY_URL={gw.gateway.api.url}\n" in text, text
    snap = await gw.adapter.snapshot()
    assert {sid: (j.tier, j.gpus, j.pausable, j.requeueable) for sid in logs if (j := snap.job(sid))} == {
        critical: (Tier.CRITICAL, 2, False, True), **{sid: (Tier.PREEMPTIBLE, 2, False, True) for sid in stoppable}}
    svc = snap.job(chat)
    assert svc is not None and (svc.tier, svc.gpus, svc.replicas, svc.pausable) == (Tier.FLEX_50, 4, 4, False)

    asked = gw.adapter.directives
    assert asked is not None
    seen: list[tuple[str, bool]] = []  # the critical job's Ray status, and whether a directive waited for it

    async def watch() -> None:
        while True:
            seen.append((await site.status(critical), asked.get(critical) is not None))
            await asyncio.sleep(1.0)

    watcher = asyncio.create_task(watch())
    try:
        started = time.monotonic()
        # 16 GPUs, 4 jobs × 2 and 4 replicas × 1 at work: 4.65 kW modelled. 50 % off (2.33 kW) needs every
        # lever there is: the three flexible jobs stopped (1.85 kW) and the two replicas flex-50 allows (0.62 kW)
        eid = site.add_event(in_s=5, ramp_s=2, duration_s=24, pct=50.0)
        assert (await site.vtn.wait_for_response(eid, within_s=15)).opt_type == "optIn"
        await until("the event to hold", lambda: gw.state(eid) is EventState.HOLDING, 30, every=0.25)
        held_at = time.monotonic() - started

        # While the event holds: every flexible job heard the directive and was stopped, per Ray itself.
        assert gw.actions(eid, ActionKind.CHECKPOINT_STOP) == {sid: ("done", 1) for sid in stoppable}
        assert {sid: await site.status(sid) for sid in stoppable} == {sid: "STOPPED" for sid in stoppable}
        # their GPUs are held (a placement group each, made by a short job of the gateway's) so Ray starts nothing there
        for sid in stoppable:
            await until(f"{sid}'s GPUs held", partial(held, site, hold_id(sid, eid), "CREATED"), 20, every=0.5)
        # the service lost the two replicas its tier allows, one command each, and still serves on two
        scaled = sorted(r.action.replicas or 0 for r in gw.gateway.journal.actions(eid)
                        if r.action.kind is ActionKind.SCALE_DOWN and r.state == "done")
        assert scaled == [2, 3], scaled
        await until("the service down to 2 replicas", partial(site.replicas, 2), 30, every=0.25)
        records = {r.job_id: r for r in gw.adapter.checkpoints}
        saved: dict[str, int] = {}
        for sid in flex:
            text = await site.client.job_logs(sid)
            rec = records[sid]
            path = str(site.out / f"{sid}.ckpt")
            assert (rec.acknowledged, rec.event_id, rec.checkpoint_path) == (True, eid, path), rec
            assert rec.waited_s < 15.0, "it acknowledged: the stop did not wait out its grace"
            saved[sid] = site.step(f"{sid}.ckpt")
            assert saved[sid] > 0 and f"directive event={eid} " in text and f"checkpoint step={saved[sid]} " in text
            assert site.step(f"{sid}.progress") == saved[sid], "it trained past its checkpoint"
            assert asked.get(sid) is None and gw.gateway.acks.get(sid) is not None
        lost = records[silent]
        assert not lost.acknowledged and lost.checkpoint_path == "" and lost.waited_s >= GRACE_SILENT, lost
        assert "probably lost" in lost.note
        assert f"directive event={eid} " in await site.client.job_logs(silent) and not site.read(f"{silent}.ckpt")
        assert any(r.levelno == logging.WARNING and silent in r.getMessage() and "probably lost" in r.getMessage()
                   for r in caplog.records)
        # the loss is an alert for operators and a journal record, not only a log line
        unacked = gw.sink.alerts("checkpoint_not_acknowledged")
        assert [a["job_id"] for a in unacked] == [silent] and "probably lost" in str(unacked[0]["message"])
        stop_keys = {r.action.job_id: r.action.key for r in gw.gateway.journal.actions(eid)
                     if r.action.kind is ActionKind.CHECKPOINT_STOP}
        kept = gw.gateway.journal.command_facts(stop_keys.values())
        assert kept[stop_keys[silent]]["acknowledged"] is False
        assert {sid: kept[stop_keys[sid]]["checkpoint_path"] for sid in flex} == {
            sid: str(site.out / f"{sid}.ckpt") for sid in flex}
        assert critical not in records and not site.read(f"{critical}.ckpt")
        # Stopping the three reaches the target (1.1 of 1.3 kW): the plan must say so, whatever Ray still lists.
        plans = [b for _, _, _, b in gw.gateway.journal.log_entries(eid, ("plan",))]
        assert plans and all(p["shortfall_kw"] == 0.0 and p["expected_kw"] <= p["target_kw"] for p in plans), plans

        await until("the event to complete", lambda: gw.state(eid) is EventState.COMPLETED, 45, every=0.25)
        done_at = time.monotonic() - started
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)

    # After the event: each stopped job resubmitted once, the acknowledged ones resuming from their checkpoint.
    assert gw.actions(eid, ActionKind.CHECKPOINT_STOP) == {sid: ("undone", 1) for sid in stoppable}
    assert gw.actions(eid, ActionKind.RESTART) == {sid: ("done", 1) for sid in stoppable}
    for sid in stoppable:
        assert await held(site, hold_id(sid, eid), "REMOVED"), f"{sid}'s GPUs still held after its restart"
    # the replicas came back one at a time, the last taken first, under the ramp rate
    ups = [r for r in gw.gateway.journal.actions(eid) if r.action.kind is ActionKind.SCALE_UP]
    assert [(r.action.replicas, r.state) for r in ups] == [(3, "done"), (4, "done")]
    assert ups[1].action.at - ups[0].action.at >= timedelta(seconds=0.9)
    await until("the service back at 4 replicas", partial(site.replicas, 4), 60, every=0.5)
    assert not [r for r in gw.gateway.journal.actions(eid) if r.action.job_id in (critical, finished)]
    assert {r.action.job_id for r in gw.gateway.journal.actions(eid)} == {*stoppable, chat}
    resumed = {j.metadata[KEY_RESUMED_FROM]: j.submission_id or "" for j in await site.client.list_jobs()
               if j.metadata.get(KEY_RESUMED_FROM, "").startswith(RUN)}
    assert resumed == {sid: resubmission_id(sid, eid) for sid in stoppable}
    for sid in flex:
        new_id = resumed[sid]
        text = await site.started(new_id)
        assert f"start step={saved[sid]} resume={site.out / f'{sid}.ckpt'}\n" in text, text
        await until(f"{new_id} to count on from step {saved[sid]}", partial(site.counted_past, new_id, saved[sid] + 3), 10,
                    every=0.25)
    assert "start step=0 resume=-\n" in await site.started(resumed[silent]), "nothing acknowledged: a fresh start"

    assert len(seen) >= 10 and set(seen) == {("RUNNING", False)}, seen
    assert "directive" not in await site.client.job_logs(critical)
    impacts = {str(b["job_id"]): b for _, _, _, b in gw.gateway.journal.log_entries(eid, ("impact",))}
    assert set(impacts) == {*stoppable, chat} and all(float(b["throughput_kept"]) < 1.0 for b in impacts.values())
    assert not [a for code in ("command_failed", "snapshot_failed", "shortfall") for a in gw.sink.alerts(code)]
    assert gw.alive()
    print(f"\nevent {eid}: holding {held_at:.1f} s and completed {done_at:.1f} s after it was sent; "
          f"stops: {[(r.job_id, r.acknowledged, round(r.waited_s, 1)) for r in gw.adapter.checkpoints]}")


async def test_an_unreachable_dashboard_mid_event_is_alerted_survived_and_recovered(site: Site) -> None:
    cable = Cable(site.url)
    await cable.plug()
    gw = site.build(cable.url)
    try:
        sid = await site.submit(gw, "cut", "ignore", {**FLEX_MD, "dcflex.checkpoint_grace_s": "4"})
        await site.started(sid)
        await site.serve(gw)
        eid = site.add_event(in_s=5, ramp_s=1, duration_s=18, pct=30.0)
        assert (await site.vtn.wait_for_response(eid, within_s=15)).opt_type == "optIn"
        asked = gw.adapter.directives
        assert asked is not None
        await until("the checkpoint request", lambda: asked.get(sid) is not None, 20, every=0.05)
        # The directive may be set ahead of the stop (ask_ahead): wait until the stop itself waits for the
        # acknowledgement, past its package pin, so the first request to fail is its status poll.
        await until("the stop to wait for the acknowledgement", lambda: sid in gw.adapter.levers.in_checkpoint, 20, every=0.05)

        await cable.unplug()  # while the adapter waits for an acknowledgement that never comes
        await until("the failed stop to be alerted", lambda: gw.sink.alerts("command_failed"), 20, every=0.25)
        await until("the failed re-plan to be alerted", lambda: gw.sink.alerts("snapshot_failed"), 20, every=0.25)
        await until("the failed power reading to be alerted", lambda: gw.sink.alerts("meter_unavailable"), 10, every=0.25)
        failed = gw.sink.alerts("command_failed")[0]
        assert failed["job_id"] == sid and failed["kind"] == "checkpoint_stop"
        assert f"cannot reach the dashboard for GET {cable.url}/api/jobs/{sid}" in str(failed["message"]), failed
        assert failed["command"] == ["GET", f"{cable.url}/api/jobs/{sid}"]
        for code in ("snapshot_failed", "meter_unavailable"):
            alert = gw.sink.alerts(code)[0]
            assert f"cannot reach the dashboard for GET {cable.url}/api/jobs/" in str(alert["message"]), alert
        assert gw.actions(eid, ActionKind.CHECKPOINT_STOP) == {sid: ("failed", 1)}
        assert await site.status(sid) == "RUNNING"  # nothing reached Ray
        assert gw.alive() and gw.state(eid) in (EventState.RAMPING, EventState.HOLDING)

        await cable.plug()  # the dashboard is back: the next re-plan retries the stop
        await until("the retried stop to reach Ray", partial(site.has_status, sid, "STOPPED"), 20, every=0.25)
        await until("the retried stop to be journaled", lambda: gw.actions(eid, ActionKind.CHECKPOINT_STOP).get(sid)
                       == ("done", 2), 10, every=0.25)
        record = gw.adapter.checkpoints[-1]
        assert (record.job_id, record.acknowledged) == (sid, False) and "probably lost" in record.note
        await until("the event to complete", lambda: gw.state(eid) is EventState.COMPLETED, 40, every=0.25)
        assert gw.actions(eid, ActionKind.RESTART) == {sid: ("done", 1)}
        new = await site.client.get_job(resubmission_id(sid, eid))
        assert new is not None and new.metadata.get(KEY_RESUMED_FROM) == sid
        assert gw.alive()
    finally:
        await gw.stop()
        await cable.unplug()
