"""The Slurm adapter against a real Slurm 22.05 (``scripts/services.sh up`` starts one on loopback).

Real batch jobs (``jobs/ckpt_loop.sh``) count steps, trap the checkpoint signal, write a checkpoint and
acknowledge it (marker file or ``dcflex ack`` over HTTP), and resume from it when restarted. Each lever
and its undo is checked on them through Slurm's own view (``squeue``/``sinfo``), not the adapter's.
The last test stops slurmctld and brings it back with its state (``scripts/services.d/slurm.sh
restart-ctld``). Without a reachable Slurm these tests fail, saying how to start it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import pytest

from adapters.slurm.adapter import SlurmAdapter
from adapters.slurm.tiers import TierResolver
from gateway.api import ApiServer, build_app
from gateway.clock import SystemClock
from gateway.config.models import SchedulerConfig, SlurmSchedulerConfig, TierRule, TiersConfig
from gateway.domain import Action, ActionKind, ClusterSnapshot, JobState, Tier
from gateway.exceptions import AdapterTimeout, AdapterUnavailable, CommandFailed
from gateway.jobchannel import CheckpointAcks
from gateway.ports import Recall
from tests.waiting import arrived, until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
JOBS = Path(__file__).resolve().parent / "jobs"
VENV_BIN = ROOT / ".venv" / "bin"
TAG = "dcflex:tier=flex-25 dcflex:checkpoint=USR1:20"
T = TypeVar("T")


# ------------------------------------------------------------------------------ plumbing


def slurm_env() -> dict[str, str]:
    """The process environment plus SLURM_CONF (from the environment, else var/services/env)."""
    env = dict(os.environ)
    saved = ROOT / "var" / "services" / "env"
    if "SLURM_CONF" not in env and saved.exists():
        for line in saved.read_text().splitlines():
            key, eq, value = line.partition("=")
            if eq and key.startswith(("SLURM_", "DCFLEX_SLURM_")):
                env.setdefault(key, value)
    return env


async def sh(*argv: str, env: Mapping[str, str], check: bool = True, within: float = 40.0) -> str:
    proc = await asyncio.create_subprocess_exec(*argv, env=dict(env), stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    try:
        async with asyncio.timeout(within):
            out, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    if check and proc.returncode:
        raise AssertionError(f"{' '.join(argv)} failed ({proc.returncode}): {err.decode().strip()}")
    return out.decode()


class Cluster:
    """The test Slurm: submits jobs (cancelled at teardown) and reads state with Slurm's own tools."""

    def __init__(self, env: dict[str, str], node: str, workdir: Path) -> None:
        self.env = env
        self.node = node
        self.dir = workdir
        self.submitted: list[str] = []
        self.gateway_url = "http://127.0.0.1:9"

    async def submit(self, name: str, *, partition: str = "batch", gpus: int = 1, requeue: bool = True,
                     comment: str = TAG, ack: str = "marker") -> str:
        env = {**self.env, "DCFLEX_TEST_DIR": str(self.dir), "DCFLEX_ACK_MODE": ack,
               "DCFLEX_GATEWAY_URL": self.gateway_url, "PATH": f"{VENV_BIN}:{self.env.get('PATH', '')}"}
        out = await sh("sbatch", "--parsable", f"--job-name={name}", f"--partition={partition}", f"--gres=gpu:{gpus}",
                       "--requeue" if requeue else "--no-requeue", f"--comment={comment}", f"--chdir={self.dir}",
                       f"--output={self.dir}/out.%j", "--open-mode=append", str(JOBS / "ckpt_loop.sh"), env=env)
        job_id = out.strip().split(";")[0]
        self.submitted.append(job_id)
        return job_id

    async def state(self, job_id: str) -> str:
        """``STATE|REASON`` as squeue prints it, "" once Slurm forgot the job."""
        return (await sh("squeue", "-h", "-j", job_id, "-o", "%T|%r", env=self.env, check=False)).strip()

    async def running(self, job_id: str, within: float = 30.0) -> None:
        """Wait until the job runs *and* its script has set its signal trap (it logged "start")."""
        async def ready() -> bool:
            return (await self.state(job_id)).startswith("RUNNING|") and self.log(job_id).count("start step=") > 0
        await until(f"job {job_id} to run", ready, within, done=arrived, every=0.25)

    def log(self, job_id: str) -> str:
        path = self.dir / f"log.{job_id}"
        return path.read_text() if path.exists() else ""

    def progress(self, job_id: str) -> int:
        path = self.dir / f"progress.{job_id}"
        text = path.read_text().strip() if path.exists() else ""
        return int(text) if text.isdigit() else 0

    async def node_state(self) -> tuple[str, str]:
        out = await sh("sinfo", "-h", "-N", "-n", self.node, "-o", "%T|%E", env=self.env)
        state, _, reason = out.splitlines()[0].partition("|")  # one line per partition; the same node
        return state, reason

    def adapter(self, *, acks: CheckpointAcks | None = None, retries: int = 2, timeout_s: float = 20.0,
                template: tuple[str, ...] | None = None, dry_run: bool = False) -> SlurmAdapter:
        settings: dict[str, object] = {"ack_marker_path": f"{self.dir}/acks/{{job_id}}", "retry_backoff_s": 0.2}
        if template:
            settings["power_cap_command"] = template
        slurm = SlurmSchedulerConfig.model_validate(settings)
        cfg = SchedulerConfig(kind="slurm", dry_run=dry_run, command_timeout_s=timeout_s, retries=retries, slurm=slurm)
        tiers = TiersConfig(default=Tier.CRITICAL, rules=(TierRule(tier=Tier.FLEX_50, partition="batch"),))
        return SlurmAdapter(cfg, TierResolver(tiers), acks=acks, clock=SystemClock(), min_cap_w=100.0,
                            max_cap_w=400.0, ack_poll_s=0.1, env=self.env)


