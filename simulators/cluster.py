"""The simulated cluster: the shared fake behind ``SchedulerPort`` and ``PowerMeter``.

Unit tests, ``dcflex demo`` and the replay simulator all drive this one fake, so it behaves like a
scheduler an operator would recognise (jobs on whole nodes, drains, suspend, checkpoint and
requeue) and is exact enough to assert on. It has no background task: every read or command first
advances the state to ``clock.now()``, event by event (completions, checkpoint and restart phases,
arrivals, scheduler passes), so a ``ManualClock`` test and a ``ScaledClock`` demo at 500x follow
the same trajectory.

Power is the planner's own ``PowerModel`` plus seeded noise, so a plan's expected kW and the
measured outcome differ only by what the plan could not know: jobs ending, arrivals, noise.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

from gateway.clock import Clock
from gateway.domain import Action, ActionKind, ClusterSnapshot, Job, JobState, Tier
from gateway.exceptions import AdapterError, CommandFailed
from gateway.ports import Recall
from gateway.power import PowerModel
from simulators._simcore import ADAPTER, Arrivals, SimCore, SimJob, SimJobSpec

__all__ = ["Arrivals", "CommandRecord", "JobLedger", "JobReport", "SimJobSpec", "SimulatedCluster"]

_T = TypeVar("_T")
_LIVE = (JobState.RUNNING, JobState.SUSPENDED, JobState.CHECKPOINTING, JobState.RESTARTING)
_SCALING = (ActionKind.SCALE_DOWN, ActionKind.SCALE_UP)
_NO_SCALE = "the simulated cluster runs no replicated services"


@dataclass(frozen=True, slots=True)
class CommandRecord:
    """A command the cluster carried out. No-ops (a done key, a state already reached) are not
    recorded, so a test sees exactly what a real scheduler would have been sent."""

    at: datetime
    key: str
    kind: ActionKind
    job_id: str
    nodes: tuple[str, ...]
    watts: float | None


@dataclass(frozen=True, slots=True)
class JobReport:
    """How one job fared so far: throughput kept over its whole run and the GPU-hours it lost."""

    job_id: str
    tier: Tier
    gpus: int
    state: JobState
    throughput_kept: float
    lost_gpu_hours: float
    touched: int


@dataclass(frozen=True, slots=True)
class JobLedger:
    """One job's work accounts at an instant (seconds): done, run (started and not completed: working,
    paused, checkpointing or restarting), lost (run but not done, incl. work redone), and still to do as
    the scheduler reports it (``remaining_s``)."""

    job_id: str
    tier: Tier
    gpus: int
    progress_s: float
    elapsed_s: float
    lost_s: float
    remaining_s: float
    completed: bool = False


class SimulatedCluster:
    """A scheduler and a power meter in one, driven lazily by the injected clock.

    ``sched_interval_s`` is the scheduler's cycle: queued and arriving jobs are placed on free,
    undrained nodes only at these passes. ``drained_by_other`` names nodes an operator drained;
    the gateway may never undrain them. ``arrivals`` draws new jobs from the seed; ``trace`` lists
    submissions known in advance, ``(seconds after the start, job)``, each queued at its time.
    """

    name = ADAPTER

    def __init__(
        self,
        clock: Clock,
        model: PowerModel,
        nodes: int,
        gpus_per_node: int,
        jobs: Iterable[SimJobSpec],
        seed: int = 0,
        noise_kw: float = 0.0,
        arrivals: Arrivals | None = None,
        drained_by_other: Iterable[str] = (),
        node_prefix: str = "node-",
        sched_interval_s: float = 30.0,
        trace: Iterable[tuple[float, SimJobSpec]] = (),  # (seconds after the start, job): queued then
    ) -> None:
        if noise_kw < 0:
            raise ValueError("noise_kw must be >= 0")
        self._clock = clock
        self._model = model
        self._t0 = clock.now()
        self._core = SimCore(model, nodes, gpus_per_node, seed=seed, arrivals=arrivals,
                             drained_by_other=drained_by_other, node_prefix=node_prefix, sched_interval_s=sched_interval_s,
                             trace=trace)
        self._noise = random.Random(seed)
        self._noise_kw = noise_kw
        self._commands: list[CommandRecord] = []
        self._done_keys: set[str] = set()
        self._keys_by_job: dict[str, dict[str, bool]] = {}  # job → its done keys (and whether each sheds)
        self._fails: list[tuple[ActionKind, str | None, AdapterError | type[AdapterError]]] = []
        self._hangs: list[tuple[ActionKind, str | None, float]] = []
        for spec in jobs:
            self._core.add(spec)
        self._core.schedule()  # the allocation as the gateway finds it when it starts

    # ------------------------------------------------------------------ ports

    async def snapshot(self) -> ClusterSnapshot:
        self._advance()
        core = self._core
        return ClusterSnapshot(at=self._now(), jobs=core.snapshot_jobs(),
                               nodes=core.node_values(), site_kw=self._measured())

    async def read_kw(self) -> float:
        self._advance()
        return self._measured()

    def prepare(self, actions: Sequence[Action]) -> None:
        """Nothing to start early: the simulated cluster carries out each command when it is applied."""

    def recall(self, memory: Recall) -> None:
        """Nothing to learn: the simulated cluster reports each job's state and power limit itself."""

    def describe(self, action: Action) -> list[str]:
        k, jid = action.kind, action.job_id
        if k in _SCALING:
            return [f"sim: refused: {_NO_SCALE}"]
        if k is ActionKind.CAP:
            return [f"sim: cap job {jid} to {self._clamp(action.watts):.0f} W"]
        if k in (ActionKind.HOLD_NODES, ActionKind.RELEASE_NODES):
            verb = "drain" if k is ActionKind.HOLD_NODES else "undrain"
            mine = [n for n in action.nodes if n not in self._core.other]
            lines = [f"sim: {verb} nodes {','.join(mine)} (dcflex hold)"] if mine else []
            return lines + [f"sim: leave node {n} alone: drained by someone else" for n in action.nodes if n in self._core.other]
        text = {
            ActionKind.UNCAP: "remove the power cap of job {}" + (
                f" (back to its earlier {action.watts:.0f} W)" if action.watts is not None else ""),
            ActionKind.PAUSE: "suspend job {}",
            ActionKind.RESUME: "resume job {}",
            ActionKind.CHECKPOINT_STOP: "checkpoint job {}, then stop and requeue it held",
            ActionKind.RESTART: "release held job {} to restart",
        }[k]
        return ["sim: " + text.format(jid)]

    async def apply(self, action: Action) -> None:
        """Carry out ``action`` once: a done key, or a state already reached, changes nothing.

        A refused or injected failure leaves the key undone, so the engine may retry it.
        """
        if action.key in self._done_keys:
            return
        hang = self._pop(self._hangs, action)
        if hang is not None:
            await self._clock.sleep(hang[2])
            if action.key in self._done_keys:
                return
        fail = self._pop(self._fails, action)
        if fail is not None:
            exc = fail[2]
            if isinstance(exc, AdapterError):
                raise exc
            raise exc(f"sim: injected failure of {action.kind} {action.job_id or ','.join(action.nodes)}",
                      adapter=ADAPTER, command=self.describe(action))
        if action.kind in _SCALING:
            raise self._refuse(action, f"cannot {action.kind.value} {action.job_id}: {_NO_SCALE}")
        self._advance()
        changed, nodes, watts = self._do(action)
        self._done_keys.add(action.key)
        if action.job_id:  # a command undone may be sent again (a re-plan after a give-back): forget its key
            mine = self._keys_by_job.setdefault(action.job_id, {})
            for key, sheds in list(mine.items()):
                if sheds != action.kind.sheds:
                    self._done_keys.discard(key)
                    del mine[key]
            mine[action.key] = action.kind.sheds
        if changed:
            if action.job_id in self._core.jobs:
                self._core.jobs[action.job_id].touched += 1
            self._commands.append(CommandRecord(self._now(), action.key, action.kind, action.job_id, nodes, watts))

    # ----------------------------------------------------------- test helpers

    @property
    def commands(self) -> tuple[CommandRecord, ...]:
        return tuple(self._commands)

    @property
    def node_names(self) -> tuple[str, ...]:
        return tuple(self._core.node_names)

    def fail_next(self, kind: ActionKind, job_id: str | None = None,
                  exc: AdapterError | type[AdapterError] = CommandFailed) -> None:
        """Make the next ``kind`` action (for ``job_id``, if given) raise ``exc`` once, not applied."""
        self._fails.append((kind, job_id, exc))

    def hang_next(self, kind: ActionKind, seconds: float, job_id: str | None = None) -> None:
        """Make the next ``kind`` action wait ``seconds`` of clock time before it is carried out."""
        self._hangs.append((kind, job_id, seconds))

    def submit(self, spec: SimJobSpec) -> None:
        """Queue a new job, as a user's submission would; it starts at the next scheduler pass."""
        self._advance()
        self._core.add(spec)

    def extend(self, job_id: str, extra_s: float) -> None:
        """Give a job ``extra_s`` more seconds of work (a user extending its time limit): it ends later."""
        self._advance()
        self._core.jobs[job_id].work_left += extra_s

    def crash(self, job_id: str) -> None:
        """End a running job at once, as a crash or a failed node would: its GPUs fall idle, unannounced."""
        self._advance()
        j = self._core.jobs[job_id]
        if j.state is not JobState.RUNNING:
            raise ValueError(f"sim: job {job_id} is {j.state}, not running")
        j.work_left = 0.0
        self._core.advance_to(self._core.t)  # completes it now: nodes freed, no cap left

    def job(self, job_id: str) -> Job:
        """The job's value now (KeyError when unknown)."""
        self._advance()
        return self._core.value(self._core.jobs[job_id])

    def modelled_kw(self) -> float:
        """Site power now, from the model, without noise."""
        self._advance()
        return self._core.site_kw()

    def power_at_full(self) -> float:
        """Site power if every job now holding nodes ran uncapped (no noise)."""
        self._advance()
        return self._core.site_kw(full=True)

    def job_throughput_report(self) -> tuple[JobReport, ...]:
        self._advance()
        return tuple(
            JobReport(job_id=j.spec.job_id, tier=j.spec.tier, gpus=j.spec.gpus, state=j.state,
                      throughput_kept=j.progress / j.elapsed if j.elapsed > 0 else 1.0,
                      lost_gpu_hours=j.lost * j.spec.gpus / 3600.0, touched=j.touched)
            for j in self._core.jobs.values()
        )

    def ledger(self, skip: Collection[str] = ()) -> dict[str, JobLedger]:
        """Every job's work accounts now but those in ``skip``: the replay simulator takes the difference of
        two ledgers to get each job's throughput over a window (and skips jobs it already closed for good)."""
        self._advance()
        out = {}
        for jid, j in self._core.jobs.items():
            if jid in skip:
                continue
            done = j.state is JobState.COMPLETED
            remaining = 0.0 if done else self._core.value(j).remaining_s
            out[jid] = JobLedger(jid, j.spec.tier, j.spec.gpus, j.progress, j.elapsed, j.lost, remaining or 0.0, done)
        return out

    # ----------------------------------------------------------------- levers

    def _do(self, a: Action) -> tuple[bool, tuple[str, ...], float | None]:
        core = self._core
        if a.kind in (ActionKind.HOLD_NODES, ActionKind.RELEASE_NODES):
            if unknown := [n for n in a.nodes if n not in core.free]:
                raise self._refuse(a, f"cannot {a.kind}: no node(s) {','.join(unknown)} on this cluster")
            if a.kind is ActionKind.HOLD_NODES:
                todo = tuple(n for n in a.nodes if n not in core.other and n not in core.held)
                core.held.update(todo)
            else:
                todo = tuple(n for n in a.nodes if n in core.held)  # never a node drained by others
                core.release_nodes(todo)
            return bool(todo), todo, None
        j = core.jobs.get(a.job_id)
        if j is None:
            raise self._refuse(a, f"cannot {a.kind} job {a.job_id}: no such job on this cluster")
        on_nodes = tuple(n for n, _ in j.alloc)
        if a.kind is ActionKind.CAP:
            watts = self._clamp(a.watts)
            self._need(a, j, _LIVE)
            changed, j.cap = j.cap != watts, watts
            return changed, on_nodes, watts
        if a.kind is ActionKind.UNCAP:  # back to the limit it had before (watts), or none
            prior = self._clamp(a.watts) if a.watts is not None else None
            if j.cap is None and prior is None:
                return False, on_nodes, None  # a finished or stopped job has no cap left: no-op
            changed, j.cap = j.cap != prior, prior
            return changed, on_nodes, prior
        if a.kind in (ActionKind.PAUSE, ActionKind.RESUME):
            frm, to = (JobState.RUNNING, JobState.SUSPENDED)
            if a.kind is ActionKind.RESUME:
                frm, to = to, frm
            if j.state is to:
                return False, on_nodes, None
            self._need(a, j, (frm,))
            j.state = to
            return True, on_nodes, None
        if a.kind is ActionKind.CHECKPOINT_STOP:
            return self._stop(a, j), on_nodes, None
        return self._restart(a, j), on_nodes, None

    def _stop(self, a: Action, j: SimJob) -> bool:
        if j.state in (JobState.CHECKPOINTING, JobState.STOPPED) or (j.state is JobState.PENDING and j.started):
            changed = j.restart_after_checkpoint or j.state is JobState.PENDING
            j.restart_after_checkpoint = False
            if j.state is JobState.PENDING:  # released but not yet placed: hold it again
                self._core.queue.remove(j)
                j.state = JobState.STOPPED
            return changed
        self._need(a, j, (JobState.RUNNING, JobState.SUSPENDED))
        if not j.spec.requeueable:
            raise self._refuse(a, f"cannot {a.kind} job {j.spec.job_id}: it is not requeueable (state {j.state})")
        if j.spec.checkpointable:
            j.state, j.phase_end = JobState.CHECKPOINTING, self._core.t + j.spec.checkpoint_s
        else:
            j.lose_since_checkpoint()
            self._core.to_stopped(j)
        return True

    def _restart(self, a: Action, j: SimJob) -> bool:
        if j.state is JobState.RESTARTING or (j.state is JobState.PENDING and j.started) or j.restart_after_checkpoint:
            return False
        if j.state is JobState.CHECKPOINTING:
            j.restart_after_checkpoint = True  # the restore came before the stop finished
            return True
        self._need(a, j, (JobState.STOPPED,))
        self._core.requeue(j)
        return True

    def _need(self, a: Action, j: SimJob, states: tuple[JobState, ...]) -> None:
        if j.state not in states:
            allowed = "/".join(str(s) for s in states)
            raise self._refuse(a, f"cannot {a.kind} job {j.spec.job_id}: it is {j.state} (needs {allowed})")

    def _refuse(self, a: Action, why: str) -> CommandFailed:
        return CommandFailed(f"sim: {why}", adapter=ADAPTER, command=self.describe(a))

    def _clamp(self, watts: float | None) -> float:
        w = self._model.max_cap_w if watts is None else watts
        return min(self._model.max_cap_w, max(self._model.min_cap_w, w))

    @staticmethod
    def _pop(pending: list[tuple[ActionKind, str | None, _T]], a: Action) -> tuple[ActionKind, str | None, _T] | None:
        for i, entry in enumerate(pending):
            if entry[0] is a.kind and entry[1] in (None, a.job_id):
                return pending.pop(i)
        return None

    # ------------------------------------------------------------------- time

    def _now(self) -> datetime:
        return self._t0 + timedelta(seconds=self._core.t)

    def _advance(self) -> None:
        self._core.advance_to((self._clock.now() - self._t0).total_seconds())

    def _measured(self) -> float:
        kw = self._core.site_kw()
        if self._noise_kw > 0:
            kw += self._noise.gauss(0.0, self._noise_kw)
        return max(0.0, kw)
