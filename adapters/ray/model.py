"""Ray's view of jobs and Serve applications, parsed from the dashboard's JSON, before dcflex maps them.

The shapes are those of Ray's Jobs REST API (``JobDetails`` in ``ray.dashboard.modules.job.pydantic_models``)
and Serve REST API (``ServeInstanceDetails`` in ``ray.serve.schema``), checked against Ray 2.60. Parsing is
lenient about what dcflex does not need (unknown keys are ignored, missing optional ones are empty) and
strict about what it does: a job without ``status`` or ``entrypoint`` is a ``ValueError``, which the client
turns into ``CommandFailed`` naming the URL.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "KEY_ENTRYPOINT", "TERMINAL", "JobSpec", "RayJob", "Replica", "ServeApp", "ServeDeployment", "ServeInstance", "StopRecord",
]

TERMINAL = frozenset({"STOPPED", "SUCCEEDED", "FAILED"})
# The Jobs API does not report a job's entrypoint resources back (Ray 2.60's JobDetails has no such
# fields), so a job keeps them in its metadata under this key, as JSON, for its resubmission: the adapter
# writes it on every job it submits; users who submit resumable jobs with entrypoint resources add it.
KEY_ENTRYPOINT = "dcflex.entrypoint"
_ENTRYPOINT_FIELDS = ("entrypoint_num_cpus", "entrypoint_num_gpus", "entrypoint_memory", "entrypoint_resources")


def _str_map(raw: object) -> dict[str, str]:
    return {str(k): str(v) for k, v in raw.items()} if isinstance(raw, dict) else {}


def _num(raw: object) -> float | None:
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
        return None
    return float(raw)


def _ms(raw: object) -> datetime | None:
    """Ray's job times are milliseconds since the epoch; 0 or absent means not yet."""
    value = _num(raw)
    return datetime.fromtimestamp(value / 1000.0, UTC) if value else None


@dataclass(frozen=True, slots=True)
class RayJob:
    """One entry of ``GET /api/jobs/``. ``submission_id`` is None for a driver job (a script that called
    ``ray.init`` itself): the Jobs API can neither stop nor resubmit those."""

    submission_id: str | None
    job_type: str                          # "SUBMISSION" or "DRIVER"
    status: str                            # PENDING, RUNNING, STOPPED, SUCCEEDED, FAILED
    entrypoint: str
    message: str = ""
    driver_job_id: str | None = None       # Ray's own hex job id, once the driver runs
    start_time: datetime | None = None
    end_time: datetime | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    runtime_env: Mapping[str, Any] = field(default_factory=dict)
    entrypoint_num_cpus: float | None = None
    entrypoint_num_gpus: float | None = None
    entrypoint_memory: int | None = None
    entrypoint_resources: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def from_json(cls, raw: object) -> RayJob:
        if not isinstance(raw, dict):
            raise ValueError(f"a job is a JSON object, not {type(raw).__name__}")
        status, entrypoint = raw.get("status"), raw.get("entrypoint")
        if not isinstance(status, str) or not isinstance(entrypoint, str):
            raise ValueError(f"job {raw.get('submission_id')!r} lacks a status or an entrypoint")
        sid = raw.get("submission_id")
        metadata = _str_map(raw.get("metadata"))
        raw = {**_entrypoint_from(metadata), **{k: v for k, v in raw.items() if v is not None}}
        memory = _num(raw.get("entrypoint_memory"))
        resources = raw.get("entrypoint_resources")
        env = raw.get("runtime_env")
        return cls(
            submission_id=sid if isinstance(sid, str) and sid else None,
            job_type=str(raw.get("type") or ("SUBMISSION" if sid else "DRIVER")),
            status=status.upper(),
            entrypoint=entrypoint,
            message=str(raw.get("message") or ""),
            driver_job_id=raw["job_id"] if isinstance(raw.get("job_id"), str) else None,
            start_time=_ms(raw.get("start_time")),
            end_time=_ms(raw.get("end_time")),
            metadata=metadata,
            runtime_env=dict(env) if isinstance(env, dict) else {},
            entrypoint_num_cpus=_num(raw.get("entrypoint_num_cpus")),
            entrypoint_num_gpus=_num(raw.get("entrypoint_num_gpus")),
            entrypoint_memory=int(memory) if memory is not None else None,
            entrypoint_resources={str(k): float(v) for k, v in resources.items() if _num(v) is not None}
            if isinstance(resources, dict) else {},
        )

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def spec(self) -> JobSpec:
        """What resubmitting this job needs (same entrypoint, environment, metadata and resources)."""
        return JobSpec(
            entrypoint=self.entrypoint, submission_id=self.submission_id, runtime_env=dict(self.runtime_env),
            metadata=dict(self.metadata), entrypoint_num_cpus=self.entrypoint_num_cpus,
            entrypoint_num_gpus=self.entrypoint_num_gpus, entrypoint_memory=self.entrypoint_memory,
            entrypoint_resources=dict(self.entrypoint_resources),
        )


