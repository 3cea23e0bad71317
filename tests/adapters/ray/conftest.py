"""Fixtures for the Ray adapter's tests that run against a fake dashboard (``fakes.FakeDashboard``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from adapters.ray.client import RayDashboardClient
from tests.adapters.ray.fakes import FakeDashboard


@pytest.fixture
async def dash() -> AsyncIterator[FakeDashboard]:
    fake = FakeDashboard()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fake.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    fake.url = f"http://127.0.0.1:{port}"
    yield fake
    fake.release.set()
    await runner.cleanup()


@pytest.fixture
async def client(dash: FakeDashboard) -> AsyncIterator[RayDashboardClient]:
    async with RayDashboardClient(dash.url, timeout_s=2.0, retries=2, backoff_s=0.01) as c:
        yield c
