"""``RayAdapter``: the Ray implementation of ``gateway.ports.SchedulerPort``, over the dashboard's REST APIs.

``snapshot()`` lists the cluster's submission jobs (``GET /api/jobs/``) and maps each through the tier
rules (``adapters.ray.tiers``): a Ray job is never pausable or cappable, and it may be checkpointed and
stopped only when its metadata says ``dcflex.resumable=true``. Jobs that ended more than an hour ago are
left out (Ray keeps every job it ever ran); driver jobs (scripts that called ``ray.init`` themselves) too,
since the Jobs API can neither stop nor resubmit them. ``apply()`` runs one lever (``adapters.ray.levers``)
under a per-job lock and remembers completed keys:

- CHECKPOINT_STOP: ask the job to checkpoint (``JobDirectives``), wait for its acknowledgement
  (``CheckpointAcks``) up to its grace time, stop it; RESTART: resubmit it, idempotently, resuming from the
  acknowledged checkpoint;
- PAUSE, CAP, HOLD_NODES are refused (``CommandFailed``, saying why): the planner does not choose them for
  jobs with ``pausable=False``/``cappable=False`` and no nodes; their undos (RESUME, UNCAP, RELEASE_NODES)
  have nothing to undo and are no-ops.

Every job the adapter submits carries ``DCFLEX_GATEWAY_URL`` and ``DCFLEX_JOB_ID`` (its submission id) in
its runtime env, so the job-side helper finds the gateway. Serve applications are not jobs:
``scale_serve(app, deployment, replicas)`` re-deploys the declarative config with one deployment's replica
count changed. ``describe()`` returns the HTTP requests ``apply()`` would make (``#`` lines explain a wait
or a refusal).

Errors: ``AdapterTimeout``/``AdapterUnavailable`` after the client's own retries, and ``CommandFailed``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping
from datetime import timedelta
from typing import Any

from adapters.ray.client import RayDashboardClient
from adapters.ray.levers import KEY_RESUMED_FROM, RayLevers, event_of, refused, resubmission_id, with_gateway_env
from adapters.ray.model import JobSpec, RayJob, ServeInstance, StopRecord
from adapters.ray.tiers import RayTierResolver, to_domain
from gateway.api.acks import CheckpointAcks
from gateway.api.directives import JobDirectives
from gateway.clock import Clock, SystemClock
from gateway.config.models import DcflexConfig, SchedulerConfig
from gateway.domain import Action, ActionKind, ClusterSnapshot, Job

__all__ = ["KEEP_ENDED_S", "RayAdapter", "gateway_url_for"]

log = logging.getLogger("dcflex.adapters.ray")

KEEP_ENDED_S = 3600.0
_NO_OP = (ActionKind.RESUME, ActionKind.UNCAP, ActionKind.RELEASE_NODES)
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
                                gateway_url=gateway_url, ack_poll_s=ack_poll_s, stop_wait_s=stop_wait_s)
        self.jobs: dict[str, RayJob] = {}   # from the last snapshot, for describe()
        self._done: set[str] = set()
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._handlers: dict[ActionKind, Callable[[Action], Awaitable[None]]] = {
            ActionKind.CHECKPOINT_STOP: self.levers.checkpoint_stop,
            ActionKind.RESTART: self.levers.restart,
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
        listed = await self.client.list_jobs()
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
            held = sid in held_ids and sid not in resubmitted
            if rj.terminal and not held and rj.end_time is not None and rj.end_time < old:
                continue
            if held and rj.terminal:
                waiting.append(rj)
            jobs.append(to_domain(rj, self.resolver.resolve(rj), now, held=held,
                                  checkpointing=sid in self.levers.in_checkpoint))
        await self.levers.keep_packages(waiting)
        return ClusterSnapshot(at=now, jobs=tuple(jobs))

    async def apply(self, action: Action) -> None:
        if action.key in self._done:
            return
        kind = action.kind
        if kind in _WHY_NOT:
            raise refused(action, _WHY_NOT[kind])
        async with self._locks[action.job_id or "\x00nodes"]:
            if action.key in self._done:
                return
            if kind in _NO_OP:
                log.info("%s %s: nothing to undo on Ray (its lever is never applied there)", kind.value, action.job_id)
            else:
                await self._handlers[kind](action)
            self._done.add(action.key)

    def recall_caps(self, caps: Mapping[str, float]) -> None:
        """The Ray adapter never sets power caps: whatever the journal remembers was not set through it."""
        if caps:
            log.warning("the journal lists GPU power caps for %d job(s); the Ray adapter sets none, ignoring them",
                        len(caps))

    def describe(self, action: Action) -> list[str]:
        kind, jid, url = action.kind, action.job_id, self.client.url
        if kind in _WHY_NOT:
            return [f"# refused: {_WHY_NOT[kind]}"]
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
                    f"POST {url('/api/jobs/' + jid + '/stop')}"]
        new_id = resubmission_id(jid, event_of(action.key))
        lines = [f"GET {url('/api/jobs/' + new_id)}  # already resubmitted? then nothing more",
                 f"GET {url('/api/jobs/' + jid)}"]
        if job is None:
            return [*lines, f"POST {url('/api/jobs/')} <{jid}'s entrypoint, runtime_env, metadata and resources, "
                            f"submission_id {new_id}, DCFLEX_RESUME_FROM = its acknowledged checkpoint>"]
        record = self.levers.stopped.get(jid)
        spec = with_gateway_env(JobSpec(job.entrypoint, new_id, job.runtime_env, job.metadata, job.entrypoint_num_cpus,
                                        job.entrypoint_num_gpus, job.entrypoint_memory, job.entrypoint_resources),
                                self.gateway_url, resume_from=record.checkpoint_path if record else None,
                                metadata={KEY_RESUMED_FROM: jid})
        return [*lines, f"POST {url('/api/jobs/')} {json.dumps(spec.to_json(), sort_keys=True)}"]

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
