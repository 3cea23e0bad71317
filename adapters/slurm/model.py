"""Slurm's view of jobs and nodes, before dcflex maps them onto its domain values.

Parsers for each Slurm JSON format produce these; the tier rules and the adapter read them. Job ids
keep Slurm's own notation: ``123`` for a plain job, ``123_4`` for an array task, ``123+0`` for a
component of a heterogeneous job; that string is what ``scontrol``/``scancel`` accept.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class SlurmJob:
    job_id: str
    name: str
    user: str
    account: str
    partition: str
    qos: str
    comment: str
    state: str                     # RUNNING, PENDING, SUSPENDED, COMPLETING, ... (base state; see parse.py)
    state_reason: str
    nodes: tuple[str, ...]         # expanded host names
    gpus: int
    requeue: bool
    submit_time: datetime | None
    start_time: datetime | None
    end_time: datetime | None      # Slurm's expected end (start + time limit) while running
    time_limit_s: float | None     # None: unlimited
    array_job_id: int | None = None
    array_task_id: int | None = None
    het_job_id: int | None = None
    het_job_offset: int | None = None
    state_flags: tuple[str, ...] = ()  # the other job state flags: REQUEUE_HOLD, COMPLETING, CONFIGURING, ...
    held: bool = False                 # a user/admin hold (or requeue-hold) keeps it from starting
    restart_count: int = 0             # times Slurm has requeued it
    slurm_id: int = 0                  # the numeric id (an array task's or het component's own): what srun --jobid takes


@dataclass(frozen=True, slots=True)
class SlurmNode:
    name: str
    state: str                     # IDLE, ALLOCATED, MIXED, DOWN, ... (first state flag)
    flags: tuple[str, ...]         # DRAIN, ... (the other state flags)
    reason: str                    # the drain/down reason, e.g. "dcflex ev-1"
    gpus: int
    partitions: tuple[str, ...]
