"""Each lever against the real Slurm: read the current state, do only what is still needed.

Idempotence comes from the state, not from memory alone: a suspended job is not suspended again, a
running job is not released, a node already drained by dcflex is not drained again, so a retried,
repeated or re-planned action changes nothing (the adapter also remembers the keys it completed).

What is refused (``CommandFailed``) rather than done: stopping a job Slurm will not requeue (dcflex
never cancels a job outright; the planner should not have chosen it), acting on a job Slurm does not
list, pausing or capping a job that is not running. Undoing something whose subject is gone (restart
of a finished job, uncap of a job that ended) is a logged no-op: there is nothing left to undo.

Node drains: the reason is ``dcflex <event id>``; only nodes whose current reason starts with
``dcflex`` are ever resumed, and nodes that are down, failed or drained by anyone else are never
touched (draining one would overwrite its reason, and resuming it later would put a broken or
reserved node back into service).
"""

from __future__ import annotations

import asyncio
import logging
import shlex
from collections.abc import Sequence

from adapters.slurm.checkpoint import AckWaiter, Armed, CheckpointRecord
from adapters.slurm.commands import SlurmCommands, event_of
from adapters.slurm.model import SlurmJob, SlurmNode
from adapters.slurm.reader import SlurmReader
from adapters.slurm.runner import CommandRunner, valid_job_id
from adapters.slurm.tiers import GATEWAY_DRAIN_PREFIX, TierResolver, job_state
from gateway.clock import Clock
from gateway.domain import Action, ActionKind, JobState
from gateway.exceptions import CommandFailed
from gateway.ports import Facts

__all__ = ["DEFAULT_GRACE_S", "RESUME_SETTLE_S", "Levers", "drained", "drained_by_gateway"]

log = logging.getLogger("dcflex.adapters.slurm")

DEFAULT_GRACE_S = 60.0
RESUME_SETTLE_S = 2.0
_ADAPTER = "slurm"
_UNUSABLE_STATES = frozenset({"DOWN", "FUTURE", "UNKNOWN", "DRAIN", "DRAINED", "DRAINING", "FAIL", "FAILING",
                              "MAINT", "REBOOT", "POWERED_DOWN", "POWER_DOWN", "POWERING_DOWN"})
_UNUSABLE_FLAGS = frozenset({"DRAIN", "FAIL", "MAINT", "DOWN", "REBOOT_REQUESTED", "REBOOT_ISSUED",
                             "POWER_DOWN", "POWERED_DOWN", "POWERING_DOWN", "NOT_RESPONDING"})


def drained(node: SlurmNode) -> bool:
    return "DRAIN" in node.flags or node.state in ("DRAIN", "DRAINED", "DRAINING")


def drained_by_gateway(node: SlurmNode) -> bool:
    return drained(node) and node.reason.startswith(GATEWAY_DRAIN_PREFIX)


def _refused(action: Action, why: str, command: Sequence[str] = ()) -> CommandFailed:
    return CommandFailed(f"{_ADAPTER}: cannot {action.kind.value} {action.job_id or ','.join(action.nodes)}: {why}",
                         adapter=_ADAPTER, command=command)


