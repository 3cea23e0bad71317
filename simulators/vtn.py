"""A scripted OpenADR 2.0b VTN: openleadr's ``OpenADRServer`` on loopback, driven from code.

The demo, the replay and the VEN's integration tests talk to this over real HTTP, so everything the
gateway's VEN does is exercised against openleadr's own server. On top of the server it adds:

* auto-registration of any VEN (a fixed ``ven_id`` is kept; otherwise one is assigned);
* events built here rather than by ``OpenADRServer.add_event``, which cannot express ``startafter``,
  ``currentValue``, several event attributes, or hostile content. ``build_event`` writes values the
  way they appear on the wire (``NaN``, ``-PT10M``) so a malformed event really is malformed in the
  XML the VEN receives; ``add_raw_event`` installs any dict straight into the server's event list;
* an outbox per VEN answered on its next ``oadrPoll`` before openleadr's own queue (a report
  request after registration, an empty ``oadrDistributeEvent``, any message openleadr can render);
* a record of every ``oadrCreatedEvent`` answer: ``responses`` as ``(event_id, modification,
  opt_type)`` and ``response_details`` with the response code and description too (openleadr's own
  callback gives neither the modification nor the description), and every reported telemetry value;
* ``event_available_at[event_id]``: the ``time.perf_counter()`` at which an event was handed to the
  server, and ``event_delivered_at[event_id]``: when it first left in a distribution (benchmarks);
* the EiOpt service (``oadrCreateOpt``), which openleadr's server does not mount at all (a VEN's opt
  gets HTTP 404) and whose handler it leaves a stub (mounted, it would answer a bare ``oadrResponse``
  with no ``optID``): each opt for an event this VTN gave the VEN, or for no event (an availability
  schedule), is recorded in ``opts`` and answered ``oadrCreatedOpt`` with its ``optID``; an opt for an
  unknown event is refused with code 452 (INVALID_ID), as a real VTN would, and not recorded.

What openleadr's server does on its own, and the tests rely on: a VEN gets a distribution only when
its event list changed, always listing *all* its events; when the list becomes empty the poll is
answered with a bare ``oadrResponse`` (no empty distribution); completed events are sent once with
status ``completed`` and then dropped; a SIMPLE event with a level outside 0–3 makes every later
distribution to that VEN fail (openleadr's preflight raises), so hostile values go on other signals.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import socket
import time
import warnings
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from types import TracebackType
from typing import Any, NamedTuple, TypeVar
from xml.sax.saxutils import escape

from aiohttp import web
from aiohttp.web_exceptions import NotAppKeyWarning
from openleadr import OpenADRServer, errors, objects, utils
from openleadr.service import OptService

from gateway.ven.oadr20b.projections import PROJECTED_R_ID, notice_r_id

__all__ = ["POWER_KW", "OptResponse", "ReportReading", "ScriptedVtn", "VenOpt", "VenResponse"]

_T = TypeVar("_T")


class _DropVenLookupAdvice(logging.Filter):
    """openleadr's server logs a WARNING at start-up suggesting a ``ven_lookup`` (its VEN registry); the scripted
    VTN registers VENs by its own handler, so the demo and the replay would print a third-party warning that
    concerns nobody."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("If you provide a 'ven_lookup'")

# An event signal measurement saying "values are kW" (powerReal in W, SI scale k).
POWER_KW: dict[str, Any] = {"name": "powerReal", "description": "RealPower", "unit": "W", "scale": "k",
                            "power_attributes": {"hertz": 60, "voltage": 480, "ac": True}}


class OptResponse(NamedTuple):
    """``(event_id, modification, opt_type)`` of one eventResponse the VEN sent."""

    event_id: str
    modification: int
    opt_type: str


@dataclass(frozen=True, slots=True)
class VenResponse:
    """One eventResponse of an ``oadrCreatedEvent`` the VEN sent, in full."""

    ven_id: str
    event_id: str
    modification: int
    opt_type: str
    code: int
    description: str
    at: float  # time.perf_counter()


