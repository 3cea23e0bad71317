"""dcflex end to end: a real OpenADR VTN (openleadr, loopback) → the whole gateway → a real Slurm 22.05.

The gateway is built the way ``dcflex run`` builds it (``build_scheduler`` with ``scheduler.kind = "slurm"``:
the Slurm adapter and a power meter modelled from its snapshots; the GPUs are fake, so site power is the
model's) and runs on the wall clock. Real batch jobs (``jobs/train_loop.sh``) count training steps, save
the counter when signalled, acknowledge with ``dcflex ack`` over the gateway's HTTP API or a marker file,
and resume from the checkpoint when Slurm starts them again. Every check reads Slurm's own view
(``squeue``/``sinfo``), the jobs' files and the gateway's journal, never the adapter's memory alone.

Events are short (tens of seconds), so the stoppable jobs declare a quick checkpoint and restart in their
comment (``dcflex:checkpoint=USR1:2 dcflex:restart=1``): the planner stops rather than pauses a job only
when the event lasts at least ten times the stop's overhead.

Needs the test Slurm (``scripts/services.sh up``); the third test stops and restarts its slurmctld.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import pytest

from adapters.guarded import GuardedScheduler
from adapters.slurm.adapter import SlurmAdapter
from gateway.app import Gateway, build_scheduler, power_model
from gateway.clock import SystemClock
from gateway.config import DcflexConfig
from gateway.domain import ActionKind, EventState
from gateway.jobchannel import CheckpointAcks
from gateway.journal import ActionRecord, Journal
from simulators.vtn import ScriptedVtn
from tests.adapters.slurm.test_adapter_real import sh, slurm_env
from tests.waiting import until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
TRAIN = Path(__file__).resolve().parent / "jobs" / "train_loop.sh"
RECORD_CAP = ROOT / "tests" / "adapters" / "slurm" / "jobs" / "record_cap.sh"  # stands in for nvidia-smi -pl
SLURM_SH = ROOT / "scripts" / "services.d" / "slurm.sh"
VEN_ID = "ven-slurm-e2e"
NAME_PREFIX = "e2e-"
STOPPABLE = "dcflex:tier=preemptible dcflex:checkpoint=USR1:2 dcflex:restart=1"
PCT = 75.0  # deeper than GPU caps alone can reach: the planner has to pause and stop jobs


# ------------------------------------------------------------------------------------ plumbing


class Collector:
    """A ``Sink`` that keeps every record the engine emits."""

    def __init__(self) -> None:
        self.records: list[tuple[str, dict[str, object]]] = []

    async def emit(self, kind: str, payload: Mapping[str, object]) -> None:
        self.records.append((kind, dict(payload)))

    def alerts(self, code: str | None = None) -> list[dict[str, object]]:
        return [p for k, p in self.records if k == "alert" and (code is None or p.get("code") == code)]


@dataclass
class Running:
    """One gateway process's worth: the gateway, its Slurm adapter and the task serving it."""

    gateway: Gateway
    adapter: SlurmAdapter
    task: asyncio.Task[None]

    @property
    def journal(self) -> Journal:
        return self.gateway.journal

    def state(self, event_id: str) -> EventState | None:
        rec = self.journal.event(event_id)
        return rec.state if rec else None

    def actions(self, event_id: str) -> list[ActionRecord]:
        return self.journal.actions(event_id)

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


