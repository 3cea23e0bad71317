"""The ``dcflex`` command as an operator runs it: check-config, and run against a real VTN."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest

from gateway.cli import main
from simulators.vtn import ScriptedVtn

ROOT = Path(__file__).resolve().parents[1]


def test_check_config_accepts_the_examples(capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("demo", "slurm-site", "ray-site"):
        assert main(["check-config", str(ROOT / "configs" / f"{name}.toml")]) == 0
    assert "OK" in capsys.readouterr().out


def test_check_config_names_every_problem_with_its_key_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[site]\nnodez = 3\nmax_shed_fraction = 2\n[scheduler]\nkind = "pbs"\n')
    assert main(["check-config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "3 problem(s)" in err
    assert "site.nodez: unknown key" in err
    assert "site.max_shed_fraction:" in err
    assert "scheduler.kind:" in err and "'slurm'" in err


def test_check_config_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(tmp_path / "nope.toml")]) == 2
    assert "cannot read the file" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.integration
async def test_run_serves_answers_the_vtn_and_stops_cleanly(tmp_path: Path) -> None:
    port = _free_port()
    async with ScriptedVtn(poll_interval_s=0.5) as vtn:
        cfg = tmp_path / "site.toml"
        cfg.write_text(
            f'[ven]\nvtn_url = "{vtn.vtn_url}"\nven_name = "cli-ven"\nven_id = "cli-ven"\npoll_interval_s = 0.5\n'
            f'[journal]\npath = "{tmp_path / "journal.sqlite3"}"\n'
            f'[api]\nport = {port}\n'
        )
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway.cli", "run", "--config", str(cfg),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=str(tmp_path),
        )
        try:
            await vtn.wait_for_registration("cli-ven", within_s=20)
            async with aiohttp.ClientSession() as http:
                deadline = time.monotonic() + 10
                while True:
                    try:
                        async with http.get(f"http://127.0.0.1:{port}/healthz") as r:
                            assert r.status == 200
                            break
                    except aiohttp.ClientConnectionError:
                        assert time.monotonic() < deadline, "the API never came up"
                        await asyncio.sleep(0.1)
                eid = vtn.add_event("cli-ven", "LOAD_CONTROL", "x-loadControlPercentOffset",
                                    [(timedelta(minutes=30), 10.0)], datetime.now(UTC) + timedelta(minutes=5))
                response = await vtn.wait_for_response(eid, within_s=20)
                assert response.opt_type == "optIn"
                async with http.get(f"http://127.0.0.1:{port}/status") as r:
                    status = await r.json()
                assert status["events"][0]["event_id"] == eid
                assert status["events"][0]["state"] == "noticed"
        finally:
            proc.send_signal(signal.SIGINT)
            out, _ = await asyncio.wait_for(proc.communicate(), timeout=20)
        assert proc.returncode == 0, out.decode()[-3000:]


@pytest.mark.parametrize(("env", "expected"), [
    ({"SLURM_JOB_ID": "42"}, "42"),
    ({"SLURM_JOB_ID": "57", "SLURM_ARRAY_JOB_ID": "50", "SLURM_ARRAY_TASK_ID": "7"}, "50_7"),  # as the adapter names it
    ({}, ""),
])
def test_ack_names_the_job_as_the_slurm_adapter_does(env: dict[str, str], expected: str) -> None:
    from gateway.cli import _slurm_job_id

    assert _slurm_job_id(env) == expected
