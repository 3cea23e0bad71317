"""Which flex tier each Ray job is in, how it checkpoints, and its ``gateway.domain`` form.

A Ray job says how dcflex may treat it in its submission ``metadata`` (``ray job submit --metadata-json``
or the ``metadata`` of ``POST /api/jobs/``), all values strings as Ray requires:

- ``dcflex.tier``: ``critical``, ``flex-10``, ``flex-25``, ``flex-50`` or ``preemptible``;
- ``dcflex.gpus``: the GPUs the whole job uses (its actors and tasks too). Without it, the entrypoint's
  own ``entrypoint_num_gpus`` (rounded up), which leaves out what the job's workers reserve and which the
  Jobs API does not report: it is known only for jobs that record it in ``dcflex.entrypoint`` (JSON, see
  ``adapters.ray.model.KEY_ENTRYPOINT``; every job the adapter submits does);
- ``dcflex.resumable``: ``true`` when the job can be stopped and resubmitted, resuming from the checkpoint
  it acknowledged (it uses the job-side helper, ``gateway.jobside``). Only resumable jobs are ever stopped;
- ``dcflex.checkpoint_grace_s``: seconds the job needs to write a checkpoint once asked (0-3600); the
  gateway waits that long for its acknowledgement, then stops it anyway;
- ``dcflex.restart_s``: seconds a resubmitted job needs to be back at work (0-3600);
- ``dcflex.workload``: the name of its measured power curve (default: the job's name);
- ``dcflex.time_limit_s``: how long the job runs from its start (seconds, up to a year): its expected end,
  which the gateway announces to the grid ahead when its load is large (``gateway.notices``).

Resolution order for the tier (first answer wins): ``dcflex.tier``; the configured rules
(``TiersConfig.rules``) whose ``label`` (``key=value``, exact, against the metadata) and ``name_pattern``
(fnmatch, against the submission id and the ``job_name``/``name`` metadata) all match — a rule that sets a
Slurm-only field (``qos``, ``partition``, ``account``, ``user``), or neither ``label`` nor ``name_pattern``,
matches no Ray job; then ``TiersConfig.default``. Metadata is written by users, so an invalid value is
ignored with one warning per distinct value, and the job falls through to the rules or the defaults.
"""

from __future__ import annotations

import fnmatch
import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from adapters.ray.model import RayJob
from gateway.config.models import TierRule, TiersConfig
from gateway.domain import Job, JobState, Tier

__all__ = ["KEY_GPUS", "KEY_GRACE", "KEY_RESTART", "KEY_RESUMABLE", "KEY_TIER", "KEY_TIME_LIMIT", "KEY_WORKLOAD", "MAX_SECONDS",
           "RayJobPolicy", "RayTierResolver", "job_name", "job_state", "to_domain"]

log = logging.getLogger("dcflex.adapters.ray")

KEY_TIER, KEY_GPUS, KEY_RESUMABLE = "dcflex.tier", "dcflex.gpus", "dcflex.resumable"
KEY_GRACE, KEY_RESTART, KEY_WORKLOAD = "dcflex.checkpoint_grace_s", "dcflex.restart_s", "dcflex.workload"
KEY_TIME_LIMIT = "dcflex.time_limit_s"
MAX_TIME_LIMIT_S = 366 * 86400.0
MAX_SECONDS = 3600.0
MAX_GPUS = 1_000_000
_TRUE, _FALSE = frozenset({"true", "1", "yes", "on"}), frozenset({"false", "0", "no", "off", ""})
_SLURM_ONLY = ("qos", "partition", "account", "user")


@dataclass(frozen=True, slots=True)
class RayJobPolicy:
    """How the gateway may treat one Ray job; ``rule`` names what decided the tier (for logs)."""

    tier: Tier
    gpus: int
    resumable: bool
    checkpoint_grace_s: float
    restart_s: float | None = None
    workload: str = ""
    rule: str = "default"
    time_limit_s: float | None = None


@dataclass(frozen=True, slots=True)
class _Rule:
    rule: TierRule
    label: tuple[str, str] | None
    name_re: re.Pattern[str] | None
    text: str


def job_name(job: RayJob) -> str:
    """A job's name: its ``job_name`` (or ``name``) metadata, else its submission id."""
    return job.metadata.get("job_name") or job.metadata.get("name") or job.submission_id or job.driver_job_id or ""