@dataclass
class Site:
    env: dict[str, str]
    node: str
    dir: Path
    vtn: ScriptedVtn
    sink: Collector = field(default_factory=Collector)
    submitted: list[str] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    gateways: list[Running] = field(default_factory=list)

    @property
    def url_file(self) -> Path:
        return self.dir / "gateway-url"

    def config(self, *, cap_command: list[str] | None = None, command_timeout_s: float = 30.0) -> DcflexConfig:
        """The gateway's configuration; ``cap_command`` goes in front of the recorded power-cap command (a
        wrapper that may hang), ``command_timeout_s`` bounds each Slurm command."""
        recorded = ["srun", "--overlap", "--jobid={job_id}", "-w", "{node}", str(RECORD_CAP),
                    str(self.dir / "caps.log"), "{job_id}", "{node}", "{watts}"]
        return DcflexConfig.model_validate({
            "ven": {"vtn_url": self.vtn.vtn_url, "ven_name": VEN_ID, "ven_id": VEN_ID, "poll_interval_s": 0.5},
            "site": {"nodes": 1, "gpus_per_node": 8, "ramp_rate_kw_per_min": 1000.0, "max_shed_fraction": 0.9,
                     "baseline_minutes": 1},
            "policy": {"default_ramp_s": 5.0, "default_recovery_s": 10.0, "replan_interval_s": 5.0,
                       "tolerance_kw": 0.05, "replan_drift_kw": 0.3},
            "tiers": {"default": "critical", "rules": [
                {"tier": "critical", "partition": "critical"},
                {"tier": "flex-25", "partition": "batch", "name_pattern": f"{NAME_PREFIX}*"},
            ]},
            "scheduler": {"kind": "slurm", "retries": 1, "command_timeout_s": command_timeout_s, "slurm": {
                "power_cap_command": [*(cap_command or []), *recorded],
                "ack_marker_path": f"{self.dir}/acks/{{job_id}}",
                "retry_backoff_s": 0.2,
            }},
            "journal": {"path": str(self.dir / "journal.sqlite3")},
            "api": {"enabled": True, "host": "127.0.0.1", "port": 0},
        })

    async def start_gateway(self, cfg: DcflexConfig | None = None) -> Running:
        """A gateway as ``dcflex run`` builds it (plus a sink and a 2 s power sample); waits until it is
        registered with the VTN, serves its API (whose URL the jobs read) and has read site power once."""
        cfg, clock, acks = cfg or self.config(), SystemClock(), CheckpointAcks()
        model = power_model(cfg)
        parts = build_scheduler(cfg, clock, model, acks)
        assert isinstance(parts.scheduler, SlurmAdapter) and not parts.guarded
        gateway = Gateway(cfg, scheduler=parts.scheduler, meter=parts.meter, clock=clock, model=model,
                          sinks=[self.sink], sample_interval_s=2.0, guard=parts.guarded, acks=acks)
        running = Running(gateway, parts.scheduler, asyncio.create_task(gateway.serve()))
        self.gateways.append(running)
        await until("the gateway to register, serve its API and read site power", lambda: (
            gateway.ven.registration_id is not None and gateway.api is not None
            and gateway.engine.history.latest is not None), 20, every=0.25)
        assert gateway.api is not None
        self.url_file.write_text(gateway.api.url)
        return running

    def add_event(self, *, in_s: float, duration_s: float, pct: float = PCT) -> str:
        eid = f"{NAME_PREFIX}{uuid.uuid4().hex[:8]}"
        self.events.append(eid)
        self.vtn.add_event(VEN_ID, "LOAD_CONTROL", "x-loadControlPercentOffset",
                           [(timedelta(seconds=duration_s), pct)], datetime.now(UTC) + timedelta(seconds=in_s),
                           event_id=eid)
        return eid

    # --------------------------------------------------------------------------------- jobs

    async def submit(self, name: str, *, partition: str = "batch", gpus: int = 1, comment: str = "",
                     requeue: bool = True, ack: str = "marker") -> str:
        env = {**self.env, "DCFLEX_TEST_DIR": str(self.dir), "DCFLEX_ACK_MODE": ack,
               "DCFLEX_GATEWAY_URL_FILE": str(self.url_file),
               "PATH": f"{ROOT / '.venv' / 'bin'}:{self.env.get('PATH', '')}"}
        out = await sh("sbatch", "--parsable", f"--job-name={NAME_PREFIX}{name}", f"--partition={partition}",
                       f"--gres=gpu:{gpus}", "--requeue" if requeue else "--no-requeue", f"--comment={comment}",
                       f"--chdir={self.dir}", f"--output={self.dir}/out.%j", "--open-mode=append", str(TRAIN),
                       env=env)
        job_id = out.strip().split(";")[0]
        self.submitted.append(job_id)
        return job_id

    async def states(self, ids: list[str]) -> dict[str, tuple[str, str]]:
        """``{job id: (STATE, REASON)}`` as squeue prints them; {} when Slurm does not answer."""
        out = await sh("squeue", "-h", "-j", ",".join(ids), "-o", "%i|%T|%r", env=self.env, check=False, within=60)
        found: dict[str, tuple[str, str]] = {}
        for line in out.splitlines():
            jid, _, rest = line.partition("|")
            state, _, reason = rest.partition("|")
            found[jid.strip()] = (state, reason)
        return found

    async def all_running(self, ids: list[str]) -> bool:
        states = await self.states(ids)
        return all(states.get(j, ("", ""))[0] == "RUNNING" and "start step=" in self.log(j) for j in ids)

    def log(self, job_id: str) -> str:
        path = self.dir / f"log.{job_id}"
        return path.read_text() if path.exists() else ""

    def progress(self, job_id: str) -> int:
        path = self.dir / f"progress.{job_id}"
        text = path.read_text().strip() if path.exists() else ""
        return int(text) if text.isdigit() else 0

    def log_has(self, job_id: str, text: str) -> bool:
        return text in self.log(job_id)

    def progressed(self, job_id: str, beyond: int) -> bool:
        return self.progress(job_id) > beyond

    def checkpointed(self, job_id: str) -> int:
        return int((self.dir / f"ckpt.{job_id}").read_text())

    def caps(self) -> dict[str, list[int]]:
        """Power limits the cap command set, per job, in order (from record_cap.sh's log)."""
        path = self.dir / "caps.log"
        out: dict[str, list[int]] = {}
        for line in path.read_text().splitlines() if path.exists() else []:
            ran_in, _host, job, _node, watts = line.split()
            assert ran_in == job, f"the cap command for job {job} ran outside its allocation: {line}"
            out.setdefault(job, []).append(int(watts))
        return out

    async def node_state(self) -> tuple[str, str]:
        out = await sh("sinfo", "-h", "-N", "-n", self.node, "-o", "%T|%E", env=self.env, within=60)
        state, _, reason = out.splitlines()[0].partition("|")
        return state, reason

    async def watch(self, ids: list[str], seen: list[str]) -> None:
        """Record the state of ``ids`` every second (nothing while Slurm does not answer)."""
        while True:
            states = await self.states(ids)
            if states:
                seen.extend(f"{j}={states.get(j, ('GONE', ''))[0]}" for j in ids)
            await asyncio.sleep(1.0)


