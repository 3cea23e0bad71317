"""``SlurmAdapter``: the Slurm implementation of ``gateway.ports.SchedulerPort``.

``snapshot()`` reads ``squeue --json --all`` and ``sinfo --json`` concurrently and maps them through
the tier rules (``adapters.slurm.tiers``); what Slurm cannot report (GPU power limits the gateway
set, a checkpoint in progress) is laid over from the adapter's own memory. ``apply()`` runs one
lever (``adapters.slurm.levers``) under a per-job lock, so two actions on one job never interleave
their read-then-act, and remembers completed keys. ``describe()`` returns the command lines
``apply()`` would run, from the last state read (lines starting with ``#`` explain a wait or a skip).

Errors: ``AdapterTimeout``/``AdapterUnavailable`` (transient; ``GuardedScheduler`` retries the
action) and ``CommandFailed`` (Slurm refused, or dcflex refused before asking), nothing else.
"""

from __future__ import annotations

import asyncio
import dataclasses
import shlex
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence

from adapters.slurm.checkpoint import AckWaiter, CheckpointRecord
from adapters.slurm.commands import SlurmCommands, event_of
from adapters.slurm.levers import DEFAULT_GRACE_S, Levers, drained, drained_by_gateway
from adapters.slurm.reader import SlurmReader
from adapters.slurm.runner import CommandRunner
from adapters.slurm.tiers import TierResolver, nodes_to_domain, to_domain
from gateway.clock import Clock, SystemClock
from gateway.config.models import DcflexConfig, SchedulerConfig
from gateway.domain import Action, ActionKind, ClusterSnapshot, Job, JobState
from gateway.exceptions import AdapterError, AdapterTimeout, AdapterUnavailable, CommandFailed
from gateway.jobchannel.acks import CheckpointAcks
from gateway.ports import Facts, Recall

__all__ = ["SlurmAdapter"]

_LIVE = (JobState.RUNNING, JobState.SUSPENDED)


