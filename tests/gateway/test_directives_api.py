"""JobDirectives, and the directive and ETA endpoints on a real aiohttp server on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest

from gateway.api import ApiServer, build_app
from gateway.clock import ManualClock
from gateway.jobchannel import CheckpointAcks, JobDirectives

T0 = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)


# -- the store ----------------------------------------------------------------------------------------

async def test_a_checkpoint_request_has_a_deadline_and_increasing_seqs() -> None:
    clock = ManualClock(T0)
    store = JobDirectives(clock)
    first = store.request_checkpoint("r-1", event_id="ev-1", grace_s=120)
    assert (first.job_id, first.kind, first.event_id, first.stop_after) == ("r-1", "checkpoint", "ev-1", True)
    assert first.issued_at == T0 and first.deadline == T0 + timedelta(seconds=120)
    again = store.request_checkpoint("r-1", event_id="ev-2", grace_s=60, stop_after=False)
    assert again.seq > first.seq and store.get("r-1") == again and not again.stop_after
    assert store.get("other") is None


async def test_seqs_keep_growing_after_clear_forgetting_and_a_new_store() -> None:
    """The job ignores seqs it has already acknowledged, so a seq must never go backwards."""
    clock = ManualClock(T0)
    store = JobDirectives(clock, ttl_s=60)
    a = store.request_checkpoint("r-1", event_id="e", grace_s=10)
    assert store.clear("r-1") and store.get("r-1") is None
    b = store.request_checkpoint("r-1", event_id="e", grace_s=10)
    assert b.seq > a.seq
    await clock.advance(3600)
    store.request_checkpoint("r-2", event_id="e", grace_s=10)  # prunes r-1, untouched for an hour
    assert store.get("r-1") is None and len(store) == 1
    c = store.request_checkpoint("r-1", event_id="e", grace_s=10)
    restarted = JobDirectives(clock)  # a gateway restart: an empty store, a later clock
    await clock.advance(1)
    d = restarted.request_checkpoint("r-1", event_id="e", grace_s=10)
    assert b.seq < c.seq < d.seq


async def test_clear_for_an_event_leaves_another_events_request() -> None:
    store = JobDirectives(ManualClock(T0))
    store.request_checkpoint("r-1", event_id="ev-new", grace_s=10)
    assert not store.clear("r-1", event_id="ev-old") and store.get("r-1") is not None
    assert store.clear("r-1", event_id="ev-new") and not store.clear("r-1")
    assert not store.clear("never-seen")


async def test_the_store_is_bounded_in_count_and_age() -> None:
    clock = ManualClock(T0)
    store = JobDirectives(clock, max_jobs=3)
    for i in range(5):
        store.request_checkpoint(f"j{i}", event_id="e", grace_s=1)
    assert len(store) == 3 and store.get("j0") is None and store.get("j4") is not None
    store.report_eta("j2", 5.0, clock.now())  # a write refreshes j2: j3 is now the oldest
    store.request_checkpoint("j5", event_id="e", grace_s=1)
    assert store.get("j3") is None and store.eta("j2") == (T0, 5.0)
    await clock.advance(86_400 + 1)
    store.report_eta("fresh", 1.0, clock.now())
    assert len(store) == 1 and store.eta("j2") is None


async def test_eta_and_bad_values() -> None:
    clock = ManualClock(T0)
    store = JobDirectives(clock)
    assert store.eta("r-1") is None
    store.report_eta("r-1", 30.0, T0)
    store.report_eta("r-1", 12.5, T0 + timedelta(seconds=5))
    assert store.eta("r-1") == (T0 + timedelta(seconds=5), 12.5)
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="seconds_left"):
            store.report_eta("r-1", bad, T0)
        with pytest.raises(ValueError, match="grace_s"):
            store.request_checkpoint("r-1", event_id="e", grace_s=bad)
    with pytest.raises(ValueError, match="positive"):
        JobDirectives(clock, max_jobs=0)


# -- the endpoints ------------------------------------------------------------------------------------

Api = tuple[str, JobDirectives, CheckpointAcks]


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    clock = ManualClock(T0)
    acks = CheckpointAcks()
    store = JobDirectives(clock)
    app = build_app(status=dict, healthy=lambda: True, acks=acks, clock=clock, directives=store)
    async with ApiServer(app, "127.0.0.1", 0) as server:
        yield server.url, store, acks


async def test_directive_endpoint_answers_204_then_the_directive(api: Api) -> None:
    url, store, _ = api
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{url}/v1/jobs/raysubmit_42/directive") as r:
            assert r.status == 204 and await r.read() == b""
        d = store.request_checkpoint("raysubmit_42", event_id="ev-9", grace_s=90, stop_after=False)
        async with http.get(f"{url}/v1/jobs/raysubmit_42/directive") as r:
            assert r.status == 200
            body = await r.json()
    assert body == {"job_id": "raysubmit_42", "seq": d.seq, "kind": "checkpoint", "event_id": "ev-9",
                    "deadline": (T0 + timedelta(seconds=90)).isoformat(), "stop_after": False}
    assert datetime.fromisoformat(body["deadline"]).tzinfo is not None


async def test_an_acknowledgement_withdraws_the_directive_of_its_event_only(api: Api) -> None:
    url, store, acks = api
    store.request_checkpoint("7", event_id="ev-2", grace_s=60)
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{url}/v1/jobs/7/checkpoint-ack", json={"event_id": "ev-1"}) as r:
            assert r.status == 200
        assert store.get("7") is not None  # a late acknowledgement of an older event
        async with http.post(f"{url}/v1/jobs/7/checkpoint-ack", json={"checkpoint_path": "/c/7", "event_id": "ev-2"}) as r:
            assert r.status == 200
        async with http.get(f"{url}/v1/jobs/7/directive") as r:
            assert r.status == 204
    ack = acks.get("7")
    assert ack is not None and ack.checkpoint_path == "/c/7"


async def test_eta_is_accepted_and_stored(api: Api) -> None:
    url, store, _ = api
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{url}/v1/jobs/12_3/eta", json={"seconds_left": 42}) as r:
            assert r.status == 202
            body = await r.json()
        async with http.post(f"{url}/v1/jobs/12_3/eta", json={"seconds_left": 0.5}) as r:
            assert r.status == 202
    assert body == {"ok": True, "job_id": "12_3", "at": T0.isoformat()}
    assert store.eta("12_3") == (T0, 0.5)


@pytest.mark.parametrize(
    ("method", "path", "body", "message"),
    [
        ("GET", "/v1/jobs/bad%20id/directive", None, "not a valid job id"),
        ("POST", "/v1/jobs/bad%20id/eta", b'{"seconds_left": 1}', "not a valid job id"),
        ("POST", "/v1/jobs/42/eta", None, 'like {"seconds_left": 42.5}'),
        ("POST", "/v1/jobs/42/eta", b"{not json", "it is not JSON"),
        ("POST", "/v1/jobs/42/eta", b"[1]", 'like {"seconds_left": 42.5}'),
        ("POST", "/v1/jobs/42/eta", b'{"eta": 5}', 'like {"seconds_left": 42.5}'),
        ("POST", "/v1/jobs/42/eta", b'{"seconds_left": "5"}', "must be a number, not str"),
        ("POST", "/v1/jobs/42/eta", b'{"seconds_left": true}', "must be a number, not bool"),
        ("POST", "/v1/jobs/42/eta", b'{"seconds_left": -1}', "between 0 and"),
        ("POST", "/v1/jobs/42/eta", b'{"seconds_left": NaN}', "between 0 and"),
        ("POST", "/v1/jobs/42/eta", b'{"seconds_left": Infinity}', "between 0 and"),
        ("POST", "/v1/jobs/42/eta", b'{"seconds_left": 1' + b"0" * 400 + b"}", "between 0 and"),
    ],
)
async def test_bad_requests_are_refused_with_a_reason(api: Api, method: str, path: str, body: bytes | None,
                                                      message: str) -> None:
    url, store, _ = api
    async with aiohttp.ClientSession() as http:
        async with http.request(method, f"{url}{path}", data=body, headers={"content-type": "application/json"}) as r:
            assert r.status == 400
            answer = await r.json()
    assert answer["ok"] is False and message in answer["error"]
    assert store.eta("42") is None


async def test_oversized_eta_body_is_refused(api: Api) -> None:
    url, store, _ = api
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{url}/v1/jobs/42/eta", data=b'{"seconds_left": 1, "pad": "' + b"x" * 100_000 + b'"}') as r:
            assert r.status == 413
    assert store.eta("42") is None


async def test_without_a_store_the_app_is_as_before() -> None:
    acks = CheckpointAcks()
    acks.expect("1")  # a Slurm adapter signalled job 1
    app = build_app(status=dict, healthy=lambda: True, acks=acks, clock=ManualClock(T0))
    async with ApiServer(app, "127.0.0.1", 0) as server, aiohttp.ClientSession() as http:
        async with http.get(f"{server.url}/v1/jobs/1/directive") as r:
            assert r.status == 404
        async with http.post(f"{server.url}/v1/jobs/1/checkpoint-ack", json={"checkpoint_path": "/c"}) as r:
            assert r.status == 200
    ack = acks.get("1")
    assert ack is not None and ack.checkpoint_path == "/c"


async def test_an_eta_from_a_job_the_gateway_does_not_know_is_404() -> None:
    store = JobDirectives(ManualClock(T0))
    on_cluster = {"12_3"}

    async def known(job_id: str) -> bool:
        return job_id in on_cluster

    app = build_app(status=dict, healthy=lambda: True, acks=CheckpointAcks(), clock=ManualClock(T0), directives=store,
                    known_job=known)
    async with ApiServer(app, "127.0.0.1", 0) as server, aiohttp.ClientSession() as http:
        async with http.post(f"{server.url}/v1/jobs/ghost/eta", json={"seconds_left": 5}) as r:
            assert r.status == 404 and "not one the gateway knows" in (await r.json())["error"]
        async with http.post(f"{server.url}/v1/jobs/12_3/eta", json={"seconds_left": 5}) as r:
            assert r.status == 202  # on the cluster: its expected end
        store.request_checkpoint("asked", event_id="e", grace_s=60)
        async with http.post(f"{server.url}/v1/jobs/asked/eta", json={"seconds_left": 5}) as r:
            assert r.status == 202  # asked to checkpoint: its checkpoint's ETA
    assert store.eta("ghost") is None and store.eta("12_3") == (T0, 5.0)
