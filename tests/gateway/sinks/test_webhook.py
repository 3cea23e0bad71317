"""The notices' webhook against a real HTTP receiver on loopback: signed, in order, retried, alerted, kept."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from gateway.clock import SystemClock
from gateway.config.models import NoticesConfig
from gateway.journal import Outbox
from gateway.sinks.webhook import WebhookSink
from tests.waiting import until
from tests.webhook_receiver import Receiver, receiving

SECRET = "s3cret-for-tests"


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with receiving(SECRET) as rec:
        yield rec


def notice(n: int, action: str = "notice") -> dict[str, object]:
    return {"notice_id": "job:42", "action": action, "drop_at": "2026-11-26T15:00:00+00:00", "drop_kw": 120.5 + n,
            "exact": False, "reason": "job 42 ends", "source": "job", "lead_s": 3600.0, "seq": n}


@contextlib.asynccontextmanager
async def sink(tmp_path: Path, url: str, problems: list[tuple[str, str]], secret: str = SECRET,
               retries: int = 2) -> AsyncIterator[WebhookSink]:
    cfg = NoticesConfig(webhook_url=url, webhook_secret=SecretStr(secret), webhook_retries=retries,
                        webhook_backoff_s=0.01, webhook_timeout_s=2.0)

    async def problem(code: str, message: str) -> None:
        problems.append((code, message))

    with Outbox(tmp_path / "outbox.sqlite3") as outbox:
        s = WebhookSink(cfg, outbox, clock=SystemClock(), on_problem=problem, site="west")
        task = asyncio.create_task(s.run())
        try:
            yield s
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def test_notices_arrive_signed_in_order_with_the_site(tmp_path: Path, receiver: Receiver) -> None:
    problems: list[tuple[str, str]] = []
    async with sink(tmp_path, receiver.url, problems) as s:
        await s.emit("alert", {"code": "x"})  # only notices go to the webhook
        for i in range(1, 4):
            await s.emit("notice", notice(i, "update" if i > 1 else "notice"))
        await until("len(receiver.got) == 3", lambda: len(receiver.got) == 3, 5.0, every=0.01)
        assert [g["seq"] for g in receiver.got] == [1, 2, 3] and receiver.bad == []
        assert receiver.got[0] | {"at": None} == {**notice(1), "site": "west", "at": None}
        assert s.stats()["sent"] == 3 and s.stats()["pending"] == 0 and problems == []


async def test_a_failing_receiver_gets_retries_then_an_alert_and_nothing_is_lost(tmp_path: Path, receiver: Receiver) -> None:
    problems: list[tuple[str, str]] = []
    receiver.status = 503
    async with sink(tmp_path, receiver.url, problems) as s:
        await s.emit("notice", notice(1))
        await s.emit("notice", notice(2, "cancel"))
        await until("a problem reported", lambda: problems, 5, every=0.01)
        assert receiver.attempts >= 3  # the first try and two retries
        code, message = problems[0]
        assert code == "webhook_failed" and receiver.url in message and "HTTP 503" in message and "kept" in message
        assert s.stats()["pending"] == 2
        await until("receiver.attempts >= 9", lambda: receiver.attempts >= 9, 10, every=0.01)  # two more cycles of attempts ...
        assert [c for c, _ in problems] == ["webhook_failed"]  # ... and still one alert for the outage
        receiver.status = 200  # back: both arrive, in order
        await until("len(receiver.got) == 2", lambda: len(receiver.got) == 2, 10, every=0.01)
        assert [g["action"] for g in receiver.got] == ["notice", "cancel"]


async def test_a_wrong_secret_is_refused_alerted_and_does_not_block_the_rest(tmp_path: Path, receiver: Receiver) -> None:
    problems: list[tuple[str, str]] = []
    async with sink(tmp_path, receiver.url, problems, secret="not-the-shared-one") as s:
        await s.emit("notice", notice(1))
        await until("a problem reported", lambda: problems, 5.0, every=0.01)
        assert problems[0][0] == "webhook_refused" and "HTTP 401" in problems[0][1]
        assert receiver.got == [] and len(receiver.bad) == 1 and s.stats()["pending"] == 0


def test_the_config_demands_a_secret_with_a_webhook() -> None:
    with pytest.raises(ValueError, match="webhook_secret is required"):
        NoticesConfig(webhook_url="https://grid.example/hook")
