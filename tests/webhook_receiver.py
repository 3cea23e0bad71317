"""A grid operator's webhook receiver on loopback, for the tests of the notices' webhook: it checks each
POST's signature as a real receiver would, keeps what verifies and answers ``status`` while it is set."""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from gateway.sinks.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign


@dataclass
class Receiver:
    secret: str
    url: str = ""
    got: list[dict[str, Any]] = field(default_factory=list)
    bad: list[str] = field(default_factory=list)
    status: int = 200
    attempts: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.attempts += 1
        body = await request.read()
        ts = request.headers.get(TIMESTAMP_HEADER, "")
        given = request.headers.get(SIGNATURE_HEADER, "")
        fresh = ts.isdigit() and abs(time.time() - int(ts)) <= 300  # an old timestamp is a replay
        if not fresh or not hmac.compare_digest(given, sign(self.secret.encode(), ts, body)):
            self.bad.append(given)
            return web.Response(status=401, text="bad signature")
        if self.status != 200:
            return web.Response(status=self.status, text="busy")
        self.got.append(json.loads(body))
        return web.Response(status=204)


@asynccontextmanager
async def receiving(secret: str) -> AsyncIterator[Receiver]:
    """A receiver listening on a free loopback port, at ``<url>`` (path ``/notices``)."""
    rec = Receiver(secret)
    app = web.Application()
    app.router.add_post("/notices", rec.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    rec.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/notices"  # type: ignore[union-attr]
    try:
        yield rec
    finally:
        await runner.cleanup()
