"""A real OpenADR 2.0b VTN on loopback (aiohttp) that registers a VEN normally, then answers its polls with
whatever a test queues: raw bytes, any status, any headers, a stream that never ends.

Valid answers are rendered with openleadr's own templates (``create_message``), so everything that is not
hostile on purpose is what a real VTN sends. What the VEN sent is kept (``received``) for the tests to read.
"""

from __future__ import annotations

import asyncio
import socket
import zlib
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from openleadr.messaging import create_message, parse_message

__all__ = ["Answer", "HostileVtn", "distribution", "event", "free_port", "gzip_bomb", "respond", "serving", "valid"]

PREFIX = "/OpenADR2/Simple/2.0b"
VEN_ID = "ven-hostile-1"
KW = {"name": "powerReal", "description": "RealPower", "unit": "W", "scale": "k",
      "power_attributes": {"hertz": 60, "voltage": 480, "ac": True}}


@asynccontextmanager
async def serving(app: web.Application, port: int | None = None) -> AsyncIterator[int]:
    """``app`` on 127.0.0.1 (a free port unless given) until the block ends; yields the port."""
    port = port or free_port()
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
        yield port
    finally:
        await runner.cleanup()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Answer:
    """One scripted answer to a poll: a body (or a chunk stream), a status and headers."""

    body: bytes = b""
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    stream: Callable[[], AsyncIterator[bytes]] | None = None


def event(event_id: str, *, start: datetime | None = None, minutes: int = 60, kw: float = 50.0,
          modification: int = 0, signal_name: str = "LOAD_DISPATCH", signal_type: str = "delta") -> dict[str, Any]:
    """A valid event payload for openleadr's template: shed ``kw`` for ``minutes`` from ``start``."""
    start = start or datetime.now(UTC) + timedelta(minutes=5)
    return {
        "event_descriptor": {"event_id": event_id, "modification_number": modification, "event_status": "far",
                             "market_context": "oadr://hostile-vtn/dr", "created_date_time": datetime.now(UTC),
                             "priority": 1, "test_event": False},
        "active_period": {"dtstart": start, "duration": timedelta(minutes=minutes)},
        "event_signals": [{"intervals": [{"dtstart": start, "duration": timedelta(minutes=minutes),
                                          "signal_payload": kw, "uid": 0}],
                           "signal_name": signal_name, "signal_type": signal_type, "signal_id": "s0",
                           "measurement": KW if signal_name == "LOAD_DISPATCH" else None}],
        "targets": [{"ven_id": VEN_ID}], "response_required": "always",
    }


def distribution(*events: dict[str, Any], request_id: str = "req-1") -> bytes:
    return create_message("oadrDistributeEvent", request_id=request_id, vtn_id="VTN",
                          response={"response_code": 200, "response_description": "OK", "request_id": request_id},
                          events=list(events)).encode("utf-8")


def valid(event_id: str, **kwargs: Any) -> bytes:
    """A distribution of one valid event."""
    return distribution(event(event_id, **kwargs))


def gzip_bomb(inflated_bytes: int) -> bytes:
    """``inflated_bytes`` of zeros, gzipped (about a thousandth of the size on the wire)."""
    out = bytearray()
    block = b"\0" * (1 << 20)
    z = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    left = inflated_bytes
    while left > 0:
        out += z.compress(block[: min(left, len(block))])
        left -= len(block)
    out += z.flush()
    return bytes(out)


class HostileVtn:
    """``async with HostileVtn() as vtn``: serving on ``vtn.url``; ``vtn.queue`` is what polls get next."""

    def __init__(self, *, poll_s: float = 0.5) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}{PREFIX}"
        self.poll_s = poll_s
        self.queue: deque[Answer] = deque()
        self.events: dict[str, dict[str, Any]] = {}  # what oadrRequestEvent answers (the events "on file")
        self.received: list[tuple[str, str, dict[str, Any], bytes]] = []
        self.polls = 0
        self.served = 0  # scripted answers handed out
        self.created_reply: Answer | None = None  # what every oadrCreatedEvent gets instead of an oadrResponse
        self._progress = asyncio.Event()
        self._stack = AsyncExitStack()

    async def __aenter__(self) -> HostileVtn:
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_post(PREFIX + "/{service}", self._handle)
        await self._stack.enter_async_context(serving(app, self.port))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    def created(self, event_id: str) -> list[dict[str, Any]]:
        """Every eventResponse the VEN sent for ``event_id``."""
        out = []
        for _, kind, payload, _ in self.received:
            if kind == "oadrCreatedEvent":
                out += [r for r in payload.get("event_responses") or [] if r.get("event_id") == event_id]
        return out

    def sent_by_ven(self, kind: str) -> list[tuple[dict[str, Any], bytes]]:
        return [(p, raw) for _, k, p, raw in self.received if k == kind]

    async def wait_served(self, count: int, timeout_s: float = 20.0) -> None:
        async with asyncio.timeout(timeout_s):
            while self.served < count:
                self._progress.clear()
                await self._progress.wait()

    def _xml(self, kind: str, **payload: Any) -> web.Response:
        return web.Response(body=create_message(kind, **payload).encode("utf-8"), content_type="application/xml")

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        kind, payload = parse_message(raw)
        self.received.append((request.match_info["service"], kind, payload, raw))
        self._progress.set()
        ok = {"response_code": 200, "response_description": "OK", "request_id": payload.get("request_id")}
        if kind in ("oadrQueryRegistration", "oadrCreatePartyRegistration"):
            extra = {"ven_id": VEN_ID, "registration_id": "reg-1"} if kind == "oadrCreatePartyRegistration" else {}
            return self._xml("oadrCreatedPartyRegistration", response=ok, vtn_id="VTN",
                             profiles=[{"profile_name": "2.0b", "transports": [{"transport_name": "simpleHttp"}]}],
                             requested_oadr_poll_freq=timedelta(seconds=self.poll_s), **extra)
        if kind == "oadrRegisterReport":
            return self._xml("oadrRegisteredReport", response=ok, ven_id=VEN_ID, report_requests=[])
        if kind == "oadrRequestEvent":
            if self.events:
                return web.Response(body=distribution(*self.events.values()), content_type="application/xml")
            return self._xml("oadrResponse", response=ok, ven_id=VEN_ID)
        if kind == "oadrPoll":
            self.polls += 1
            if self.queue:
                answer = self.queue.popleft()
                self.served += 1
                self._progress.set()
                return await self._scripted(request, answer)
        if kind == "oadrCreatedEvent" and self.created_reply is not None:
            return await self._scripted(request, self.created_reply)
        if kind == "oadrUpdateReport":
            return self._xml("oadrUpdatedReport", response=ok, ven_id=VEN_ID)
        return self._xml("oadrResponse", response=ok, ven_id=VEN_ID)

    async def _scripted(self, request: web.Request, answer: Answer) -> web.StreamResponse:
        return await respond(request, answer)


async def respond(request: web.Request, answer: Answer) -> web.StreamResponse:
    """Serve one scripted answer: its body, or its stream until done or until the client hangs up."""
    if answer.stream is None:
        return web.Response(body=answer.body, status=answer.status, headers=answer.headers)
    response = web.StreamResponse(status=answer.status, headers=answer.headers)
    await response.prepare(request)
    try:
        async for chunk in answer.stream():
            await response.write(chunk)
    except (ConnectionError, asyncio.CancelledError):
        return response  # the VEN hung up: what it should do
    await response.write_eof()
    return response