def _held(state: tuple[str, str]) -> bool:
    return state[0] == "PENDING" and "held" in state[1].lower()  # JobHeldUser, or "job requeued in held state"


async def _ctld_up(env: dict[str, str]) -> bool:
    try:
        return "is UP" in await sh("scontrol", "ping", env=env, check=False, within=20)
    except TimeoutError:
        return False


@pytest.fixture
async def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Site]:
    env = slurm_env()
    if "SLURM_CONF" not in env or not await _ctld_up(env):
        pytest.fail(f"the test Slurm is not reachable (SLURM_CONF={env.get('SLURM_CONF')}): start it with "
                    "`scripts/services.sh up`")
    # `dcflex run` finds Slurm through the environment, as the gateway built here does.
    monkeypatch.setenv("SLURM_CONF", env["SLURM_CONF"])
    node = env.get("DCFLEX_SLURM_NODE") or (await sh("hostname", "-s", env=env)).strip()

    async def quiet() -> bool:  # the planner sees every job on the node: start without anyone else's
        return not (await sh("squeue", "-h", "-o", "%i", env=env, check=False)).strip()

    await until("other jobs on the test Slurm to finish (this test plans over the whole node)", quiet, 120, every=0.25)
    async with ScriptedVtn(poll_interval_s=1.0) as vtn:
        s = Site(env, node, tmp_path, vtn)
        try:
            yield s
        finally:
            for running in s.gateways:
                await running.stop()
            if not await _ctld_up(env):  # a failed test may have left slurmctld stopped
                await sh("bash", str(SLURM_SH), "restart-ctld", env=env, within=90)
            if s.submitted:
                await sh("scancel", *s.submitted, env=env, check=False)
            _, reason = await s.node_state()
            if any(reason == f"dcflex {e}" for e in s.events):
                await sh("scontrol", "update", f"NodeName={node}", "State=RESUME", env=env, check=False)
            if s.submitted:  # their GPUs free before the next test submits
                await until("cancelled jobs to leave", lambda: _gone(s), 30, every=0.25)


