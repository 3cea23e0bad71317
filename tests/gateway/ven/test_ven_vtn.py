"""The dcflex VEN against openleadr's real VTN (ScriptedVtn) over HTTP on loopback.

The VTN asks for 1 s polls; the VEN is configured for 0.2 s (it polls at the shorter of the two),
so each exchange takes a fraction of a second. A small recording handler stands in for the engine.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import socket
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gateway.clock import Clock, ManualClock, ScaledClock, SystemClock
from gateway.config.models import VenConfig
from gateway.domain import GridEvent, OptDecision
from gateway.exceptions import AdapterUnavailable, ConfigError
from gateway.ven import ENDED_REASON, IMPLIED_CANCEL_REASON, VTN_CANCEL_REASON, EventBook, Ven
from gateway.ven.oadr20b import startafter_offset
from simulators.vtn import POWER_KW, ScriptedVtn

VEN_ID = "ven-dc-1"
HOUR = timedelta(hours=1)


class Feed:
    """A ``SiteFeed`` reading the site's kW from ``read``, announcing no drops."""

    announces_drops = False

    def __init__(self, read: Callable[[], float | None]) -> None:
        self.site_kw = read

    def announced_drops(self) -> dict[str, tuple[datetime, float]]:
        return {}


class RecordingHandler:
    """Answers with ``decide`` (default: opt in, except unknown signals) and records every call."""

    def __init__(self, decide: Callable[[GridEvent], OptDecision] | None = None) -> None:
        self.events: list[GridEvent] = []
        self.cancels: list[tuple[str, str]] = []
        self._decide = decide or _default_decision
        self._changed = asyncio.Event()

    async def on_event(self, event: GridEvent) -> OptDecision:
        self.events.append(event)
        self._bump()
        return self._decide(event)

    async def on_cancel(self, event_id: str, reason: str) -> None:
        self.cancels.append((event_id, reason))
        self._bump()

    def seen(self, event_id: str) -> list[GridEvent]:
        return [e for e in self.events if e.event_id == event_id]

    async def wait_for(self, predicate: Callable[[], bool], within_s: float = 5.0) -> None:
        async with asyncio.timeout(within_s):
            while True:
                changed = self._changed
                if predicate():
                    return
                await changed.wait()

    def _bump(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()


def _default_decision(event: GridEvent) -> OptDecision:
    unknown = [s.name for s in event.signals if s.kind is None]
    return OptDecision(False, f"unsupported signal {unknown[0]}") if unknown else OptDecision(True, "planned")


def config(vtn: ScriptedVtn, **overrides: Any) -> VenConfig:
    values: dict[str, Any] = {"vtn_url": vtn.vtn_url, "ven_name": "dcflex-test", "ven_id": VEN_ID,
                              "poll_interval_s": 0.2, "request_timeout_s": 5.0, "report_granularity_s": 1.0}
    values.update(overrides)
    return VenConfig(**values)


def soon(minutes: float = 10) -> datetime:
    return datetime.now(UTC) + timedelta(minutes=minutes)


def dispatch(vtn: ScriptedVtn, *, start: datetime | None = None, **options: Any) -> str:
    intervals = options.pop("intervals", [(timedelta(minutes=30), 500.0), (timedelta(minutes=30), 400.0)])
    return vtn.add_event(VEN_ID, options.pop("signal_name", "LOAD_DISPATCH"), options.pop("signal_type", "setpoint"),
                         intervals, start or soon(), **options)


@pytest.fixture
async def vtn() -> AsyncIterator[ScriptedVtn]:
    async with ScriptedVtn(poll_interval_s=1.0) as server:
        yield server


@pytest.fixture
def handler() -> RecordingHandler:
    return RecordingHandler()


@pytest.fixture
async def ven(vtn: ScriptedVtn, handler: RecordingHandler) -> AsyncIterator[Ven]:
    async with Ven(config(vtn), handler, SystemClock(), Feed(lambda: 812.5), resync_every_polls=0) as client:
        yield client


# ------------------------------------------------------------------ registration


@pytest.mark.integration
async def test_registers_with_the_fixed_ven_id_and_polls_at_the_shorter_interval(vtn: ScriptedVtn, ven: Ven) -> None:
    assert vtn.registered_ven_ids == [VEN_ID]
    assert (ven.ven_id, ven.registration_id, ven.running) == (VEN_ID, f"reg-{VEN_ID}", True)
    assert vtn.requested_poll_interval == timedelta(seconds=1)
    assert ven.poll_interval == timedelta(seconds=0.2)


@pytest.mark.integration
async def test_the_vtn_assigns_an_id_when_none_is_configured(vtn: ScriptedVtn, handler: RecordingHandler) -> None:
    async with Ven(config(vtn, ven_id=None, poll_interval_s=30), handler, SystemClock()) as ven:
        assert ven.ven_id is not None and ven.ven_id in vtn.registered_ven_ids
        assert ven.poll_interval == timedelta(seconds=1)  # the VTN asked for faster polls than configured


async def test_unreadable_tls_files_are_a_config_error(tmp_path: Any, handler: RecordingHandler) -> None:
    cfg = VenConfig(vtn_url="https://127.0.0.1:1/OpenADR2/Simple/2.0b", ven_id=VEN_ID, cert=tmp_path / "missing.pem",
                    key=tmp_path / "missing.key", ca_file=tmp_path / "ca.pem")
    with pytest.raises(ConfigError, match=r"missing\.pem"):
        await Ven(cfg, handler, SystemClock()).start()


@pytest.mark.integration
async def test_an_unreachable_vtn_fails_start_clearly(handler: RecordingHandler) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cfg = VenConfig(vtn_url=f"http://127.0.0.1:{port}/OpenADR2/Simple/2.0b", ven_id=VEN_ID, request_timeout_s=2)
    ven = Ven(cfg, handler, SystemClock())
    with pytest.raises(AdapterUnavailable, match=re.escape(f"127.0.0.1:{port}")):
        await ven.start()
    assert not ven.running
    await ven.stop()  # harmless after a failed start


@pytest.mark.integration
async def test_run_retries_until_the_vtn_is_up_and_returns_on_stop(handler: RecordingHandler) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cfg = VenConfig(vtn_url=f"http://127.0.0.1:{port}/OpenADR2/Simple/2.0b", ven_id=VEN_ID, poll_interval_s=0.2,
                    request_timeout_s=2)
    ven = Ven(cfg, handler, ScaledClock(datetime.now(UTC), speed=50))  # back-off of 1, 2, 4 s → 20, 40, 80 ms
    service = asyncio.create_task(ven.run())
    await asyncio.sleep(0.2)
    assert ven.registration_id is None and not service.done()
    async with ScriptedVtn(port=port) as vtn:
        await vtn.wait_for_registration(VEN_ID, within_s=5)
        event_id = vtn.add_event(VEN_ID, "LOAD_DISPATCH", "setpoint", [(HOUR, 100.0)], soon())
        assert (await vtn.wait_for_response(event_id)).opt_type == "optIn"
        client = ven._client
        assert ven.registration_id == f"reg-{VEN_ID}" and client is not None
        await ven.stop()  # possibly while openleadr is still finishing its start-up
        await asyncio.wait_for(service, 5)
    assert not ven.running and not client.scheduler.running and client.client_session is None


@pytest.mark.integration
async def test_stop_ends_run_during_its_back_off(handler: RecordingHandler) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ven = Ven(VenConfig(vtn_url=f"http://127.0.0.1:{port}/x", ven_id=VEN_ID), handler, SystemClock())
    service = asyncio.create_task(ven.run())
    await asyncio.sleep(0.1)  # the first attempt failed; run() now waits 1 s before the next
    await ven.stop()
    await asyncio.wait_for(service, 0.5)
    assert not ven.running


@pytest.mark.integration
async def test_stop_tears_down_and_can_be_repeated(vtn: ScriptedVtn, handler: RecordingHandler) -> None:
    ven = Ven(config(vtn), handler, SystemClock(), Feed(lambda: 1.0))
    await ven.start()
    client = ven._client
    assert client is not None and client.scheduler.running
    await ven.stop()
    await ven.stop()
    assert not client.scheduler.running and client.client_session is None and not ven.running


# ----------------------------------------------------------------------- events


@pytest.mark.integration
async def test_an_event_reaches_the_handler_translated_and_the_vtn_gets_the_opt_in(
        vtn: ScriptedVtn, ven: Ven, handler: RecordingHandler) -> None:
    start = soon().replace(microsecond=0)
    event_id = dispatch(vtn, start=start, ramp=timedelta(minutes=5), recovery=timedelta(minutes=10),
                        startafter=timedelta(minutes=3), current_value=450.0, measurement=POWER_KW, priority=2)

    response = await vtn.wait_for_response(event_id)
    assert (response.ven_id, response.modification, response.opt_type, response.code) == (VEN_ID, 0, "optIn", 200)
    assert vtn.responses == [(event_id, 0, "optIn")]
    assert response.description == "planned"
    (event,) = handler.seen(event_id)
    offset = startafter_offset(VEN_ID, event_id, 0, timedelta(minutes=3))
    assert (event.start, event.duration, event.modification, event.priority) == (start + offset, HOUR, 0, 2)
    assert (event.ramp, event.recovery, event.status, event.program) == (
        timedelta(minutes=5), timedelta(minutes=10), "far", vtn.market_context)
    (signal,) = event.signals
    assert (signal.name, signal.units, signal.target_kw) == ("LOAD_DISPATCH", "kW", 450.0)
    assert [(i.start, i.value) for i in signal.intervals] == [(start + offset, 500.0),
                                                              (start + offset + timedelta(minutes=30), 400.0)]
    assert vtn.event_delivered_at[event_id] >= vtn.event_available_at[event_id]


@pytest.mark.integration
async def test_a_handler_opt_out_is_sent_with_its_reason(vtn: ScriptedVtn) -> None:
    refuse = RecordingHandler(lambda e: OptDecision(False, "shed exceeds max_shed_kw"))
    async with Ven(config(vtn), refuse, SystemClock()):
        event_id = dispatch(vtn)
        response = await vtn.wait_for_response(event_id)
    assert (response.opt_type, response.description) == ("optOut", "shed exceeds max_shed_kw")
    assert len(refuse.seen(event_id)) == 1


@pytest.mark.integration
async def test_a_modification_is_handed_over_again(vtn: ScriptedVtn, ven: Ven, handler: RecordingHandler) -> None:
    event_id = dispatch(vtn)
    await vtn.wait_for_response(event_id, modification=0)
    assert vtn.modify_event(event_id, intervals=[(timedelta(minutes=45), 300.0)]) == 1

    response = await vtn.wait_for_response(event_id, modification=1)
    assert response.opt_type == "optIn"
    first, second = handler.seen(event_id)
    assert (first.modification, second.modification) == (0, 1)
    assert second.duration == timedelta(minutes=45) and second.signals[0].intervals[0].value == 300.0


@pytest.mark.integration
async def test_a_malformed_modification_withdraws_the_planned_version(
        vtn: ScriptedVtn, ven: Ven, handler: RecordingHandler) -> None:
    event_id = dispatch(vtn)
    await vtn.wait_for_response(event_id, modification=0)
    vtn.modify_event(event_id, intervals=[(timedelta(minutes=30), 500.0), (timedelta(minutes=30), math.nan)])

    response = await vtn.wait_for_response(event_id, modification=1)
    assert (response.opt_type, response.code) == ("optOut", 454)
    assert len(handler.seen(event_id)) == 1
    ((cancelled, reason),) = handler.cancels
    assert cancelled == event_id and reason.startswith("modification 1 rejected: value must be finite")


@pytest.mark.integration
async def test_identical_redelivery_is_answered_without_bothering_the_handler(
        vtn: ScriptedVtn, ven: Ven, handler: RecordingHandler) -> None:
    first = dispatch(vtn)
    await vtn.wait_for_response(first)
    second = dispatch(vtn, start=soon(30))  # the new distribution lists the first event again
    await vtn.wait_for_response(second)  # both answers travel in the same oadrCreatedEvent
    assert [r.opt_type for r in vtn.responses if r.event_id == first] == ["optIn", "optIn"]
    assert len(handler.seen(first)) == 1


@pytest.mark.integration
async def test_an_explicit_cancellation_calls_on_cancel(vtn: ScriptedVtn, ven: Ven, handler: RecordingHandler) -> None:
    event_id = dispatch(vtn)
    await vtn.wait_for_response(event_id)
    modification = vtn.cancel_event(event_id)

    response = await vtn.wait_for_response(event_id, modification=modification)
    assert (response.opt_type, response.description) == ("optIn", VTN_CANCEL_REASON)  # acknowledges, keeps its opt
    assert handler.cancels == [(event_id, VTN_CANCEL_REASON)]
    assert vtn.server.events[VEN_ID] == []  # openleadr's VTN drops it once the VEN acknowledged


@pytest.mark.integration
async def test_an_event_dropped_from_the_distribution_is_an_implied_cancellation(
        vtn: ScriptedVtn, ven: Ven, handler: RecordingHandler) -> None:
    gone, kept = dispatch(vtn), dispatch(vtn, start=soon(90))
    await vtn.wait_for_response(gone)
    await vtn.wait_for_response(kept)
    vtn.remove_event(gone)

    await handler.wait_for(lambda: bool(handler.cancels))
    assert handler.cancels == [(gone, IMPLIED_CANCEL_REASON)]


@pytest.mark.integration
async def test_openleadr_sends_nothing_when_the_last_event_goes_so_the_resync_finds_out(
        vtn: ScriptedVtn, handler: RecordingHandler) -> None:
    async with Ven(config(vtn), handler, SystemClock(), resync_every_polls=5):
        event_id = dispatch(vtn)
        await vtn.wait_for_response(event_id)
        polls_before = len(vtn.poll_answers)
        vtn.remove_event(event_id)

        await handler.wait_for(lambda: bool(handler.cancels))
        assert handler.cancels == [(event_id, IMPLIED_CANCEL_REASON)]
        after = [kind for _, kind in list(vtn.poll_answers)[polls_before:]]
        assert after and set(after) == {"oadrResponse"}  # no (empty) oadrDistributeEvent ever came


@pytest.mark.integration
async def test_an_empty_distribution_cancels_everything_still_live(vtn: ScriptedVtn, ven: Ven,
                                                                   handler: RecordingHandler) -> None:
    event_id = dispatch(vtn)
    await vtn.wait_for_response(event_id)
    vtn.remove_event(event_id, announce_empty=True)  # as a stricter VTN would send it

    await handler.wait_for(lambda: bool(handler.cancels), within_s=3)
    assert handler.cancels == [(event_id, IMPLIED_CANCEL_REASON)]


@pytest.mark.integration
async def test_response_required_never_is_handled_but_not_answered(vtn: ScriptedVtn, ven: Ven,
                                                                   handler: RecordingHandler) -> None:
    silent = dispatch(vtn, response_required="never")
    loud = dispatch(vtn, start=soon(30))
    await vtn.wait_for_response(loud)
    assert len(handler.seen(silent)) == 1
    assert not [r for r in vtn.responses if r.event_id == silent]


# --------------------------------------------------------------------- telemetry


@pytest.mark.integration
async def test_telemetry_usage_requested_after_registration_reports_site_kw(vtn: ScriptedVtn, ven: Ven) -> None:
    vtn.request_telemetry(VEN_ID, timedelta(seconds=1))
    (reading, *_) = await vtn.wait_for_reports(VEN_ID, within_s=5)
    assert (reading.value, reading.source) == (812.5, "site-power-kw")


@pytest.mark.integration
async def test_telemetry_usage_requested_at_registration(vtn: ScriptedVtn, handler: RecordingHandler) -> None:
    vtn.request_telemetry(VEN_ID, timedelta(seconds=1))
    samples = iter([None, math.nan, 640.0])  # no reading yet, then a broken one: both skipped

    def meter() -> float | None:
        return next(samples, 641.0)

    async with Ven(config(vtn), handler, SystemClock(), Feed(meter)):
        readings = await vtn.wait_for_reports(VEN_ID, within_s=6)
    assert readings[0].value == 640.0 and all(math.isfinite(r.value) for r in readings)


# ------------------------------------------------------------------ hostile input


def _zero_duration(vtn: ScriptedVtn) -> dict[str, Any]:
    return vtn.build_event(VEN_ID, "LOAD_DISPATCH", "setpoint", [(timedelta(0), 500.0)], soon())


def _negative_interval(vtn: ScriptedVtn) -> dict[str, Any]:
    return vtn.build_event(VEN_ID, "LOAD_DISPATCH", "setpoint",
                           [(timedelta(minutes=30), 500.0), (timedelta(minutes=-10), 400.0)], soon())


def _zero_interval(vtn: ScriptedVtn) -> dict[str, Any]:
    return vtn.build_event(VEN_ID, "LOAD_DISPATCH", "setpoint",
                           [(timedelta(minutes=30), 500.0), (timedelta(0), 400.0), (timedelta(minutes=30), 1.0)], soon())


def _out_of_order(vtn: ScriptedVtn) -> dict[str, Any]:
    event = vtn.build_event(VEN_ID, "LOAD_DISPATCH", "setpoint",
                            [(timedelta(minutes=30), 500.0), (timedelta(minutes=30), 400.0)], soon())
    first, second = event["event_signals"][0]["intervals"]
    first["dtstart"], second["dtstart"] = second["dtstart"], first["dtstart"]
    return event


def _value(value: float) -> Callable[[ScriptedVtn], dict[str, Any]]:
    def build(vtn: ScriptedVtn) -> dict[str, Any]:
        return vtn.build_event(VEN_ID, "LOAD_DISPATCH", "setpoint", [(timedelta(minutes=30), value)], soon())
    return build


def _current_value_inf(vtn: ScriptedVtn) -> dict[str, Any]:
    return vtn.build_event(VEN_ID, "LOAD_DISPATCH", "setpoint", [(timedelta(minutes=30), 1.0)], soon(),
                           current_value=math.inf)


@pytest.mark.integration
@pytest.mark.parametrize(("build", "field"), [
    (_zero_duration, "active_period.duration"),
    (_negative_interval, "event_signals[0].intervals[1].duration"),
    (_zero_interval, "event_signals[0].intervals[1].duration"),
    (_out_of_order, "event_signals[0].intervals[0].dtstart"),
    (_value(math.nan), "event_signals[0].intervals[0].signal_payload"),
    (_value(1e12), "event_signals[0].intervals[0].signal_payload"),
    (_value(-math.inf), "event_signals[0].intervals[0].signal_payload"),
    (_current_value_inf, "event_signals[0].current_value"),
], ids=["zero-event-duration", "negative-interval", "zero-interval", "out-of-order", "nan", "1e12", "-inf",
        "current-value-inf"])
@pytest.mark.integration
async def test_hostile_events_are_opted_out_logged_and_the_ven_carries_on(
        vtn: ScriptedVtn, ven: Ven, handler: RecordingHandler, caplog: pytest.LogCaptureFixture,
        build: Callable[[ScriptedVtn], dict[str, Any]], field: str) -> None:
    caplog.set_level(logging.ERROR, logger="dcflex.ven")
    hostile = vtn.add_raw_event(VEN_ID, build(vtn))

    response = await vtn.wait_for_response(hostile)
    assert (response.opt_type, response.code) == ("optOut", 454)
    assert field in response.description and hostile in response.description
    assert not handler.seen(hostile)
    assert any(r.name == "dcflex.ven" and hostile in r.getMessage() and field in r.getMessage() for r in caplog.records)
    await _still_works(vtn, handler)


@pytest.mark.integration
async def test_an_unknown_signal_reaches_the_policy_and_gets_openleadrs_code(
        vtn: ScriptedVtn, ven: Ven, handler: RecordingHandler) -> None:
    event_id = dispatch(vtn, signal_name="x-dcflexBogus", signal_type="level", intervals=[(timedelta(minutes=30), 1.0)])
    response = await vtn.wait_for_response(event_id)
    assert (response.opt_type, response.code, response.description) == ("optOut", 460, "unsupported signal x-dcflexBogus")
    assert handler.seen(event_id)[0].signals[0].kind is None
    await _still_works(vtn, handler)


@pytest.mark.integration
async def test_an_event_already_over_on_the_wall_clock_is_dropped_by_the_vtn_and_never_handled(
        vtn: ScriptedVtn, ven: Ven, handler: RecordingHandler) -> None:
    past = dispatch(vtn, start=datetime.now(UTC) - 3 * HOUR)  # openleadr's VTN sends it once, as completed
    await _still_works(vtn, handler)
    assert not handler.seen(past)
    assert not [r for r in vtn.responses if r.event_id == past]  # answering would make openleadr's VTN fail
    assert past in vtn.event_delivered_at


@pytest.mark.integration
async def test_an_event_over_by_the_injected_clock_is_acknowledged_with_opt_out(vtn: ScriptedVtn) -> None:
    handler = RecordingHandler()
    clock: Clock = ManualClock(datetime.now(UTC) + timedelta(days=1))  # the gateway runs a day ahead
    async with Ven(config(vtn), handler, clock):
        event_id = dispatch(vtn)
        response = await vtn.wait_for_response(event_id)
    assert (response.opt_type, response.description) == ("optOut", ENDED_REASON)
    assert not handler.events


@pytest.mark.integration
async def test_a_failing_handler_costs_one_opt_out_not_the_ven(vtn: ScriptedVtn) -> None:
    calls = 0

    def flaky(event: GridEvent) -> OptDecision:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("planner exploded")
        return OptDecision(True, "planned")

    handler = RecordingHandler(flaky)
    async with Ven(config(vtn, ven_id="ven-flaky"), handler, SystemClock()):
        first = vtn.add_event("ven-flaky", "LOAD_DISPATCH", "setpoint", [(timedelta(minutes=30), 1.0)], soon())
        response = await vtn.wait_for_response(first)
        assert (response.opt_type, response.description) == ("optOut", "handler error: RuntimeError: planner exploded")
        second = vtn.add_event("ven-flaky", "LOAD_DISPATCH", "setpoint", [(timedelta(minutes=30), 1.0)], soon(40))
        assert (await vtn.wait_for_response(second)).opt_type == "optIn"


@pytest.mark.integration
async def test_a_vtn_report_push_is_ignored_instead_of_crashing(vtn: ScriptedVtn, ven: Ven, handler: RecordingHandler,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="dcflex.ven")
    vtn.push_message(VEN_ID, "oadrUpdateReport", {"reports": []})
    await _still_works(vtn, handler)
    assert ("oadrUpdateReport", "oadrDistributeEvent") == tuple(k for _, k in vtn.poll_answers if k != "oadrResponse")[:2]
    assert any("oadrUpdateReport" in r.getMessage() for r in caplog.records if r.name == "dcflex.ven")


async def _still_works(vtn: ScriptedVtn, handler: RecordingHandler) -> None:
    """After whatever came before, a normal event is still handled and answered."""
    event_id = dispatch(vtn, start=soon(120))
    assert (await vtn.wait_for_response(event_id)).opt_type == "optIn"
    assert len(handler.seen(event_id)) == 1


# ------------------------------------------------------------- the book (no I/O)


def test_event_book_lets_ended_events_go_and_reports_absent_live_ones() -> None:
    book, now = EventBook(), datetime(2025, 5, 1, 18, tzinfo=UTC)
    book.track("ended", now - timedelta(seconds=1))
    book.track("live", now + HOUR)
    book.track("listed", now + HOUR)
    assert book.absent({"listed"}, now) == ["live"]
    assert not book.is_live("ended") and book.is_live("live")
    assert book.mark_cancelled("live") and not book.mark_cancelled("live")
    assert book.absent({"listed"}, now) == []
