"""The Ray levers: checkpoint-then-stop a resumable job, and resubmit it after the event.

A Ray job cannot be reached in place (no suspend, no signal through the Jobs API), so a checkpoint is
asked for through the gateway: a directive in ``JobDirectives`` that the job's helper (``gateway.jobside``)
polls over ``GET /v1/jobs/{id}/directive``, answered by ``POST /v1/jobs/{id}/checkpoint-ack`` into
``CheckpointAcks``. The wait is bounded by the job's grace time (``dcflex.checkpoint_grace_s``); without an
acknowledgement the stop goes ahead (the event needs the power) and the record says the work since the
job's last checkpoint was probably lost. A job may also leave by itself once it has acknowledged (the
helper tells it it will be stopped): Ray then says SUCCEEDED, and it is resubmitted all the same.

Resubmission (RESTART) keeps the entrypoint, runtime env, metadata and entrypoint resources and adds
``DCFLEX_GATEWAY_URL``, ``DCFLEX_JOB_ID`` (the new submission id), ``DCFLEX_RESUME_FROM`` (the acknowledged
checkpoint; without an acknowledgement an earlier one the job was started with is kept, since it is the
newest checkpoint dcflex knows of) and the metadata ``dcflex.resumed_from`` (the old id). The new
submission id is derived from the old one and the event (``resubmission_id``), and Ray is asked first
whether it exists, so a retried, repeated or re-planned restart never starts a second job.

A ``gcs://`` working_dir (what ``ray job submit --working-dir`` uploads) is deleted by Ray some minutes
after the last job using it ends; while a stopped job waits for its restart the adapter re-pins it
(``GET /api/packages/...``) at every snapshot, and a restart whose package is gone is refused, saying so.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from adapters.ray.client import RayDashboardClient
from adapters.ray.hold import hold_id, hold_spec, release_spec
from adapters.ray.model import KEY_ENTRYPOINT, JobSpec, RayJob, StopRecord
from adapters.ray.tiers import RayTierResolver
from gateway.clock import Clock
from gateway.config.models import RaySchedulerConfig
from gateway.domain import Action, ActionKind
from gateway.exceptions import AdapterError, CommandFailed
from gateway.jobchannel.acks import Ack, CheckpointAcks
from gateway.jobchannel.directives import JobDirectives
from gateway.ports import Facts

__all__ = ["ENV_GATEWAY_URL", "ENV_JOB_ID", "ENV_RESUME_FROM", "KEY_RESUMED_FROM", "RayLevers", "event_of",
           "refused", "resubmission_id", "with_gateway_env"]

log = logging.getLogger("dcflex.adapters.ray")

ENV_GATEWAY_URL, ENV_JOB_ID, ENV_RESUME_FROM = "DCFLEX_GATEWAY_URL", "DCFLEX_JOB_ID", "DCFLEX_RESUME_FROM"
KEY_RESUMED_FROM = "dcflex.resumed_from"
PIN_EVERY_S = 120.0        # well inside Ray's 10-minute temporary reference
STATUS_POLL_S = 2.0        # how often Ray is asked, while waiting for an acknowledgement, whether the job ended
_SUFFIX = re.compile(r"^(?P<base>.+)-dcflex-[0-9a-f]{8}$")
_ADAPTER = "ray"


def event_of(action_key: str) -> str:
    """The event id an action belongs to: the action key's prefix before the first ``/``."""
    return action_key.split("/", 1)[0]


def refused(action: Action, why: str) -> CommandFailed:
    return CommandFailed(f"ray: cannot {action.kind.value} {action.job_id}: {why}", adapter=_ADAPTER)


def resubmission_id(old_id: str, event_id: str) -> str:
    """``<base>-dcflex-<8 hex>``: the same for the same job and event, different for another event; the
    base drops an earlier suffix, so a job resubmitted after many events keeps a short id."""
    m = _SUFFIX.match(old_id)
    base = (m.group("base") if m else old_id)[:100]
    digest = hashlib.sha1(f"{old_id}\n{event_id}".encode()).hexdigest()[:8]
    return f"{base}-dcflex-{digest}"


