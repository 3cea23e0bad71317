"""The HTTP API on a real aiohttp server on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import aiohttp
import pytest

from gateway.api import ApiServer, build_app
from gateway.clock import ManualClock
from gateway.jobchannel import CheckpointAcks

T0 = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
async def api() -> AsyncIterator[tuple[str, CheckpointAcks]]:
    acks = CheckpointAcks()
    status = {"events": [{"event_id": "e1", "state": "holding"}], "site_kw": 12.5}
    app = build_app(status=lambda: status, healthy=lambda: True, acks=acks, clock=ManualClock(T0))
    async with ApiServer(app, "127.0.0.1", 0) as server:
        yield server.url, acks


async def test_healthz_and_status(api: tuple[str, CheckpointAcks]) -> None:
    url, _ = api
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{url}/healthz") as r:
            assert r.status == 200 and await r.json() == {"ok": True}
        async with http.get(f"{url}/status") as r:
            body = await r.json()
    assert body["events"][0]["state"] == "holding" and body["site_kw"] == 12.5


async def test_checkpoint_ack_reaches_a_waiting_adapter(api: tuple[str, CheckpointAcks]) -> None:
    url, acks = api
    acks.expect("1234_5")  # what an adapter does just before it asks the job to checkpoint
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{url}/v1/jobs/1234_5/checkpoint-ack", json={"checkpoint_path": "/ckpt/step-900"}) as r:
            assert r.status == 200 and (await r.json())["job_id"] == "1234_5"
    ack = await acks.wait("1234_5")
    assert ack.checkpoint_path == "/ckpt/step-900" and ack.at == T0


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        ("/v1/jobs/bad%20id/checkpoint-ack", b"{}", "not a valid job id"),
        ("/v1/jobs/42/checkpoint-ack", b"{not json", "body must be JSON"),
        ("/v1/jobs/42/checkpoint-ack", b"[1, 2]", "JSON object"),
        ("/v1/jobs/42/checkpoint-ack", b'{"checkpoint_path": 7}', "must be strings"),
    ],
)
async def test_bad_acks_are_refused_with_a_reason(api: tuple[str, CheckpointAcks], path: str, body: bytes,
                                                  message: str) -> None:
    url, acks = api
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{url}{path}", data=body, headers={"content-type": "application/json"}) as r:
            assert r.status == 400
            assert message in (await r.json())["error"]
    assert acks.get("42") is None


async def test_oversized_body_is_refused(api: tuple[str, CheckpointAcks]) -> None:
    url, _ = api
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{url}/v1/jobs/42/checkpoint-ack", data=b"x" * 100_000) as r:
            assert r.status == 413
            assert "Too Large" in (await r.json())["error"]


async def test_an_ack_nobody_asked_for_is_404_and_kept_nowhere(api: tuple[str, CheckpointAcks]) -> None:
    url, acks = api
    async with aiohttp.ClientSession() as http:
        for n in range(50):
            async with http.post(f"{url}/v1/jobs/ghost-{n}/checkpoint-ack", json={}) as r:
                assert r.status == 404 and "asked no checkpoint" in (await r.json())["error"]
    assert all(acks.get(f"ghost-{n}") is None for n in range(50)) and not acks._acks and not acks._expected


@pytest.mark.parametrize(("body", "message"), [
    (b"[" * 8000, "nests too deeply"),
    (b'{"checkpoint_path": ' + b"9" * 5000 + b"}", "cannot be read"),
    (b'{"checkpoint_path": "\x80"}', "not UTF-8"),
    (b'{"a": 1', "not JSON"),
])
async def test_a_hostile_body_gets_a_json_400_not_a_bare_500(api: tuple[str, CheckpointAcks], body: bytes,
                                                            message: str) -> None:
    url, acks = api
    acks.expect("42")
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{url}/v1/jobs/42/checkpoint-ack", data=body,
                             headers={"content-type": "application/json"}) as r:
            assert r.status == 400 and r.content_type == "application/json"
            assert message in (await r.json())["error"]


async def test_unknown_paths_and_methods_answer_json(api: tuple[str, CheckpointAcks]) -> None:
    url, _ = api
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{url}/nope") as r:
            assert r.status == 404 and (await r.json())["ok"] is False
        async with http.delete(f"{url}/status") as r:
            assert r.status == 405 and "DELETE /status" in (await r.json())["error"]


async def test_a_failing_handler_answers_a_json_500_and_the_server_goes_on() -> None:
    def broken() -> dict[str, object]:
        raise RuntimeError("boom")

    app = build_app(status=broken, healthy=lambda: True, acks=CheckpointAcks(), clock=ManualClock(T0))
    async with ApiServer(app, "127.0.0.1", 0) as server, aiohttp.ClientSession() as http:
        async with http.get(f"{server.url}/status") as r:
            assert r.status == 500 and "could not handle GET /status (RuntimeError)" in (await r.json())["error"]
        async with http.get(f"{server.url}/healthz") as r:
            assert r.status == 200


def test_expectations_are_bounded() -> None:
    acks = CheckpointAcks(max_jobs=3)
    for n in range(10):
        acks.expect(f"j{n}")
    assert list(acks._expected) == ["j7", "j8", "j9"]
