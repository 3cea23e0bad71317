"""The Ray adapter against a real Ray head (``scripts/services.sh up`` starts one on loopback, see
``scripts/services.d/ray.sh``), and the gateway's real job API in-process.

Each job gets a small working_dir of its own (a tmp dir holding one script, uploaded as a ``gcs://``
package) and is run by this virtualenv's Python, so it can import the job-side helper
(``gateway.jobside``): the checkpointing job hears the directive over HTTP, writes its step counter,
acknowledges, and after its resubmission starts again from that step. Everything is checked through Ray's
own answers (job status, job logs, Serve replica states), not the adapter's memory. Without a reachable
Ray these tests fail, saying how to start it.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest

from adapters.ray.adapter import RayAdapter
from adapters.ray.client import RayDashboardClient
from adapters.ray.hold import hold_id
from adapters.ray.levers import resubmission_id
from adapters.ray.model import KEY_ENTRYPOINT, JobSpec
from adapters.ray.tiers import RayTierResolver
from gateway.api import ApiServer, build_app
from gateway.clock import SystemClock
from gateway.config.models import RaySchedulerConfig, RayServeRule, SchedulerConfig, TiersConfig
from gateway.domain import Action, ActionKind, JobState, Tier
from gateway.exceptions import CommandFailed
from gateway.jobchannel import CheckpointAcks, JobDirectives
from gateway.planner import plan
from gateway.ports import Recall
from tests.adapters.ray.apps import serve_app
from tests.adapters.ray.holds import placement_groups, release_holds
from tests.gateway.planner import NOW, directive, policy
from tests.services import HINT, service_env
from tests.waiting import arrived, until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
RUN = f"dcflex-t{uuid.uuid4().hex[:6]}"   # every job and app of this run starts with it
EVENT = f"{RUN}-ev"
T = TypeVar("T")

TRAIN = '''\
import os, sys, time
from gateway import jobside

job_id, resume = os.environ.get("DCFLEX_JOB_ID", ""), os.environ.get("DCFLEX_RESUME_FROM", "")
for key in ("DCFLEX_JOB_ID", "DCFLEX_RESUME_FROM", "DCFLEX_GATEWAY_URL"):
    print(f"env {key}={os.environ.get(key, '')}", flush=True)
step = int(open(resume).read()) if resume else 0
print(f"start at step {step}", flush=True)
deadline = time.monotonic() + 120  # never outlive the test run by much
while time.monotonic() < deadline:
    time.sleep(0.1)
    step += 1
    if jobside.should_checkpoint():
        asked = jobside.current()
        path = os.path.join(sys.argv[1], job_id + ".step")
        with open(path, "w") as f:
            f.write(str(step))
        jobside.acknowledge(path, asked.event_id if asked else "")
        jobside.flush(5)
        print(f"checkpoint at step {step}", flush=True)
'''

PLAIN = '''\
import os, time
for key in ("DCFLEX_JOB_ID", "DCFLEX_RESUME_FROM", "DCFLEX_GATEWAY_URL"):
    print(f"env {key}={os.environ.get(key, '')}", flush=True)
print("start", flush=True)
deadline = time.monotonic() + 120
while time.monotonic() < deadline:
    time.sleep(0.2)
'''

RAY_TRAIN = '''\
import os, sys, time
from ray.train import RunConfig, ScalingConfig
try:  # Ray Train v2 (the default from Ray 2.5x), else v1
    from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer
except ImportError:
    from ray.train.data_parallel_trainer import DataParallelTrainer
from gateway.jobside.ray import report_with_checkpoint, resume_checkpoint


def loop(config):
    step = 0
    ckpt = resume_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            step = int(open(os.path.join(d, "step")).read())
    print(f"worker start at step {step} from {ckpt.path if ckpt is not None else '-'}", flush=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        time.sleep(0.1)
        step += 1

        def save(d, step=step):
            with open(os.path.join(d, "step"), "w") as f:
                f.write(str(step))

        path = report_with_checkpoint({"step": step}, save=save)
        if path:
            print(f"worker checkpoint at step {step} in {path}", flush=True)


trainer = DataParallelTrainer(loop, scaling_config=ScalingConfig(num_workers=1, resources_per_worker={"CPU": 0.25}),
                              run_config=RunConfig(storage_path=sys.argv[1], name=os.environ["DCFLEX_JOB_ID"]))
trainer.fit()
'''

ECHO = serve_app("Echo", 0.1)


async def placement_group(site: Site, name: str, state: str) -> dict[str, Any] | None:
    """The placement group called ``name`` as Ray's state API lists it, once it is in ``state``."""
    groups = [g for g in await placement_groups(site.client.base_url) if g.get("name") == name]
    return groups[-1] if groups and groups[-1]["state"] == state else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Site:
    ray: RayAdapter
    client: RayDashboardClient
    acks: CheckpointAcks
    directives: JobDirectives
    gateway_url: str
    workdir: Path
    ckpt: Path
    gpu_resource: str

    def action(self, kind: ActionKind, job_id: str) -> Action:
        return Action(f"{EVENT}/{kind.value}/{job_id}", kind, datetime.now(UTC), job_id=job_id)

    async def running(self, sid: str, marker: str = "start") -> str:
        """Wait until the job runs and has printed ``marker``; its logs."""
        async def probe() -> str | None:
            job = await self.client.get_job(sid)
            assert job is not None and job.status in ("PENDING", "RUNNING"), f"{sid}: {job}"
            logs = await self.client.job_logs(sid) if job.status == "RUNNING" else ""
            return logs if marker in logs else None
        return await until(f"job {sid} to run", probe, 45, done=arrived, every=0.25)


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    url = service_env("DCFLEX_TEST_RAY_DASHBOARD")
    client = RayDashboardClient(url, timeout_s=20.0, retries=2, backoff_s=0.2)
    try:
        version = await client.version()
    except Exception as exc:
        await client.aclose()
        pytest.fail(f"no Ray dashboard answers at {url} ({exc}): {HINT}")
    assert version.get("ray_version", "").startswith("2.")
    acks, clock = CheckpointAcks(), SystemClock()
    directives = JobDirectives(clock)
    app = build_app(status=dict, healthy=lambda: True, acks=acks, clock=clock, directives=directives)
    async with ApiServer(app, "127.0.0.1", 0) as api:
        gpu = service_env("DCFLEX_TEST_RAY_GPU_RESOURCE")
        cfg = SchedulerConfig(kind="ray", command_timeout_s=20.0, retries=2,
                              ray=RaySchedulerConfig(dashboard_url=url, gpu_resource=gpu, hold_python=sys.executable))
        ray = RayAdapter(cfg, RayTierResolver(TiersConfig(default=Tier.CRITICAL)), directives=directives, acks=acks,
                         gateway_url=api.url, clock=clock, client=client, ack_poll_s=0.1)
        workdir, ckpt = tmp_path / "job", tmp_path / "ckpt"
        workdir.mkdir()
        ckpt.mkdir()
        (workdir / "train.py").write_text(TRAIN)
        (workdir / "plain.py").write_text(PLAIN)
        try:
            yield Site(ray, client, acks, directives, api.url, workdir, ckpt,
                       service_env("DCFLEX_TEST_RAY_GPU_RESOURCE"))
        finally:
            for job in await client.list_jobs():
                if (job.submission_id or "").startswith(RUN) and not job.terminal:
                    await client.stop_job(job.submission_id or "")
            await client.remove_serve_app(f"{RUN}-echo")
            await release_holds(client, RUN)
            await ray.aclose()