async def _gone(s: Site) -> bool:
    return not (await s.states(s.submitted))


# ------------------------------------------------------------------------------- verification


def commands(site: Site, running: Running, event_id: str) -> str:
    """For a failure message: the event's state, its commands as journaled and the adapter's last Slurm commands."""
    journaled = [(r.action.key, r.state, r.attempts) for r in running.actions(event_id)]
    ran = [f"{r.line} -> {r.exit_code} ({r.duration_s:.1f} s)" for r in list(running.adapter.runner.history)[-8:]]
    return f"state {running.state(event_id)}; journaled {journaled}; last Slurm commands {ran}; alerts {site.sink.alerts()}"


def shed_done(running: Running, event_id: str) -> dict[ActionKind, set[str]]:
    """Job ids (node names for holds) of the event's shed commands that were done, by lever."""
    out: dict[ActionKind, set[str]] = {}
    for rec in running.actions(event_id):
        if rec.action.kind.sheds and rec.state in ("done", "undone"):
            out.setdefault(rec.action.kind, set()).update(rec.action.nodes or (rec.action.job_id,))
    return out


async def assert_shed_as_journaled(site: Site, running: Running, event_id: str, critical: list[str],
                                   stoppable: dict[str, str]) -> dict[str, int]:
    """While the event holds: Slurm, the jobs and the node are as the journal's done commands say.
    ``stoppable`` maps each job that must be checkpointed and stopped to how it acknowledges. Returns the
    checkpointed step of each stopped job."""
    done = shed_done(running, event_id)
    named = {r.action.job_id for r in running.actions(event_id)}
    assert not named & set(critical), f"a command names a critical job: {running.actions(event_id)}"
    assert done.get(ActionKind.CHECKPOINT_STOP, set()) == set(stoppable), done
    states = await site.states(site.submitted)
    records = {r.job_id: r for r in running.adapter.checkpoints}
    saved: dict[str, int] = {}
    for job, via in stoppable.items():
        assert _held(states[job]), f"stopped job {job} is {states[job]}, not requeued and held"
        ck = records[job]
        assert (ck.acknowledged, ck.via, ck.signal) == (True, via, "USR1"), ck
        assert ck.checkpoint_path == str(site.dir / f"ckpt.{job}")
        saved[job] = site.checkpointed(job)
        assert site.log(job).count("checkpoint step=") == 1 and f"checkpoint step={saved[job]}" in site.log(job)
        # ck.via is the gateway's record of the channel; the script's own "acked via" line after the ack
        # may never be written, since the requeue that follows the ack can end the script first
    for job in done.get(ActionKind.PAUSE, set()):
        assert states[job][0] == "SUSPENDED", f"paused job {job} is {states[job]}"
        assert "checkpoint step=" not in site.log(job), "a paused job was signalled"
    caps = site.caps()
    for rec in running.actions(event_id):
        if rec.action.kind is ActionKind.CAP and rec.state == "done":
            assert rec.action.watts is not None and round(rec.action.watts) in caps.get(rec.action.job_id, [])
    state, reason = await site.node_state()
    if ActionKind.HOLD_NODES in done:
        assert done[ActionKind.HOLD_NODES] == {site.node}
        assert "drain" in state and reason == f"dcflex {event_id}", (state, reason)
    else:
        assert "drain" not in state, (state, reason)
    return saved