def act(key: str, kind: ActionKind, job_id: str = "", nodes: tuple[str, ...] = (), watts: float | None = None) -> Action:
    return Action(key=key, kind=kind, at=datetime.now(UTC), job_id=job_id, nodes=nodes, watts=watts)


def ran(adapter: SlurmAdapter, *words: str) -> list[str]:
    """The command lines the adapter ran whose argv contains every word, in order."""
    return [r.line for r in adapter.runner.history if all(w in r.argv for w in words)]


@pytest.fixture(scope="module")
def slurm_env_ok() -> dict[str, str]:
    env = slurm_env()
    if "SLURM_CONF" not in env:
        pytest.fail("no SLURM_CONF in the environment nor in var/services/env: start the test Slurm with "
                    "`scripts/services.sh up`")
    try:
        ping = asyncio.run(sh("scontrol", "ping", env=env, check=False, within=15))
    except (TimeoutError, OSError) as exc:
        ping = f"no answer ({exc!r})"
    if "is UP" not in ping:
        pytest.fail(f"the test Slurm is not reachable (SLURM_CONF={env['SLURM_CONF']}; scontrol ping: {ping.strip()!r}): "
                    "start it with `scripts/services.sh up`")
    return env


@pytest.fixture
async def cluster(slurm_env_ok: dict[str, str], tmp_path: Path) -> AsyncIterator[Cluster]:
    env = slurm_env_ok
    node = env.get("DCFLEX_SLURM_NODE") or (await sh("hostname", "-s", env=env)).strip()
    c = Cluster(env, node, tmp_path)
    try:
        yield c
    finally:
        if c.submitted:
            await sh("scancel", *c.submitted, env=env, check=False)
        state, _ = await c.node_state()
        if "drain" in state:
            await sh("scontrol", "update", f"NodeName={node}", "State=RESUME", env=env, check=False)


# --------------------------------------------------------------------------------- reads


async def test_snapshot_maps_real_jobs_and_nodes_and_dry_run_changes_nothing(cluster: Cluster) -> None:
    flex = await cluster.submit("train-flex", gpus=2)
    crit = await cluster.submit("serve-crit", partition="critical", comment="production")
    await cluster.running(flex)
    await cluster.running(crit)
    adapter = cluster.adapter()
    snap = await adapter.snapshot()
    f, c = snap.job(flex), snap.job(crit)
    assert f is not None and c is not None
    assert (f.tier, f.gpus, f.nodes, f.state) == (Tier.FLEX_25, 2, (cluster.node,), JobState.RUNNING)  # tag wins
    assert f.checkpointable and f.requeueable and f.checkpoint_s == 20.0
    assert (c.tier, c.gpus, c.checkpointable) == (Tier.CRITICAL, 1, False)
    assert [(n.name, n.gpus, n.drained_by_other) for n in snap.nodes] == [(cluster.node, 8, False)]
    assert adapter.describe(act("ev-1/stop/x", ActionKind.CHECKPOINT_STOP, flex)) == [
        f"scancel --batch --signal=USR1 {flex}",
        f"# wait up to 20 s for the checkpoint acknowledgement (marker {cluster.dir}/acks/{flex})",
        f"scontrol requeuehold {flex}",
    ]

    dry = cluster.adapter(dry_run=True)
    await dry.apply(act("ev-1/pause/x", ActionKind.PAUSE, flex))
    assert dry.runner.planned == [("scontrol", "suspend", flex)]
    assert (await cluster.state(flex)).startswith("RUNNING|")


