"""Which flex tier each Slurm job is in, how to checkpoint it, and its ``gateway.domain`` form.

Resolution order (first answer wins):

1. tags in the job's comment, written by the job's owner at submit time:
   ``dcflex:tier=flex-25``, ``dcflex:checkpoint=USR1:120`` (signal name, grace seconds) and
   ``dcflex:restart=90`` (seconds the job needs, once Slurm starts it again, to be back at work: load
   its checkpoint, rebuild its state), combinable and separated by spaces or commas, amid any other
   comment text;
2. the configured rules (``TiersConfig.rules``) in order: the first rule whose every given field
   matches (``qos``, ``partition``, ``account``, ``user`` exactly; ``name_pattern`` as an fnmatch
   pattern, case-sensitive). ``label`` is for Ray and is ignored here; a rule with no Slurm field set
   matches nothing;
3. ``TiersConfig.default`` (critical unless configured: never touched).

A tag is written by a user, not an operator, so it is checked and never trusted blindly: an unknown
tier, a signal outside ``ALLOWED_SIGNALS`` (no KILL/STOP, which cannot be caught) or a grace or restart
time outside [0, 3600] s is ignored with one warning per distinct comment, and the job falls through to
the rules. The checkpoint and restart tags only say how the job checkpoints and restarts; its tier may
still come from a rule. Without a restart tag the planner assumes ``Job``'s default restart time; the
planner weighs checkpoint grace plus restart time against the event to choose a stop over a pause.
"""

from __future__ import annotations

import fnmatch
import logging
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

from adapters.slurm.model import SlurmJob, SlurmNode
from gateway.config.models import TierRule, TiersConfig
from gateway.domain import Job, JobState, Node, Tier

__all__ = [
    "ALLOWED_SIGNALS", "MAX_GRACE_S", "CommentTags", "JobPolicy", "TierResolver",
    "nodes_to_domain", "parse_comment_tags", "to_domain",
]

log = logging.getLogger("dcflex.adapters.slurm")

ALLOWED_SIGNALS = frozenset({"USR1", "USR2", "TERM", "INT", "HUP", "CONT", "URG", "ALRM", "WINCH"})
MAX_GRACE_S = 3600.0
TAG_PREFIX = "dcflex:"
GATEWAY_DRAIN_PREFIX = "dcflex"
_TOKENS = re.compile(r"[^\s,]+")
_CACHE_SIZE = 16_384


@dataclass(frozen=True, slots=True)
class JobPolicy:
    """How the gateway may treat one job; ``rule`` names what decided the tier (for logs)."""

    tier: Tier
    checkpoint_signal: str | None = None
    checkpoint_grace_s: float | None = None
    rule: str = "default"
    restart_s: float | None = None


@dataclass(frozen=True, slots=True)
class CommentTags:
    """The valid dcflex tags of a comment, and a message for each tag that was ignored."""

    tier: Tier | None = None
    checkpoint_signal: str | None = None
    checkpoint_grace_s: float | None = None
    problems: tuple[str, ...] = ()
    restart_s: float | None = None


@lru_cache(maxsize=4096)
def parse_comment_tags(comment: str) -> CommentTags:
    """Read ``dcflex:`` tags from a job comment; the first valid tag of each kind wins."""
    if TAG_PREFIX not in comment:
        return _NO_TAGS
    tier: Tier | None = None
    signal: str | None = None
    grace: float | None = None
    restart: float | None = None
    problems: list[str] = []
    for token in _TOKENS.findall(comment):
        if not token.startswith(TAG_PREFIX):
            continue
        key, eq, value = token[len(TAG_PREFIX):].partition("=")
        if not eq or not value:
            problems.append(f"{token!r}: expected dcflex:<key>=<value>")
        elif key == "tier":
            parsed = _tier(value)
            if parsed is None:
                problems.append(f"{token!r}: unknown tier (allowed: {', '.join(t.value for t in Tier)})")
            elif tier is None:
                tier = parsed
        elif key == "checkpoint":
            ck = _checkpoint(value)
            if isinstance(ck, str):
                problems.append(f"{token!r}: {ck}")
            elif signal is None:
                signal, grace = ck
        elif key == "restart":
            secs = _seconds(value)
            if isinstance(secs, str):
                problems.append(f"{token!r}: {secs}")
            elif restart is None:
                restart = secs
        else:
            problems.append(f"{token!r}: unknown tag (known: tier, checkpoint, restart)")
    return CommentTags(tier, signal, grace, tuple(problems), restart)


_NO_TAGS = CommentTags()