async def assert_released(site: Site, running: Running, event_id: str, saved: dict[str, int]) -> None:
    """After the event: every command undone exactly once, nothing left held, suspended, capped or drained,
    and each stopped job running again from its checkpoint."""
    records = running.actions(event_id)
    assert records and all(r.state in ("done", "undone") for r in records), [(r.action.key, r.state) for r in records]
    assert all(r.state == "undone" for r in records if r.action.kind.sheds), "a shed command was never undone"
    assert all(r.attempts == 1 for r in records), [(r.action.key, r.attempts) for r in records if r.attempts != 1]
    states = await site.states(site.submitted)
    assert not [j for j, st in states.items() if st[0] == "SUSPENDED" or _held(st)], states
    state, reason = await site.node_state()
    assert "drain" not in state and not reason.startswith("dcflex"), (state, reason)
    capped = {r.action.job_id for r in records if r.action.kind is ActionKind.CAP}
    caps = site.caps()
    assert all(caps[j][-1] == 400 for j in capped), caps  # uncapped: back to the site's maximum
    for job, step in saved.items():
        await until(f"stopped job {job} to run again from step {step}",
                    partial(site.log_has, job, f"start step={step} restarts=1"), 40, every=0.25)
        await until(f"job {job} to count past its checkpoint", partial(site.progressed, job, step + 3), 10, every=0.25)
    for job in {r.action.job_id for r in records if r.action.kind is ActionKind.PAUSE}:
        await until(f"paused job {job} to make progress again", partial(site.progressed, job, site.progress(job)), 10, every=0.25)


# ------------------------------------------------------------------------------------ the tests


async def test_an_event_pauses_and_stops_real_jobs_and_restores_them(site: Site) -> None:
    critical = [await site.submit("serve-a", partition="critical", comment="inference, never touch"),
                await site.submit("serve-b", partition="critical")]
    http_job = await site.submit("pre-http", gpus=2, comment=STOPPABLE.replace("USR1:2", "USR1:3"), ack="cli")
    marker_job = await site.submit("pre-marker", comment=STOPPABLE)
    no_requeue = await site.submit("pre-norequeue", comment=STOPPABLE, requeue=False)
    flex50 = await site.submit("flex50", comment="dcflex:tier=flex-50")
    by_rule = await site.submit("by-partition")
    await until("every job to run", lambda: site.all_running(site.submitted), 30, every=0.25)
    running = await site.start_gateway()
    snap = await running.adapter.snapshot()
    assert {j.job_id: j.tier.value for j in snap.jobs if j.job_id in site.submitted} == {
        critical[0]: "critical", critical[1]: "critical", http_job: "preemptible", marker_job: "preemptible",
        no_requeue: "preemptible", flex50: "flex-50", by_rule: "flex-25"}
    seen: list[str] = []
    watcher = asyncio.create_task(site.watch(critical, seen))
    try:
        started = time.monotonic()
        eid = site.add_event(in_s=5, duration_s=45)
        assert (await site.vtn.wait_for_response(eid, within_s=15)).opt_type == "optIn"
        await until("the event to hold", lambda: running.state(eid) is EventState.HOLDING, 40, every=0.25,
                    detail=lambda: commands(site, running, eid))
        saved = await assert_shed_as_journaled(site, running, eid, critical, {http_job: "http", marker_job: "marker"})
        assert no_requeue in shed_done(running, eid).get(ActionKind.PAUSE, set()), "the --no-requeue job is not paused"
        await until("the event to complete", lambda: running.state(eid) is EventState.COMPLETED, 60, every=0.25)
        await assert_released(site, running, eid, saved)
        print(f"\nevent {eid}: issued → completed and restarted in {time.monotonic() - started:.1f} s; commands:",
              ", ".join(f"{r.action.kind.value} {r.action.job_id or ','.join(r.action.nodes)} ({r.action.tier})"
                        for r in running.actions(eid)))
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
    assert len(seen) >= 2 * 30 and set(s.split("=")[1] for s in seen) == {"RUNNING"}, sorted(set(seen))
    assert not site.sink.alerts("command_failed"), site.sink.alerts("command_failed")