def with_gateway_env(spec: JobSpec, gateway_url: str | None, *, resume_from: str | None = None,
                     metadata: Mapping[str, str] | None = None) -> JobSpec:
    """``spec`` with the variables the job-side helper reads (its id must be set) and extra metadata."""
    assert spec.submission_id is not None
    env: dict[str, Any] = dict(spec.runtime_env)
    env_vars = {str(k): str(v) for k, v in (env.get("env_vars") or {}).items()}
    if gateway_url:
        env_vars[ENV_GATEWAY_URL] = gateway_url
    env_vars[ENV_JOB_ID] = spec.submission_id
    if resume_from:
        env_vars[ENV_RESUME_FROM] = resume_from
    env["env_vars"] = env_vars
    md = {**spec.metadata, **(metadata or {})}
    entrypoint = spec.entrypoint_json()
    if entrypoint is not None:
        md[KEY_ENTRYPOINT] = entrypoint  # Ray does not report them back: kept for a resubmission
    return JobSpec(spec.entrypoint, spec.submission_id, env, md, spec.entrypoint_num_cpus, spec.entrypoint_num_gpus,
                   spec.entrypoint_memory, dict(spec.entrypoint_resources))


def package_uris(job: RayJob) -> list[str]:
    """The ``gcs://`` packages a job's runtime env needs (working_dir and py_modules)."""
    env = job.runtime_env
    uris = [env.get("working_dir"), *(env.get("py_modules") or ())]
    return [u for u in uris if isinstance(u, str) and u.startswith("gcs://")]