@dataclass(frozen=True, slots=True)
class VenOpt:
    """One ``oadrCreateOpt`` the VTN acknowledged; ``event_id`` is ``None`` for an availability schedule."""

    ven_id: str
    event_id: str | None
    modification: int | None
    opt_type: str
    opt_reason: str
    opt_id: str


@dataclass(frozen=True, slots=True)
class ReportReading:
    """One value of a report the VEN sent (``oadrUpdateReport``)."""

    ven_id: str
    source: str
    at: datetime
    value: float


class ScriptedVtn:
    """``async with ScriptedVtn(poll_interval_s=1) as vtn: vtn.vtn_url ...``"""

    def __init__(self, *, vtn_id: str = "DCFLEX-VTN", poll_interval_s: float = 1.0, host: str = "127.0.0.1",
                 port: int = 0, market_context: str = "oadr://dcflex.example/dr-program") -> None:
        # OpenADR durations travel in whole seconds: a sub-second request would read as zero.
        self.requested_poll_interval = timedelta(seconds=max(1, math.ceil(poll_interval_s)))
        self.vtn_id = vtn_id
        self.market_context = market_context
        self._host = host
        self._port = port
        self._server: Any = None
        self._runner: web.AppRunner | None = None
        self._sock: socket.socket | None = None
        self._event_ven: dict[str, str] = {}
        self._outbox: dict[str, deque[tuple[str, dict[str, Any]]]] = {}
        self._telemetry_wanted: dict[str, timedelta] = {}
        self._projections_wanted: dict[str, timedelta] = {}
        self._ids = itertools.count(1)
        self._changed = asyncio.Event()
        self.registered_ven_ids: list[str] = []
        self.responses: list[OptResponse] = []  # (event_id, modification, opt_type), in arrival order
        self.response_details: list[VenResponse] = []  # the same answers with VEN, code, description, time
        self.received_reports: list[ReportReading] = []
        self.opts: list[VenOpt] = []  # every acknowledged oadrCreateOpt, in arrival order
        self.event_available_at: dict[str, float] = {}
        self.event_delivered_at: dict[str, float] = {}
        self.poll_answers: deque[tuple[str, str]] = deque(maxlen=10_000)  # (ven_id, message type) per oadrPoll

    # ----------------------------------------------------------------- lifecycle

    @property
    def vtn_url(self) -> str:
        if self._sock is None:
            raise RuntimeError("the VTN is not running")
        host, port = self._sock.getsockname()[:2]
        return f"http://{host}:{port}/OpenADR2/Simple/2.0b"

    @property
    def server(self) -> Any:
        """The underlying ``OpenADRServer`` (its ``events``, ``services``)."""
        return self._server

    async def start(self) -> None:
        advice = _DropVenLookupAdvice()
        openleadr_log = logging.getLogger("openleadr")
        openleadr_log.addFilter(advice)  # its advice to whoever runs a VTN, not to the operator of a VEN
        with warnings.catch_warnings():  # openleadr keys its aiohttp app with a plain string
            warnings.simplefilter("ignore", NotAppKeyWarning)
            server = OpenADRServer(vtn_id=self.vtn_id, http_host=self._host, http_port=self._port,
                                   requested_poll_freq=self.requested_poll_interval, show_fingerprint=False)
        openleadr_log.removeFilter(advice)
        server.add_handler("on_create_party_registration", self._on_create_party_registration)
        server.add_handler("on_register_report", self._on_register_report)
        poll, events = server.services["poll_service"], server.services["event_service"]
        poll.handlers["oadrPoll"] = partial(self._on_poll, poll.handlers["oadrPoll"])
        events.handlers["oadrCreatedEvent"] = partial(self._on_created_event, events.handlers["oadrCreatedEvent"])
        events.handlers["oadrRequestEvent"] = partial(self._on_request_event, events.handlers["oadrRequestEvent"])
        opts = OptService(self.vtn_id)  # openleadr neither mounts EiOpt nor implements oadrCreateOpt
        opts.handlers["oadrCreateOpt"] = self._on_create_opt
        server.services["opt_service"] = opts
        server.app.router.add_post(f"{server.http_path_prefix}/{opts.__service_name__}", opts.handler)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self._host, self._port))
        runner = web.AppRunner(server.app, access_log=None)
        await runner.setup()
        try:
            await web.SockSite(runner, sock).start()
        except BaseException:
            await runner.cleanup()
            sock.close()
            raise
        self._server, self._runner, self._sock = server, runner, sock

    async def stop(self) -> None:
        runner, sock = self._runner, self._sock
        self._runner = None
        if runner is not None:
            await runner.cleanup()
        if sock is not None:
            sock.close()

    async def __aenter__(self) -> ScriptedVtn:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    # ------------------------------------------------------------------- events

    def build_event(self, ven_id: str, signal_name: str, signal_type: str,
                    intervals: Sequence[tuple[timedelta, float]], start: datetime, *,
                    ramp: timedelta | None = None, recovery: timedelta | None = None,
                    startafter: timedelta | None = None, event_id: str | None = None,
                    response_required: str = "always", current_value: float | None = None, priority: int = 0,
                    test_event: bool = False, market_context: str | None = None,
                    target: Mapping[str, Any] | None = None, measurement: Mapping[str, Any] | None = None,
                    notification: timedelta | None = None) -> dict[str, Any]:
        """The event dict the server will render, with one signal of ``(duration, value)`` intervals
        from ``start``. Nothing is validated: negative durations and non-finite values are written as
        their wire forms (``-PT10M``, ``NaN``), so hostile events reach the VEN as a VTN would send them."""
        event_id = event_id or f"evt-{next(self._ids)}"
        return {
            "event_descriptor": {"event_id": event_id, "modification_number": 0, "event_status": "far",
                                 "market_context": market_context or self.market_context,
                                 "created_date_time": datetime.now(UTC), "priority": priority, "test_event": test_event},
            "active_period": _active_period(start, intervals, ramp, recovery, startafter, notification),
            "event_signals": [_signal(event_id, signal_name, signal_type, intervals, start, current_value, measurement)],
            "targets": [dict(target) if target is not None else {"ven_id": ven_id}],
            "response_required": response_required,
        }

    def add_event(self, ven_id: str, signal_name: str, signal_type: str, intervals: Sequence[tuple[timedelta, float]],
                  start: datetime, **options: Any) -> str:
        """Build (see ``build_event``) and queue an event for ``ven_id``; returns its id."""
        return self.add_raw_event(ven_id, self.build_event(ven_id, signal_name, signal_type, intervals, start, **options))

    def add_raw_event(self, ven_id: str, event: dict[str, Any]) -> str:
        """Queue any event dict for ``ven_id`` as-is (openleadr's ``add_raw_event`` would recompute
        the active period from the intervals, and fail on hostile ones)."""
        event_id = str(event["event_descriptor"]["event_id"])
        self._server.events.setdefault(ven_id, []).append(event)
        self._server.events_updated[ven_id] = True
        self._event_ven[event_id] = ven_id
        self.event_available_at[event_id] = time.perf_counter()
        return event_id

    def modify_event(self, event_id: str, *, intervals: Sequence[tuple[timedelta, float]] | None = None,
                     start: datetime | None = None, ramp: timedelta | None = None, recovery: timedelta | None = None,
                     current_value: float | None = None) -> int:
        """Change an event and bump its modification number (returned); ``None`` keeps a value."""
        ven_id, event = self._find(event_id)
        period, signal = event["active_period"], event["event_signals"][0]
        if intervals is not None or start is not None:
            new_start = start or period["dtstart"]
            new_intervals = intervals if intervals is not None else _intervals_of(signal)
            signal["intervals"] = _signal(event_id, signal["signal_name"], signal["signal_type"], new_intervals,
                                          new_start, None, None)["intervals"]
            fresh = _active_period(new_start, new_intervals, None, None, None, None)
            period["dtstart"], period["duration"] = fresh["dtstart"], fresh["duration"]
        if ramp is not None:
            period["ramp_up_period"] = ramp
        if recovery is not None:
            period["recovery_period"] = recovery
        if current_value is not None:
            signal["current_value"] = current_value
        descriptor = event["event_descriptor"]
        descriptor["modification_date_time"] = datetime.now(UTC)
        modification: int = utils.increment_event_modification_number(event)
        self._server.events_updated[ven_id] = True
        return modification

    def cancel_event(self, event_id: str) -> int:
        """Mark the event cancelled (openleadr bumps the modification number, returned)."""
        ven_id, event = self._find(event_id)
        self._server.cancel_event(ven_id, event_id)
        modification: int = event["event_descriptor"]["modification_number"]
        return modification

    def remove_event(self, event_id: str, *, announce_empty: bool = False) -> None:
        """Drop the event from the VEN's list without cancelling it (implied cancellation).

        With other events left, the next distribution simply lacks it. With none left, openleadr's
        server answers polls with a bare ``oadrResponse``; ``announce_empty`` sends an empty
        ``oadrDistributeEvent`` instead, as stricter VTNs do.
        """
        ven_id, event = self._find(event_id)
        self._server.events[ven_id].remove(event)
        self._server.events_updated[ven_id] = True
        if announce_empty and not self._server.events[ven_id]:
            self.push_message(ven_id, "oadrDistributeEvent", {"events": []})

    def push_message(self, ven_id: str, message_type: str, payload: Mapping[str, Any]) -> None:
        """Answer the VEN's next poll with this message (before any queued events)."""
        self._outbox.setdefault(ven_id, deque()).append((message_type, dict(payload)))

    # ------------------------------------------------------------------ reports

    def request_telemetry(self, ven_id: str, granularity: timedelta) -> None:
        """Ask the VEN for its TELEMETRY_USAGE report every ``granularity``.

        Before the VEN registers its reports, the request goes into the ``oadrRegisteredReport``
        answer; afterwards an ``oadrCreateReport`` is sent on its next poll.
        """
        self._telemetry_wanted[ven_id] = granularity
        self._request(ven_id, granularity, projected=False)

    def request_projections(self, ven_id: str, granularity: timedelta) -> None:
        """Ask the VEN for its Projected TELEMETRY_USAGE report (its announced load drops) every
        ``granularity``; the values land in ``received_reports`` with source ``projected-drop-kw`` (all
        drops) or ``drop:<notice id>`` (one).
        Only once the VEN has registered its reports; the data points it registers later (one per new
        notice, ``drop:<notice id>``) are asked for as they come."""
        self._projections_wanted[ven_id] = granularity
        if not self._request(ven_id, granularity, projected=True):
            raise LookupError(f"{ven_id} offers no Projected report (registered yet?)")

    def _request(self, ven_id: str, granularity: timedelta, *, projected: bool) -> bool:
        reports = self._server.registered_reports.get(ven_id, []) if self._server is not None else []

        def is_projected(r: dict[str, Any]) -> bool:
            return any(d.get("reading_type") == "Projected" for d in r.get("report_descriptions", []))

        offered = [r for r in reports if r.get("report_name") == "TELEMETRY_USAGE" and is_projected(r) == projected]
        if not offered:
            return False
        report = offered[-1]
        request_id = f"rr-{next(self._ids)}"
        payloads = [objects.SpecifierPayload(r_id=d["r_id"], reading_type=d.get("reading_type", "Direct Read"))
                    for d in report.get("report_descriptions", [])]
        request = objects.ReportRequest(
            report_request_id=request_id,
            report_specifier=objects.ReportSpecifier(report_specifier_id=report["report_specifier_id"],
                                                     granularity=granularity, report_back_duration=granularity,
                                                     specifier_payloads=payloads))
        service = self._server.services["report_service"]
        for p in payloads:
            service.report_callbacks[(request_id, p.r_id)] = partial(self._on_report_values, ven_id, p.r_id)
        service.requested_reports.setdefault(ven_id, []).append(request)
        self.push_message(ven_id, "oadrCreateReport", {"report_requests": [request]})
        return True

    # ------------------------------------------------------------------ waiting

    async def wait_for_response(self, event_id: str, *, modification: int | None = None,
                                within_s: float = 10.0) -> VenResponse:
        """The first answer the VEN sent for this event (and modification, when given)."""
        def found() -> VenResponse | None:
            return next((r for r in self.response_details if r.event_id == event_id
                         and (modification is None or r.modification == modification)), None)
        return await self._wait(found, within_s, f"a response to event {event_id} (modification {modification})")

    async def wait_for_registration(self, ven_id: str, *, within_s: float = 10.0) -> str:
        def found() -> str | None:
            return ven_id if ven_id in self.registered_ven_ids else None
        return await self._wait(found, within_s, f"registration of {ven_id}")

    async def wait_for_reports(self, ven_id: str, count: int = 1, within_s: float = 10.0) -> list[ReportReading]:
        def found() -> list[ReportReading] | None:
            readings = [r for r in self.received_reports if r.ven_id == ven_id]
            return readings if len(readings) >= count else None
        return await self._wait(found, within_s, f"{count} report value(s) from {ven_id}")

    async def _wait(self, found: Callable[[], _T | None], within_s: float, what: str) -> _T:
        try:
            async with asyncio.timeout(within_s):
                while True:
                    changed = self._changed
                    result = found()
                    if result is not None:
                        return result
                    await changed.wait()
        except TimeoutError:
            raise TimeoutError(f"no {what} within {within_s:g} s; responses so far: {self.responses}") from None

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    # ----------------------------------------------------------- server hooks

    def _find(self, event_id: str) -> tuple[str, dict[str, Any]]:
        ven_id = self._event_ven.get(event_id)
        events = self._server.events.get(ven_id, []) if ven_id is not None else []
        event = next((e for e in events if str(e["event_descriptor"]["event_id"]) == event_id), None)
        if ven_id is None or event is None:
            raise KeyError(f"no event {event_id!r} on this VTN")
        return ven_id, event

    async def _on_create_party_registration(self, payload: dict[str, Any]) -> tuple[str, str]:
        ven_id = payload.get("ven_id") or f"ven-{next(self._ids)}"
        if ven_id not in self.registered_ven_ids:
            self.registered_ven_ids.append(ven_id)
        self._notify()
        return ven_id, f"reg-{ven_id}"

    async def _on_register_report(self, ven_id: str, resource_id: str, measurement: str, unit: str, scale: str,
                                  min_sampling_interval: timedelta, max_sampling_interval: timedelta) -> Any:
        if "/projected" in resource_id:  # the VEN's Projected report: one data point per notice, and the sum
            wanted = self._projections_wanted.get(ven_id)
            if wanted is None:
                return None
            notice_id = resource_id.split("/projected", 1)[1].lstrip("/")
            source = notice_r_id(notice_id) if notice_id else PROJECTED_R_ID
            return partial(self._on_report_values, ven_id, source), max(min_sampling_interval,
                                                                        min(wanted, max_sampling_interval))
        wanted = self._telemetry_wanted.get(ven_id)
        if wanted is None or measurement != "RealPower":
            return None
        granularity = max(min_sampling_interval, min(wanted, max_sampling_interval))
        return partial(self._on_report_values, ven_id, resource_id), granularity

    def _on_report_values(self, ven_id: str, source: str, values: list[tuple[datetime, float]]) -> None:
        for at, value in values:
            self.received_reports.append(ReportReading(ven_id, source, at, float(value)))
        self._notify()

    async def _on_poll(self, original: Callable[..., Any], payload: dict[str, Any]) -> Any:
        ven_id = str(payload.get("ven_id"))
        box = self._outbox.get(ven_id)
        result = box.popleft() if box else await original(payload)
        self.poll_answers.append((ven_id, str(result[0]) if isinstance(result, tuple) else "oadrResponse"))
        self._note_delivery(result)
        return result

    async def _on_request_event(self, original: Callable[..., Any], payload: dict[str, Any]) -> Any:
        result = await original(payload)
        self._note_delivery(result)
        return result

    async def _on_create_opt(self, payload: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        ven_id, event_id = str(payload.get("ven_id")), payload.get("event_id")
        if event_id is not None and self._event_ven.get(str(event_id)) != ven_id:
            # openleadr renders the description unescaped
            raise errors.InvalidIdError(escape(f"no event {event_id} was sent to VEN {ven_id}"))
        modification = payload.get("modification_number")
        opt = VenOpt(ven_id=ven_id, event_id=None if event_id is None else str(event_id),
                     modification=None if modification is None else int(modification),
                     opt_type=str(payload.get("opt_type")), opt_reason=str(payload.get("opt_reason")),
                     opt_id=str(payload.get("opt_id")))
        self.opts.append(opt)
        self._notify()
        return "oadrCreatedOpt", {"opt_id": escape(opt.opt_id)}

    def _note_delivery(self, result: Any) -> None:
        if isinstance(result, tuple) and result[0] == "oadrDistributeEvent":
            now = time.perf_counter()
            for event in result[1].get("events") or []:
                self.event_delivered_at.setdefault(str(utils.getmember(event, "event_descriptor.event_id")), now)

    async def _on_created_event(self, original: Callable[..., Any], payload: dict[str, Any]) -> Any:
        now = time.perf_counter()
        for r in payload.get("event_responses") or []:
            detail = VenResponse(
                ven_id=str(payload.get("ven_id")), event_id=str(r.get("event_id")),
                modification=int(r.get("modification_number", -1)), opt_type=str(r.get("opt_type")),
                code=int(r.get("response_code", 0)), description=str(r.get("response_description") or ""), at=now)
            self.response_details.append(detail)
            self.responses.append(OptResponse(detail.event_id, detail.modification, detail.opt_type))
        self._notify()
        return await original(payload)


def _wire_duration(value: timedelta) -> timedelta | str:
    """openleadr formats negative durations as ``P-1DT23H50M`` (schema-invalid); write ``-PT10M``."""
    if value >= timedelta(0):
        return value
    text: str = utils.timedeltaformat(-value)
    return "-" + text


def _wire_value(value: float) -> float | str:
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    if isinstance(value, float) and math.isinf(value):
        return "INF" if value > 0 else "-INF"
    return value


def _active_period(start: datetime, intervals: Sequence[tuple[timedelta, float]], ramp: timedelta | None,
                   recovery: timedelta | None, startafter: timedelta | None,
                   notification: timedelta | None) -> dict[str, Any]:
    return {"dtstart": start, "duration": sum((d for d, _ in intervals), timedelta(0)),
            "tolerance": {"startafter": startafter} if startafter is not None else None,
            "ramp_up_period": ramp, "recovery_period": recovery, "notification_period": notification}


def _signal(event_id: str, name: str, signal_type: str, intervals: Sequence[tuple[timedelta, float]], start: datetime,
            current_value: float | None, measurement: Mapping[str, Any] | None) -> dict[str, Any]:
    rows, at = [], start
    for uid, (duration, value) in enumerate(intervals):
        rows.append({"dtstart": at, "duration": _wire_duration(duration), "signal_payload": _wire_value(value), "uid": uid})
        at += duration
    return {"intervals": rows, "signal_name": name, "signal_type": signal_type, "signal_id": f"{event_id}-s0",
            "current_value": None if current_value is None else _wire_value(current_value),
            "measurement": dict(measurement) if measurement is not None else None}


def _intervals_of(signal: Mapping[str, Any]) -> list[tuple[timedelta, float]]:
    return [(utils.parse_duration(i["duration"]), i["signal_payload"]) for i in signal["intervals"]]