async def test_a_gateway_killed_mid_event_is_replaced_and_restores_without_repeating_a_command(site: Site) -> None:
    critical = [await site.submit("serve", partition="critical")]
    stopped = await site.submit("pre-marker", gpus=2, comment=STOPPABLE)
    paused = await site.submit("pre-norequeue", comment=STOPPABLE, requeue=False)
    await until("every job to run", lambda: site.all_running(site.submitted), 30, every=0.25)
    first = await site.start_gateway()
    eid = site.add_event(in_s=5, duration_s=35)
    assert (await site.vtn.wait_for_response(eid, within_s=15)).opt_type == "optIn"
    await until("the event to hold", lambda: first.state(eid) is EventState.HOLDING, 40, every=0.25,
                detail=lambda: commands(site, first, eid))
    saved = await assert_shed_as_journaled(site, first, eid, critical, {stopped: "marker"})
    sent_before = {r.action.key for r in first.actions(eid) if r.state == "done"}
    assert paused in shed_done(first, eid)[ActionKind.PAUSE]

    await first.stop()  # killed mid-event: nothing is undone on the way out
    states = await site.states(site.submitted)
    assert _held(states[stopped]) and states[paused][0] == "SUSPENDED", states

    second = await site.start_gateway()  # a new process on the same journal: fresh adapter, fresh memory
    assert any(kind == "resumed" for _, _, kind, _ in second.journal.log_entries(eid)), "no reconciliation"
    await until("the event to complete after the restart", lambda: second.state(eid) is EventState.COMPLETED, 60, every=0.25)
    await assert_released(site, second, eid, saved)
    again = [r.line for r in second.adapter.runner.history
             if {"--signal=USR1", "requeuehold", "suspend", "State=DRAIN"} & set(r.argv)]
    assert again == [], f"the new gateway repeated commands the first one had done: {again}"
    assert sent_before <= {r.action.key for r in second.actions(eid)}
    assert site.log(stopped).count("checkpoint step=") == 1  # signalled once, by the first gateway only


async def test_slurmctld_down_mid_event_is_alerted_survived_and_restored(site: Site) -> None:
    critical = [await site.submit("serve", partition="critical")]
    stopped = await site.submit("pre-marker", gpus=2, comment=STOPPABLE)
    paused = await site.submit("pre-norequeue", comment=STOPPABLE, requeue=False)
    await until("every job to run", lambda: site.all_running(site.submitted), 30, every=0.25)
    running = await site.start_gateway()
    eid = site.add_event(in_s=5, duration_s=45)
    assert (await site.vtn.wait_for_response(eid, within_s=15)).opt_type == "optIn"
    await until("the event to hold", lambda: running.state(eid) is EventState.HOLDING, 40, every=0.25,
                detail=lambda: commands(site, running, eid))
    saved = await assert_shed_as_journaled(site, running, eid, critical, {stopped: "marker"})
    assert paused in shed_done(running, eid)[ActionKind.PAUSE]

    pid_file = Path(site.env["SLURM_CONF"]).parent.parent / "run" / "slurmctld.pid"
    pid = int(pid_file.read_text())
    os.kill(pid, signal.SIGTERM)
    try:
        await until("slurmctld to exit", lambda: not Path(f"/proc/{pid}").exists(), 15, every=0.25)
        def unreachable() -> list[dict[str, object]]:
            return [a for a in site.sink.alerts() if "cannot reach the Slurm controller" in str(a["message"])]

        await until("an alert that Slurm cannot be reached", unreachable, 40, every=0.25)
        alert = unreachable()[0]
        assert alert["code"] in ("meter_unavailable", "snapshot_failed") and "scontrol ping" in str(alert["message"])
        assert not running.task.done() and running.state(eid) is EventState.HOLDING
    finally:
        await sh("bash", str(SLURM_SH), "restart-ctld", env=site.env, within=90)
    back = datetime.now(UTC)
    await until("a power reading after slurmctld is back", lambda: (
        (latest := running.gateway.engine.history.latest) is not None and latest[0] > back), 40, every=0.25)
    await until("the event to complete", lambda: running.state(eid) is EventState.COMPLETED, 60, every=0.25)
    await assert_released(site, running, eid, saved)
    assert not running.task.done()
    assert not site.sink.alerts("command_failed"), site.sink.alerts("command_failed")