# ---------------------------------------------------------------------------- job levers


async def test_pause_and_resume_a_real_job_idempotently(cluster: Cluster) -> None:
    job = await cluster.submit("pause-me")
    await cluster.running(job)
    adapter = cluster.adapter()
    await adapter.apply(act("ev-2/pause/j", ActionKind.PAUSE, job))
    assert (await cluster.state(job)).startswith("SUSPENDED|")
    await asyncio.sleep(0.5)  # slurmd stops the processes a moment after slurmctld says "suspended"
    frozen = cluster.progress(job)
    await asyncio.sleep(0.8)
    assert cluster.progress(job) == frozen, "a suspended job made progress"

    commands = len(adapter.runner.history)
    await adapter.apply(act("ev-2/pause/j", ActionKind.PAUSE, job))  # the same key: nothing at all
    assert len(adapter.runner.history) == commands
    await adapter.apply(act("ev-3/pause/j", ActionKind.PAUSE, job))  # already suspended: read, no suspend
    assert len(ran(adapter, "suspend")) == 1

    await adapter.apply(act("ev-2/resume/j", ActionKind.RESUME, job))
    assert (await cluster.state(job)).startswith("RUNNING|")
    await until("progress after resume", lambda: _ready(cluster.progress(job) > frozen + 2), 5, done=arrived, every=0.25)
    await adapter.apply(act("ev-3/resume/j", ActionKind.RESUME, job))  # running already: no resume
    assert len(ran(adapter, "resume")) == 1


async def _ready(flag: bool) -> bool:
    return flag


async def test_checkpoint_stop_waits_for_the_marker_requeues_held_and_restart_resumes(cluster: Cluster) -> None:
    job = await cluster.submit("ckpt-marker", gpus=2)
    await cluster.running(job)
    await until("a few steps", lambda: _ready(cluster.progress(job) >= 5), 10, done=arrived, every=0.25)
    adapter = cluster.adapter()

    started = time.monotonic()
    await adapter.apply(act("ev-4/checkpoint_stop/j", ActionKind.CHECKPOINT_STOP, job))
    assert time.monotonic() - started < 6, "the acknowledgement should end the wait long before the 20 s grace"
    [record] = adapter.checkpoints
    ckpt = cluster.dir / f"ckpt.{job}"
    assert (record.acknowledged, record.via, record.checkpoint_path, record.signal) == (True, "marker", str(ckpt), "USR1")
    saved = int(ckpt.read_text())
    assert saved >= 5 and f"checkpoint step={saved}" in cluster.log(job)
    await until("the job to be pending and held", lambda: _held(cluster, job), 15, done=arrived, every=0.25)
    assert (j := (await adapter.snapshot()).job(job)) is not None and j.state is JobState.STOPPED

    await adapter.apply(act("ev-5/checkpoint_stop/j", ActionKind.CHECKPOINT_STOP, job))  # stopped already
    assert len(ran(adapter, "requeuehold")) == 1 and len(ran(adapter, "scancel")) == 1

    await adapter.apply(act("ev-4/restart/j", ActionKind.RESTART, job))
    await until("the restarted job to resume from its checkpoint", lambda: _ready(f"start step={saved} " in cluster.log(job)),
                40, done=arrived, every=0.25)
    assert (await cluster.state(job)).startswith("RUNNING|")
    await adapter.apply(act("ev-5/restart/j", ActionKind.RESTART, job))  # running: nothing to release
    assert len(ran(adapter, "release")) == 1


async def _held(cluster: Cluster, job: str) -> bool:
    state, _, reason = (await cluster.state(job)).partition("|")
    return state == "PENDING" and "held" in reason.lower()  # JobHeldUser, or "job requeued in held state"


