"""Every answer of the HTTP API is JSON, errors included: never a bare 500, never aiohttp's text pages.

Why: jobs and operators' scripts read these answers; a body of 8,000 ``[`` or a 5,000-digit number used to end
in an unhandled exception and aiohttp's plain "500 Internal Server Error". ``read_json`` turns every way a body
can fail to be JSON (syntax, encoding, nesting, numbers past Python's digit limit) into a 400 that says so, and
``json_errors`` answers whatever else escapes a handler with a JSON error naming the request, logs it, and keeps
the server running.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

__all__ = ["BadBody", "error", "json_errors", "read_json"]

log = logging.getLogger("dcflex.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class BadBody(Exception):
    """The request body is not the JSON asked for; the message says why."""


def error(status: int, message: str) -> web.Response:
    return web.json_response({"ok": False, "error": message}, status=status)


async def read_json(request: web.Request) -> Any:
    """The body as JSON; ``BadBody`` for anything that is not (aiohttp's size limit still answers 413)."""
    raw = await request.read()
    try:
        return json.loads(raw)
    except json.JSONDecodeError as err:
        raise BadBody(f"it is not JSON ({err.msg} at character {err.pos})") from None
    except UnicodeDecodeError:
        raise BadBody("it is not UTF-8 text") from None
    except RecursionError:
        raise BadBody("it nests too deeply") from None
    except ValueError as err:  # e.g. an integer past Python's digit limit
        raise BadBody(f"a value cannot be read ({err})"[:200]) from None


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """aiohttp's own HTTP errors (404, 405, 413, ...) as JSON, and any unexpected failure as a JSON 500."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error(exc.status, f"{exc.reason}: {request.method} {request.rel_url.path[:200]}")
    except Exception as exc:
        log.exception("the API failed on %s %s", request.method, request.rel_url.path[:200])
        return error(500, f"the gateway could not handle {request.method} {request.rel_url.path[:200]} "
                          f"({type(exc).__name__}); it keeps running, and its log has the details")