class RayLevers:
    """Checkpoint-then-stop and restart; ``stopped`` are the jobs stopped and not yet resubmitted, by id."""

    def __init__(self, client: RayDashboardClient, resolver: RayTierResolver, clock: Clock, *,
                 directives: JobDirectives | None, acks: CheckpointAcks | None, gateway_url: str | None,
                 ack_poll_s: float = 0.25, stop_wait_s: float = 30.0, hold: RaySchedulerConfig | None = None) -> None:
        self.client = client
        self.resolver = resolver
        self.clock = clock
        self.directives = directives
        self.acks = acks
        self.gateway_url = gateway_url
        self.ack_poll_s = ack_poll_s
        self.stop_wait_s = stop_wait_s
        self.hold = hold if hold is not None and hold.hold_capacity else None
        self.stopped: dict[str, StopRecord] = {}
        self.checkpoints: list[StopRecord] = []
        self.in_checkpoint: set[str] = set()
        self._armed: dict[str, tuple[str, datetime]] = {}   # job id → (action key, asked at)
        self._pinned: dict[str, datetime] = {}

    # ----------------------------------------------------------------------- checkpoint, stop

    async def checkpoint_stop(self, a: Action) -> Facts | None:
        """Ask, wait for the acknowledgement (bounded by the job's grace), stop; the facts of how it went
        (``StopRecord.facts``), or None when there was nothing to stop."""
        event = event_of(a.key)
        job = await self.client.get_job(a.job_id)
        if job is None:
            raise refused(a, "Ray does not list it")
        policy = self.resolver.resolve(job)
        if not policy.resumable:
            raise refused(a, "its metadata does not say dcflex.resumable=true, so it could not be resubmitted after "
                             "the event; dcflex never stops such a job (the planner should not have chosen it)")
        armed = self._armed.get(a.job_id)
        if job.terminal:
            if armed is not None and armed[0] == a.key:  # an earlier attempt of this action asked; it has left
                facts = self._finish(a.job_id, event, armed[1], policy.checkpoint_grace_s, stopped=False)
                return {**facts, **await self._hold(a.job_id, event, policy.gpus)}
            log.info("checkpoint_stop %s: nothing to do, Ray says it is %s", a.job_id, job.status)
            return None
        await self._pin(job)
        if job.status != "RUNNING" or self.directives is None:
            why = ("it had not started: nothing to checkpoint" if job.status != "RUNNING" else
                   "no directive store (the gateway's job API) to ask it to checkpoint: stopped without one")
            await self._stop(a.job_id)
            facts = self._record(StopRecord(a.job_id, event, self.clock.now(), False, note=why))
            return {**facts, **await self._hold(a.job_id, event, policy.gpus)}
        if armed is not None and armed[0] == a.key:
            since = armed[1]  # a retry of this action: asked already; asking again would start a second checkpoint
        else:
            if self.acks is not None:
                self.acks.expect(a.job_id)
            since = self.clock.now()
            self.directives.request_checkpoint(a.job_id, event_id=event, grace_s=policy.checkpoint_grace_s)
            self._armed[a.job_id] = (a.key, since)
        self.in_checkpoint.add(a.job_id)
        try:
            await self._wait_ack(a.job_id, event, since, policy.checkpoint_grace_s)
            await self._stop(a.job_id)
        finally:
            self.in_checkpoint.discard(a.job_id)
        facts = self._finish(a.job_id, event, since, policy.checkpoint_grace_s, stopped=True)
        return {**facts, **await self._hold(a.job_id, event, policy.gpus)}

    async def _hold(self, job_id: str, event: str, gpus: int) -> dict[str, object]:
        """Reserve the GPUs the stopped job freed (``adapters.ray.hold``); a failure is reported in the
        facts and logged, never fails the stop (the job is stopped either way)."""
        if self.hold is None or gpus <= 0:
            return {}
        spec = hold_spec(job_id, event, gpus, self.hold.gpu_resource, self.hold.hold_python)
        assert spec.submission_id is not None
        try:
            if await self.client.get_job(spec.submission_id) is None:
                await self.client.submit_job(spec)
        except AdapterError as exc:
            log.error("checkpoint_stop %s: could not hold its %d GPU(s) (Ray may start other work there): %s",
                      job_id, gpus, exc)
            return {"hold_error": str(exc)}
        log.info("checkpoint_stop %s: holding %d %s for it (placement group %s)", job_id, gpus, self.hold.gpu_resource,
                 spec.submission_id)
        return {"hold": spec.submission_id, "hold_gpus": gpus}

    async def _release(self, job_id: str, event: str) -> None:
        """Remove the placement group holding ``job_id``'s GPUs before the job comes back: wait for the hold
        job (a release that ran first would find nothing, and the group would then form and stay), run
        the release job, wait for it. A release that fails is logged, and the job is resubmitted anyway:
        it then waits for its GPUs rather than past the event for nothing."""
        if self.hold is None:
            return
        sid = hold_id(job_id, event)
        holder = await self._ended(sid)
        if holder is None:
            return  # never held (no GPUs declared, or the hold could not be submitted)
        spec = release_spec(job_id, event, self.hold.hold_python)
        assert spec.submission_id is not None
        if await self.client.get_job(spec.submission_id) is None:
            await self.client.submit_job(spec)
        if self.client.dry_run:
            return
        done = await self._ended(spec.submission_id)
        if done is None or done.status != "SUCCEEDED":
            log.error("restart %s: releasing its held GPUs (placement group %s) did not succeed (%s); resubmitting "
                      "anyway; remove the group by hand if it stays", job_id, sid,
                      f"{done.status}: {done.message}" if done is not None else "the release job is gone")
            return
        log.info("restart %s: released the GPUs held for it (placement group %s)", job_id, sid)

    async def _ended(self, sid: str) -> RayJob | None:
        """The job ``sid`` once Ray reports it ended (bounded by ``stop_wait_s``); None when Ray does not list it."""
        deadline = self.clock.now() + timedelta(seconds=self.stop_wait_s)
        while True:
            job = await self.client.get_job(sid)
            if job is None or job.terminal or self.clock.now() >= deadline:
                return job
            await self.clock.sleep(0.5)

    def ask_ahead(self, a: Action, job: RayJob) -> None:
        """Ask ``job`` to checkpoint for ``a`` now, as ``checkpoint_stop`` would (it then finds the request
        armed and waits only for the rest of the grace); nothing for a job that is not running, not
        resumable, or already asked for this action."""
        armed = self._armed.get(a.job_id)
        if self.directives is None or job.status != "RUNNING" or (armed is not None and armed[0] == a.key):
            return
        policy = self.resolver.resolve(job)
        if not policy.resumable:
            return
        if self.acks is not None:
            self.acks.expect(a.job_id)
        self.directives.request_checkpoint(a.job_id, event_id=event_of(a.key), grace_s=policy.checkpoint_grace_s)
        self._armed[a.job_id] = (a.key, self.clock.now())

    def _ack(self, job_id: str, event: str) -> Ack | None:
        ack = self.acks.get(job_id) if self.acks is not None else None
        return ack if ack is not None and ack.event_id in ("", event) else None

    async def _wait_ack(self, job_id: str, event: str, since: datetime, grace_s: float) -> None:
        """Until the job acknowledges, ends, or ``grace_s`` has passed since it was asked."""
        next_status = since + timedelta(seconds=STATUS_POLL_S)
        while self._ack(job_id, event) is None:
            now = self.clock.now()
            left = grace_s - (now - since).total_seconds()
            if left <= 0:
                return
            if now >= next_status:
                job = await self.client.get_job(job_id)
                if job is None or job.terminal:
                    return
                next_status = self.clock.now() + timedelta(seconds=STATUS_POLL_S)
            await self.clock.sleep(min(self.ack_poll_s, left))

    async def _stop(self, job_id: str) -> None:
        """Stop the job and wait (bounded) until Ray reports it ended, so "done" means its load is gone."""
        if not await self.client.stop_job(job_id):
            return
        if self.client.dry_run:
            return
        deadline = self.clock.now() + timedelta(seconds=self.stop_wait_s)
        while self.clock.now() < deadline:
            job = await self.client.get_job(job_id)
            if job is None or job.terminal:
                return
            await self.clock.sleep(0.5)
        log.warning("stop %s: Ray still reports it running %g s after the stop request", job_id, self.stop_wait_s)

    def _finish(self, job_id: str, event: str, since: datetime, grace_s: float, *, stopped: bool) -> Facts:
        now = self.clock.now()
        waited = (now - since).total_seconds()
        ack = self._ack(job_id, event)
        eta = self.directives.eta(job_id) if self.directives is not None else None
        eta_s = eta[1] if eta is not None and eta[0] >= since else None
        if self.directives is not None:
            self.directives.clear(job_id, event_id=event)
        self._armed.pop(job_id, None)
        if ack is not None:
            log.info("checkpoint_stop %s: checkpoint acknowledged after %.1f s%s", job_id, waited,
                     f" ({ack.checkpoint_path})" if ack.checkpoint_path else "")
            return self._record(StopRecord(job_id, event, since, True, ack.checkpoint_path, waited, eta_s))
        how = f"no checkpoint acknowledgement within {grace_s:g} s" if stopped else "it ended before acknowledging"
        note = f"{how}: stopped anyway; work since its last checkpoint is probably lost"
        if eta_s is not None:
            note += f" (it had reported {eta_s:g} s left)"
        log.warning("checkpoint_stop %s: %s", job_id, note)
        return self._record(StopRecord(job_id, event, since, False, "", waited, eta_s, note))

    def _record(self, record: StopRecord) -> Facts:
        self.stopped[record.job_id] = record
        self.checkpoints.append(record)
        return record.facts()

    def recall(self, in_force: Iterable[Action], facts: Mapping[str, Facts]) -> None:
        """After a restart: the jobs the journal says were stopped and not yet restarted, with the checkpoint
        each acknowledged (from the facts journaled with the stop), so their resubmission resumes from it."""
        for a in in_force:
            if a.kind is ActionKind.CHECKPOINT_STOP and a.job_id not in self.stopped:
                got = facts.get(a.key)
                if got is not None:
                    self.stopped[a.job_id] = StopRecord.from_facts(a.job_id, event_of(a.key), a.at, got)

    # ---------------------------------------------------------------------------- restart

    async def restart(self, a: Action) -> None:
        event = event_of(a.key)
        await self._release(a.job_id, event)  # first: whatever happens next, nothing stays held past the event
        new_id = resubmission_id(a.job_id, event)
        if await self.client.get_job(new_id) is not None:
            log.info("restart %s: already resubmitted as %s", a.job_id, new_id)
            self.stopped.pop(a.job_id, None)
            return
        old = await self.client.get_job(a.job_id)
        if old is None:
            raise refused(a, "Ray no longer lists it (was the cluster restarted?), so its entrypoint and runtime env "
                             "are unknown: resubmit it by hand")
        record = self.stopped.get(a.job_id)
        if not old.terminal:
            log.info("restart %s: nothing to do, it is %s", a.job_id, old.status)
            return
        if old.status != "STOPPED" and record is None:
            log.warning("restart %s: not resubmitted: it ended by itself (%s), not by dcflex's stop", a.job_id, old.status)
            return
        for uri in package_uris(old):
            if not await self.client.package_exists(uri):
                raise refused(a, f"its runtime env package {uri} is gone from Ray's GCS (Ray deletes an uploaded "
                                 "working_dir some minutes after the last job using it ends): resubmit it by hand; give "
                                 "resumable jobs a remote working_dir (s3://, https://) to avoid this")
        resume = record.checkpoint_path if record is not None and record.checkpoint_path else None
        base = old.spec()
        spec = with_gateway_env(
            JobSpec(base.entrypoint, new_id, base.runtime_env, base.metadata, base.entrypoint_num_cpus,
                    base.entrypoint_num_gpus, base.entrypoint_memory, base.entrypoint_resources),
            self.gateway_url, resume_from=resume, metadata={KEY_RESUMED_FROM: a.job_id},
        )
        got = await self.client.submit_job(spec)
        log.info("restart %s: resubmitted as %s%s", a.job_id, got, f", resuming from {resume}" if resume else "")
        self.stopped.pop(a.job_id, None)

    # ---------------------------------------------------------------------- package pins

    async def keep_packages(self, jobs: Iterable[RayJob]) -> None:
        """Re-pin the packages of stopped jobs waiting for their restart (called at each snapshot)."""
        for job in jobs:
            await self._pin(job)

    async def _pin(self, job: RayJob) -> None:
        now = self.clock.now()
        for uri in package_uris(job):
            last = self._pinned.get(uri)
            if last is not None and (now - last).total_seconds() < PIN_EVERY_S:
                continue
            if await self.client.package_exists(uri):
                self._pinned[uri] = now
            else:
                log.warning("Ray job %s: its package %s is gone from the GCS; it cannot be resubmitted as it was",
                            job.submission_id, uri)
