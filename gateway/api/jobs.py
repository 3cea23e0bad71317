"""The job-facing endpoints over ``JobDirectives``: what a job is asked to do, and its checkpoint ETA.

- ``GET /v1/jobs/{job_id}/directive`` → 200 ``{"job_id", "seq", "kind", "event_id", "deadline",
  "stop_after"}`` (``deadline`` ISO 8601 UTC) or 204 with no body when nothing is pending. Jobs poll
  this every few seconds, so it does no work beyond a dict lookup and never creates state.
- ``POST /v1/jobs/{job_id}/eta`` with ``{"seconds_left": number >= 0}`` → 202
  ``{"ok": true, "job_id", "at"}``: the job's estimate of how long its checkpoint still needs (or, with no
  checkpoint asked, until it ends). 404 for a job that has no directive and is not on the cluster.

Job ids are validated exactly like the checkpoint-ack endpoint's (same pattern, same message), bad
bodies get 400 with a message saying what is expected, and bodies over the app's limit 413 (aiohttp's
``client_max_size``, raised while reading the body).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from gateway.api.errors import BadBody, read_json
from gateway.clock import Clock
from gateway.jobchannel.directives import JobDirectives

__all__ = ["DIRECTIVES_KEY", "MAX_ETA_S", "add_directive_routes"]

DIRECTIVES_KEY = web.AppKey("directives", JobDirectives)
MAX_ETA_S = 1e9  # ~30 years: anything larger is a unit mistake, not an estimate

ErrorFn = Callable[[int, str], web.Response]


def add_directive_routes(app: web.Application, directives: JobDirectives, clock: Clock, *,
                         job_id_pattern: re.Pattern[str], error: ErrorFn,
                         known_job: Callable[[str], Awaitable[bool]] | None = None) -> None:
    """Register both endpoints on ``app`` (called by ``build_app`` when it is given a store)."""
    app[DIRECTIVES_KEY] = directives

    def bad_job_id(job_id: str) -> web.Response | None:
        if job_id_pattern.match(job_id):
            return None
        return error(400, f"job id {job_id!r} is not a valid job id (letters, digits, _.+:- only)")

    async def get_directive(request: web.Request) -> web.Response:
        job_id = request.match_info["job_id"]
        refused = bad_job_id(job_id)
        if refused is not None:
            return refused
        directive = directives.get(job_id)
        if directive is None:
            return web.Response(status=204)
        return web.json_response(directive.to_json())

    async def post_eta(request: web.Request) -> web.Response:
        job_id = request.match_info["job_id"]
        refused = bad_job_id(job_id)
        if refused is not None:
            return refused
        example = 'body must be a JSON object like {"seconds_left": 42.5}'
        if not request.can_read_body:
            return error(400, example)
        try:
            raw: Any = await read_json(request)
        except BadBody as why:
            return error(400, f"{example} ({why})")
        if not isinstance(raw, dict) or "seconds_left" not in raw:
            return error(400, example)
        seconds = raw["seconds_left"]
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            return error(400, f"seconds_left must be a number, not {type(seconds).__name__}")
        if not 0 <= seconds <= MAX_ETA_S:  # also refuses NaN (every comparison is False) and inf
            return error(400, f"seconds_left must be a finite number between 0 and {MAX_ETA_S:g}, not {seconds!r}")
        if directives.get(job_id) is None and known_job is not None and not await known_job(job_id):
            return error(404, f"job {job_id} is not one the gateway knows (no checkpoint asked of it, and not on the "
                              "cluster at its latest read): nothing is kept for it")
        at = clock.now()
        directives.report_eta(job_id, float(seconds), at)
        return web.json_response({"ok": True, "job_id": job_id, "at": at.isoformat()}, status=202)

    app.router.add_get("/v1/jobs/{job_id}/directive", get_directive)
    app.router.add_post("/v1/jobs/{job_id}/eta", post_eta)