class SlurmAdapter:
    """Reads and acts on one Slurm cluster through its client commands (see the module docstring)."""

    name = "slurm"

    def __init__(
        self,
        config: SchedulerConfig,
        resolver: TierResolver,
        *,
        acks: CheckpointAcks | None = None,
        clock: Clock | None = None,
        runner: CommandRunner | None = None,
        min_cap_w: float = 100.0,
        max_cap_w: float = 400.0,
        ack_poll_s: float = 0.25,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.config = config
        self.clock: Clock = clock or SystemClock()
        self.runner = runner or CommandRunner(
            timeout_s=config.command_timeout_s, retries=config.retries, backoff_s=config.slurm.retry_backoff_s,
            dry_run=config.dry_run, env=env,
        )
        self.commands = SlurmCommands(config.slurm, min_cap_w=min_cap_w, max_cap_w=max_cap_w)
        self.resolver = resolver
        self.reader = SlurmReader(self.runner, self.commands)
        self.waiter = AckWaiter(acks, config.slurm.ack_marker_path, self.clock, poll_s=ack_poll_s)
        self.levers = Levers(self.runner, self.commands, self.reader, resolver, self.waiter, self.clock)
        self._done: set[str] = set()
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._handlers: dict[ActionKind, Callable[[Action], Awaitable[Facts | None]]] = {
            ActionKind.CAP: self.levers.cap,
            ActionKind.UNCAP: self.levers.cap,
            ActionKind.PAUSE: self.levers.pause,
            ActionKind.RESUME: self.levers.resume,
            ActionKind.CHECKPOINT_STOP: self.levers.checkpoint_stop,
            ActionKind.RESTART: self.levers.restart,
            ActionKind.HOLD_NODES: self.levers.hold_nodes,
            ActionKind.RELEASE_NODES: self.levers.release_nodes,
        }

    @classmethod
    def from_config(cls, cfg: DcflexConfig, *, acks: CheckpointAcks | None = None, clock: Clock | None = None,
                    env: Mapping[str, str] | None = None) -> SlurmAdapter:
        """The adapter a gateway configured with ``[scheduler] kind = "slurm"`` uses (caps from ``[site]``)."""
        return cls(cfg.scheduler, TierResolver(cfg.tiers), acks=acks, clock=clock,
                   min_cap_w=cfg.site.min_cap_w, max_cap_w=cfg.site.max_cap_w, env=env)

    @property
    def checkpoints(self) -> tuple[CheckpointRecord, ...]:
        """Every checkpoint-then-stop done so far, acknowledged or not (work probably lost)."""
        return tuple(self.levers.checkpoints)

    # --------------------------------------------------------------------------- port

    async def snapshot(self) -> ClusterSnapshot:
        try:
            async with asyncio.TaskGroup() as tg:
                jobs_task = tg.create_task(self.reader.read_jobs())
                nodes_task = tg.create_task(self.reader.read_nodes())
        except BaseExceptionGroup as group:
            raise _first_error(group) from None
        now = self.clock.now()
        jobs: list[Job] = []
        caps = self.levers.caps
        listed = jobs_task.result()
        for gone in [j for j in caps if j not in listed]:
            caps.pop(gone)
        for sj in listed.values():
            job = to_domain(sj, self.resolver.resolve(sj), now)
            if job.state in _LIVE and sj.job_id in caps:
                job = dataclasses.replace(job, power_cap_w=caps[sj.job_id])
            elif sj.job_id in caps and job.state not in _LIVE:
                caps.pop(sj.job_id)  # a requeued or finished job's next run starts uncapped by dcflex
            if job.state is JobState.RUNNING and sj.job_id in self.levers.in_checkpoint:
                job = dataclasses.replace(job, state=JobState.CHECKPOINTING)
            jobs.append(job)
        return ClusterSnapshot(at=now, jobs=tuple(jobs), nodes=nodes_to_domain(nodes_task.result().values()))

    async def apply(self, action: Action) -> Facts | None:
        if action.key in self._done:
            return None
        lock = self._locks[action.job_id if action.kind not in _NODE_KINDS else "\x00nodes"]
        async with lock:
            if action.key in self._done:
                return None
            handler = self._handlers.get(action.kind)
            if handler is None:
                raise CommandFailed(f"slurm: cannot {action.kind.value} {action.job_id}: {_NO_SCALE}", adapter="slurm",
                                    command=(action.kind.value, action.job_id))
            try:
                facts = await handler(action)
            finally:
                if action.job_id:
                    self.reader.touched(action.job_id)
            self._done.add(action.key)
            return facts

    def prepare(self, actions: Sequence[Action]) -> None:
        """Nothing started early: a Slurm job is asked to checkpoint by a command (a signal), sent when its
        own command runs."""

    def recall(self, memory: Recall) -> None:
        """Slurm does not report GPU power limits: after a restart, the ones the journal says dcflex set
        (clamped as ``apply`` would have) become the adapter's memory again; the next snapshot drops
        those of jobs that are no longer running."""
        for job_id, watts in memory.caps.items():
            self.levers.caps.setdefault(job_id, self.commands.clamp(watts))

    def describe(self, action: Action) -> list[str]:
        try:
            return self._describe(action)
        except CommandFailed as exc:
            return [f"# refused: {exc}"]

    # ----------------------------------------------------------------------- describe

    def _describe(self, a: Action) -> list[str]:
        c, jid, k = self.commands, a.job_id, a.kind
        if k not in self._handlers:
            return [f"# refused: {_NO_SCALE}"]
        simple = {ActionKind.PAUSE: c.suspend, ActionKind.RESUME: c.resume, ActionKind.RESTART: c.release}
        if k in simple:
            return [shlex.join(simple[k](jid))]
        if k is ActionKind.CHECKPOINT_STOP:
            return self._describe_stop(jid)
        if k in (ActionKind.CAP, ActionKind.UNCAP):
            job = self.reader.jobs.get(jid)
            if job is None or not job.nodes:
                template = [arg.format(job_id=jid, node="<node>", watts=round(c.clamp(a.watts)))
                            for arg in c.cfg.power_cap_command]
                return [f"# once per node of job {jid} (not seen running yet):", shlex.join(template)]
            return [shlex.join(c.power_cap(jid, n, c.clamp(a.watts), job.slurm_id)) for n in job.nodes]
        known = self.reader.nodes
        if k is ActionKind.HOLD_NODES:
            others = [n for n in a.nodes if n in known and drained(known[n]) and not drained_by_gateway(known[n])]
            mine = [n for n in a.nodes if n not in others]
            lines = [shlex.join(c.drain(mine, event_of(a.key)))] if mine else []
            return lines + [f"# leave node {n} alone: drained by someone else ({known[n].reason!r})" for n in others]
        return [shlex.join(c.undrain(a.nodes)), "# only the nodes whose drain reason starts with 'dcflex' (re-read first)"]

    def _describe_stop(self, jid: str) -> list[str]:
        c = self.commands
        job = self.reader.jobs.get(jid)
        lines: list[str] = []
        if job is None:
            lines.append(f"# job {jid} not seen yet: its checkpoint signal and grace come from its comment tag or tier")
        else:
            policy = self.resolver.resolve(job)
            if policy.checkpoint_signal is None:
                lines.append(f"# job {jid} has no checkpoint signal: stopped without a checkpoint")
            else:
                grace = policy.checkpoint_grace_s if policy.checkpoint_grace_s is not None else DEFAULT_GRACE_S
                lines += [shlex.join(c.signal(jid, policy.checkpoint_signal)),
                          f"# wait up to {grace:g} s for the checkpoint acknowledgement ({self.waiter.channels(jid)})"]
        lines.append(shlex.join(c.requeue_hold(jid)))
        return lines


_NODE_KINDS = (ActionKind.HOLD_NODES, ActionKind.RELEASE_NODES)
_NO_SCALE = ("Slurm jobs are not replicated services; the planner scales only jobs an adapter reports with "
             "replicas (Ray Serve deployments)")


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error to raise when a concurrent read failed: the port raises ``AdapterError``s, never a group;
    "unreachable" or "timed out" wins over a refusal, since it is the one a retry may cure."""
    leaves: list[BaseException] = []

    def walk(g: BaseExceptionGroup[BaseException]) -> None:
        for e in g.exceptions:
            if isinstance(e, BaseExceptionGroup):
                walk(e)
            else:
                leaves.append(e)

    walk(group)
    for kinds in ((AdapterUnavailable, AdapterTimeout), (AdapterError,)):
        for e in leaves:
            if isinstance(e, kinds):
                return e
    return leaves[0] if leaves else group
