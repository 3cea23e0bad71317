"""A simulated job: its spec, how its work is accounted through time, and the Poisson stream of new ones.

The accounts are lazy (brought up to the core's time when read) and every change that alters a job's
speed or power goes through a setter that has the core re-price it, so the core never has to look at
the jobs a step leaves alone (see ``SimJob``).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gateway.domain import Job, JobState, Tier

if TYPE_CHECKING:
    from simulators._simcore import SimCore

__all__ = ["EPS", "Arrivals", "SimJob", "SimJobSpec"]

EPS = 1e-6  # a running job with less work than this left (full-speed seconds) is done
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


@dataclass(eq=False, slots=True)
class SimJob:
    """One job's live state. Invariant: ``elapsed == progress + lost`` (seconds).

    ``work_left`` is full-speed seconds still to do; ``since_ck`` the progress since the last
    checkpoint, which a stop without a checkpoint throws away.

    The accounts are kept lazily, so a step of the simulation costs nothing for the jobs it leaves
    alone: they are current as of ``_at`` and brought up to the core's time whenever one is read.
    Setting ``state``, ``cap``, ``phase_end``, ``work_left`` or ``since_ck`` first accounts the time
    so far at the old speed, then has the core re-price the job (speed, power, next event) before
    time moves on, whoever sets them: the core itself, or the cluster carrying out a command.
    """

    spec: SimJobSpec
    _state: JobState = JobState.PENDING
    _cap: float | None = None
    _phase_end: float | None = None
    _work_left: float = 0.0
    _progress: float = 0.0
    _elapsed: float = 0.0
    _lost: float = 0.0
    _since_ck: float = 0.0
    alloc: list[tuple[str, int]] = field(default_factory=list)
    prev_nodes: list[str] = field(default_factory=list)
    started: bool = False
    restart_after_checkpoint: bool = False
    touched: int = 0
    # What the core keeps about the job (all set by SimCore; a job outside a core has _core None).
    qseq: int = -1  # its ticket while queued
    _core: SimCore | None = field(default=None, repr=False)
    _order: int = 0  # position in core.jobs: due events are handled in this order
    _at: float = 0.0  # the core time the accounts are current to
    _speed: float = 0.0  # throughput kept now (0 unless running), as last priced
    _kw: float = 0.0  # draw above idle now (kW)
    _full: float = 0.0  # draw above idle uncapped, when it holds nodes (kW)
    _in_sum: bool = False  # among the jobs the site power is summed over (it holds nodes or draws)
    _ver: int = 0  # the pricing its entry in the event heap belongs to
    _probe: Job | None = field(default=None, repr=False)  # who it is, for the power model's questions
    _full_one: float = 0.0  # _full whenever it holds nodes
    _value: Job | None = field(default=None, repr=False)  # its Job, while that cannot change with time
    _fixed: tuple[object, ...] | None = field(default=None, repr=False)  # its Job's other fields, until touched
    _seen: Job | None = field(default=None, repr=False)  # its Job as last built, at _seen_at
    _seen_at: float = -1.0
    _ended_at: float | None = None

    @classmethod
    def from_spec(cls, spec: SimJobSpec) -> SimJob:
        interval = spec.checkpoint_interval_s
        since = spec.elapsed_s % interval if interval else spec.elapsed_s
        return cls(spec=spec, _progress=spec.elapsed_s, _work_left=spec.work_s, _elapsed=spec.elapsed_s, _since_ck=since)

    # ---- read freely; setting one re-prices the job

    @property
    def state(self) -> JobState:
        return self._state

    @state.setter
    def state(self, value: JobState) -> None:
        self._changing()
        self._state = value

    @property
    def cap(self) -> float | None:
        return self._cap

    @cap.setter
    def cap(self, value: float | None) -> None:
        self._changing()
        self._cap = value

    @property
    def phase_end(self) -> float | None:
        return self._phase_end

    @phase_end.setter
    def phase_end(self, value: float | None) -> None:
        self._changing()
        self._phase_end = value

    @property
    def work_left(self) -> float:
        self._sync()
        return self._work_left

    @work_left.setter
    def work_left(self, value: float) -> None:
        self._changing()
        self._work_left = value

    @property
    def since_ck(self) -> float:
        self._sync()
        return self._since_ck

    @since_ck.setter
    def since_ck(self, value: float) -> None:
        self._changing()
        self._since_ck = value

    @property
    def progress(self) -> float:
        self._sync()
        return self._progress

    @property
    def elapsed(self) -> float:
        self._sync()
        return self._elapsed

    @property
    def lost(self) -> float:
        self._sync()
        return self._lost

    def lose_since_checkpoint(self) -> None:
        """A stop without a checkpoint: the work since the last one must be done again."""
        self._changing()
        self._progress -= self._since_ck
        self._work_left += self._since_ck
        self._lost += self._since_ck
        self._since_ck = 0.0

    # ---- accounting

    def _sync(self) -> None:
        core = self._core
        if core is not None and self._at != core.t:
            self._accrue(core.t)

    def _changing(self) -> None:
        if self._core is not None:
            self._core.touch(self)

    def _accrue(self, t: float) -> None:
        """Account the time up to ``t`` at the speed last priced (state and cap have not changed since)."""
        dt = t - self._at
        self._at = t
        if dt <= 0:
            return
        if self._state is JobState.RUNNING:
            done = min(self._work_left, self._speed * dt)
            self._progress += done
            self._work_left -= done
            self._lost += dt - done
            self._elapsed += dt
            self._since_ck += done
            if self.spec.checkpoint_interval_s:
                self._since_ck %= self.spec.checkpoint_interval_s
        elif self.started and self._state in _STALLED:
            self._elapsed += dt
            self._lost += dt

    def _next_event(self) -> float:
        """When this job next changes state by itself (inf: not before a command); accounts current."""
        if self._state is JobState.RUNNING:
            if self._speed > 0:
                return self._at + self._work_left / self._speed
            if self._work_left <= EPS:
                return self._at
        if self._phase_end is not None:
            return max(self._at, self._phase_end)
        return math.inf
