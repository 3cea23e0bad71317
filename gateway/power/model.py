"""The site power model: what a job draws in each state, and what the whole site draws.

The planner uses it to estimate what each lever sheds; the simulated cluster uses the same model as
its ground truth (plus noise), so a plan and its outcome are comparable. Defaults are calibrated to
the Phoenix data: per-GPU draw at full power 345–388 W by workload, throughput along the DVFS curve.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.domain import ClusterSnapshot, Job, JobState
from gateway.power.curves import CurveLibrary, default_curves


@dataclass(frozen=True, slots=True)
class PowerModel:
    """Per-GPU draw by state, per-node base draw, and a site overhead factor (cooling, losses).

    ``gpu_idle_w`` is what an allocated but paused (or idle) GPU draws; ``node_base_w`` is each
    node's non-GPU draw (CPUs, memory, fans), paid whether it works or not; ``overhead`` multiplies
    IT power into site power (1.0 when the meter sees only the IT load).
    """

    curves: CurveLibrary = field(default_factory=default_curves)
    gpu_idle_w: float = 60.0
    node_base_w: float = 0.0
    overhead: float = 1.0
    min_cap_w: float = 100.0
    max_cap_w: float = 400.0

    def gpu_w(self, job: Job, cap_w: float | None = None, state: JobState | None = None) -> float:
        """Draw per GPU of ``job`` in ``state`` (default: its own) under ``cap_w`` (default: its own)."""
        st = state if state is not None else job.state
        if st in (JobState.RUNNING, JobState.CHECKPOINTING, JobState.RESTARTING):
            cap = cap_w if cap_w is not None else job.power_cap_w
            return self.curves.get(job.workload).power_at(cap)
        if st is JobState.SUSPENDED:
            return self.gpu_idle_w
        return 0.0  # pending, stopped, completed: the GPUs are free (their idle draw counts per node)

    def job_kw(self, job: Job, cap_w: float | None = None, state: JobState | None = None) -> float:
        """The job's site-level draw above idle, in kW."""
        st = state if state is not None else job.state
        if st in (JobState.PENDING, JobState.STOPPED, JobState.COMPLETED):
            return 0.0
        above_idle = self.gpu_w(job, cap_w, st) - self.gpu_idle_w
        return max(0.0, above_idle) * job.gpus * self.overhead / 1000.0

    def idle_floor_kw(self, total_gpus: int, nodes: int) -> float:
        """The site's draw with every GPU idle: the floor no plan can go below."""
        return (total_gpus * self.gpu_idle_w + nodes * self.node_base_w) * self.overhead / 1000.0

    def site_kw(self, snapshot: ClusterSnapshot) -> float:
        """Modelled site power for a snapshot (used when no meter is configured)."""
        nodes = len(snapshot.nodes)
        floor = self.idle_floor_kw(snapshot.total_gpus, nodes)
        return floor + sum(self.job_kw(j) for j in snapshot.jobs)

    def throughput(self, job: Job, cap_w: float | None = None, state: JobState | None = None) -> float:
        """Throughput kept (0..1) by the job in ``state`` under ``cap_w``."""
        st = state if state is not None else job.state
        if st is not JobState.RUNNING:
            return 0.0
        cap = cap_w if cap_w is not None else job.power_cap_w
        return self.curves.get(job.workload).throughput_at(cap)