def train_spec(site: Site, sid: str, script: str, metadata: dict[str, str], wd: str) -> JobSpec:
    return JobSpec(f"{sys.executable} {script} {site.ckpt}", sid, {"working_dir": wd, "env_vars": {"DCFLEX_POLL_S": "0.2"}},
                   metadata, entrypoint_num_cpus=0.25, entrypoint_resources={site.gpu_resource: 1.0})


async def test_checkpoint_stop_then_restart_resumes_from_the_acknowledged_step(site: Site) -> None:
    wd = await site.client.upload_working_dir(site.workdir)
    sid = f"{RUN}-train"
    md = {"dcflex.tier": "flex-25", "dcflex.gpus": "2", "dcflex.resumable": "true",
          "dcflex.checkpoint_grace_s": "20", "job_name": "toy-train"}
    assert await site.ray.submit(train_spec(site, sid, "train.py", md, wd)) == sid
    logs = await site.running(sid, "start at step 0")
    assert f"env DCFLEX_JOB_ID={sid}\n" in logs and f"env DCFLEX_GATEWAY_URL={site.gateway_url}\n" in logs

    job = (await site.ray.snapshot()).job(sid)
    assert job is not None and (job.state, job.tier, job.gpus, job.name) == (JobState.RUNNING, Tier.FLEX_25, 2, "toy-train")
    assert (job.pausable, job.cappable, job.requeueable, job.checkpointable) == (False, False, True, True)
    assert job.checkpoint_s == 20.0 and job.scheduler == "ray"

    started = time.monotonic()
    stop = site.action(ActionKind.CHECKPOINT_STOP, sid)
    facts = await site.ray.apply(stop)
    took = time.monotonic() - started
    record = site.ray.checkpoints[-1]
    path = str(site.ckpt / f"{sid}.step")
    assert record.acknowledged and record.checkpoint_path == path and record.event_id == EVENT, record
    holder = hold_id(sid, EVENT)
    assert facts is not None and facts["acknowledged"] is True and facts["checkpoint_path"] == path
    assert (facts["hold"], facts["hold_gpus"]) == (holder, 2)
    assert took < 20.0, "it acknowledged, so the stop did not wait out the grace time"
    stopped = await site.client.get_job(sid)
    assert stopped is not None and stopped.status == "STOPPED"
    assert site.directives.get(sid) is None
    assert (await site.ray.snapshot()).job(sid).state is JobState.STOPPED  # type: ignore[union-attr]
    step = int(await asyncio.to_thread(Path(path).read_text))
    assert step > 0

    # Ray itself holds the freed GPUs: a placement group of the job's two, which no other work may use; the
    # job that made it has ended (nothing of the gateway's keeps running on the cluster)
    group = await until("the hold's placement group", lambda: placement_group(site, holder, "CREATED"), 60, done=arrived,
                        every=0.25)
    async def hold_job_ended() -> bool:
        job = await site.client.get_job(holder)
        return job is not None and job.status == "SUCCEEDED"

    await until("the hold job to end", hold_job_ended, 30, done=arrived, every=0.25)
    assert [b["unit_resources"] for b in group["bundles"]] == [{site.gpu_resource: 1.0}] * 2
    assert all(j.job_id != holder for j in (await site.ray.snapshot()).jobs)  # the holder is not a job to plan

    # A restarted gateway (nothing in memory) learns the stop and its checkpoint from the journal's facts,
    # releases the hold and resubmits; the first one then replays the same restart: Ray still runs one job.
    restart = site.action(ActionKind.RESTART, sid)
    again = RayAdapter(site.ray.config, site.ray.resolver, directives=site.directives, acks=site.acks,
                       gateway_url=site.gateway_url, client=RayDashboardClient(site.client.base_url))
    again.recall(Recall(in_force=(stop,), facts={stop.key: facts}))
    assert again.levers.stopped[sid].checkpoint_path == path
    await again.apply(restart)
    await again.aclose()
    await until("the hold released", lambda: placement_group(site, holder, "REMOVED"), 30, done=arrived, every=0.25)
    await site.ray.apply(restart)
    new_id = resubmission_id(sid, EVENT)
    resumed = [j for j in await site.client.list_jobs() if j.metadata.get("dcflex.resumed_from") == sid]
    assert [j.submission_id for j in resumed] == [new_id]
    logs = await site.running(new_id, "start at step")
    assert f"env DCFLEX_RESUME_FROM={path}\n" in logs and f"env DCFLEX_JOB_ID={new_id}\n" in logs
    assert f"start at step {step}\n" in logs, "the resubmitted job continues from its checkpoint"
    new = resumed[0]
    assert new.entrypoint == f"{sys.executable} train.py {site.ckpt}"
    assert {k: new.metadata[k] for k in md} == md and new.runtime_env["working_dir"] == wd
    assert new.entrypoint_resources == {site.gpu_resource: 1.0} and KEY_ENTRYPOINT in new.metadata
    assert (await site.ray.snapshot()).job(sid).state is JobState.COMPLETED  # type: ignore[union-attr]


