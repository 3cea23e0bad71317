"""The simulated cluster's insides: the event-by-event advance of time over jobs on nodes, and what the
cluster reports of them (jobs in ``_simjob.py``, placement and the queue in ``_placement.py``).

Kept apart from ``cluster.py`` (the port: levers, command records, failure injection) so each reads
on its own; nothing here knows about clocks, actions or idempotency keys. Built to carry a year of a
10,000-GPU site in seconds: a step costs what changes in it, not the number of jobs (see ``SimCore``).
"""

from __future__ import annotations

import heapq
import math
import random
from bisect import bisect_left
from collections import deque
from collections.abc import Iterable
from dataclasses import fields
from functools import reduce
from operator import add

from gateway.domain import Job, JobState, Node
from gateway.domain.unchecked import unchecked
from gateway.power import PowerModel
from simulators._placement import OWN_NODES, JobQueue, NodePool, place
from simulators._simjob import EPS, Arrivals, SimJob, SimJobSpec

__all__ = ["ADAPTER", "KEEP_COMPLETED_S", "Arrivals", "SimCore", "SimJob", "SimJobSpec", "place"]

ADAPTER = "simulated"
# A running job ends at a step once less than EPS s of full-speed work is left, i.e. up to EPS / speed
# seconds before its exact end (as when every job was checked at every step): a step looks this far
# ahead for due events, which covers speeds down to 0.1%.
_DUE_SLACK_S = 1e-3
# A snapshot lists a completed job for this long after it ended, as a scheduler keeps finished jobs
# visible for a while (Slurm's MinJobAge); the throughput report keeps every job.
KEEP_COMPLETED_S = 3600.0


# A running job's Job differs from one snapshot to the next only in its accounts, and a snapshot of a big
# site holds hundreds of running jobs. So after the first (built, and validated, by Job's constructor) the
# rest are copies of its values with the four accounts replaced (finite and >= 0 by construction), built by
# the domain's one unchecked constructor (``gateway.domain.unchecked``).
_ACCOUNTS = ("since_checkpoint_s", "elapsed_s", "remaining_s", "lost_s")
_FIELDS = tuple(f.name for f in fields(Job))
_SINCE, _ELAPSED, _REMAINING, _LOST = (_FIELDS.index(name) for name in _ACCOUNTS)
_make_job = unchecked(Job)


def _fixed_of(job: Job) -> tuple[object, ...]:
    return tuple(getattr(job, name) for name in _FIELDS)


def _restamp(fixed: tuple[object, ...], since: float, elapsed: float, remaining: float, lost: float) -> Job:
    values = list(fixed)
    values[_SINCE], values[_ELAPSED], values[_REMAINING], values[_LOST] = since, elapsed, remaining, lost
    job: Job = _make_job(*values)
    return job