async def test_checkpoint_acknowledged_over_http_by_dcflex_ack(cluster: Cluster) -> None:
    acks = CheckpointAcks()
    app = build_app(status=dict, healthy=lambda: True, acks=acks, clock=SystemClock())
    async with ApiServer(app, "127.0.0.1", 0) as server:
        cluster.gateway_url = server.url
        job = await cluster.submit("ckpt-http", ack="cli")
        await cluster.running(job)
        adapter = cluster.adapter(acks=acks)
        await adapter.apply(act("ev-6/checkpoint_stop/j", ActionKind.CHECKPOINT_STOP, job))
    [record] = adapter.checkpoints
    assert (record.acknowledged, record.via) == (True, "http")
    assert record.checkpoint_path == str(cluster.dir / f"ckpt.{job}") and record.waited_s < 15
    assert f"dcflex ack: job {job} checkpoint acknowledged at " in cluster.log(job)  # the CLI's own words
    await until("the job to be pending and held", lambda: _held(cluster, job), 15, done=arrived, every=0.25)


async def test_no_acknowledgement_proceeds_after_the_grace_even_from_suspended(cluster: Cluster) -> None:
    job = await cluster.submit("ckpt-silent", comment="dcflex:tier=flex-50 dcflex:checkpoint=USR1:2", ack="none")
    await cluster.running(job)
    adapter = cluster.adapter()
    await adapter.apply(act("ev-7/pause/j", ActionKind.PAUSE, job))
    assert (await cluster.state(job)).startswith("SUSPENDED|")

    started = time.monotonic()
    await adapter.apply(act("ev-7/checkpoint_stop/j", ActionKind.CHECKPOINT_STOP, job))
    assert 2.0 <= time.monotonic() - started < 10  # resume, let it settle, signal, 2 s grace, requeue-hold
    [record] = adapter.checkpoints
    assert not record.acknowledged and "probably lost" in record.note and record.waited_s >= 2.0
    assert "checkpoint step=" in cluster.log(job), "the job was resumed so it could handle the signal"
    await until("the job to be pending and held", lambda: _held(cluster, job), 15, done=arrived, every=0.25)


async def test_a_job_slurm_will_not_requeue_is_refused_and_never_cancelled(cluster: Cluster) -> None:
    job = await cluster.submit("no-requeue", requeue=False)
    await cluster.running(job)
    adapter = cluster.adapter()
    with pytest.raises(CommandFailed, match="will not requeue it"):
        await adapter.apply(act("ev-8/checkpoint_stop/j", ActionKind.CHECKPOINT_STOP, job))
    assert (await cluster.state(job)).startswith("RUNNING|")
    assert ran(adapter, "scancel") == [] and "checkpoint" not in cluster.log(job)


# ---------------------------------------------------------------------------- node holds


async def test_hold_and_release_touch_only_dcflex_drains(cluster: Cluster) -> None:
    node = cluster.node
    adapter = cluster.adapter()
    await adapter.apply(act("ev-a/hold_nodes/1", ActionKind.HOLD_NODES, nodes=(node,)))
    state, reason = await cluster.node_state()
    assert "drain" in state and reason == "dcflex ev-a"
    await adapter.apply(act("ev-b/hold_nodes/2", ActionKind.HOLD_NODES, nodes=(node,)))  # ours already
    assert len(ran(adapter, "State=DRAIN")) == 1 and (await cluster.node_state())[1] == "dcflex ev-a"
    snap = await adapter.snapshot()
    assert snap.nodes[0].drained_by_gateway and not snap.nodes[0].drained_by_other

    await adapter.apply(act("ev-a/release_nodes/1", ActionKind.RELEASE_NODES, nodes=(node,)))
    assert "drain" not in (await cluster.node_state())[0]
    await adapter.apply(act("ev-b/release_nodes/2", ActionKind.RELEASE_NODES, nodes=(node,)))  # not drained
    assert len(ran(adapter, "State=RESUME")) == 1

    await sh("scontrol", "update", f"NodeName={node}", "State=DRAIN", "Reason=disk replacement (ops)", env=cluster.env)
    await adapter.apply(act("ev-c/hold_nodes/3", ActionKind.HOLD_NODES, nodes=(node,)))
    await adapter.apply(act("ev-c/release_nodes/3", ActionKind.RELEASE_NODES, nodes=(node,)))
    state, reason = await cluster.node_state()
    assert "drain" in state and reason == "disk replacement (ops)", "someone else's drain was touched"
    assert len(ran(adapter, "State=DRAIN")) == 1 and len(ran(adapter, "State=RESUME")) == 1
    assert (await adapter.snapshot()).nodes[0].drained_by_other

    with pytest.raises(CommandFailed, match="does not list node"):
        await adapter.apply(act("ev-c/hold_nodes/4", ActionKind.HOLD_NODES, nodes=("no-such-node",)))


# ---------------------------------------------------------------------------- power caps