async def test_a_ray_train_job_checkpoints_through_the_helper_and_resumes_from_it(site: Site) -> None:
    """``gateway.jobside.ray`` inside a real Ray Train worker: asked by the gateway, it reports a checkpoint to
    Ray Train and acknowledges where Ray keeps it; the resubmitted job's worker restores from that path."""
    (site.workdir / "ray_train.py").write_text(RAY_TRAIN)
    wd = await site.client.upload_working_dir(site.workdir)
    sid = f"{RUN}-raytrain"
    md = {"dcflex.tier": "preemptible", "dcflex.resumable": "true", "dcflex.checkpoint_grace_s": "60"}
    spec = JobSpec(f"{sys.executable} ray_train.py {site.ckpt}", sid,
                   {"working_dir": wd, "env_vars": {"DCFLEX_POLL_S": "0.2"}}, md, entrypoint_num_cpus=0.1)
    await site.ray.submit(spec)
    await site.running(sid, "worker start at step 0")

    stop = site.action(ActionKind.CHECKPOINT_STOP, sid)
    facts = await site.ray.apply(stop)
    assert facts is not None and facts["acknowledged"] is True, facts
    path = str(facts["checkpoint_path"])
    logs = await site.client.job_logs(sid)
    assert f" in {path}\n" in logs, logs[-2000:]
    saved = int(await asyncio.to_thread((Path(path) / "step").read_text))  # Ray Train's persisted copy
    assert saved > 0 and path.startswith(str(site.ckpt)), path
    assert (await site.client.get_job(sid)).status == "STOPPED"  # type: ignore[union-attr]

    await site.ray.apply(site.action(ActionKind.RESTART, sid))
    new_id = resubmission_id(sid, EVENT)
    logs = await site.running(new_id, "worker start at step")
    assert f"worker start at step {saved} from {path}\n" in logs, logs[-2000:]


