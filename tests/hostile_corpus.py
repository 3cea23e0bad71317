"""The hostile corpus: one case per class of input a VTN (or the path to it) can send to break the VEN.

The small payloads are files in ``tests/fixtures/hostile/`` (see its README); the large or time-dependent ones
are made here (a 64 MiB gzip bomb, a 100 MB stream, 5,000 events, a 1 MB eventID, redirects, encodings). Each
case says what the intake must conclude: a refusal of a given kind, or ``None`` when the message is valid (an
event in UTF-16, say) and must be acted on like any other.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from tests.hostile_vtn import Answer, distribution, event, gzip_bomb, valid

__all__ = ["CASES", "FILE_CASES", "FIXTURES", "INJECTION", "Case"]

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "hostile"
# An eventID that is markup once unescaped: on the wire (openleadr's templates do not escape, so this is what
# they render) and as the VEN reads it.
INJECTION_WIRE = "INJ&lt;/ei:rID&gt;&lt;ei:evil&gt;1&lt;/ei:evil&gt;&lt;x&gt;&quot;&apos;&amp;"
INJECTION = "INJ</ei:rID><ei:evil>1</ei:evil><x>\"'&"


@dataclass(frozen=True)
class Case:
    """``make()`` builds the answers a poll gets; ``kind`` is the refusal expected (None: acted on)."""

    name: str
    kind: str | None
    make: Callable[[], list[Answer]]
    event_id: str | None = None  # for an accepted case: the event that must be answered optIn
    answered_454: bool = False  # a refused oadrDistributeEvent: the VEN answers oadrCreatedEvent 454


def _file(name: str) -> Callable[[], list[Answer]]:
    return lambda: [Answer((FIXTURES / name).read_bytes(), headers={"Content-Type": "application/xml"})]


async def _zeros(total: int, chunk: int = 1 << 20) -> AsyncIterator[bytes]:
    block = b"<" * chunk
    sent = 0
    while sent < total:
        yield block
        sent += chunk
        await asyncio.sleep(0)


def _bytes_in(encoding: str, event_id: str) -> bytes:
    text = valid(event_id).decode("utf-8").replace('encoding="utf-8"', f'encoding="{encoding.upper()}"', 1)
    return text.encode(encoding)


def _many_events(n: int) -> bytes:
    return distribution(*(event(f"flood-{i}") for i in range(n)))


def _many_intervals(n: int) -> bytes:
    e = event("intervals-flood")
    start = e["active_period"]["dtstart"]
    step = e["active_period"]["duration"] / n
    e["event_signals"][0]["intervals"] = [{"dtstart": start + i * step, "duration": step, "signal_payload": 10.0,
                                           "uid": i} for i in range(n)]
    return distribution(e)


def _many_signals(n: int) -> bytes:
    e = event("signals-flood")
    base = e["event_signals"][0]
    e["event_signals"] = [dict(base, signal_id=f"s{i}") for i in range(n)]
    return distribution(e)


def _create_report(report_request_id: str, granularity: str = "PT1M", count: int = 1) -> bytes:
    """An oadrCreateReport (``count`` requests for the VEN's telemetry) whose ids and period (as written) the VTN
    chose."""
    from openleadr.messaging import create_message

    requests = [_report_request(f"{report_request_id}-{n}" if count > 1 else report_request_id) for n in range(count)]
    text = create_message("oadrCreateReport", request_id="req-report", ven_id="ven-hostile-1", report_requests=requests)
    return text.replace(">PT7M<", f">{granularity}<").encode("utf-8")


def _report_request(report_request_id: str) -> dict[str, object]:
    return {"report_request_id": report_request_id,
            "report_specifier": {"report_specifier_id": "dcflex-telemetry", "granularity": timedelta(minutes=7),
                                 "report_back_duration": timedelta(minutes=1),
                                 "specifier_payloads": [{"r_id": "site-power", "reading_type": "Direct Read"}]}}


def _corrupt_gzip() -> bytes:
    good = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    data = good.compress(valid("never")) + good.flush()
    return data[:20] + b"\xff" * 40 + data[60:]


_STATIC = [
    ("doctype-internal-entity.xml", "doctype"),
    ("billion-laughs.xml", "doctype"),
    ("external-entity.xml", "doctype"),
    ("external-dtd.xml", "doctype"),
    ("parameter-entity-remote-dtd.xml", "doctype"),
    ("xinclude.xml", "xinclude"),
    ("processing-instruction.xml", "processing_instruction"),
    ("undeclared-entity.xml", "not_xml"),
    ("truncated.xml", "not_xml"),
    ("not-xml.txt", "not_xml"),
    ("unknown-encoding.xml", "encoding"),
    ("invalid-utf8.xml", "encoding"),
    ("schema-invalid.xml", "schema"),
    ("deep-nesting.xml", "too_deep"),
]

FILE_CASES: list[Case] = [Case(name.rsplit(".", 1)[0], kind, _file(name), answered_454=name == "schema-invalid.xml")
                           for name, kind in _STATIC]

CASES: list[Case] = [
    *FILE_CASES,
    Case("gzip-bomb", "too_large",
         lambda: [Answer(gzip_bomb(64 << 20), headers={"Content-Encoding": "gzip", "Content-Type": "application/xml"})]),
    Case("deflate-bomb", "too_large",
         lambda: [Answer(zlib.compress(b"\0" * (32 << 20), 9), headers={"Content-Encoding": "deflate"})]),
    Case("corrupt-gzip", "content_encoding", lambda: [Answer(_corrupt_gzip(), headers={"Content-Encoding": "gzip"})]),
    Case("unsupported-content-encoding", "content_encoding",
         lambda: [Answer(b"\x1b\x00\x00", headers={"Content-Encoding": "br"})]),
    Case("stream-100MB", "too_large", lambda: [Answer(stream=lambda: _zeros(100 << 20))]),
    Case("declared-length-too-large", "too_large", lambda: [Answer(b"<" * (3 << 20))]),
    Case("5000-events", "too_large", lambda: [Answer(_many_events(5000))]),  # ~7 MB: refused before parsing
    Case("101-events", "too_many", lambda: [Answer(_many_events(101))], answered_454=True),
    Case("5000-intervals", "too_many", lambda: [Answer(_many_intervals(5000))], answered_454=True),
    Case("50-signals", "too_many", lambda: [Answer(_many_signals(50))], answered_454=True),
    Case("1MB-event-id", "too_long", lambda: [Answer(valid("E" * (1 << 20)))], answered_454=True),
    Case("create-report-1MB-id", "too_long", lambda: [Answer(_create_report("R" * (1 << 20)))], answered_454=True),
    Case("21-report-requests", "too_many", lambda: [Answer(_create_report("rr-many", count=21))], answered_454=True),
    Case("create-report-negative-granularity", "bad_value", lambda: [Answer(_create_report("rr-neg", "-PT5S"))],
         answered_454=True),
    Case("redirect-off-origin", "redirect",
         lambda: [Answer(status=302, headers={"Location": "http://127.0.0.2:9/OpenADR2/Simple/2.0b/OadrPoll"})]),
    Case("redirect-303", "redirect", lambda: [Answer(status=303, headers={"Location": "/elsewhere"})]),
    Case("empty-200", None, lambda: [Answer(b"")]),
    Case("http-500-huge-body", None, lambda: [Answer(b"\xff" * 100_000, status=500)]),
    Case("utf-16-event", None, lambda: [Answer(_bytes_in("utf-16", "enc-utf16"))], event_id="enc-utf16"),
    Case("iso-8859-1-event", None, lambda: [Answer(_bytes_in("iso-8859-1", "enc-latin1"))], event_id="enc-latin1"),
    Case("markup-in-event-id", None, lambda: [Answer(valid(INJECTION_WIRE))], event_id=INJECTION),
]
