"""What the VEN writes: every string escaped whatever its origin, ids derived from foreign ids inert."""

from __future__ import annotations

from datetime import UTC, datetime

from lxml import etree
from openleadr import objects
from openleadr.messaging import create_message, parse_message

from gateway.clock import ManualClock
from gateway.exceptions import HostileInput
from gateway.ven.oadr20b.outbound import escaping, safe_token, xml_safe
from gateway.ven.oadr20b.projections import notice_r_id
from gateway.ven.oadr20b.refusals import REALERT_AFTER, Refusals, safe_request_id
from tests.hostile_corpus import INJECTION

T0 = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def test_a_created_event_echoes_a_markup_id_as_text() -> None:
    make = escaping(create_message)
    message = make("oadrCreatedEvent", ven_id="v<1>", response={"response_code": 200, "response_description": "OK",
                                                                "request_id": "r&1"},
                   event_responses=[{"response_code": 200, "response_description": INJECTION, "opt_type": "optIn",
                                     "request_id": "r&1", "modification_number": 0, "event_id": INJECTION}])
    root = etree.fromstring(message.encode())
    assert not root.findall(".//{*}evil")
    _, payload = parse_message(message)
    assert payload["event_responses"][0]["event_id"] == INJECTION and payload["ven_id"] == "v<1>"


def test_dataclasses_and_nested_values_are_escaped_and_other_values_kept() -> None:
    target = objects.Target(ven_id="a<b")
    got = xml_safe({"t": [target, ("x&y", 3)], "n": 4.5, "when": T0, "c": "\x00\x1f"})
    assert got["t"][0].ven_id == "a&lt;b" and got["t"][1] == ("x&amp;y", 3)
    assert got["n"] == 4.5 and got["when"] is T0 and got["c"] == "??"


def test_ids_made_from_foreign_ids_are_plain() -> None:
    assert notice_r_id("job:ending") == "drop:job:ending"
    derived = notice_r_id(f"event:{INJECTION}")
    assert derived.startswith("drop:h-") and len(derived) == len("drop:h-") + 24
    assert derived == notice_r_id(f"event:{INJECTION}")  # stable
    assert safe_token("e" * 81).startswith("h-")


def test_request_ids_are_echoed_only_when_plain() -> None:
    assert safe_request_id("req-1") == "req-1"
    assert safe_request_id("<x>") is None and safe_request_id("r" * 200) is None and safe_request_id(None) is None


async def test_each_kind_is_alerted_once_then_again_an_hour_later() -> None:
    clock = ManualClock(T0)
    alerts: list[str] = []

    async def alert(code: str, message: str) -> None:
        alerts.append(message)

    refusals = Refusals(clock, alert)
    for _ in range(5):
        await refusals.refused(HostileInput("doctype", "a DOCTYPE", where="prolog"), "http://vtn/OadrPoll")
    await refusals.refused(HostileInput("too_large", "big", where="body"), "http://vtn/OadrPoll")
    assert len(alerts) == 2 and "[doctype]" in alerts[0] and "at prolog" in alerts[0]
    assert refusals.counts == {"doctype": 5, "too_large": 1}
    await clock.jump(REALERT_AFTER.total_seconds())
    await refusals.refused(HostileInput("doctype", "a DOCTYPE"), "http://vtn/OadrPoll")
    assert len(alerts) == 3


async def test_the_count_of_kinds_is_bounded() -> None:
    refusals = Refusals(ManualClock(T0), None)
    for n in range(100):
        await refusals.refused(HostileInput(f"k{n}", "x"), "u")
    assert len(refusals.counts) == 65 and refusals.counts["other"] == 36


def test_every_answer_to_a_refused_message_renders_as_valid_2_0b() -> None:
    from gateway.config.models import VenLimits
    from gateway.ven.oadr20b.intake import admit
    from gateway.ven.oadr20b.refusals import ANSWERS

    make = escaping(create_message)
    for refused, (kind, _, extra) in ANSWERS.items():
        message = make(kind, ven_id="ven-1", response={"response_code": 454, "response_description": "refused: <x>",
                                                       "request_id": None}, **extra)
        admitted = admit(message.encode(), VenLimits())  # the schema passes it
        assert admitted.message_type == kind, refused
        assert parse_message(admitted.body)[1]["response"]["response_code"] == 454