class Levers:
    """The eight levers; ``caps``, ``in_checkpoint`` and ``checkpoints`` are what the adapter knows
    beyond Slurm (Slurm does not report GPU power limits or checkpoints in progress)."""

    def __init__(self, runner: CommandRunner, commands: SlurmCommands, reader: SlurmReader,
                 resolver: TierResolver, waiter: AckWaiter, clock: Clock) -> None:
        self.runner = runner
        self.cmd = commands
        self.reader = reader
        self.resolver = resolver
        self.waiter = waiter
        self.clock = clock
        self.caps: dict[str, float] = {}
        self.in_checkpoint: set[str] = set()
        self.checkpoints: list[CheckpointRecord] = []
        self._armed: dict[str, tuple[str, Armed]] = {}

    async def _job(self, action: Action) -> tuple[SlurmJob | None, JobState | None]:
        job = await self.reader.job(valid_job_id(action.job_id))
        return job, (job_state(job) if job is not None else None)

    # ------------------------------------------------------------------ pause / resume

    async def pause(self, a: Action) -> None:
        job, state = await self._job(a)
        if state is JobState.SUSPENDED:
            return
        if state is not JobState.RUNNING:
            raise _refused(a, "Slurm does not list it" if job is None else f"it is {state} (needs running)")
        await self.runner.run(self.cmd.suspend(a.job_id))

    async def resume(self, a: Action) -> None:
        _, state = await self._job(a)
        if state is not JobState.SUSPENDED:
            log.info("resume %s: nothing to do, it is %s", a.job_id, state or "gone from Slurm")
            return
        await self.runner.run(self.cmd.resume(a.job_id), ok_if=("Job is not suspended",))

    # ------------------------------------------------------------ checkpoint / restart

    async def checkpoint_stop(self, a: Action) -> Facts | None:
        job, state = await self._job(a)
        if job is None or state is None:
            raise _refused(a, "Slurm does not list it")
        if state in (JobState.STOPPED, JobState.COMPLETED):
            log.info("checkpoint_stop %s: nothing to do, it is %s", a.job_id, state)
            return None
        if state is JobState.PENDING:
            if not job.held:  # released (or requeued) but not started again: keep it from starting
                await self.runner.run(self.cmd.hold(a.job_id))
            return None
        if not job.requeue:
            raise _refused(a, "Slurm will not requeue it (submitted with --no-requeue, or JobRequeue=0); dcflex never "
                              "cancels a job outright, so the planner should not have chosen it",
                           self.cmd.requeue_hold(a.job_id))
        policy = self.resolver.resolve(job)
        sig = policy.checkpoint_signal
        grace = policy.checkpoint_grace_s if policy.checkpoint_grace_s is not None else DEFAULT_GRACE_S
        self.in_checkpoint.add(a.job_id)
        try:
            record = await self._checkpoint(a, job, state, sig, grace)
            await self.runner.run(self.cmd.requeue_hold(a.job_id))
        finally:
            self.in_checkpoint.discard(a.job_id)
        self._armed.pop(a.job_id, None)
        self.caps.pop(a.job_id, None)
        self.checkpoints.append(record)
        return record.facts()

    async def _checkpoint(self, a: Action, job: SlurmJob, state: JobState, sig: str | None,
                          grace: float) -> CheckpointRecord:
        event = event_of(a.key)
        now = self.clock.now()
        if sig is None:
            note = "no checkpoint signal (comment tag or tier rule): stopped without a checkpoint; work since its last " \
                   "checkpoint is lost"
            log.warning("checkpoint_stop %s: %s", a.job_id, note)
            return CheckpointRecord(a.job_id, event, None, now, False, note=note)
        if self.runner.dry_run:
            await self.runner.run(self.cmd.signal(a.job_id, sig))
            return CheckpointRecord(a.job_id, event, sig, now, False, note="dry-run: not signalled")
        if state is JobState.SUSPENDED:  # a stopped process cannot write a checkpoint
            await self.runner.run(self.cmd.resume(a.job_id), ok_if=("Job is not suspended",))
            # slurmctld says "running" at once, but each node's slurmstepd resumes a moment later and
            # silently drops a signal that arrives before (scancel still exits 0): let it settle.
            await self.clock.sleep(RESUME_SETTLE_S)
        earlier = self._armed.get(a.job_id)
        if earlier is not None and earlier[0] == a.key:
            # A retry of this action (e.g. GuardedScheduler's timeout cut the wait short): the job was
            # signalled already; signalling again would start a second checkpoint. Wait out the rest.
            ready = earlier[1]
        else:
            ready = self.waiter.arm(a.job_id)
            await self.runner.run(self.cmd.signal(a.job_id, sig))
            self._armed[a.job_id] = (a.key, ready)
        got = await self.waiter.wait(ready, grace)
        waited = (self.clock.now() - ready.since).total_seconds()
        if got is None:
            note = (f"no checkpoint acknowledgement within {grace:g} s ({self.waiter.channels(a.job_id)}): stopped "
                    "anyway; work since its last checkpoint is probably lost")
            log.warning("checkpoint_stop %s (job %s): %s", a.key, a.job_id, note)
            return CheckpointRecord(a.job_id, event, sig, ready.since, False, waited_s=waited, note=note)
        log.info("checkpoint_stop %s: checkpoint acknowledged via %s after %.1f s%s", a.job_id, got.via, waited,
                 f" ({got.checkpoint_path})" if got.checkpoint_path else "")
        return CheckpointRecord(a.job_id, event, sig, ready.since, True, got.via, got.checkpoint_path, waited)

    async def restart(self, a: Action) -> None:
        job, state = await self._job(a)
        # Held is what counts: right after the requeue-hold the job is still COMPLETING (held), and a
        # restore that comes that early must still release it, or it would stay held for good.
        if job is None or not job.held or state in (JobState.RUNNING, JobState.SUSPENDED):
            log.info("restart %s: nothing to release, it is %s", a.job_id,
                     "gone from Slurm" if job is None else f"{state}{' (held)' if job.held else ''}")
            return
        await self.runner.run(self.cmd.release(a.job_id))

    # ----------------------------------------------------------------------- power caps

    async def cap(self, a: Action) -> None:
        """CAP to ``a.watts``, or UNCAP back to ``a.watts`` (the limit before the event) or the maximum."""
        undo = a.kind is ActionKind.UNCAP
        target = self.cmd.clamp(a.watts)
        job, state = await self._job(a)
        if state is not JobState.RUNNING:
            if undo and state in (None, JobState.COMPLETED, JobState.STOPPED, JobState.PENDING):
                self.caps.pop(a.job_id, None)
                log.info("uncap %s: nothing to do, it is %s", a.job_id, state or "gone from Slurm")
                return
            raise _refused(a, "Slurm does not list it" if job is None else
                           f"it is {state}: a power limit is set by a job step, which only a running job can start")
        assert job is not None
        if self.caps.get(a.job_id) == target:
            return
        if not job.nodes:
            raise _refused(a, "Slurm lists no nodes for it")
        await asyncio.gather(*(self.runner.run(self.cmd.power_cap(a.job_id, n, target, job.slurm_id)) for n in job.nodes))
        self.caps[a.job_id] = target

    # ---------------------------------------------------------------------------- nodes

    async def hold_nodes(self, a: Action) -> None:
        nodes = await self.reader.read_nodes()
        if unknown := [n for n in a.nodes if n not in nodes]:
            raise _refused(a, f"Slurm does not list node(s) {','.join(unknown)}")
        todo = []
        for name in dict.fromkeys(a.nodes):
            n = nodes[name]
            if drained_by_gateway(n):
                continue
            if n.state in _UNUSABLE_STATES or not _UNUSABLE_FLAGS.isdisjoint(n.flags) or n.reason:
                log.warning("hold_nodes %s: leaving node %s alone: it is %s%s (not dcflex's)", a.key, name,
                            "+".join((n.state, *n.flags)), f", reason {n.reason!r}" if n.reason else "")
                continue
            todo.append(name)
        if todo:
            await self.runner.run(self.cmd.drain(todo, event_of(a.key)))

    async def release_nodes(self, a: Action) -> None:
        nodes = await self.reader.read_nodes()
        todo = [name for name in dict.fromkeys(a.nodes) if name in nodes and drained_by_gateway(nodes[name])]
        for name in a.nodes:
            if name in nodes and name not in todo and drained(nodes[name]):
                log.info("release_nodes %s: leaving node %s drained: reason %r is not dcflex's", a.key, name,
                         nodes[name].reason)
        if todo:
            await self.runner.run(self.cmd.undrain(todo))
        else:
            log.info("release_nodes %s: nothing to release (%s)", a.key, shlex.join(a.nodes))
