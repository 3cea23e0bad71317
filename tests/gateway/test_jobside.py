"""The job-side helper against the real gateway API on loopback (aiohttp server, urllib client thread)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

import pytest

from gateway.api import ApiServer, build_app
from gateway.clock import ManualClock
from gateway.jobchannel import CheckpointAcks, JobDirectives
from gateway.jobside import JobHelper
from gateway.jobside.link import settings_from_env
from tests.waiting import until

T0 = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)
POLL_S = 0.05
MakeHelper = Callable[[str | None, str | None], JobHelper]
REPO = Path(__file__).resolve().parents[2]


class Gateway:
    """The gateway side of the conversation: the real app with a directive store and acks."""

    def __init__(self) -> None:
        self.clock = ManualClock(T0)
        self.acks = CheckpointAcks()
        self.directives = JobDirectives(self.clock)

    def server(self, port: int = 0) -> ApiServer:
        app = build_app(status=dict, healthy=lambda: True, acks=self.acks, clock=self.clock, directives=self.directives)
        return ApiServer(app, "127.0.0.1", port)


@pytest.fixture
async def gw() -> AsyncIterator[tuple[Gateway, str]]:
    g = Gateway()
    async with g.server() as server:
        yield g, server.url


@pytest.fixture
async def helpers() -> AsyncIterator[MakeHelper]:
    """Helpers closed while the event loop still runs, so the server can answer a poll in flight."""
    made: list[JobHelper] = []

    def make(url: str | None, job_id: str | None = "ray-1") -> JobHelper:
        helper = JobHelper(url, job_id, poll_s=POLL_S, retry_max_s=0.2)
        made.append(helper)
        return helper

    yield make
    for helper in made:
        await asyncio.to_thread(helper.close)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_a_directive_reaches_the_job_within_the_poll_interval(gw: tuple[Gateway, str], helpers: MakeHelper) -> None:
    g, url = gw
    helper = helpers(url, "ray-1")
    assert helper.should_checkpoint() is False
    await asyncio.sleep(3 * POLL_S)  # a few polls answered 204
    issued = g.directives.request_checkpoint("ray-1", event_id="ev-1", grace_s=300, stop_after=False)
    asked_at = time.monotonic()
    await until("the helper to see the directive", helper.should_checkpoint, 3.0, every=0.005)
    took = time.monotonic() - asked_at
    assert took < 10 * POLL_S  # one poll interval plus the request, with room for a loaded machine
    seen = helper.current()
    assert seen is not None and (seen.seq, seen.event_id, seen.deadline, seen.stop_after, seen.source) == (
        issued.seq, "ev-1", issued.deadline, False, "gateway")


async def test_acknowledge_reaches_the_gateway_and_clears_the_flag_until_a_newer_request(
        gw: tuple[Gateway, str], helpers: MakeHelper) -> None:
    g, url = gw
    helper = helpers(url, "ray-1")
    helper.should_checkpoint()
    g.directives.request_checkpoint("ray-1", event_id="ev-1", grace_s=300)
    await until("the helper to see the directive", helper.should_checkpoint, 3.0, every=0.005)
    helper.acknowledge("/ckpt/step-120")
    assert helper.should_checkpoint() is False
    ack = await asyncio.wait_for(g.acks.wait("ray-1"), 3)
    assert (ack.checkpoint_path, ack.event_id) == ("/ckpt/step-120", "ev-1")  # event id from the directive
    assert g.directives.get("ray-1") is None  # the acknowledgement withdrew it
    await asyncio.sleep(4 * POLL_S)
    assert helper.should_checkpoint() is False
    newer = g.directives.request_checkpoint("ray-1", event_id="ev-2", grace_s=300)
    await until("the helper to see the directive", helper.should_checkpoint, 3.0, every=0.005)
    seen = helper.current()
    assert seen is not None and seen.seq == newer.seq


async def test_a_directive_still_served_after_its_acknowledgement_is_not_redone(
        gw: tuple[Gateway, str], helpers: MakeHelper) -> None:
    """The job names another event in its acknowledgement, so the gateway keeps serving the request:
    the helper's seq guard alone keeps the flag down."""
    g, url = gw
    helper = helpers(url, "ray-1")
    helper.should_checkpoint()
    g.directives.request_checkpoint("ray-1", event_id="ev-1", grace_s=300)
    await until("the helper to see the directive", helper.should_checkpoint, 3.0, every=0.005)
    helper.acknowledge("/ckpt/a", event_id="ev-0")
    ack = await asyncio.wait_for(g.acks.wait("ray-1"), 3)
    assert ack.event_id == "ev-0" and g.directives.get("ray-1") is not None
    await asyncio.sleep(5 * POLL_S)  # several polls see the same directive
    assert helper.should_checkpoint() is False and helper.current() is None