def _entrypoint_from(metadata: Mapping[str, str]) -> dict[str, Any]:
    """The entrypoint resources a job recorded in its metadata (``KEY_ENTRYPOINT``); {} when absent or invalid."""
    text = metadata.get(KEY_ENTRYPOINT)
    if not text:
        return {}
    try:
        raw = json.loads(text)
    except ValueError:
        return {}
    return {k: raw[k] for k in _ENTRYPOINT_FIELDS if isinstance(raw, dict) and raw.get(k) is not None}


@dataclass(frozen=True, slots=True)
class JobSpec:
    """The body of ``POST /api/jobs/`` (``JobSubmitRequest``); None fields are left out."""

    entrypoint: str
    submission_id: str | None = None
    runtime_env: Mapping[str, Any] = field(default_factory=dict)
    metadata: Mapping[str, str] = field(default_factory=dict)
    entrypoint_num_cpus: float | None = None
    entrypoint_num_gpus: float | None = None
    entrypoint_memory: int | None = None
    entrypoint_resources: Mapping[str, float] = field(default_factory=dict)

    def entrypoint_json(self) -> str | None:
        """The entrypoint resources as the ``KEY_ENTRYPOINT`` metadata value (None: none were asked for)."""
        body = {k: v for k, v in self.to_json().items() if k in _ENTRYPOINT_FIELDS}
        return json.dumps(body, sort_keys=True, separators=(",", ":")) if body else None

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"entrypoint": self.entrypoint}
        if self.submission_id is not None:
            body["submission_id"] = self.submission_id
        if self.runtime_env:
            body["runtime_env"] = dict(self.runtime_env)
        if self.metadata:
            body["metadata"] = dict(self.metadata)
        for key in ("entrypoint_num_cpus", "entrypoint_num_gpus", "entrypoint_memory"):
            value = getattr(self, key)
            if value is not None:
                body[key] = value
        if self.entrypoint_resources:
            body["entrypoint_resources"] = dict(self.entrypoint_resources)
        return body


@dataclass(frozen=True, slots=True)
class Replica:
    replica_id: str
    state: str                             # STARTING, RUNNING, STOPPING, ... (ray.serve ReplicaState)


@dataclass(frozen=True, slots=True)
class ServeDeployment:
    name: str
    status: str                            # HEALTHY, UPDATING, UPSCALING, DOWNSCALING, UNHEALTHY, DEPLOY_FAILED
    target_num_replicas: int
    replicas: tuple[Replica, ...] = ()
    autoscaling: bool = False
    num_gpus: float | None = None          # ray_actor_options.num_gpus: what one replica reserves

    @property
    def running_replicas(self) -> int:
        return sum(1 for r in self.replicas if r.state == "RUNNING")


