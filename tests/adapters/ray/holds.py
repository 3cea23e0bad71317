"""Test clean-up for the GPU holds (detached placement groups) a test's gateway left on the shared test Ray.

A test that fails between a stop and its restart never runs the release, and a detached group outlives
everything: left alone, it would keep the test head's GPU-standing resource from the next tests' jobs.
"""

from __future__ import annotations

import asyncio
import shlex
import sys
import time
from typing import Any

import aiohttp

from adapters.ray.client import RayDashboardClient
from adapters.ray.hold import HOLD_SCRIPT, KEY_HOLD_FOR
from adapters.ray.model import JobSpec


async def placement_groups(url: str) -> list[dict[str, Any]]:
    """Every placement group Ray's state API lists (with bundles)."""
    async with aiohttp.ClientSession() as http, http.get(f"{url}/api/v0/placement_groups",
                                                         params={"limit": "10000", "detail": "true"}) as resp:
        body = await resp.json()
    return list(body["data"]["result"]["result"])


async def release_holds(client: RayDashboardClient, prefix: str, within_s: float = 60.0) -> list[str]:
    """Remove every live group whose name starts with ``prefix`` (the gateway names them after the job) by the
    gateway's own release script; the names released."""
    names = sorted({g["name"] for g in await placement_groups(client.base_url)
                    if str(g.get("name", "")).startswith(prefix) and g.get("state") in ("CREATED", "PENDING", "RESCHEDULING")})
    sids = []
    for name in names:
        sid = f"{name}-cleanup-{int(time.time() * 1000) % 10**8}"
        entry = shlex.join([sys.executable, "-c", HOLD_SCRIPT, "release", name])
        await client.submit_job(JobSpec(entry, sid, metadata={KEY_HOLD_FOR: name}, entrypoint_num_cpus=0))
        sids.append(sid)
    deadline = time.monotonic() + within_s
    while sids and time.monotonic() < deadline:
        jobs = [await client.get_job(s) for s in sids]
        if all(j is None or j.terminal for j in jobs):
            break
        await asyncio.sleep(0.5)
    return names
