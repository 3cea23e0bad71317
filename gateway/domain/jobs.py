"""Jobs, nodes and the cluster snapshot the planner works from."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from gateway.domain._checks import aware, finite


class Tier(StrEnum):
    """Flex tiers: the largest throughput loss a job accepts, averaged over its whole run."""

    CRITICAL = "critical"
    FLEX_10 = "flex-10"
    FLEX_25 = "flex-25"
    FLEX_50 = "flex-50"
    PREEMPTIBLE = "preemptible"

    @property
    def max_loss(self) -> float:
        """Fraction of throughput the job may lose over its run (0 = never touched)."""
        return _MAX_LOSS[self]

    @property
    def may_stop(self) -> bool:
        """Whether the job may be stopped outright (checkpointed first when it can be)."""
        return self is Tier.PREEMPTIBLE


_MAX_LOSS = {
    Tier.CRITICAL: 0.0,
    Tier.FLEX_10: 0.10,
    Tier.FLEX_25: 0.25,
    Tier.FLEX_50: 0.50,
    Tier.PREEMPTIBLE: 1.0,
}


class JobState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    CHECKPOINTING = "checkpointing"
    SUSPENDED = "suspended"
    STOPPED = "stopped"  # requeued/held by the gateway, waiting to be restarted
    RESTARTING = "restarting"
    COMPLETED = "completed"


@dataclass(frozen=True, slots=True)
class Job:
    """A job as the planner needs it; adapters fill it from their scheduler.

    ``lost_s`` is the throughput already lost in this run, in seconds of full-speed work; together
    with ``elapsed_s`` and ``remaining_s`` it says how much of the tier's allowance is left.
    """

    job_id: str
    tier: Tier
    gpus: int
    name: str = ""
    nodes: tuple[str, ...] = ()
    state: JobState = JobState.RUNNING
    workload: str = ""
    power_cap_w: float | None = None
    checkpointable: bool = True
    requeueable: bool = True
    checkpoint_s: float = 60.0
    restart_s: float = 120.0
    since_checkpoint_s: float = 0.0
    elapsed_s: float = 0.0
    remaining_s: float | None = None
    lost_s: float = 0.0
    value_per_mwh: float | None = None
    scheduler: str = ""
    pausable: bool = True  # the scheduler can suspend it in place (Slurm can; a Ray job cannot)
    cappable: bool = True  # its GPUs' power limit can be set (the adapter knows where it runs)
    # a replicated service (a Ray Serve deployment): ``gpus`` are those of its ``replicas`` now; the
    # gateway may take replicas away down to ``min_replicas``; ``replicas_removed`` are those it took
    # away for events still in force (the tier's allowance counts them)
    replicas: int = 0
    replicas_removed: int = 0
    min_replicas: int = 1

    def __post_init__(self) -> None:
        if not self.job_id:
            raise ValueError("job_id must not be empty")
        if self.gpus < 0:
            raise ValueError(f"job {self.job_id}: gpus must be >= 0, got {self.gpus}")
        for name in ("checkpoint_s", "restart_s", "since_checkpoint_s", "elapsed_s", "lost_s"):
            finite(f"job {self.job_id}: {name}", getattr(self, name), lo=0.0)
        if self.remaining_s is not None:
            finite(f"job {self.job_id}: remaining_s", self.remaining_s, lo=0.0)
        if self.power_cap_w is not None:
            finite(f"job {self.job_id}: power_cap_w", self.power_cap_w, lo=1.0)
        if self.replicas < 0 or self.replicas_removed < 0 or self.min_replicas < 0:
            raise ValueError(f"job {self.job_id}: replica counts must be >= 0")

    @property
    def flexible(self) -> bool:
        return self.tier is not Tier.CRITICAL


@dataclass(frozen=True, slots=True)
class Node:
    """A compute node; ``drained_by_other`` marks a drain the gateway must never undo."""

    name: str
    gpus: int
    state: str = "idle"
    drained_by_gateway: bool = False
    drained_by_other: bool = False


@dataclass(frozen=True, slots=True)
class ClusterSnapshot:
    """What the scheduler reports at one instant, plus the measured site power when known."""

    at: datetime
    jobs: tuple[Job, ...]
    nodes: tuple[Node, ...] = ()
    site_kw: float | None = None

    def __post_init__(self) -> None:
        aware("snapshot.at", self.at)
        if self.site_kw is not None:
            finite("snapshot.site_kw", self.site_kw, lo=0.0)

    def job(self, job_id: str) -> Job | None:
        for j in self.jobs:
            if j.job_id == job_id:
                return j
        return None

    @property
    def total_gpus(self) -> int:
        """The nodes' GPUs; without nodes (Ray reports none), those of the jobs that still hold theirs:
        a finished job a scheduler still lists holds none, and counting it would invent idle draw."""
        if self.nodes:
            return sum(n.gpus for n in self.nodes)
        return sum(j.gpus for j in self.jobs if j.state is not JobState.COMPLETED)