def _tier(value: str) -> Tier | None:
    try:
        return Tier(value.strip().lower())
    except ValueError:
        return None


def _checkpoint(value: str) -> tuple[str, float] | str:
    """``USR1:120`` → ``("USR1", 120.0)``; a message when invalid."""
    name, colon, grace_text = value.partition(":")
    sig = name.strip().upper().removeprefix("SIG")
    if sig not in ALLOWED_SIGNALS:
        return f"signal {name!r} not allowed (allowed: {', '.join(sorted(ALLOWED_SIGNALS))})"
    if not colon:
        return "expected SIGNAL:GRACE_SECONDS"
    grace = _seconds(grace_text, "grace")
    return grace if isinstance(grace, str) else (sig, grace)


def _seconds(text: str, what: str = "restart time") -> float | str:
    """``90`` or ``90s`` → ``90.0``; a message when not a number of seconds in [0, MAX_GRACE_S]."""
    try:
        secs = float(text.strip().removesuffix("s"))
    except ValueError:
        return f"{what} {text!r} is not a number of seconds"
    if not math.isfinite(secs) or not 0.0 <= secs <= MAX_GRACE_S:
        return f"{what} {text!r} outside [0, {MAX_GRACE_S:g}] seconds"
    return secs


@dataclass(frozen=True, slots=True)
class _Rule:
    index: int
    rule: TierRule
    name_re: re.Pattern[str] | None
    label: str


class TierResolver:
    """Maps each ``SlurmJob`` to a ``JobPolicy``: comment tags, then rules in order, then the default."""

    def __init__(self, config: TiersConfig) -> None:
        self.default = config.default
        self._rules: list[_Rule] = []
        for i, rule in enumerate(config.rules):
            fields = {k: getattr(rule, k) for k in ("qos", "partition", "account", "user", "name_pattern")}
            given = {k: v for k, v in fields.items() if v is not None}
            if not given:
                continue  # only a Ray label (or nothing): matches no Slurm job
            pattern = re.compile(fnmatch.translate(rule.name_pattern)) if rule.name_pattern is not None else None
            label = f"rules[{i}] (" + ", ".join(f"{k}={v}" for k, v in given.items()) + f") → {rule.tier.value}"
            self._rules.append(_Rule(i, rule, pattern, label))
        self._warned: set[str] = set()
        self._cache: dict[tuple[str, str, str, str, str, str], JobPolicy] = {}

    def resolve(self, job: SlurmJob) -> JobPolicy:
        # Array tasks and job series share every field a rule reads: decide once per distinct set.
        key = (job.comment, job.qos, job.partition, job.account, job.user, job.name)
        policy = self._cache.get(key)
        if policy is None:
            policy = self._resolve(job)
            if len(self._cache) >= _CACHE_SIZE:
                self._cache.clear()
            self._cache[key] = policy
        return policy

    def _resolve(self, job: SlurmJob) -> JobPolicy:
        tags = parse_comment_tags(job.comment) if job.comment else _NO_TAGS
        if tags.problems and job.comment not in self._warned:
            if len(self._warned) < 10_000:
                self._warned.add(job.comment)
            log.warning("job %s: ignoring invalid dcflex tag(s) in its comment: %s", job.job_id, "; ".join(tags.problems))
        if tags.tier is not None:
            return JobPolicy(tags.tier, tags.checkpoint_signal, tags.checkpoint_grace_s, "comment tag", tags.restart_s)
        for r in self._rules:
            if self._matches(r, job):
                return JobPolicy(r.rule.tier, tags.checkpoint_signal, tags.checkpoint_grace_s, r.label, tags.restart_s)
        return JobPolicy(self.default, tags.checkpoint_signal, tags.checkpoint_grace_s, "default", tags.restart_s)

    @staticmethod
    def _matches(r: _Rule, job: SlurmJob) -> bool:
        rule = r.rule
        return ((rule.qos is None or rule.qos == job.qos)
                and (rule.partition is None or rule.partition == job.partition)
                and (rule.account is None or rule.account == job.account)
                and (rule.user is None or rule.user == job.user)
                and (r.name_re is None or r.name_re.match(job.name) is not None))


# ------------------------------------------------------------------------------ to gateway.domain