async def test_eta_lands_latest_value_wins(gw: tuple[Gateway, str], helpers: MakeHelper) -> None:
    g, url = gw
    helper = helpers(url, "ray-1")
    for left in (30, 20, 12.5):
        helper.report_eta(left)
    helper.report_eta(-1)  # ignored with a warning, never raised
    await until('g.directives.eta("ray-1") == (T0, 12.5)', lambda: g.directives.eta("ray-1") == (T0, 12.5), 3.0, every=0.005)
    assert helper.flush(1.0)


async def test_a_withdrawn_directive_clears_the_flag(gw: tuple[Gateway, str], helpers: MakeHelper) -> None:
    g, url = gw
    helper = helpers(url, "ray-1")
    helper.should_checkpoint()
    g.directives.request_checkpoint("ray-1", event_id="ev-1", grace_s=300)
    await until("the helper to see the directive", helper.should_checkpoint, 3.0, every=0.005)
    g.directives.clear("ray-1")  # event cancelled
    await until("the helper to see no directive", lambda: not helper.should_checkpoint(), 3.0, every=0.005)
    assert helper.current() is None


async def test_directives_for_asyncio_and_threads(gw: tuple[Gateway, str], helpers: MakeHelper) -> None:
    g, url = gw
    helper = helpers(url, "ray-1")
    assert await asyncio.to_thread(helper.wait_directive, 0.1) is None
    stream = helper.directives()
    first = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(2 * POLL_S)
    assert not first.done()
    issued = g.directives.request_checkpoint("ray-1", event_id="ev-1", grace_s=60)
    got = await asyncio.wait_for(first, 3)
    assert got.seq == issued.seq
    waited = await asyncio.to_thread(helper.wait_directive, 2.0)
    assert waited is not None and waited.seq == issued.seq  # pending: returned at once
    helper.acknowledge("/c/1")
    newer = g.directives.request_checkpoint("ray-1", event_id="ev-2", grace_s=60)
    got = await asyncio.wait_for(anext(stream), 3)
    assert got.seq == newer.seq and got.event_id == "ev-2"
    await stream.aclose()


async def test_unreachable_gateway_stays_fast_and_the_ack_is_delivered_when_it_comes_up(
        helpers: MakeHelper, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="dcflex.jobside")
    port = closed_port()
    helper = helpers(f"http://127.0.0.1:{port}", "1234_5")
    n = 20_000
    t0 = time.perf_counter()
    for _ in range(n):
        assert not helper.should_checkpoint()
    per_call = (time.perf_counter() - t0) / n
    assert per_call < 5e-6
    t0 = time.perf_counter()
    helper.acknowledge("/shared/ckpt/1234_5", event_id="ev-7")
    helper.report_eta(3)
    assert time.perf_counter() - t0 < 0.05  # queued, not sent inline
    await asyncio.sleep(0.4)  # several failed polls and sends
    outages = [r for r in caplog.records if "cannot reach the gateway" in r.getMessage()]
    assert len(outages) == 1 and outages[0].levelno == logging.WARNING
    g = Gateway()
    async with g.server(port):
        ack = await asyncio.wait_for(g.acks.wait("1234_5"), 5)
        assert (ack.checkpoint_path, ack.event_id) == ("/shared/ckpt/1234_5", "ev-7")
        await until('g.directives.eta("1234_5") is not None', lambda: g.directives.eta("1234_5") is not None, 3.0, every=0.005)
        assert await asyncio.to_thread(helper.flush, 2.0)
    assert any("reachable again" in r.getMessage() for r in caplog.records)
    assert not helper.should_checkpoint()


async def test_sigusr1_sets_the_flag_and_keeps_the_previous_handler(helpers: MakeHelper,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="dcflex.jobside")
    earlier: list[int] = []

    def previous_handler(num: int, frame: FrameType | None) -> None:
        earlier.append(num)

    original = signal.signal(signal.SIGUSR1, previous_handler)
    try:
        helper = helpers(None, "77")  # no gateway configured: signals still work
        assert helper.install_signal_handler(signal.SIGUSR1)
        assert not helper.should_checkpoint()
        os.kill(os.getpid(), signal.SIGUSR1)
        await asyncio.sleep(0)
        assert helper.should_checkpoint() and earlier == [signal.SIGUSR1]
        asked = await asyncio.to_thread(helper.wait_directive, 1.0)
        assert asked is not None and asked.source == "signal" and asked.job_id == "77"
        helper.acknowledge("/c/77")  # acknowledged locally; nothing to send it to
        assert not helper.should_checkpoint()
        assert await asyncio.to_thread(helper.wait_directive, 0.05) is None
    finally:
        signal.signal(signal.SIGUSR1, original)
    messages = [r.getMessage() for r in caplog.records]
    assert any("not sent: no gateway configured" in m for m in messages)
    assert any("requested by SIGUSR1" in m for m in messages)


