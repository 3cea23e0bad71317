"""Serve's declarative config, rewritten for one change: the Serve REST API takes the whole config at once.

``PUT /api/serve/applications/`` (``ServeDeploySchema``) replaces every application: one left out is
deleted. So a change to one deployment is the current ``deployed_app_config`` of every application, that
one number changed, and the instance-wide options (proxy location, HTTP and gRPC options, target capacity)
carried back unchanged: Serve cannot change HTTP options while it runs, and a missing ``target_capacity``
would reset one an operator set. Applications deployed from Python (``serve.run``) have no declarative
config and would be deleted by such a PUT, so every change is refused while one exists.
"""

from __future__ import annotations

import json
from typing import Any

from adapters.ray.model import ServeInstance
from gateway.exceptions import CommandFailed

__all__ = ["refuse_imperative", "serve_config", "serve_config_with"]

_ADAPTER = "ray"


def serve_config_with(instance: ServeInstance, app: str, deployment: str, replicas: int, *,
                      url: str = "PUT /api/serve/applications/") -> dict[str, Any] | None:
    """The declarative config of every application with ``app``'s ``deployment`` at ``replicas``, or None
    when that is already its target. Refused (``CommandFailed``) when Serve cannot be driven this way: an
    unknown application or deployment, an autoscaling deployment (its replica count is Serve's to
    choose), or an application deployed from Python (a PUT without it would delete it)."""
    if replicas < 0:
        raise ValueError(f"replicas must be >= 0, not {replicas}")

    def refuse(why: str) -> CommandFailed:
        return CommandFailed(f"ray: cannot scale Serve deployment {app}/{deployment} to {replicas}: {why}",
                             adapter=_ADAPTER, command=("PUT", url))

    target = instance.apps.get(app)
    if target is None:
        raise refuse(f"no application {app!r} (Serve runs {sorted(instance.apps) or 'none'})")
    dep = target.deployments.get(deployment)
    if dep is None:
        raise refuse(f"application {app!r} has no deployment {deployment!r} (it has {sorted(target.deployments)})")
    if dep.autoscaling:
        raise refuse("it autoscales; its replica count is Serve's to choose")
    refuse_imperative(instance, f"scale Serve deployment {app}/{deployment} to {replicas}", url)
    apps: list[dict[str, Any]] = []
    changed = dep.target_num_replicas != replicas
    for a in instance.apps.values():
        cfg = json.loads(json.dumps(a.config))  # a deep copy of plain JSON
        if a.name == app:
            entries = cfg.setdefault("deployments", [])
            entry = next((d for d in entries if d.get("name") == deployment), None)
            if entry is None:
                entry = {"name": deployment}
                entries.append(entry)
            changed = changed or entry.get("num_replicas") != replicas
            entry["num_replicas"] = replicas
        apps.append(cfg)
    if not changed:
        return None
    return serve_config(instance, apps)


def refuse_imperative(instance: ServeInstance, what: str, url: str, keep: str = "") -> None:
    imperative = sorted(a.name for a in instance.apps.values() if a.config is None and a.name != keep)
    if imperative:
        raise CommandFailed(f"ray: cannot {what}: application(s) {imperative} were deployed from Python (serve.run), "
                            "not from a declarative config; the REST API can only replace every application at once, "
                            "and would delete them", adapter=_ADAPTER, command=("PUT", url))


def serve_config(instance: ServeInstance, apps: list[Any]) -> dict[str, Any]:
    """A whole declarative config: ``apps`` plus the instance-wide options, carried back unchanged."""
    config: dict[str, Any] = {"applications": [json.loads(json.dumps(a)) for a in apps]}
    if instance.proxy_location is not None:
        config["proxy_location"] = instance.proxy_location
    if instance.http_options is not None:
        config["http_options"] = dict(instance.http_options)
    if instance.grpc_options is not None:
        config["grpc_options"] = dict(instance.grpc_options)
    if instance.target_capacity is not None:
        config["target_capacity"] = instance.target_capacity
    return config