async def test_power_cap_template_runs_through_srun_on_each_node_of_the_job(cluster: Cluster) -> None:
    job = await cluster.submit("cap-me")
    await cluster.running(job)
    log = cluster.dir / "caps.log"
    template = ("srun", "--overlap", "--jobid={job_id}", "-w", "{node}", str(JOBS / "record_cap.sh"), str(log),
                "{job_id}", "{node}", "{watts}")
    adapter = cluster.adapter(template=template)
    node = cluster.node

    await adapter.apply(act("ev-9/cap/j", ActionKind.CAP, job, watts=50.0))  # below the minimum: clamped
    assert log.read_text().splitlines() == [f"{job} {node} {job} {node} 100"]
    assert (j := (await adapter.snapshot()).job(job)) is not None and j.power_cap_w == 100.0
    await adapter.apply(act("ev-10/cap/j", ActionKind.CAP, job, watts=100.0))  # that limit already
    assert len(log.read_text().splitlines()) == 1

    restarted = cluster.adapter(template=template)  # a restarted gateway: Slurm does not report GPU limits
    assert (j := (await restarted.snapshot()).job(job)) is not None and j.power_cap_w is None
    restarted.recall(Recall(caps={job: 100.0, "999999": 250.0}))  # what its journal says is in force
    assert (j := (await restarted.snapshot()).job(job)) is not None and j.power_cap_w == 100.0
    assert "999999" not in restarted.levers.caps  # a job Slurm no longer lists keeps no cap
    await restarted.apply(act("ev-10/cap/j", ActionKind.CAP, job, watts=100.0))
    assert len(log.read_text().splitlines()) == 1  # known to be in force: not sent again

    await adapter.apply(act("ev-9/uncap/j", ActionKind.UNCAP, job, watts=250.0))  # back to the earlier limit
    await adapter.apply(act("ev-10/uncap/j", ActionKind.UNCAP, job))  # back to the maximum
    assert [line.split()[-1] for line in log.read_text().splitlines()] == ["100", "250", "400"]

    await adapter.apply(act("ev-11/pause/j", ActionKind.PAUSE, job))
    with pytest.raises(CommandFailed, match="only a running job"):
        await adapter.apply(act("ev-11/cap/j", ActionKind.CAP, job, watts=200.0))


async def test_a_hung_power_cap_command_times_out(cluster: Cluster) -> None:
    job = await cluster.submit("cap-hang")
    await cluster.running(job)
    adapter = cluster.adapter(template=("sh", "-c", "sleep 30", "{watts}"), timeout_s=2.0)
    started = time.monotonic()
    with pytest.raises(AdapterTimeout) as err:
        await adapter.apply(act("ev-12/cap/j", ActionKind.CAP, job, watts=200.0))
    assert time.monotonic() - started < 6
    assert err.value.command == ("sh", "-c", "sleep 30", "200") and err.value.timeout_s == 2.0
    assert (j := (await adapter.snapshot()).job(job)) is not None and j.power_cap_w is None


# ----------------------------------------------------------------------- controller down


async def test_slurmctld_down_is_unavailable_after_retries_and_back_with_its_state(cluster: Cluster) -> None:
    job = await cluster.submit("survivor")
    await cluster.running(job)
    pid_file = Path(cluster.env["SLURM_CONF"]).parent.parent / "run" / "slurmctld.pid"
    pid = int(pid_file.read_text())
    os.kill(pid, signal.SIGTERM)
    try:
        await until("slurmctld to exit", lambda: _ready(not Path(f"/proc/{pid}").exists()), 15, done=arrived, every=0.25)
        adapter = cluster.adapter(retries=1, timeout_s=30.0)
        with pytest.raises(AdapterUnavailable) as err:
            await adapter.snapshot()
        text = str(err.value)
        assert "cannot reach the Slurm controller" in text and "2 time(s)" in text and "scontrol ping" in text
        assert err.value.command[1:] in (("--json", "--all"), ("--json",))
    finally:
        await sh("bash", str(ROOT / "scripts" / "services.d" / "slurm.sh"), "restart-ctld", env=cluster.env, within=60)
    snap = await until("the controller to answer", lambda: _snapshot_or_none(cluster.adapter(retries=0)), 30, done=arrived,
                       every=0.25)
    assert (j := snap.job(job)) is not None and j.state is JobState.RUNNING, "slurmctld lost the job over a restart"


async def _snapshot_or_none(adapter: SlurmAdapter) -> ClusterSnapshot | None:
    try:
        return await adapter.snapshot()
    except AdapterUnavailable:
        return None