_STATES = {
    "RUNNING": JobState.RUNNING, "SUSPENDED": JobState.SUSPENDED, "PENDING": JobState.PENDING,
    "COMPLETING": JobState.COMPLETED, "COMPLETED": JobState.COMPLETED, "CANCELLED": JobState.COMPLETED,
    "FAILED": JobState.COMPLETED, "TIMEOUT": JobState.COMPLETED, "NODE_FAIL": JobState.COMPLETED,
    "PREEMPTED": JobState.COMPLETED, "BOOT_FAIL": JobState.COMPLETED, "DEADLINE": JobState.COMPLETED,
    "OUT_OF_MEMORY": JobState.COMPLETED,
}
_REQUEUE_FLAGS = frozenset({"REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "SPECIAL_EXIT"})
_PENDING, _RUNNING, _COMPLETED = JobState.PENDING, JobState.RUNNING, JobState.COMPLETED


def job_state(job: SlurmJob) -> JobState:
    """Slurm's state → the domain's.

    - a ``COMPLETING`` flag, or any terminal base state, is ``COMPLETED`` (it no longer runs work);
    - ``RUNNING`` with the ``STOPPED`` flag (SIGSTOP'd, resources kept) is ``SUSPENDED``;
    - a pending job that is held *after having run* (requeue-hold, or requeued and then held) is
      ``STOPPED``: stopped mid-run and waiting for someone to release it, which is how the gateway
      parks a job it checkpointed and requeued. A job held before it ever ran stays ``PENDING``,
      and so does a job requeued without a hold (Slurm restarts it by itself);
    - a state this table does not know is ``PENDING``: the planner never acts on pending jobs.
    """
    state = _STATES.get(job.state, _PENDING)
    flags = job.state_flags
    if flags:  # most jobs have none: skip the flag checks for them
        if "COMPLETING" in flags:
            return _COMPLETED
        if state is _RUNNING and "STOPPED" in flags:
            return JobState.SUSPENDED
    if state is _PENDING and job.held and (job.restart_count > 0 or not _REQUEUE_FLAGS.isdisjoint(flags)):
        return JobState.STOPPED
    return state


def to_domain(job: SlurmJob, policy: JobPolicy, now: datetime) -> Job:
    """The planner's view of ``job``; ``now`` must be timezone-aware.

    ``elapsed_s`` is wall time since start (Slurm's suspended time included: the JSON does not say
    how long a job was suspended); ``remaining_s`` is time to Slurm's expected end, ``None`` for an
    unlimited job, and the whole time limit for one that has not started. Workload is the job name,
    so a name matching a measured power curve gets that curve, others the default one.
    """
    # Runs once per job on every snapshot (100 000 jobs on a large cluster): Job() itself is most of
    # the cost, so the work around it stays flat (no max(), each attribute read once).
    state = job_state(job)
    start, end, limit = job.start_time, job.end_time, job.time_limit_s
    elapsed = 0.0
    if start is not None and state is not _PENDING:
        elapsed = ((end if state is _COMPLETED and end is not None else now) - start).total_seconds()
        if elapsed < 0.0:
            elapsed = 0.0
    remaining = limit
    if limit is not None and state is not _PENDING and end is not None and start is not None:
        if state is _COMPLETED:
            remaining = 0.0
        else:
            remaining = (end - now).total_seconds()
            if remaining < 0.0:
                remaining = 0.0
    grace = policy.checkpoint_grace_s
    return Job(
        job_id=job.job_id,
        tier=policy.tier,
        gpus=job.gpus,
        name=job.name,
        nodes=job.nodes,
        state=state,
        workload=job.name,
        checkpointable=policy.checkpoint_signal is not None,
        requeueable=job.requeue,
        checkpoint_s=grace if grace is not None else _DEFAULT_CHECKPOINT_S,
        restart_s=policy.restart_s if policy.restart_s is not None else _DEFAULT_RESTART_S,
        elapsed_s=elapsed,
        remaining_s=remaining,
        scheduler="slurm",
    )


_DEFAULT_CHECKPOINT_S: float = Job.__dataclass_fields__["checkpoint_s"].default  # type: ignore[assignment]
_DEFAULT_RESTART_S: float = Job.__dataclass_fields__["restart_s"].default  # type: ignore[assignment]


def nodes_to_domain(nodes: Iterable[SlurmNode]) -> tuple[Node, ...]:
    """Nodes for the snapshot: a drain whose reason starts with ``dcflex`` is the gateway's own (it may
    undo it); any other drain belongs to an operator or health check and must never be undone."""
    out = []
    for n in nodes:
        drained = "DRAIN" in n.flags or n.state in ("DRAIN", "DRAINED", "DRAINING")
        ours = drained and n.reason.startswith(GATEWAY_DRAIN_PREFIX)
        out.append(Node(name=n.name, gpus=n.gpus, state=n.state.lower(), drained_by_gateway=ours,
                        drained_by_other=drained and not ours))
    return tuple(out)