@dataclass(frozen=True, slots=True)
class ServeApp:
    """One application; ``config`` is its ``deployed_app_config`` (None when it was deployed from Python
    with ``serve.run``, which the declarative REST API cannot rewrite)."""

    name: str
    status: str
    route_prefix: str | None
    deployments: Mapping[str, ServeDeployment]
    config: Mapping[str, Any] | None
    source: str = ""


@dataclass(frozen=True, slots=True)
class ServeInstance:
    """``GET /api/serve/applications/``: the applications, and the instance-wide options a ``PUT`` of the
    whole declarative config must carry back unchanged (Serve cannot change them while running)."""

    apps: Mapping[str, ServeApp]
    proxy_location: str | None = None
    http_options: Mapping[str, Any] | None = None
    grpc_options: Mapping[str, Any] | None = None
    target_capacity: float | None = None

    @classmethod
    def from_json(cls, raw: object) -> ServeInstance:
        if not isinstance(raw, dict):
            raise ValueError(f"the Serve details are a JSON object, not {type(raw).__name__}")
        apps: dict[str, ServeApp] = {}
        for name, app in (raw.get("applications") or {}).items():
            if not isinstance(app, dict):
                raise ValueError(f"application {name!r} is not a JSON object")
            deps: dict[str, ServeDeployment] = {}
            for dname, dep in (app.get("deployments") or {}).items():
                dcfg = dep.get("deployment_config") or {}
                deps[dname] = ServeDeployment(
                    name=dname, status=str(dep.get("status", "")),
                    target_num_replicas=int(dep.get("target_num_replicas") or 0),
                    replicas=tuple(Replica(str(r.get("replica_id", "")), str(r.get("state", "")))
                                   for r in dep.get("replicas") or ()),
                    autoscaling=bool(dcfg.get("autoscaling_config")),
                    num_gpus=_num((dcfg.get("ray_actor_options") or {}).get("num_gpus")),
                )
            config = app.get("deployed_app_config")
            apps[str(name)] = ServeApp(
                name=str(name), status=str(app.get("status", "")), route_prefix=app.get("route_prefix"),
                deployments=deps, config=config if isinstance(config, dict) else None, source=str(app.get("source", "")),
            )
        return cls(
            apps=apps, proxy_location=raw.get("proxy_location"), http_options=_opt_map(raw.get("http_options")),
            grpc_options=_opt_map(raw.get("grpc_options")), target_capacity=_num(raw.get("target_capacity")),
        )


def _opt_map(raw: object) -> Mapping[str, Any] | None:
    return dict(raw) if isinstance(raw, dict) else None


@dataclass(frozen=True, slots=True)
class StopRecord:
    """How one checkpoint-then-stop of a Ray job went. ``acknowledged`` False means the work since the
    job's last checkpoint was probably lost; ``checkpoint_path`` is what the job said it wrote, and what
    its resubmission gets as ``DCFLEX_RESUME_FROM``."""

    job_id: str
    event_id: str
    started_at: datetime
    acknowledged: bool
    checkpoint_path: str = ""
    waited_s: float = 0.0
    eta_s: float | None = None             # the job's last checkpoint ETA report, when it sent one
    note: str = ""

    def facts(self) -> dict[str, object]:
        """What the journal keeps of it (``gateway.ports.Facts``), and ``from_facts`` reads back."""
        return {"acknowledged": self.acknowledged, "checkpoint_path": self.checkpoint_path,
                "waited_s": round(self.waited_s, 3), "eta_s": self.eta_s, "note": self.note}

    @classmethod
    def from_facts(cls, job_id: str, event_id: str, started_at: datetime, facts: Mapping[str, object]) -> StopRecord:
        waited, eta = facts.get("waited_s"), facts.get("eta_s")
        return cls(job_id, event_id, started_at, facts.get("acknowledged") is True, str(facts.get("checkpoint_path") or ""),
                   float(waited) if isinstance(waited, int | float) else 0.0,
                   float(eta) if isinstance(eta, int | float) else None, str(facts.get("note") or ""))
