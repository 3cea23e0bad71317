"""``dcflex run`` against a VTN on loopback that registers it normally, then sends one hostile payload of each
class (tests/hostile_corpus.py): the process survives every one, refuses what it must with the right kind,
answers a refused distribution with 454, alerts once per kind, and still acts on the valid event that follows.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from tests.hostile_corpus import CASES, INJECTION, Case
from tests.hostile_vtn import Answer, HostileVtn, free_port, valid
from tests.waiting import until

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Running:
    vtn: HostileVtn
    proc: asyncio.subprocess.Process
    api: str
    log: Path

    async def status(self) -> dict[str, Any]:
        async with aiohttp.ClientSession() as http, http.get(f"{self.api}/status") as r:
            return dict(await r.json())

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def config(vtn: HostileVtn, api_port: int, tmp: Path) -> Path:
    path = tmp / "hostile.toml"
    path.write_text(f"""
[ven]
vtn_url = "{vtn.url}"
ven_name = "dcflex-hostile"
poll_interval_s = 0.5
request_timeout_s = 5.0

[scheduler]
kind = "simulated"

[api]
port = {api_port}

[journal]
path = "{tmp / 'journal.sqlite3'}"

[service]
stop_timeout_s = 10.0
""")
    return path


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def running(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Running]:
    tmp = tmp_path_factory.mktemp("hostile")
    async with HostileVtn(poll_s=0.5) as vtn:
        api_port = free_port()
        log = tmp / "dcflex.log"
        with log.open("wb") as sink:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "gateway.cli", "run", "--config", str(config(vtn, api_port, tmp)),
                stdout=sink, stderr=asyncio.subprocess.STDOUT, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        run = Running(vtn, proc, f"http://127.0.0.1:{api_port}", log)
        try:
            await until("the VEN to register and poll", lambda: vtn.polls > 0, 60, detail=lambda: run.output()[-2000:])
            yield run
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    async with asyncio.timeout(30):
                        await proc.wait()
                except TimeoutError:
                    proc.kill()
                    await proc.wait()


def _answers_454(vtn: HostileVtn) -> list[tuple[str, dict[str, Any]]]:
    """Every message of the VEN carrying eiResponse 454 (its answer to a refused message)."""
    return [(kind, p) for _, kind, p, _ in vtn.received
            if isinstance(p.get("response"), dict) and p["response"].get("response_code") == 454]


async def _answered(run: Running, event_id: str) -> dict[str, Any]:
    def opted() -> dict[str, Any] | None:
        return next((r for r in run.vtn.created(event_id) if r.get("opt_type") == "optIn"), None)
    got: dict[str, Any] = await until(f"an optIn for {event_id[:40]!r}", opted, 30,
                                      detail=lambda: f"answers {run.vtn.created(event_id)}; log: {run.output()[-3000:]}")
    return got


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_each_hostile_class_is_survived_and_the_next_event_acted_on(running: Running, case: Case) -> None:
    vtn = running.vtn
    before = dict((await running.status()).get("vtn_refused") or {})
    answers_454 = len(_answers_454(vtn))
    answers = case.make()
    follow = f"ok-{case.name}"
    vtn.queue.extend(answers)
    vtn.queue.append(Answer(valid(follow)))
    target = vtn.served + len(answers) + 1
    await vtn.wait_served(target, timeout_s=60)
    await _answered(running, follow)
    assert running.proc.returncode is None, running.output()[-3000:]
    after = dict((await running.status()).get("vtn_refused") or {})
    if case.kind is None:
        assert after == before, f"{case.name} is valid input, yet refusals moved: {before} -> {after}"
    else:
        assert after.get(case.kind, 0) == before.get(case.kind, 0) + 1, (case.name, before, after)
    if case.event_id is not None:
        answer = await _answered(running, case.event_id)
        assert answer["event_id"] == case.event_id
    if case.answered_454:
        got = _answers_454(vtn)
        assert len(got) == answers_454 + 1 and not got[-1][1].get("event_responses"), got[-1]


async def test_markup_in_an_event_id_is_escaped_in_everything_dcflex_sends(running: Running) -> None:
    await _answered(running, INJECTION)
    for _, kind, _, raw in running.vtn.received:
        assert b"<ei:evil>" not in raw and b"<x>" not in raw, kind


async def test_a_refused_kind_is_alerted_once_however_often_it_comes(running: Running) -> None:
    log = running.output()
    doctype = [line for line in log.splitlines() if "vtn_input_refused" in line and "[doctype]" in line]
    assert len(doctype) == 1, doctype  # five DOCTYPE payloads were sent
    assert "never acted on" in doctype[0] or "nothing in it was acted on" in doctype[0]
    refused = (await running.status())["vtn_refused"]
    assert refused["doctype"] == 5 and refused["too_large"] >= 4


async def test_sigterm_stops_gracefully_and_says_what_it_left(running: Running) -> None:
    running.proc.send_signal(signal.SIGTERM)
    async with asyncio.timeout(30):
        code = await running.proc.wait()
    assert code == 0, running.output()[-2000:]
    tail = running.output()
    assert "SIGTERM received" in tail and "dcflex stopped on SIGTERM" in tail
    assert "the next start resumes from" in tail
    json.dumps({"log": tail[-200:]})  # the log is text (no binary garbage from a hostile body)