# The first power-cap command for each job hangs (as an srun whose step never starts would); later ones run.
HANG_ONCE = 'm="$1"; hang="$2"; shift 2; if [ ! -e "$m" ]; then : > "$m"; exec sleep "$hang"; fi; exec "$@"'


async def test_a_hung_scheduler_command_is_bounded_by_the_adapter_alerted_and_retried(site: Site) -> None:
    """No generic guard around the adapter (as ``dcflex run`` builds it): the Slurm adapter's own bound,
    ``scheduler.command_timeout_s``, ends the hung command, kills what it started, and the engine alerts
    and retries the idempotent command at its next re-plan; the event still ends with everything undone."""
    critical = [await site.submit("serve", partition="critical")]
    capped = await site.submit("by-partition", gpus=4)  # flex-25 by rule: capped, never paused or stopped
    await until("every job to run", lambda: site.all_running(site.submitted), 30, every=0.25)
    hang_s = f"3{uuid.uuid4().int % 10**6:06d}.5"  # a sleep no one else runs, to look for afterwards
    wrapper = ["sh", "-c", HANG_ONCE, "hang-once", f"{site.dir}/hung-{{job_id}}", hang_s]
    running = await site.start_gateway(site.config(cap_command=wrapper, command_timeout_s=3.0))
    assert not isinstance(running.gateway.engine.scheduler, GuardedScheduler)  # the adapter bounds itself
    eid = site.add_event(in_s=5, duration_s=40, pct=10.0)
    assert (await site.vtn.wait_for_response(eid, within_s=15)).opt_type == "optIn"

    def timed_out() -> list[dict[str, object]]:
        return [a for a in site.sink.alerts("command_failed") if a.get("job_id") == capped]

    await until("the hung cap to be alerted", timed_out, 30, every=0.25)
    alert = timed_out()[0]
    assert alert["kind"] == "cap" and "did not finish; its processes were killed" in str(alert["message"]), alert
    assert alert["command"][:3] == ["sh", "-c", HANG_ONCE], alert  # type: ignore[index]
    assert not (await sh("pgrep", "-f", f"sleep {hang_s}", env=site.env, check=False)).strip(), "the hung sleep lives on"
    await until("the retried cap to be done", lambda: any(
        r.action.kind is ActionKind.CAP and r.action.job_id == capped and r.state == "done" and r.attempts == 2
        for r in running.actions(eid)), 30, every=0.25)
    assert capped in site.caps(), "the retried cap did not run in the job's allocation"
    await until("the event to complete", lambda: running.state(eid) is EventState.COMPLETED, 60, every=0.25)
    records = running.actions(eid)
    assert not [r for r in records if r.action.job_id in critical]
    assert all(r.state == "undone" for r in records if r.action.kind.sheds), [(r.action.key, r.state) for r in records]
    assert site.caps()[capped][-1] == 400  # uncapped: back to the site's maximum
    assert not running.task.done()
