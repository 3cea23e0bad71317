"""A fake Ray dashboard for the client's and adapter's error branches: a real aiohttp server on loopback
whose answers a test queues; success payloads are the captured ones in ``tests/adapters/fixtures/ray-2.60``."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "ray-2.60"
JOBS = json.loads((FIXTURES / "jobs.json").read_text())
SERVE = json.loads((FIXTURES / "serve_applications.json").read_text())
HANG = object()


@dataclass
class FakeDashboard:
    """Answers queued per ``METHOD /path`` (the last one repeats); records every request it gets."""

    answers: dict[str, list[Any]] = field(default_factory=dict)
    seen: list[tuple[str, str, bytes]] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    packages: set[str] = field(default_factory=set)  # what GET/PUT /api/packages/... keep, as Ray's GCS would
    url: str = ""

    def on(self, route: str, *answers: Any) -> None:
        self.answers[route] = list(answers)

    def count(self, route: str) -> int:
        return sum(1 for m, p, _ in self.seen if f"{m} {p}" == route)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        route = f"{request.method} {request.path}"
        self.seen.append((request.method, request.path, body))
        if request.path.startswith("/api/packages/"):
            if request.method == "PUT":
                self.packages.add(request.path)
            return web.Response(status=200 if request.path in self.packages else 404)
        queue = self.answers.get(route)
        if not queue:
            return web.Response(status=404, text=f"no fake answer for {route}")
        answer = queue.pop(0) if len(queue) > 1 else queue[0]
        if answer is HANG:
            await self.release.wait()
            return web.Response(status=200, text="{}")
        status, payload = answer
        if isinstance(payload, str):
            return web.Response(status=status, text=payload)
        return web.json_response(payload, status=status)
