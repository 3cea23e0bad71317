"""Refusals the VEN answers: once with 454, even when the VTN answers that with another refused message; report
requests bounded per message and in force; negative periods refused."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from gateway.clock import SystemClock
from gateway.config.models import VenConfig
from gateway.domain import GridEvent, OptDecision
from gateway.exceptions import HostileInput
from gateway.ven import Ven
from gateway.ven.oadr20b.intake import check_report_requests
from tests.hostile_corpus import FIXTURES
from tests.hostile_vtn import Answer, HostileVtn


class Handler:
    def __init__(self) -> None:
        self.events: list[str] = []

    async def on_event(self, event: GridEvent) -> OptDecision:
        self.events.append(event.event_id)
        return OptDecision(True, "ok")

    async def on_cancel(self, event_id: str, reason: str) -> None:
        return None


async def test_a_vtn_answering_our_454_with_more_garbage_gets_no_ping_pong() -> None:
    invalid = (FIXTURES / "schema-invalid.xml").read_bytes()
    handler = Handler()
    async with HostileVtn(poll_s=0.5) as vtn:
        vtn.created_reply = Answer(invalid)
        vtn.queue.append(Answer(invalid))
        async with Ven(VenConfig(vtn_url=vtn.url, poll_interval_s=0.5), handler, SystemClock()) as ven:
            await vtn.wait_served(1)
            await asyncio.sleep(1.5)  # three more polls: room for a loop to show
            answers = [p for p, _ in vtn.sent_by_ven("oadrCreatedEvent") if p["response"]["response_code"] == 454]
            assert len(answers) == 1
            assert ven.refusals.counts == {"schema": 2}  # the distribution, and the VTN's reply to our answer
    assert handler.events == []


def test_report_requests_in_force_are_bounded_and_negative_periods_refused() -> None:
    def payload(n: int, granularity: timedelta = timedelta(minutes=1)) -> dict[str, object]:
        return {"request_id": "r", "report_requests": [
            {"report_request_id": f"rr-{i}", "report_specifier": {"granularity": granularity}} for i in range(n)]}

    check_report_requests(payload(8), in_force=12, limit=20)  # exactly at the limit
    with pytest.raises(HostileInput) as caught:
        check_report_requests(payload(8), in_force=13, limit=20)
    assert caught.value.kind == "too_many" and "13 in force" in str(caught.value)
    check_report_requests(payload(1, timedelta(0)))  # 0: one report, as the spec means it
    with pytest.raises(HostileInput) as caught:
        check_report_requests(payload(1, timedelta(seconds=-5)))
    assert caught.value.kind == "bad_value" and caught.value.message_type == "oadrCreateReport"