class SimCore:
    """Jobs on nodes, advanced through time event by event (times are seconds from the start).

    A step costs what changes in it, not the number of jobs: each job's speed and power are priced
    when its state or cap changes (``touch``), its accounts are brought up to date when read, the
    site's power is summed again only after a draw changed, the next completion or phase end comes
    off a heap, and a scheduler pass tries only the queued jobs that can fit. Trajectories are those
    of checking every job at every step, to rounding (the accounts are summed in other chunks).

    ``trace`` is a job stream submitted at given times (seconds from the start, taken in (time, job id)
    order): each job is queued then and placed at the next scheduler pass, like a Poisson arrival (which
    queues first at the same instant).
    """

    def __init__(self, model: PowerModel, nodes: int, gpus_per_node: int, *, seed: int, arrivals: Arrivals | None,
                 drained_by_other: Iterable[str], node_prefix: str, sched_interval_s: float,
                 trace: Iterable[tuple[float, SimJobSpec]] = ()) -> None:
        if nodes < 1 or gpus_per_node < 1:
            raise ValueError("a simulated cluster needs at least one node and one GPU per node")
        if not sched_interval_s > 0:
            raise ValueError("sched_interval_s must be positive")
        self.model = model
        self.gpn = gpus_per_node
        self.t = 0.0
        self.tick_s = sched_interval_s
        width = max(3, len(str(nodes)))
        self.pool = NodePool([f"{node_prefix}{i:0{width}d}" for i in range(1, nodes + 1)], gpus_per_node, drained_by_other)
        self.node_names, self.free, self.held, self.other = self.pool.names, self.pool.free, self.pool.held, self.pool.other
        if unknown := self.other - set(self.node_names):
            raise ValueError(f"drained_by_other names unknown nodes: {sorted(unknown)}")
        self.jobs: dict[str, SimJob] = {}
        self.queue: JobQueue[SimJob] = JobQueue()
        self._dirty = True  # capacity or queue changed since the last scheduler pass
        self._floor_kw = model.idle_floor_kw(nodes * gpus_per_node, nodes)
        # The draws above idle of the jobs that hold nodes or draw power, in the order the jobs were added:
        # site power sums them in that order, one by one, for the very float the old sum over every job
        # gave (an engine threshold can turn on its last bit). Each sum is kept until a draw changes.
        self._drawing_at: list[int] = []  # those jobs' _order, ascending
        self._drawing_kw: list[float] = []
        self._drawing_full: list[float] = []
        self._kw_now: float | None = None
        self._kw_full: float | None = None
        self._stale: dict[SimJob, None] = {}  # touched since last priced, in the order touched
        self._heap: list[tuple[float, int, int, SimJob]] = []  # (when, order, version, job)
        self._shown: dict[str, SimJob] = {}  # jobs a snapshot lists: all but those completed long ago
        self._ended: deque[tuple[float, str]] = deque()
        self._trace = sorted(trace, key=lambda item: (item[0], item[1].job_id))
        self._trace_at = 0
        self._trace_ids = {spec.job_id for _, spec in self._trace}  # still to come
        if len(self._trace_ids) < len(self._trace):
            raise ValueError("the job trace repeats a job id")
        for at, spec in self._trace:
            if not (math.isfinite(at) and at >= 0):
                raise ValueError(f"job {spec.job_id}: trace time must be finite and >= 0, got {at!r}")
            self._check_size(spec)
        self._arrivals = arrivals
        self._rng = random.Random(seed * 1_000_003 + 17)
        self._arrived = 0
        self._next_arrival = self._draw_arrival(0.0)

    def add(self, spec: SimJobSpec) -> None:
        if spec.job_id in self.jobs or spec.job_id in self._trace_ids:
            raise ValueError(f"duplicate job id {spec.job_id}")
        self._check_size(spec)
        j = SimJob.from_spec(spec)
        j._core, j._at, j._order = self, self.t, len(self.jobs)
        j._probe = Job(job_id=spec.job_id, tier=spec.tier, gpus=spec.gpus, workload=spec.workload)
        j._full_one = self.model.job_kw(j._probe)
        self.jobs[spec.job_id] = self._shown[spec.job_id] = j
        self.queue.append(j, spec.gpus)  # pending and never started: no speed, no power, no event to price
        self._dirty = True

    def _check_size(self, spec: SimJobSpec) -> None:
        if spec.gpus > len(self.node_names) * self.gpn:
            raise ValueError(f"job {spec.job_id} needs {spec.gpus} GPUs, more than the cluster has")

    def touch(self, j: SimJob) -> None:
        """``j`` is about to change: account its time so far at the old speed, and re-price it before time moves."""
        if j not in self._stale:
            j._sync()
            self._stale[j] = None

    def throughput(self, j: SimJob) -> float:
        self._price_stale()
        return j._speed

    # ------------------------------------------------------------------ time

    def advance_to(self, target: float) -> None:
        """Move to ``target``, stopping at every completion, phase end, arrival, submission and scheduler pass."""
        while True:
            self._price_stale()
            tick = math.inf
            if self.queue and self._dirty:
                tick = (math.floor(self.t / self.tick_s + 1e-9) + 1) * self.tick_s
            nxt = min(target, self._next_arrival, tick, self._next_job_event())
            if self._trace_at < len(self._trace):
                nxt = min(nxt, self._trace[self._trace_at][0])
            if nxt > self.t:
                self.t = nxt  # the jobs account the time when next read or changed
            self._events(scheduler_pass=nxt == tick)
            if self.t >= target:
                return

    def _next_job_event(self) -> float:
        heap = self._heap
        while heap and heap[0][2] != heap[0][3]._ver:
            heapq.heappop(heap)  # from an earlier pricing
        return heap[0][0] if heap else math.inf

    def _events(self, scheduler_pass: bool) -> None:
        for j in self._due():
            if j.state is JobState.RUNNING and j.work_left <= EPS:
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
            else:
                self.touch(j)  # not quite due (rounding): priced again, its event is looked for later
        while self._arrivals is not None and self._next_arrival <= self.t:
            self._arrived += 1
            self.add(self._arrivals.make(self._rng, f"a-{self._arrived:04d}"))
            self._next_arrival = self._draw_arrival(self._next_arrival)
        while self._trace_at < len(self._trace) and self._trace[self._trace_at][0] <= self.t:
            spec = self._trace[self._trace_at][1]
            self._trace_at += 1
            self._trace_ids.discard(spec.job_id)
            self.add(spec)
        if scheduler_pass:
            self.schedule()

    def _due(self) -> list[SimJob]:
        """The jobs whose own event may be due now, in the order they were added (the order the old
        full scan handled them in, which decides who gets freed nodes first)."""
        heap, limit, out = self._heap, self.t + _DUE_SLACK_S, []
        while heap and heap[0][0] <= limit:
            _, _, ver, j = heapq.heappop(heap)
            if ver == j._ver:
                out.append(j)
        out.sort(key=lambda j: j._order)
        return out

    def _price_stale(self) -> None:
        """Re-price every job touched since the last time: speed, power above idle, and its next event."""
        if not self._stale:
            return
        stale = list(self._stale)
        self._stale.clear()
        model = self.model
        for j in stale:
            probe = j._probe
            assert probe is not None
            st, cap = j._state, j._cap
            j._speed = model.throughput(probe, cap_w=cap, state=st)
            kw = model.job_kw(probe, cap_w=cap, state=st)
            full = j._full_one if j.alloc else 0.0
            if kw != j._kw or full != j._full or j._in_sum != bool(j.alloc or kw):
                self._set_draw(j, kw, full)
            j._value = j._fixed = j._seen = None
            j._ver += 1
            when = j._next_event()
            if when < math.inf:
                heapq.heappush(self._heap, (when, j._order, j._ver, j))
            if st is JobState.COMPLETED and j._ended_at is None:
                j._ended_at = self.t
                self._ended.append((self.t, j.spec.job_id))

    def _set_draw(self, j: SimJob, kw: float, full: float) -> None:
        on = bool(j.alloc or kw)
        i = bisect_left(self._drawing_at, j._order)
        if j._in_sum and on:
            self._drawing_kw[i], self._drawing_full[i] = kw, full
        elif on:
            self._drawing_at.insert(i, j._order)
            self._drawing_kw.insert(i, kw)
            self._drawing_full.insert(i, full)
        elif j._in_sum:
            del self._drawing_at[i], self._drawing_kw[i], self._drawing_full[i]
        j._in_sum, j._kw, j._full = on, kw, full
        self._kw_now = self._kw_full = None

    def _draw_arrival(self, after: float) -> float:
        if self._arrivals is None:
            return math.inf
        return after + self._rng.expovariate(self._arrivals.rate_per_hour / 3600.0)

    # ------------------------------------------------------------- placement

    def _free_nodes(self, j: SimJob) -> None:
        self.touch(j)
        for n, g in j.alloc:
            self.pool.set_free(n, self.free[n] + g)
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
        self.queue.append(j, OWN_NODES if j.prev_nodes else j.spec.gpus)
        self.schedule(only=j)

    def schedule(self, only: SimJob | None = None) -> None:
        """A scheduler pass: place queued jobs, in order, on free nodes that nobody drained.

        Passes run every ``sched_interval_s`` (like Slurm's scheduling cycle), so nodes freed by a
        stop stay free until the next pass, long enough for the gateway's hold to land. A restarting
        job may also go back to its own previous nodes while the gateway holds them: the hold exists
        to keep them for it.

        Jobs are tried in queue order, but a pass goes straight from one job that fits to the next:
        capacity only shrinks during a pass, so a size that cannot fit now cannot fit later in it.
        """
        if only is not None:
            self._try_place(only)
            return
        ticket = -1
        while True:
            j = self.queue.next_after(ticket, self.pool.fits_now())
            if j is None:
                break
            ticket = j.qseq
            self._try_place(j)
        self._dirty = False

    def _try_place(self, j: SimJob) -> None:
        alloc = self.pool.place(j.spec.gpus, j.prev_nodes)
        if alloc is None:
            return
        self.queue.remove(j)
        j.alloc = alloc
        if j.started:
            j.state, j.phase_end = JobState.RESTARTING, self.t + j.spec.restart_s
        else:
            j.state, j.started = JobState.RUNNING, True

    # ------------------------------------------------------------------ views

    def value(self, j: SimJob, light: bool = False) -> Job:
        s = j.spec
        if light:
            return Job(job_id=s.job_id, tier=s.tier, gpus=s.gpus, state=j.state, workload=s.workload, power_cap_w=j.cap)
        self._price_stale()
        return j._value or self._value_now(j)

    def _value_now(self, j: SimJob) -> Job:
        """The job's Job now (its pricing is current); the same object for another look at the same instant."""
        t = self.t
        if j._seen_at == t and j._seen is not None:
            return j._seen
        if j._at != t:
            j._accrue(t)
        speed, work_left, since, lost = j._speed, j._work_left, j._since_ck, j._lost
        remaining = work_left / speed if speed > 0 else work_left
        since, remaining, lost = (since if since > 0 else 0.0), (remaining if remaining > 0 else 0.0), (lost if lost > 0 else 0.0)
        if j._fixed is not None and since + j._elapsed + remaining + lost < math.inf:  # (false for a NaN too)
            v = _restamp(j._fixed, since, j._elapsed, remaining, lost)
        else:
            s = j.spec
            v = Job(
                job_id=s.job_id, tier=s.tier, gpus=s.gpus, name=s.name, nodes=tuple(n for n, _ in j.alloc),
                state=j._state, workload=s.workload, power_cap_w=j._cap, checkpointable=s.checkpointable,
                requeueable=s.requeueable, checkpoint_s=s.checkpoint_s, restart_s=s.restart_s,
                since_checkpoint_s=since, elapsed_s=j._elapsed, remaining_s=remaining, lost_s=lost,
                value_per_mwh=s.value_per_mwh, scheduler=ADAPTER,
            )
            j._fixed = _fixed_of(v)
        if not j.started or j._state is JobState.COMPLETED:
            j._value = v  # its accounts stand still until it is touched again
        j._seen, j._seen_at = v, t
        return v

    def snapshot_jobs(self) -> tuple[Job, ...]:
        """Every job a scheduler would list now: all but those completed more than ``KEEP_COMPLETED_S`` ago
        (``jobs`` keeps every job, for the throughput report)."""
        self._price_stale()
        cutoff = self.t - KEEP_COMPLETED_S
        while self._ended and self._ended[0][0] < cutoff:
            gone = self._shown.pop(self._ended.popleft()[1])
            gone._value = gone._fixed = gone._seen = None  # built again if ever asked for (``job()``)
        now = self._value_now
        return tuple([j._value or now(j) for j in self._shown.values()])

    def node_values(self) -> tuple[Node, ...]:
        return self.pool.values()

    def site_kw(self, full: bool = False) -> float:
        """Modelled site power: idle floor of every GPU and node plus each job's draw above idle.

        ``full``: as if every job now holding nodes ran uncapped.
        """
        self._price_stale()
        if full:
            if self._kw_full is None:
                self._kw_full = reduce(add, self._drawing_full, self._floor_kw)  # left to right, like a loop
            return self._kw_full
        if self._kw_now is None:
            self._kw_now = reduce(add, self._drawing_kw, self._floor_kw)
        return self._kw_now
