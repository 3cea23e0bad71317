"""Ray Serve deployments as the planner sees them: replicated services it may take replicas from.

Each deployment of each application is one ``gateway.domain.Job`` with id ``serve:<app>/<deployment>``:
its ``replicas`` are Serve's target replica count now, its GPUs those replicas' (``gpus_per_replica``
from the first matching ``[[scheduler.ray.serve]]`` rule, else the deployment's
``ray_actor_options.num_gpus``, rounded up), its tier the rule's (else ``tiers.default``). The
gateway's lever is the replica count (``SCALE_DOWN``/``SCALE_UP``); a deployment that autoscales is
Serve's to size and is reported with no replicas to take. ``replicas_removed`` comes from the
adapter's memory of what it took away (``ServeBook``), so a re-plan mid-event never takes more than the
tier allows over the service's full size.
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from adapters.ray.model import ServeApp, ServeDeployment, ServeInstance
from gateway.config.models import RayServeRule
from gateway.domain import Action, ActionKind, Job, JobState, Tier

__all__ = ["PREFIX", "ServeBook", "ServeRules", "ServeTarget", "lookup", "service_id", "services"]

PREFIX = "serve:"
_LIVE_APP = frozenset({"RUNNING", "DEPLOYING"})  # DEPLOYING: a scale command re-deploys the config
_LIVE_DEP = frozenset({"HEALTHY", "UPDATING", "UPSCALING", "DOWNSCALING"})


def service_id(app: str, deployment: str) -> str:
    return f"{PREFIX}{app}/{deployment}"


@dataclass(frozen=True, slots=True)
class ServeTarget:
    """Where a service's job id points: the application and the deployment a scale command changes."""

    app: str
    deployment: str


class ServeBook:
    """How many replicas each service had before the gateway took any (its full size), while some are
    taken: the difference to the target now is ``replicas_removed``. Learnt again after a restart from
    the scale commands the journal has in force (``recall``)."""

    def __init__(self) -> None:
        self.full: dict[str, int] = {}

    def removed(self, job_id: str, target_now: int) -> int:
        full = self.full.get(job_id)
        return max(0, full - target_now) if full is not None else 0

    def scaled_down(self, job_id: str, before: int, to: int) -> None:
        if to < before:
            self.full.setdefault(job_id, before)

    def scaled_up(self, job_id: str, to: int) -> None:
        if to >= self.full.get(job_id, to + 1):
            self.full.pop(job_id, None)

    def recall(self, in_force: Iterable[Action]) -> None:
        """Scale-downs done and not yet undone: one replica each, so the full size is the lowest target
        plus how many were taken."""
        taken: dict[str, list[int]] = {}
        for a in in_force:
            if a.kind is ActionKind.SCALE_DOWN and a.replicas is not None and a.job_id.startswith(PREFIX):
                taken.setdefault(a.job_id, []).append(a.replicas)
        for jid, targets in taken.items():
            self.full.setdefault(jid, min(targets) + len(targets))


class ServeRules:
    """The ``[[scheduler.ray.serve]]`` rules, compiled; the first whose pattern matches decides."""

    def __init__(self, rules: Iterable[RayServeRule], default: Tier) -> None:
        self._rules = [(re.compile(fnmatch.translate(r.deployment)), r) for r in rules]
        self.default = default

    def match(self, name: str) -> RayServeRule | None:
        return next((r for rx, r in self._rules if rx.match(name)), None)


def services(instance: ServeInstance, rules: ServeRules, book: ServeBook) -> tuple[list[Job], dict[str, ServeTarget]]:
    """Every deployment as a ``Job``, and where each job id points."""
    jobs: list[Job] = []
    targets: dict[str, ServeTarget] = {}
    for app in instance.apps.values():
        for dep in app.deployments.values():
            jid = service_id(app.name, dep.name)
            targets[jid] = ServeTarget(app.name, dep.name)
            jobs.append(_job(jid, app, dep, rules, book))
    return jobs, targets


def _job(jid: str, app: ServeApp, dep: ServeDeployment, rules: ServeRules, book: ServeBook) -> Job:
    name = f"{app.name}/{dep.name}"
    rule = rules.match(name)
    per = rule.gpus_per_replica if rule is not None and rule.gpus_per_replica is not None else (
        math.ceil(dep.num_gpus) if dep.num_gpus else 0)
    target = max(0, dep.target_num_replicas)
    live = app.status in _LIVE_APP and dep.status in _LIVE_DEP and target > 0
    scalable = live and not dep.autoscaling and app.config is not None
    return Job(
        job_id=jid, tier=rule.tier if rule is not None else rules.default, gpus=target * per, name=name,
        state=JobState.RUNNING if live else JobState.PENDING,
        workload=(rule.workload if rule is not None and rule.workload else name),
        checkpointable=False, requeueable=False, scheduler="ray", pausable=False, cappable=False,
        replicas=target if scalable else 0, replicas_removed=book.removed(jid, target) if scalable else 0,
        min_replicas=rule.min_replicas if rule is not None else 1,
    )


def lookup(targets: Mapping[str, ServeTarget], job_id: str) -> ServeTarget | None:
    """The target of a service id, from the last snapshot or, before one, from the id itself (an
    application name with a ``/`` in it is then ambiguous: the first ``/`` splits)."""
    hit = targets.get(job_id)
    if hit is not None or not job_id.startswith(PREFIX):
        return hit
    app, sep, dep = job_id.removeprefix(PREFIX).partition("/")
    return ServeTarget(app, dep) if sep and app and dep else None
