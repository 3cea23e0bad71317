"""The simulated cluster's insides: job specs, per-job accounting, whole-node placement, and the
event-by-event advance of time.

Kept apart from ``cluster.py`` (the port: levers, command records, failure injection) so each reads
on its own; nothing here knows about clocks, actions or idempotency keys.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from gateway.domain import Job, JobState, Node, Tier
from gateway.power import PowerModel

ADAPTER = "simulated"
_EPS = 1e-6
# States in which a started job makes no progress and every second counts as lost work.
_STALLED = (JobState.SUSPENDED, JobState.CHECKPOINTING, JobState.STOPPED, JobState.RESTARTING, JobState.PENDING)


@dataclass(frozen=True, slots=True)
class SimJobSpec:
    """A job to simulate: who it is, what it runs, and how much work is left at full speed.

    ``elapsed_s`` is how long it already ran (at full speed) before the simulation starts; it
    counts towards the tier's whole-run allowance. ``checkpoint_interval_s`` is the job's own
    periodic checkpointing (None: never), which bounds what a stop without a checkpoint loses.
    """

    job_id: str
    tier: Tier
    gpus: int
    workload: str
    work_s: float
    name: str = ""
    elapsed_s: float = 0.0
    checkpoint_interval_s: float | None = 1800.0
    checkpoint_s: float = 60.0
    restart_s: float = 120.0
    checkpointable: bool = True
    requeueable: bool = True
    value_per_mwh: float | None = None

    def __post_init__(self) -> None:
        if not self.job_id:
            raise ValueError("job_id must not be empty")
        if self.gpus < 1:
            raise ValueError(f"job {self.job_id}: gpus must be >= 1, got {self.gpus}")
        for name in ("work_s", "elapsed_s", "checkpoint_s", "restart_s"):
            v = getattr(self, name)
            if not math.isfinite(v) or v < 0:
                raise ValueError(f"job {self.job_id}: {name} must be finite and >= 0, got {v!r}")
        if self.work_s <= 0:
            raise ValueError(f"job {self.job_id}: work_s must be positive")
        if self.checkpoint_interval_s is not None and not self.checkpoint_interval_s > 0:
            raise ValueError(f"job {self.job_id}: checkpoint_interval_s must be positive or None")


@dataclass(frozen=True, slots=True)
class Arrivals:
    """New jobs arriving as a Poisson process; ``make(rng, job_id)`` builds each one."""

    rate_per_hour: float
    make: Callable[[random.Random, str], SimJobSpec]

    def __post_init__(self) -> None:
        if not (math.isfinite(self.rate_per_hour) and self.rate_per_hour > 0):
            raise ValueError(f"arrival rate must be positive, got {self.rate_per_hour!r}")


@dataclass(slots=True)
class SimJob:
    """One job's live state. Invariant: ``elapsed == progress + lost`` (seconds).

    ``work_left`` is full-speed seconds still to do; ``since_ck`` the progress since the last
    checkpoint, which a stop without a checkpoint throws away.
    """

    spec: SimJobSpec
    state: JobState = JobState.PENDING
    cap: float | None = None
    alloc: list[tuple[str, int]] = field(default_factory=list)
    prev_nodes: list[str] = field(default_factory=list)
    progress: float = 0.0
    work_left: float = 0.0
    elapsed: float = 0.0
    lost: float = 0.0
    since_ck: float = 0.0
    phase_end: float | None = None
    started: bool = False
    restart_after_checkpoint: bool = False
    touched: int = 0

    @classmethod
    def from_spec(cls, spec: SimJobSpec) -> SimJob:
        interval = spec.checkpoint_interval_s
        since = spec.elapsed_s % interval if interval else spec.elapsed_s
        return cls(spec=spec, progress=spec.elapsed_s, work_left=spec.work_s, elapsed=spec.elapsed_s, since_ck=since)

    def next_event(self, now: float, speed: float) -> float:
        """When this job next changes state by itself (inf: not before a command)."""
        if self.state is JobState.RUNNING and speed > 0:
            return now + self.work_left / speed
        if self.phase_end is not None:
            return max(now, self.phase_end)
        return math.inf

    def accrue(self, dt: float, speed: float) -> None:
        """Account ``dt`` seconds at ``speed`` (throughput kept, 0..1)."""
        if self.state is JobState.RUNNING:
            done = min(self.work_left, speed * dt)
            self.progress += done
            self.work_left -= done
            self.lost += dt - done
            self.elapsed += dt
            self.since_ck += done
            if self.spec.checkpoint_interval_s:
                self.since_ck %= self.spec.checkpoint_interval_s
        elif self.started and self.state in _STALLED:
            self.elapsed += dt
            self.lost += dt

    def lose_since_checkpoint(self) -> None:
        """A stop without a checkpoint: the work since the last one must be done again."""
        self.progress -= self.since_ck
        self.work_left += self.since_ck
        self.lost += self.since_ck
        self.since_ck = 0.0


def place(free: dict[str, int], gpn: int, gpus: int, allowed: set[str], prefer: list[str]) -> list[tuple[str, int]] | None:
    """Pick nodes for a job, or None when it does not fit now (``free`` changes only on success).

    A job of a node or more takes whole, entirely free nodes (``prefer`` first, then by name);
    a smaller job shares: it goes on the allowed node with the fewest free GPUs that still fit.
    """
    if gpus >= gpn:
        whole = sorted((n for n in free if n in allowed and free[n] == gpn), key=lambda n: (n not in prefer, n))
        need = math.ceil(gpus / gpn)
        if len(whole) < need:
            return None
        for n in whole[:need]:
            free[n] = 0
        return [(n, gpn) for n in whole[:need]]
    fits = [n for n in free if n in allowed and free[n] >= gpus]
    if not fits:
        return None
    best = min(fits, key=lambda n: (n not in prefer, free[n], n))
    free[best] -= gpus
    return [(best, gpus)]


class SimCore:
    """Jobs on nodes, advanced through time event by event (times are seconds from the start)."""

    def __init__(self, model: PowerModel, nodes: int, gpus_per_node: int, *, seed: int, arrivals: Arrivals | None,
                 drained_by_other: Iterable[str], node_prefix: str, sched_interval_s: float) -> None:
        if nodes < 1 or gpus_per_node < 1:
            raise ValueError("a simulated cluster needs at least one node and one GPU per node")
        if not sched_interval_s > 0:
            raise ValueError("sched_interval_s must be positive")
        self.model = model
        self.gpn = gpus_per_node
        self.t = 0.0
        self.tick_s = sched_interval_s
        width = max(3, len(str(nodes)))
        self.node_names = [f"{node_prefix}{i:0{width}d}" for i in range(1, nodes + 1)]
        self.free = {n: gpus_per_node for n in self.node_names}
        self.held: set[str] = set()
        self.other = set(drained_by_other)
        if unknown := self.other - set(self.node_names):
            raise ValueError(f"drained_by_other names unknown nodes: {sorted(unknown)}")
        self.jobs: dict[str, SimJob] = {}
        self.queue: list[SimJob] = []
        self._dirty = True  # capacity or queue changed since the last scheduler pass
        self._arrivals = arrivals
        self._rng = random.Random(seed * 1_000_003 + 17)
        self._arrived = 0
        self._next_arrival = self._draw_arrival(0.0)

    def add(self, spec: SimJobSpec) -> None:
        if spec.job_id in self.jobs:
            raise ValueError(f"duplicate job id {spec.job_id}")
        if spec.gpus > len(self.node_names) * self.gpn:
            raise ValueError(f"job {spec.job_id} needs {spec.gpus} GPUs, more than the cluster has")
        j = SimJob.from_spec(spec)
        self.jobs[spec.job_id] = j
        self.queue.append(j)
        self._dirty = True

    def throughput(self, j: SimJob) -> float:
        return self.model.throughput(self.value(j, light=True)) if j.state is JobState.RUNNING else 0.0

    def advance_to(self, target: float) -> None:
        """Move to ``target``, stopping at every completion, phase end, arrival and scheduler pass."""
        while True:
            speeds = {jid: self.throughput(j) for jid, j in self.jobs.items()}
            tick = math.inf
            if self.queue and self._dirty:
                tick = (math.floor(self.t / self.tick_s + 1e-9) + 1) * self.tick_s
            nxt = min(target, self._next_arrival, tick)
            for jid, j in self.jobs.items():
                nxt = min(nxt, j.next_event(self.t, speeds[jid]))
            if nxt > self.t:
                for jid, j in self.jobs.items():
                    j.accrue(nxt - self.t, speeds[jid])
                self.t = nxt
            self._events(scheduler_pass=nxt == tick)
            if self.t >= target:
                return

    def _events(self, scheduler_pass: bool) -> None:
        for j in self.jobs.values():
            if j.state is JobState.RUNNING and j.work_left <= _EPS:
                j.work_left, j.state = 0.0, JobState.COMPLETED
                self._free_nodes(j)
                j.cap = None
            elif j.phase_end is not None and j.phase_end <= self.t + 1e-9:
                j.phase_end = None
                if j.state is JobState.RESTARTING:
                    j.state = JobState.RUNNING
                    continue
                j.since_ck = 0.0  # the checkpoint is written
                self.to_stopped(j)
                if j.restart_after_checkpoint:
                    j.restart_after_checkpoint = False
                    self.requeue(j)
        while self._arrivals is not None and self._next_arrival <= self.t:
            self._arrived += 1
            self.add(self._arrivals.make(self._rng, f"a-{self._arrived:04d}"))
            self._next_arrival = self._draw_arrival(self._next_arrival)
        if scheduler_pass:
            self.schedule()

    def _draw_arrival(self, after: float) -> float:
        if self._arrivals is None:
            return math.inf
        return after + self._rng.expovariate(self._arrivals.rate_per_hour / 3600.0)

    def _free_nodes(self, j: SimJob) -> None:
        for n, g in j.alloc:
            self.free[n] += g
        j.prev_nodes = [n for n, _ in j.alloc]
        j.alloc = []
        self._dirty = True

    def release_nodes(self, names: Iterable[str]) -> None:
        self.held.difference_update(names)
        self._dirty = True

    def to_stopped(self, j: SimJob) -> None:
        self._free_nodes(j)
        j.cap, j.state = None, JobState.STOPPED

    def requeue(self, j: SimJob) -> None:
        """The gateway releases a stopped job: it is placed now if it fits, else at a later pass."""
        j.state = JobState.PENDING
        self.queue.append(j)
        self.schedule(only=j)

    def schedule(self, only: SimJob | None = None) -> None:
        """A scheduler pass: place queued jobs, in order, on free nodes that nobody drained.

        Passes run every ``sched_interval_s`` (like Slurm's scheduling cycle), so nodes freed by a
        stop stay free until the next pass, long enough for the gateway's hold to land. A restarting
        job may also go back to its own previous nodes while the gateway holds them: the hold exists
        to keep them for it.
        """
        for j in [only] if only is not None else list(self.queue):
            ok = {n for n in self.node_names if n not in self.held and n not in self.other}
            ok.update(n for n in j.prev_nodes if n in self.held)
            alloc = place(self.free, self.gpn, j.spec.gpus, ok, prefer=j.prev_nodes)
            if alloc is None:
                continue
            self.queue.remove(j)
            j.alloc = alloc
            if j.started:
                j.state, j.phase_end = JobState.RESTARTING, self.t + j.spec.restart_s
            else:
                j.state, j.started = JobState.RUNNING, True
        if only is None:
            self._dirty = False

    def value(self, j: SimJob, light: bool = False) -> Job:
        s = j.spec
        if light:
            return Job(job_id=s.job_id, tier=s.tier, gpus=s.gpus, state=j.state, workload=s.workload, power_cap_w=j.cap)
        speed = self.throughput(j)
        return Job(
            job_id=s.job_id, tier=s.tier, gpus=s.gpus, name=s.name, nodes=tuple(n for n, _ in j.alloc),
            state=j.state, workload=s.workload, power_cap_w=j.cap, checkpointable=s.checkpointable,
            requeueable=s.requeueable, checkpoint_s=s.checkpoint_s, restart_s=s.restart_s,
            since_checkpoint_s=max(0.0, j.since_ck), elapsed_s=j.elapsed,
            remaining_s=max(0.0, j.work_left / speed if speed > 0 else j.work_left),
            lost_s=max(0.0, j.lost), value_per_mwh=s.value_per_mwh, scheduler=ADAPTER,
        )

    def node_values(self) -> tuple[Node, ...]:
        out = []
        for n in self.node_names:
            free = self.free[n]
            busy = "idle" if free == self.gpn else "allocated" if free == 0 else "mixed"
            drained = n in self.held or n in self.other
            state = busy if not drained else "drained" if busy == "idle" else "draining"
            out.append(Node(n, self.gpn, state, drained_by_gateway=n in self.held, drained_by_other=n in self.other))
        return tuple(out)

    def site_kw(self, full: bool = False) -> float:
        """Modelled site power: idle floor of every GPU and node plus each job's draw above idle.

        ``full``: as if every job now holding nodes ran uncapped.
        """
        total = self.model.idle_floor_kw(len(self.node_names) * self.gpn, len(self.node_names))
        for j in self.jobs.values():
            if not full:
                total += self.model.job_kw(self.value(j, light=True))
            elif j.alloc:
                s = j.spec
                total += self.model.job_kw(Job(job_id=s.job_id, tier=s.tier, gpus=s.gpus, workload=s.workload))
        return total
