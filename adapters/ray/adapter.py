"""``RayAdapter``: the Ray implementation of ``gateway.ports.SchedulerPort``, over the dashboard's REST APIs.

``snapshot()`` lists the cluster's submission jobs (``GET /api/jobs/``) and maps each through the tier
rules (``adapters.ray.tiers``): a Ray job is never pausable or cappable, and it may be checkpointed and
stopped only when its metadata says ``dcflex.resumable=true``. Jobs that ended more than an hour ago are
left out (Ray keeps every job it ever ran); driver jobs (scripts that called ``ray.init`` themselves) too,
since the Jobs API can neither stop nor resubmit them, and the gateway's own holder jobs. Serve deployments
(``GET /api/serve/applications/``) are services ``serve:<app>/<deployment>`` (``adapters.ray.services``).
``apply()`` runs one lever (``adapters.ray.levers``) under a per-job lock (one lock for every Serve
command) and remembers completed keys:

- CHECKPOINT_STOP: ask the job to checkpoint (``JobDirectives``), wait for its acknowledgement
  (``CheckpointAcks``) up to its grace time, stop it, hold its GPUs (``adapters.ray.hold``); its facts say
  whether it acknowledged and what. RESTART: release the hold, resubmit the job, idempotently, resuming
  from the acknowledged checkpoint;
- SCALE_DOWN/SCALE_UP: set a Serve deployment's replica count (the whole declarative config re-deployed
  with that one number changed);
- PAUSE, CAP, HOLD_NODES are refused (``CommandFailed``, saying why): the planner does not choose them for
  jobs with ``pausable=False``/``cappable=False`` and no nodes; their undos (RESUME, UNCAP, RELEASE_NODES)
  have nothing to undo and are no-ops.

``recall()`` after a restart takes back, from the journal, which jobs wait stopped (with their checkpoints)
and each scaled service's full size. Every job the adapter submits carries ``DCFLEX_GATEWAY_URL`` and
``DCFLEX_JOB_ID`` (its submission id) in its runtime env, so the job-side helper finds the gateway.
``describe()`` returns the HTTP requests ``apply()`` would make (``#`` lines explain a wait or a refusal).

Errors: ``AdapterTimeout``/``AdapterUnavailable`` after the client's own retries, and ``CommandFailed``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Any

from adapters.ray.client import RayDashboardClient
from adapters.ray.hold import KEY_HOLD_FOR, hold_id
from adapters.ray.levers import KEY_RESUMED_FROM, RayLevers, event_of, refused, resubmission_id, with_gateway_env
from adapters.ray.model import JobSpec, RayJob, ServeInstance, StopRecord
from adapters.ray.services import ServeBook, ServeRules, ServeTarget, lookup, services
from adapters.ray.tiers import RayTierResolver, to_domain
from gateway.clock import Clock, SystemClock
from gateway.config.models import DcflexConfig, SchedulerConfig
from gateway.domain import Action, ActionKind, ClusterSnapshot, Job
from gateway.exceptions import CommandFailed
from gateway.jobchannel.acks import CheckpointAcks
from gateway.jobchannel.directives import JobDirectives
from gateway.ports import Facts, Recall

__all__ = ["KEEP_ENDED_S", "RayAdapter", "gateway_url_for"]

log = logging.getLogger("dcflex.adapters.ray")

KEEP_ENDED_S = 3600.0
_NO_OP = (ActionKind.RESUME, ActionKind.UNCAP, ActionKind.RELEASE_NODES)
_SCALES = (ActionKind.SCALE_DOWN, ActionKind.SCALE_UP)
_WHY_NOT = {
    ActionKind.PAUSE: "Ray cannot suspend a job in place (the Jobs API can only stop it); the planner should not "
                      "choose a pause for a job with pausable=False",
    ActionKind.CAP: "the Ray adapter does not set GPU power limits (it does not know which GPUs a job's workers "
                    "hold); the planner should not choose a cap for a job with cappable=False",
    ActionKind.HOLD_NODES: "the Ray adapter reports no nodes to hold",
}


def gateway_url_for(cfg: DcflexConfig) -> str:
    """The URL jobs reach the gateway at: ``scheduler.ray.gateway_url``, else the ``[api]`` listener (a
    wildcard host replaced by this host's name, which other nodes can resolve)."""
    if cfg.scheduler.ray.gateway_url:
        return cfg.scheduler.ray.gateway_url
    host = cfg.api.host
    if host in ("0.0.0.0", "::", ""):
        host = socket.getfqdn()
    return f"http://[{host}]:{cfg.api.port}" if ":" in host else f"http://{host}:{cfg.api.port}"


class RayAdapter:
    """Reads and acts on one Ray cluster through its dashboard (see the module docstring)."""

    name = "ray"

    def __init__(
        self,
        config: SchedulerConfig,
        resolver: RayTierResolver,
        *,
        directives: JobDirectives | None = None,
        acks: CheckpointAcks | None = None,
        gateway_url: str | None = None,
        clock: Clock | None = None,
        client: RayDashboardClient | None = None,
        ack_poll_s: float = 0.25,
        stop_wait_s: float = 30.0,
    ) -> None:
        self.config = config
        self.clock: Clock = clock or SystemClock()
        self.client = client or RayDashboardClient(
            config.ray.dashboard_url, timeout_s=config.command_timeout_s, retries=config.retries,
            backoff_s=config.ray.retry_backoff_s, dry_run=config.dry_run,
        )
        self.resolver = resolver
        self.gateway_url = gateway_url
        self.directives = directives
        self.levers = RayLevers(self.client, resolver, self.clock, directives=directives, acks=acks,
                                gateway_url=gateway_url, ack_poll_s=ack_poll_s, stop_wait_s=stop_wait_s,
                                hold=config.ray)
        self.jobs: dict[str, RayJob] = {}   # from the last snapshot, for describe()
        self.serve_rules = ServeRules(config.ray.serve, resolver.default)
        self.book = ServeBook()
        self._serve_warned = False
        self.services: dict[str, ServeTarget] = {}  # service job id → its app and deployment (last snapshot)
        self._done: set[str] = set()
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._handlers: dict[ActionKind, Callable[[Action], Awaitable[Facts | None]]] = {
            ActionKind.CHECKPOINT_STOP: self.levers.checkpoint_stop,
            ActionKind.RESTART: self.levers.restart,
            ActionKind.SCALE_DOWN: self._scale,
            ActionKind.SCALE_UP: self._scale,
        }

    @classmethod
    def from_config(cls, cfg: DcflexConfig, *, directives: JobDirectives | None = None,
                    acks: CheckpointAcks | None = None, clock: Clock | None = None) -> RayAdapter:
        """The adapter a gateway configured with ``[scheduler] kind = "ray"`` uses."""
        resolver = RayTierResolver(cfg.tiers, default_grace_s=cfg.scheduler.ray.checkpoint_grace_s)
        return cls(cfg.scheduler, resolver, directives=directives, acks=acks, gateway_url=gateway_url_for(cfg),
                   clock=clock)

    async def aclose(self) -> None:
        await self.client.aclose()

    @property
    def checkpoints(self) -> tuple[StopRecord, ...]:
        """Every checkpoint-then-stop done so far, acknowledged or not (work probably lost)."""
        return tuple(self.levers.checkpoints)

    # --------------------------------------------------------------------------- port

    async def snapshot(self) -> ClusterSnapshot:
        listed, instance = await asyncio.gather(self.client.list_jobs(), self._serve_details())
        now = self.clock.now()
        old = now - timedelta(seconds=KEEP_ENDED_S)
        held_ids = self.levers.stopped
        resubmitted = {j.metadata.get(KEY_RESUMED_FROM) for j in listed if j.metadata.get(KEY_RESUMED_FROM)}
        jobs: list[Job] = []
        self.jobs = {}
        waiting: list[RayJob] = []
        for rj in listed:
            sid = rj.submission_id
            if sid is None:
                continue
            self.jobs[sid] = rj
            if KEY_HOLD_FOR in rj.metadata:  # the gateway's own holder of a stopped job's GPUs
                continue
            held = sid in held_ids and sid not in resubmitted
            if rj.terminal and not held and rj.end_time is not None and rj.end_time < old:
                continue
            if held and rj.terminal:
                waiting.append(rj)
            jobs.append(to_domain(rj, self.resolver.resolve(rj), now, held=held,
                                  checkpointing=sid in self.levers.in_checkpoint))
        await self.levers.keep_packages(waiting)
        served, self.services = services(instance, self.serve_rules, self.book)
        return ClusterSnapshot(at=now, jobs=(*jobs, *served))

    async def apply(self, action: Action) -> Facts | None:
        if action.key in self._done:
            return None
        kind = action.kind
        if kind in _WHY_NOT:
            raise refused(action, _WHY_NOT[kind])
        lock = self._locks["\x00serve" if kind in _SCALES else action.job_id or "\x00nodes"]
        async with lock:
            if action.key in self._done:
                return None
            facts: Facts | None = None
            if kind in _NO_OP:
                log.info("%s %s: nothing to undo on Ray (its lever is never applied there)", kind.value, action.job_id)
            else:
                facts = await self._handlers[kind](action)
            self._done.add(action.key)
            return facts

    def prepare(self, actions: Sequence[Action]) -> None:
        """Ask every job a batch will checkpoint-then-stop to checkpoint now (from the last snapshot's view of
        it), so all write their checkpoints at once while the commands wait for free slots; each command then
        waits only for what is left of its job's grace."""
        for a in actions:
            if a.kind is ActionKind.CHECKPOINT_STOP and a.key not in self._done:
                job = self.jobs.get(a.job_id)
                if job is not None:
                    self.levers.ask_ahead(a, job)

    def recall(self, memory: Recall) -> None:
        """After a restart: the jobs stopped and waiting for their resubmission (with the checkpoint each
        acknowledged) and the Serve deployments' sizes before the gateway scaled them. The Ray adapter
        never sets power caps: whatever the journal lists of those was not set through it."""
        self.levers.recall(memory.in_force, memory.facts)
        self.book.recall(memory.in_force)
        if memory.caps:
            log.warning("the journal lists GPU power caps for %d job(s); the Ray adapter sets none, ignoring them",
                        len(memory.caps))

    async def _serve_details(self) -> ServeInstance:
        """Serve's applications; none when this dashboard cannot tell (a cluster without Serve may answer
        404): the jobs are still read, and the reason is logged once."""
        try:
            instance = await self.client.serve_details()
        except CommandFailed as exc:
            if not self._serve_warned:
                log.warning("Serve deployments left out of the snapshot: %s", exc)
                self._serve_warned = True
            return ServeInstance(apps={})
        self._serve_warned = False
        return instance

    async def _scale(self, action: Action) -> Facts | None:
        """Set a Serve deployment's replica count (one lock for every Serve command: each rewrites the whole
        declarative config from a fresh read, and two at once would undo each other)."""
        target = lookup(self.services, action.job_id)
        replicas = action.replicas
        if target is None or replicas is None:
            raise refused(action, f"{action.job_id} is not a Serve deployment (serve:<app>/<deployment>)")
        instance = await self.client.serve_details()
        app = instance.apps.get(target.app)
        dep = app.deployments.get(target.deployment) if app is not None else None
        before = dep.target_num_replicas if dep is not None else replicas
        if action.kind is ActionKind.SCALE_UP and dep is None:
            log.warning("Serve %s/%s is gone: nothing to scale back up", target.app, target.deployment)
            self.book.scaled_up(action.job_id, replicas)
            return None
        await self.scale_serve(target.app, target.deployment, replicas)
        if action.kind is ActionKind.SCALE_DOWN:
            self.book.scaled_down(action.job_id, before, replicas)
        else:
            self.book.scaled_up(action.job_id, replicas)
        return {"replicas_before": before, "replicas": replicas}

    def describe(self, action: Action) -> list[str]:
        kind, jid, url = action.kind, action.job_id, self.client.url
        if kind in _WHY_NOT:
            return [f"# refused: {_WHY_NOT[kind]}"]
        if kind in _SCALES:
            target = lookup(self.services, jid)
            if target is None:
                return [f"# refused: {jid} is not a Serve deployment (serve:<app>/<deployment>)"]
            return [f"GET {url('/api/serve/applications/')}",
                    f"PUT {url('/api/serve/applications/')} <every application's deployed config, "
                    f"{target.app}/{target.deployment} with num_replicas = {action.replicas}>"]
        if kind in _NO_OP:
            return [f"# nothing to undo on Ray for {jid}"]
        job = self.jobs.get(jid)
        if kind is ActionKind.CHECKPOINT_STOP:
            lines = [f"GET {url('/api/jobs/' + jid)}"]
            if job is None:
                lines.append(f"# job {jid} not seen yet: its grace comes from its metadata (dcflex.checkpoint_grace_s)")
                grace = self.resolver.default_grace_s
            else:
                policy = self.resolver.resolve(job)
                if not policy.resumable:
                    return [*lines, f"# refused: job {jid} is not dcflex.resumable=true; it is never stopped"]
                grace = policy.checkpoint_grace_s
            return [*lines,
                    f"# ask {jid} to checkpoint: directive at GET /v1/jobs/{jid}/directive (JobDirectives)",
                    f"# wait up to {grace:g} s for POST /v1/jobs/{jid}/checkpoint-ack",
                    f"POST {url('/api/jobs/' + jid + '/stop')}", *self._describe_hold(jid, event_of(action.key))]
        new_id = resubmission_id(jid, event_of(action.key))
        lines = [f"GET {url('/api/jobs/' + new_id)}  # already resubmitted? then nothing more",
                 f"GET {url('/api/jobs/' + jid)}"]
        if self.levers.hold is not None:
            holder = hold_id(jid, event_of(action.key))
            lines.insert(0, f"POST {url('/api/jobs/')} <release job {holder}-release: remove placement group {holder}, "
                            f"the GPUs held for {jid}>")
        if job is None:
            return [*lines, f"POST {url('/api/jobs/')} <{jid}'s entrypoint, runtime_env, metadata and resources, "
                            f"submission_id {new_id}, DCFLEX_RESUME_FROM = its acknowledged checkpoint>"]
        record = self.levers.stopped.get(jid)
        spec = with_gateway_env(JobSpec(job.entrypoint, new_id, job.runtime_env, job.metadata, job.entrypoint_num_cpus,
                                        job.entrypoint_num_gpus, job.entrypoint_memory, job.entrypoint_resources),
                                self.gateway_url, resume_from=record.checkpoint_path if record else None,
                                metadata={KEY_RESUMED_FROM: jid})
        return [*lines, f"POST {url('/api/jobs/')} {json.dumps(spec.to_json(), sort_keys=True)}"]

    def _describe_hold(self, jid: str, event: str) -> list[str]:
        hold = self.levers.hold
        if hold is None:
            return []
        job = self.jobs.get(jid)
        gpus = self.resolver.resolve(job).gpus if job is not None else None
        if gpus == 0:
            return [f"# {jid} declares no GPUs (dcflex.gpus): nothing to hold"]
        count = f"{gpus}" if gpus is not None else "dcflex.gpus"
        return [f"POST {self.client.url('/api/jobs/')} <hold job {hold_id(jid, event)}: a detached placement group of "
                f"{count} x {{{hold.gpu_resource}: 1}} until the restart>"]

    # ------------------------------------------------------------------ beyond the port

    async def submit(self, spec: JobSpec) -> str:
        """Submit a job with the helper's environment (``DCFLEX_GATEWAY_URL``, ``DCFLEX_JOB_ID``); a spec
        without a submission id gets a fresh one (the helper must know it before the job starts)."""
        if spec.submission_id is None:
            spec = JobSpec(spec.entrypoint, f"dcflex-{uuid.uuid4().hex[:16]}", spec.runtime_env, spec.metadata,
                           spec.entrypoint_num_cpus, spec.entrypoint_num_gpus, spec.entrypoint_memory,
                           spec.entrypoint_resources)
        return await self.client.submit_job(with_gateway_env(spec, self.gateway_url))

    async def serve(self) -> ServeInstance:
        """Serve's applications, deployments and replica counts."""
        return await self.client.serve_details()

    async def scale_serve(self, app: str, deployment: str, replicas: int) -> dict[str, Any] | None:
        """Set a Serve deployment's replica count (None: it already had that target, nothing was sent)."""
        config = await self.client.scale_serve(app, deployment, replicas)
        if config is not None:
            log.info("Serve %s/%s: target %d replica(s)", app, deployment, replicas)
        return config
