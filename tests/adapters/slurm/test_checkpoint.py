"""The job side of a checkpoint (``dcflex ack``) and the adapter side (``AckWaiter``), without Slurm;
and ``describe()``, which needs no Slurm either. The real round trip is in test_adapter_real.py."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from adapters.slurm.adapter import SlurmAdapter
from adapters.slurm.checkpoint import AckWaiter, Armed
from adapters.slurm.tiers import TierResolver
from gateway.api import ApiServer, build_app
from gateway.cli import main
from gateway.clock import SystemClock
from gateway.config.models import SchedulerConfig, SlurmSchedulerConfig, TiersConfig
from gateway.domain import Action, ActionKind
from gateway.jobchannel import CheckpointAcks
from gateway.jobchannel.acks import Ack

# ------------------------------------------------------------------------------ dcflex ack


@pytest.fixture
async def gateway() -> AsyncIterator[tuple[str, CheckpointAcks]]:
    acks = CheckpointAcks()
    app = build_app(status=dict, healthy=lambda: True, acks=acks, clock=SystemClock())
    async with ApiServer(app, "127.0.0.1", 0) as server:
        yield server.url, acks


async def test_dcflex_ack_posts_the_acknowledgement(gateway: tuple[str, CheckpointAcks],
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    url, acks = gateway
    acks.expect("4242_3")  # the adapter signalled it
    argv = ["ack", "4242_3", "--path", "/ckpt/step-17", "--event", "ev-9", "--gateway", url]
    code = await asyncio.to_thread(main, argv)  # the CLI blocks; the server runs on this loop
    assert code == 0 and "job 4242_3 checkpoint acknowledged" in capsys.readouterr().out
    ack = acks.get("4242_3")
    assert ack is not None and (ack.checkpoint_path, ack.event_id) == ("/ckpt/step-17", "ev-9")


async def test_dcflex_ack_reads_job_and_gateway_from_the_environment(
        gateway: tuple[str, CheckpointAcks], monkeypatch: pytest.MonkeyPatch) -> None:
    url, acks = gateway
    acks.expect("77")
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("DCFLEX_GATEWAY_URL", url + "/")
    assert await asyncio.to_thread(main, ["ack"]) == 0
    assert acks.get("77") is not None


async def test_dcflex_ack_for_a_job_nobody_asked_says_so(gateway: tuple[str, CheckpointAcks],
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    url, acks = gateway
    assert await asyncio.to_thread(main, ["ack", "999", "--gateway", url]) != 0
    assert "asked no checkpoint of job 999" in capsys.readouterr().err and acks.get("999") is None


def test_dcflex_ack_without_a_gateway_fails_clearly_and_fast(capsys: pytest.CaptureFixture[str]) -> None:
    started = time.monotonic()
    assert main(["ack", "12", "--gateway", "http://127.0.0.1:9"]) == 1
    err = capsys.readouterr().err
    assert "cannot reach the gateway at http://127.0.0.1:9" in err and "job 12's checkpoint was not acknowledged" in err
    assert time.monotonic() - started < 5


async def test_dcflex_ack_reports_a_refusal(gateway: tuple[str, CheckpointAcks], capsys: pytest.CaptureFixture[str]) -> None:
    url, _ = gateway
    long_path = "/x" * 3000  # the API refuses paths over 4096 characters
    assert await asyncio.to_thread(main, ["ack", "12", "--path", long_path, "--gateway", url]) == 1
    assert "refused the acknowledgement of job 12 (HTTP 400)" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["ack", "12;ls"], ["ack", "12", "--gateway", "file:///etc/passwd"]])
def test_dcflex_ack_refuses_bad_input(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    assert main(argv) == 2


# ------------------------------------------------------------------------------ AckWaiter


async def test_a_stale_marker_is_removed_and_only_a_new_one_counts(tmp_path: Path) -> None:
    marker = tmp_path / "acks" / "5"
    marker.parent.mkdir()
    marker.write_text("/ckpt/old\n")
    waiter = AckWaiter(None, str(tmp_path / "acks" / "{job_id}"), SystemClock(), poll_s=0.02)
    armed = waiter.arm("5")
    assert not marker.exists() and waiter.check(armed) is None

    async def job_writes_it() -> None:
        await asyncio.sleep(0.1)
        marker.write_text("/ckpt/step-900\n")

    task = asyncio.create_task(job_writes_it())
    got = await waiter.wait(armed, grace_s=5.0)
    await task
    assert got is not None and (got.via, got.checkpoint_path) == ("marker", "/ckpt/step-900")


def test_a_marker_that_could_not_be_removed_counts_only_once_rewritten(tmp_path: Path) -> None:
    """When ``arm`` cannot delete an old marker (another owner's file), it notes its identity instead."""
    marker = tmp_path / "6"
    marker.write_text("/ckpt/old\n")
    os.utime(marker, ns=(1_000_000_000, 1_000_000_000))
    st = marker.stat()
    waiter = AckWaiter(None, str(tmp_path / "{job_id}"), SystemClock())
    armed = Armed("6", datetime.now(UTC), marker, (st.st_ino, st.st_mtime_ns))
    assert waiter.check(armed) is None
    marker.write_text("/ckpt/step-3\n")  # the job writes it again: a new acknowledgement
    got = waiter.check(armed)
    assert got is not None and (got.via, got.checkpoint_path) == ("marker", "/ckpt/step-3")


async def test_an_http_ack_from_before_the_signal_does_not_count(tmp_path: Path) -> None:
    acks = CheckpointAcks()
    acks.ack(Ack("8", datetime.now(UTC), "/ckpt/earlier"))
    waiter = AckWaiter(acks, None, SystemClock(), poll_s=0.02)
    armed = waiter.arm("8")
    started = time.monotonic()
    assert await waiter.wait(armed, grace_s=0.2) is None
    assert 0.2 <= time.monotonic() - started < 1.0
    acks.ack(Ack("8", datetime.now(UTC), "/ckpt/now"))
    got = waiter.check(armed)
    assert got is not None and (got.via, got.checkpoint_path) == ("http", "/ckpt/now")
    assert "POST /v1/jobs/8/checkpoint-ack" in waiter.channels("8")


# ------------------------------------------------------------------------------- describe


def test_describe_without_a_state_read_says_what_it_will_run() -> None:
    cfg = SchedulerConfig(kind="slurm", slurm=SlurmSchedulerConfig(scontrol="/opt/slurm/bin/scontrol"))
    adapter = SlurmAdapter(cfg, TierResolver(TiersConfig()), min_cap_w=150.0, max_cap_w=400.0)
    at = datetime.now(UTC)

    def describe(kind: ActionKind, **kw: object) -> list[str]:
        return adapter.describe(Action(key="ev-1/x/1", kind=kind, at=at, **kw))  # type: ignore[arg-type]

    assert describe(ActionKind.PAUSE, job_id="12") == ["/opt/slurm/bin/scontrol suspend 12"]
    assert describe(ActionKind.RESTART, job_id="12") == ["/opt/slurm/bin/scontrol release 12"]
    stop = describe(ActionKind.CHECKPOINT_STOP, job_id="12")
    assert stop[0].startswith("# job 12 not seen yet") and stop[-1] == "/opt/slurm/bin/scontrol requeuehold 12"
    assert describe(ActionKind.CAP, job_id="12", watts=90.0)[-1] == (
        "srun --overlap --jobid=12 -w '<node>' nvidia-smi -pl 150")
    assert describe(ActionKind.HOLD_NODES, nodes=("g1", "g2")) == [
        "/opt/slurm/bin/scontrol update NodeName=g1,g2 State=DRAIN 'Reason=dcflex ev-1'"]
    assert describe(ActionKind.RELEASE_NODES, nodes=("g1",))[0] == "/opt/slurm/bin/scontrol update NodeName=g1 State=RESUME"
    assert describe(ActionKind.RESUME, job_id="1;reboot")[0].startswith("# refused: ")