async def test_settings_from_the_environment() -> None:
    s = settings_from_env({"DCFLEX_GATEWAY_URL": "http://gw:8080", "SLURM_JOB_ID": "900", "SLURM_ARRAY_JOB_ID": "880",
                           "SLURM_ARRAY_TASK_ID": "4", "DCFLEX_POLL_S": "soon", "DCFLEX_RESUME_FROM": "/c/s.json"})
    assert (s.gateway_url, s.job_id, s.poll_s, s.resume_from) == ("http://gw:8080", "880_4", 5.0, "/c/s.json")
    s = settings_from_env({"DCFLEX_JOB_ID": "raysubmit_1", "SLURM_JOB_ID": "900", "DCFLEX_POLL_S": "0.5"})
    assert (s.job_id, s.poll_s, s.resume_from) == ("raysubmit_1", 0.5, None)
    helper = JobHelper.from_env({"DCFLEX_GATEWAY_URL": "http://gw:8080", "DCFLEX_JOB_ID": "bad id"})
    helper.acknowledge("/x")  # refused locally with a log line, never raised
    assert helper.resume_from() is None and not helper.should_checkpoint()
    helper.close()


async def test_importing_the_helper_pulls_in_no_gateway_dependencies() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-X", "importtime", "-c", "import gateway.jobside, gateway.jobside.ray",
        cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate()
    assert proc.returncode == 0
    modules = {line.rsplit("|", 1)[-1].strip() for line in err.decode().splitlines() if "|" in line}
    assert "gateway.jobside" in modules
    heavy = {m for m in modules if m.split(".")[0] in {"aiohttp", "pydantic", "openleadr", "ray", "numpy"}}
    assert not heavy


async def _run_example(url: str, tmp: Path, *extra: str, resume: str | None = None) -> list[dict[str, object]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DCFLEX_", "SLURM_"))}
    env |= {"DCFLEX_GATEWAY_URL": url, "DCFLEX_JOB_ID": "ray-ex", "DCFLEX_POLL_S": str(POLL_S),
            "PYTHONPATH": str(REPO)}
    if resume:
        env["DCFLEX_RESUME_FROM"] = resume
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(REPO / "docs/examples/train_loop.py"), "--checkpoint-dir", str(tmp), *extra,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    lines: list[dict[str, object]] = []
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(15):
            async for raw in proc.stdout:
                lines.append(json.loads(raw))
            await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, (await proc.stderr.read() if proc.stderr else b"").decode()
    return lines


async def test_the_example_loop_checkpoints_on_request_and_resumes(gw: tuple[Gateway, str], tmp_path: Path) -> None:
    g, url = gw
    first_run = asyncio.ensure_future(_run_example(url, tmp_path, "--steps", "100000", "--step-s", "0.002"))
    await asyncio.sleep(0.5)  # the job is up and polling (or about to be: then its first poll sees the request)
    g.directives.request_checkpoint("ray-ex", event_id="ev-5", grace_s=120)
    lines = await first_run
    ckpt = next(line for line in lines if line["event"] == "checkpoint")
    assert ckpt["event_id"] == "ev-5" and ckpt["source"] == "gateway"
    assert lines[-1] == {"event": "stopping", "step": ckpt["step"], "acknowledged": True}
    ack = await asyncio.wait_for(g.acks.wait("ray-ex"), 1)
    assert ack.checkpoint_path == ckpt["path"] and ack.event_id == "ev-5"
    saved = json.loads(await asyncio.to_thread(Path(str(ckpt["path"])).read_text))["step"]
    assert saved == ckpt["step"] and saved > 0
    eta = g.directives.eta("ray-ex")
    assert eta is not None and eta[1] == 1.0

    # Resubmitted after the event with the checkpoint to resume from: the counter continues.
    resumed = await _run_example(url, tmp_path, "--steps", str(saved + 60), "--step-s", "0", resume=str(ckpt["path"]))
    assert resumed[0] == {"event": "start", "step": saved, "resumed_from": ckpt["path"]}
    assert resumed[-1] == {"event": "done", "step": saved + 60}
    assert not any(line["event"] == "checkpoint" for line in resumed)  # the acknowledged request is not redone
