"""``dcflex run`` stopped by SIGTERM mid-event (as systemd and Kubernetes stop it): it exits 0 within its bound,
its retained MQTT status says offline, one log line says what it left, and the next start resumes the event
from the journal."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import aiomqtt
import pytest

from simulators.vtn import ScriptedVtn
from tests.hostile_vtn import free_port
from tests.services import service_env
from tests.waiting import until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


async def _start(config: Path, log: Path) -> asyncio.subprocess.Process:
    with log.open("ab") as sink:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway.cli", "run", "--config", str(config), stdout=sink,
            stderr=asyncio.subprocess.STDOUT, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"})


async def _status(api: str) -> dict[str, object] | None:
    try:
        async with aiohttp.ClientSession() as http, http.get(f"{api}/status") as r:
            return dict(await r.json()) if r.status == 200 else None
    except aiohttp.ClientError:
        return None


async def _retained(host: str, port: int, topic: str) -> dict[str, object]:
    async with aiomqtt.Client(host, port, identifier=f"probe-{uuid.uuid4().hex[:8]}") as client:
        await client.subscribe(topic, qos=1)
        async with asyncio.timeout(10):
            async for message in client.messages:
                return dict(json.loads(bytes(message.payload)))  # type: ignore[arg-type]
    raise AssertionError(f"no retained message on {topic}")


async def test_sigterm_mid_event_stops_cleanly_and_the_next_start_resumes(tmp_path: Path) -> None:
    host, port = service_env("DCFLEX_TEST_MQTT_HOST"), int(service_env("DCFLEX_TEST_MQTT_PORT"))
    prefix, api_port = f"dcflex-stop-{uuid.uuid4().hex[:6]}", free_port()
    log = tmp_path / "dcflex.log"
    async with ScriptedVtn(poll_interval_s=0.5) as vtn:
        config = tmp_path / "site.toml"
        config.write_text(f"""
[ven]
vtn_url = "{vtn.vtn_url}"
ven_name = "stop-ven"
ven_id = "stop-ven"
poll_interval_s = 0.5

[journal]
path = "{tmp_path / 'journal.sqlite3'}"

[api]
port = {api_port}

[sinks.mqtt]
enabled = true
host = "{host}"
port = {port}
topic_prefix = "{prefix}"
site_id = "stop-site"
client_id = "{prefix}"

[service]
stop_timeout_s = 10.0
""")
        api = f"http://127.0.0.1:{api_port}"
        proc = await _start(config, log)
        try:
            await vtn.wait_for_registration("stop-ven", within_s=30)
            eid = vtn.add_event("stop-ven", "LOAD_CONTROL", "x-loadControlPercentOffset",
                                [(timedelta(minutes=30), 10.0)], datetime.now(UTC) + timedelta(seconds=2))
            assert (await vtn.wait_for_response(eid, within_s=20)).opt_type == "optIn"
            await until("the event to be under way", lambda: _event_state(api, eid), 30)
            online = await _retained(host, port, f"{prefix}/stop-site/status")
            assert online["state"] == "online"
            proc.send_signal(signal.SIGTERM)
            async with asyncio.timeout(20):
                code = await proc.wait()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        text = log.read_text(errors="replace")
        assert code == 0, text[-3000:]
        assert "SIGTERM received" in text and "dcflex stopped on SIGTERM" in text, text[-3000:]
        summary = next(line for line in text.splitlines() if "dcflex stopped on SIGTERM" in line)
        assert eid in summary and "the next start resumes from" in summary
        offline = await _retained(host, port, f"{prefix}/stop-site/status")
        assert offline["state"] == "offline", offline

        registrations = log.read_text(errors="replace").count(" registered with ")
        again = await _start(config, log)
        try:
            await until("the event under way again after the restart", lambda: _event_state(api, eid), 30)
            # registered again before the second stop (a SIGTERM mid-registration is a known race: see the note)
            await until("the VEN registered again",
                        lambda: log.read_text(errors="replace").count(" registered with ") > registrations, 30)
        finally:
            again.send_signal(signal.SIGTERM)
            async with asyncio.timeout(20):
                assert await again.wait() == 0
        with sqlite3.connect(tmp_path / "journal.sqlite3") as db:
            kinds = [k for (k,) in db.execute("SELECT kind FROM log WHERE event_id=? ORDER BY id", (eid,))]
        assert "resumed" in kinds and kinds.count("opt") == 1  # picked up from the journal, not decided anew


async def _event_state(api: str, eid: str) -> str | None:
    status = await _status(api)
    for event in (status or {}).get("events", []) or []:  # type: ignore[union-attr]
        if isinstance(event, dict) and event.get("event_id") == eid and event.get("state") in (
                "noticed", "ramping", "holding"):
            return str(event["state"])
    return None