class RayTierResolver:
    """Maps each ``RayJob`` to a ``RayJobPolicy`` (see the module docstring)."""

    def __init__(self, config: TiersConfig, *, default_grace_s: float = 120.0) -> None:
        self.default = config.default
        self.default_grace_s = default_grace_s
        self._rules: list[_Rule] = []
        for i, rule in enumerate(config.rules):
            if any(getattr(rule, k) is not None for k in _SLURM_ONLY) or (rule.label is None and rule.name_pattern is None):
                continue
            label: tuple[str, str] | None = None
            if rule.label is not None:
                key, eq, value = rule.label.partition("=")
                if not eq or not key.strip():
                    log.warning("tiers.rules[%d]: label %r is not key=value; the rule is ignored for Ray jobs", i, rule.label)
                    continue
                label = (key.strip(), value.strip())
            name_re = re.compile(fnmatch.translate(rule.name_pattern)) if rule.name_pattern is not None else None
            given = ", ".join(f"{k}={getattr(rule, k)}" for k in ("label", "name_pattern") if getattr(rule, k) is not None)
            self._rules.append(_Rule(rule, label, name_re, f"rules[{i}] ({given}) → {rule.tier.value}"))
        self._warned: set[tuple[str, str]] = set()

    def resolve(self, job: RayJob) -> RayJobPolicy:
        md = job.metadata
        jid = job.submission_id or job.driver_job_id or "?"
        tier, rule = self._tier(jid, md), "metadata"
        if tier is None:
            tier, rule = self._by_rules(job)
        gpus = self._number(jid, md, KEY_GPUS, 0, MAX_GPUS)
        if gpus is None:
            gpus = math.ceil(job.entrypoint_num_gpus) if job.entrypoint_num_gpus else 0
        grace = self._number(jid, md, KEY_GRACE, 0.0, MAX_SECONDS)
        return RayJobPolicy(
            tier=tier, gpus=int(gpus), resumable=self._flag(jid, md, KEY_RESUMABLE),
            checkpoint_grace_s=self.default_grace_s if grace is None else grace,
            restart_s=self._number(jid, md, KEY_RESTART, 0.0, MAX_SECONDS),
            workload=md.get(KEY_WORKLOAD) or job_name(job), rule=rule,
            time_limit_s=self._number(jid, md, KEY_TIME_LIMIT, 0.0, MAX_TIME_LIMIT_S),
        )

    def _by_rules(self, job: RayJob) -> tuple[Tier, str]:
        names = {n for n in (job.submission_id, job.metadata.get("job_name"), job.metadata.get("name")) if n}
        for r in self._rules:
            if r.label is not None and job.metadata.get(r.label[0]) != r.label[1]:
                continue
            if r.name_re is not None and not any(r.name_re.match(n) for n in names):
                continue
            return r.rule.tier, r.text
        return self.default, "default"

    def _warn(self, jid: str, key: str, value: str, why: str) -> None:
        if (key, value) not in self._warned:
            if len(self._warned) < 10_000:
                self._warned.add((key, value))
            log.warning("Ray job %s: ignoring metadata %s=%r: %s", jid, key, value, why)

    def _tier(self, jid: str, md: Mapping[str, str]) -> Tier | None:
        value = md.get(KEY_TIER)
        if value is None:
            return None
        try:
            return Tier(value.strip().lower())
        except ValueError:
            self._warn(jid, KEY_TIER, value, f"unknown tier (allowed: {', '.join(t.value for t in Tier)})")
            return None

    def _flag(self, jid: str, md: Mapping[str, str], key: str) -> bool:
        value = md.get(key)
        if value is None:
            return False
        text = value.strip().lower()
        if text in _TRUE or text in _FALSE:
            return text in _TRUE
        self._warn(jid, key, value, "expected true or false")
        return False

    def _number(self, jid: str, md: Mapping[str, str], key: str, lo: float, hi: float) -> float | None:
        value = md.get(key)
        if value is None:
            return None
        try:
            number = float(value.strip().removesuffix("s"))
        except ValueError:
            self._warn(jid, key, value, "not a number")
            return None
        if not math.isfinite(number) or not lo <= number <= hi:
            self._warn(jid, key, value, f"outside [{lo:g}, {hi:g}]")
            return None
        if key == KEY_GPUS and not number.is_integer():
            self._warn(jid, key, value, "not a whole number of GPUs")
            return None
        return number


# ------------------------------------------------------------------------------ to gateway.domain

_STATES = {"PENDING": JobState.PENDING, "RUNNING": JobState.RUNNING, "SUCCEEDED": JobState.COMPLETED,
           "FAILED": JobState.COMPLETED, "STOPPED": JobState.COMPLETED}
_DEFAULT_RESTART_S: float = Job.__dataclass_fields__["restart_s"].default  # type: ignore[assignment]


def job_state(job: RayJob, *, held: bool = False) -> JobState:
    """Ray's status → the domain's. A job the gateway checkpointed and stopped and has not resubmitted yet
    (``held``) is ``STOPPED`` (waiting for its restart) once it has ended, whether Ray says STOPPED or
    SUCCEEDED (a job may leave by itself once its checkpoint is acknowledged); any other ended job is
    ``COMPLETED``; an unknown status is ``PENDING`` (the planner never acts on pending jobs)."""
    if held and job.terminal:
        return JobState.STOPPED
    return _STATES.get(job.status, JobState.PENDING)


def to_domain(job: RayJob, policy: RayJobPolicy, now: datetime, *, held: bool = False,
              checkpointing: bool = False) -> Job:
    """The planner's view of ``job`` (a submission job; ``now`` timezone-aware). A Ray job cannot be
    suspended in place, and the adapter does not know which GPUs its workers hold: never pausable or
    cappable. Resumable jobs are the only ones that may be checkpointed and stopped."""
    state = job_state(job, held=held)
    if checkpointing and state is JobState.RUNNING:
        state = JobState.CHECKPOINTING
    elapsed = 0.0
    if job.start_time is not None and state is not JobState.PENDING:
        elapsed = max(0.0, ((job.end_time if job.terminal and job.end_time else now) - job.start_time).total_seconds())
    remaining = None
    if policy.time_limit_s is not None and state is JobState.RUNNING:
        remaining = max(0.0, policy.time_limit_s - elapsed)
    return Job(
        job_id=job.submission_id or job.driver_job_id or "?",
        tier=policy.tier,
        gpus=policy.gpus,
        remaining_s=remaining,
        name=job_name(job),
        state=state,
        workload=policy.workload,
        checkpointable=policy.resumable,
        requeueable=policy.resumable,
        checkpoint_s=policy.checkpoint_grace_s,
        restart_s=policy.restart_s if policy.restart_s is not None else _DEFAULT_RESTART_S,
        elapsed_s=elapsed,
        scheduler="ray",
        pausable=False,
        cappable=False,
    )