async def test_a_batch_of_stops_asks_every_job_at_once(site: Site) -> None:
    wd = await site.client.upload_working_dir(site.workdir)
    md = {"dcflex.tier": "preemptible", "dcflex.resumable": "true", "dcflex.checkpoint_grace_s": "30"}
    sids = [f"{RUN}-batch-{i}" for i in range(2)]
    for sid in sids:
        await site.ray.submit(train_spec(site, sid, "train.py", md, wd))
    for sid in sids:
        await site.running(sid, "start at step 0")
    await site.ray.snapshot()
    stops = [site.action(ActionKind.CHECKPOINT_STOP, sid) for sid in sids]
    site.ray.prepare(stops)  # what the executor does before running a batch
    assert all(site.directives.get(sid) is not None for sid in sids)  # both asked before either command runs
    await until("both acknowledgements", lambda: asyncio.sleep(0, all(site.acks.get(s) for s in sids)), 20, done=arrived,
                every=0.25)
    for stop in stops:  # the commands then only stop: the checkpoints are written already
        facts = await site.ray.apply(stop)
        assert facts is not None and facts["acknowledged"] is True and facts["checkpoint_path"]


async def test_a_job_that_never_acknowledges_is_stopped_after_its_grace(site: Site) -> None:
    wd = await site.client.upload_working_dir(site.workdir)
    sid = f"{RUN}-silent"
    md = {"dcflex.tier": "preemptible", "dcflex.resumable": "true", "dcflex.checkpoint_grace_s": "2"}
    await site.ray.submit(train_spec(site, sid, "plain.py", md, wd))
    await site.running(sid)
    assert (await site.ray.snapshot()).job(sid).gpus == 0  # type: ignore[union-attr]  # no dcflex.gpus, no entrypoint GPU
    started = time.monotonic()
    await site.ray.apply(site.action(ActionKind.CHECKPOINT_STOP, sid))
    took = time.monotonic() - started
    record = site.ray.checkpoints[-1]
    assert not record.acknowledged and "probably lost" in record.note and record.waited_s >= 2.0
    assert 2.0 <= took < 15.0
    assert (await site.client.get_job(sid)).status == "STOPPED"  # type: ignore[union-attr]
    await site.ray.apply(site.action(ActionKind.RESTART, sid))
    logs = await site.running(resubmission_id(sid, EVENT))
    assert "env DCFLEX_RESUME_FROM=\n" in logs  # nothing acknowledged: nothing to resume from


async def test_levers_ray_cannot_pull_are_refused_and_the_job_keeps_running(site: Site) -> None:
    wd = await site.client.upload_working_dir(site.workdir)
    sid = f"{RUN}-critical"
    await site.ray.submit(train_spec(site, sid, "plain.py", {"dcflex.tier": "preemptible"}, wd))
    for kind, why in ((ActionKind.PAUSE, "pausable"), (ActionKind.CHECKPOINT_STOP, "resumable")):
        with pytest.raises(CommandFailed, match=why):
            await site.ray.apply(site.action(kind, sid))
    await site.running(sid)
    assert (await site.client.get_job(sid)).status == "RUNNING"  # type: ignore[union-attr]


