"""HTTP endpoints: health, status, and checkpoint acknowledgements from jobs.

- ``GET /healthz``: 200 while the engine loop runs (for a load balancer or systemd watchdog).
- ``GET /status``: current events, their state, planned and done commands, site power, target.
- ``POST /v1/jobs/{job_id}/checkpoint-ack``: a job reports its checkpoint is written; body (JSON,
  optional) ``{"checkpoint_path": "...", "event_id": "..."}``. 404 when the gateway asked no checkpoint of
  that job (nothing is kept for it).

Every answer is JSON, errors included (``gateway.api.errors``).

With a ``JobDirectives`` store (``build_app(directives=...)``), also (see ``gateway.api.jobs``):

- ``GET /v1/jobs/{job_id}/directive``: 200 with the pending directive, 204 when there is none.
- ``POST /v1/jobs/{job_id}/eta``: ``{"seconds_left": number >= 0}``, 202.

and an acknowledgement withdraws the job's directive (for the same event), so the job's helper stops
seeing it.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from gateway.api.errors import BadBody, error, json_errors, read_json
from gateway.api.jobs import add_directive_routes
from gateway.clock import Clock
from gateway.jobchannel.acks import Ack, CheckpointAcks
from gateway.jobchannel.directives import JobDirectives

_JOB_ID = re.compile(r"^[A-Za-z0-9_.+:-]{1,128}$")
_MAX_BODY = 16 * 1024

StatusFn = Callable[[], dict[str, Any]]
HealthFn = Callable[[], bool]
KnownJobFn = Callable[[str], Awaitable[bool]]

ACKS_KEY = web.AppKey("acks", CheckpointAcks)


def build_app(*, status: StatusFn, healthy: HealthFn, acks: CheckpointAcks, clock: Clock,
              directives: JobDirectives | None = None, known_job: KnownJobFn | None = None) -> web.Application:
    """The API. ``known_job`` says whether a job runs on the cluster (an ETA from any other is 404); without
    it, ETAs are taken from any job."""
    app = web.Application(client_max_size=_MAX_BODY, middlewares=[json_errors])
    app[ACKS_KEY] = acks

    async def healthz(_: web.Request) -> web.Response:
        ok = healthy()
        return web.json_response({"ok": ok}, status=200 if ok else 503)

    async def get_status(_: web.Request) -> web.Response:
        return web.json_response(status())

    async def checkpoint_ack(request: web.Request) -> web.Response:
        job_id = request.match_info["job_id"]
        if not _JOB_ID.match(job_id):
            return error(400, f"job id {job_id!r} is not a valid job id (letters, digits, _.+:- only)")
        body: dict[str, Any] = {}
        if request.can_read_body:
            try:
                raw = await read_json(request)
            except BadBody as why:
                return error(400, f"body must be JSON, e.g. {{\"checkpoint_path\": \"/ckpt/step-100\"}}: {why}")
            if not isinstance(raw, dict):
                return error(400, "body must be a JSON object")
            body = raw
        path = body.get("checkpoint_path", "")
        event_id = body.get("event_id", "")
        if not isinstance(path, str) or not isinstance(event_id, str) or len(path) > 4096:
            return error(400, "checkpoint_path and event_id must be strings (path at most 4096 characters)")
        ack = Ack(job_id=job_id, at=clock.now(), checkpoint_path=path, event_id=event_id)
        if not acks.ack(ack, asked=directives is not None and directives.get(job_id) is not None):
            return error(404, f"the gateway asked no checkpoint of job {job_id}: nothing to acknowledge")
        if directives is not None:
            directives.clear(job_id, event_id=event_id)
        return web.json_response({"ok": True, "job_id": job_id, "at": ack.at.isoformat()})

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/status", get_status)
    app.router.add_post("/v1/jobs/{job_id}/checkpoint-ack", checkpoint_ack)
    if directives is not None:
        add_directive_routes(app, directives, clock, job_id_pattern=_JOB_ID, error=error, known_job=known_job)
    return app


class ApiServer:
    """Runs the app on ``host:port`` as an async context manager (port 0 picks a free one)."""

    def __init__(self, app: web.Application, host: str, port: int) -> None:
        self._runner = web.AppRunner(app, access_log=None)
        self._host = host
        self._port = port
        self.port = port

    async def __aenter__(self) -> ApiServer:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        for address in self._runner.addresses:  # the real port when 0 was asked for
            self.port = int(address[1])
            break
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._runner.cleanup()

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self.port}"