async def test_serve_scales_down_and_back_up(site: Site, tmp_path: Path) -> None:
    (tmp_path / "serve").mkdir()
    (tmp_path / "serve" / "echo_app.py").write_text(ECHO)
    wd = await site.client.upload_working_dir(tmp_path / "serve")
    name = f"{RUN}-echo"
    await site.client.deploy_serve_app(
        {"name": name, "route_prefix": f"/{name}", "import_path": "echo_app:app", "runtime_env": {"working_dir": wd},
         "deployments": [{"name": "Echo", "num_replicas": 3}]},
        http_options={"host": "127.0.0.1", "port": free_port()},
    )

    async def replicas(target: int) -> bool:
        app = (await site.ray.serve()).apps.get(name)
        assert app is None or app.status != "DEPLOY_FAILED", app
        if app is None or "Echo" not in app.deployments:
            return False
        dep = app.deployments["Echo"]
        return dep.target_num_replicas == target and dep.running_replicas == target == len(dep.replicas)

    await until("3 running replicas", lambda: replicas(3), 60, done=arrived, every=0.25)
    sent = await site.ray.scale_serve(name, "Echo", 1)
    assert sent is not None
    assert [a["deployments"] for a in sent["applications"] if a["name"] == name] == [[{"name": "Echo", "num_replicas": 1}]]
    await until("1 replica", lambda: replicas(1), 30, done=arrived, every=0.25)
    assert await site.ray.scale_serve(name, "Echo", 1) is None  # already there: nothing sent
    await site.ray.scale_serve(name, "Echo", 3)
    await until("3 replicas again", lambda: replicas(3), 30, done=arrived, every=0.25)

    # through the port: the deployment is a service in the snapshot, the planner takes what its tier
    # allows (flex-50 of 3: one replica), the adapter scales it and remembers its full size
    url = service_env("DCFLEX_TEST_RAY_DASHBOARD")
    rule = RayServeRule(deployment=f"{name}/*", tier=Tier.FLEX_50, gpus_per_replica=1)
    cfg = SchedulerConfig(kind="ray", command_timeout_s=20.0, retries=2,
                          ray=RaySchedulerConfig(dashboard_url=url, serve=(rule,)))

    def adapter() -> RayAdapter:
        return RayAdapter(cfg, RayTierResolver(TiersConfig(default=Tier.CRITICAL)), clock=SystemClock())

    jid = f"serve:{name}/Echo"
    ray, recalled = adapter(), adapter()
    try:
        snap = await ray.snapshot()
        svc = snap.job(jid)
        assert svc is not None and (svc.tier, svc.replicas, svc.gpus, svc.state) == (Tier.FLEX_50, 3, 3, JobState.RUNNING)
        assert not svc.pausable and not svc.cappable and svc.replicas_removed == 0
        p = plan(directive(0.0, event_id=EVENT), replace(snap, jobs=(svc,)), policy(tolerance_kw=0.01), NOW)
        assert [(a.kind, a.replicas) for a in p.shed] == [(ActionKind.SCALE_DOWN, 2)]
        assert ray.describe(p.shed[0])[-1].startswith("PUT ")
        assert await ray.apply(p.shed[0]) == {"replicas_before": 3, "replicas": 2}
        await until("2 replicas", lambda: replicas(2), 30, done=arrived, every=0.25)
        again = (await ray.snapshot()).job(jid)
        assert again is not None and (again.replicas, again.replicas_removed, again.gpus) == (2, 1, 2)
        # a restarted gateway learns the full size from its journal's commands in force
        recalled.recall(Recall(in_force=p.shed))
        after = (await recalled.snapshot()).job(jid)
        assert after is not None and after.replicas_removed == 1
        assert plan(directive(0.0, event_id=EVENT), replace(snap, jobs=(after,)), policy(tolerance_kw=0.01), NOW).shed == ()
        assert await recalled.apply(p.restore[0]) == {"replicas_before": 2, "replicas": 3}
        await until("3 replicas after the restore", lambda: replicas(3), 30, done=arrived, every=0.25)
        back = (await recalled.snapshot()).job(jid)
        assert back is not None and (back.replicas, back.replicas_removed) == (3, 0)
    finally:
        await ray.aclose()
        await recalled.aclose()
    proxy = (await site.ray.serve()).http_options or {}
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{proxy['port']}/{name}") as resp:
        assert (resp.status, await resp.text()) == (200, "ok")
