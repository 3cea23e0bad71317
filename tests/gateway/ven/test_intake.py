"""The intake in front of openleadr's parser: every class of hostile document refused with its kind and place,
every encoding XML allows decoded, valid messages passed through unchanged in meaning."""

from __future__ import annotations

import pytest
from openleadr.messaging import create_message, parse_message

from gateway.config.models import VenLimits
from gateway.exceptions import HostileInput, ProtocolError
from gateway.ven.oadr20b.intake import admit, decode_xml
from tests.hostile_corpus import FILE_CASES, FIXTURES, Case
from tests.hostile_vtn import distribution, event, valid

LIMITS = VenLimits()


def refused(body: bytes, limits: VenLimits = LIMITS) -> HostileInput:
    with pytest.raises(HostileInput) as caught:
        admit(body, limits)
    return caught.value


@pytest.mark.parametrize("case", FILE_CASES, ids=lambda c: c.name)
def test_every_file_of_the_corpus_is_refused_with_its_kind(case: Case) -> None:
    err = refused(case.make()[0].body)
    assert err.kind == case.kind, str(err)
    assert isinstance(err, ProtocolError) and str(err)


def test_the_corpus_files_are_all_cases() -> None:
    assert {p.name for p in FIXTURES.iterdir() if p.name != "README.md"} == {f"{c.name}.{'txt' if c.name == 'not-xml' else 'xml'}"
                                                                             for c in FILE_CASES}


def test_the_segfaulting_entity_never_reaches_a_parser() -> None:
    err = refused((FIXTURES / "doctype-internal-entity.xml").read_bytes())
    assert (err.kind, err.where) == ("doctype", "prolog")


def test_a_valid_distribution_passes_and_parses_the_same() -> None:
    body = valid("evt-1")
    admitted = admit(body, LIMITS)
    assert admitted.message_type == "oadrDistributeEvent"
    assert parse_message(admitted.body) == parse_message(body)


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32", "iso-8859-1", "windows-1252",
                                      "utf-8-sig", "us-ascii"])
def test_every_encoding_python_knows_is_decoded(encoding: str) -> None:
    text = valid("evt-enc").decode("utf-8")
    name = {"utf-8-sig": "utf-8", "utf-16-le": "utf-16", "utf-16-be": "utf-16"}.get(encoding, encoding)
    body = text.replace('encoding="utf-8"', f'encoding="{name.upper()}"', 1).encode(encoding)
    _, payload = parse_message(admit(body, LIMITS).body)
    assert payload["events"][0]["event_descriptor"]["event_id"] == "evt-enc"


def test_latin1_text_survives_decoding() -> None:
    body = '<?xml version="1.0" encoding="ISO-8859-1"?><r>caf\u00e9</r>'.encode("iso-8859-1")
    assert decode_xml(body).endswith("caf\u00e9</r>")


def test_bytes_that_are_not_the_declared_encoding_are_refused_with_the_byte() -> None:
    err = refused(b'<?xml version="1.0" encoding="utf-8"?><r>\xff</r>')
    assert err.kind == "encoding" and "byte" in err.where


@pytest.mark.parametrize(("limits", "body", "kind"), [
    (VenLimits(max_events=2), distribution(event("a"), event("b"), event("c")), "too_many"),
    (VenLimits(max_signals=1), None, "too_many"),
    (VenLimits(max_id_chars=16), valid("x" * 17), "too_long"),
    (VenLimits(max_text_chars=256), None, "too_long"),
    (VenLimits(max_depth=16), None, "too_deep"),
    (VenLimits(max_elements=100), distribution(*(event(f"e{i}") for i in range(5))), "too_many"),
    (VenLimits(max_body_bytes=4096), distribution(*(event(f"e{i}") for i in range(5))), "too_large"),
])
def test_each_limit_refuses_past_it(limits: VenLimits, body: bytes | None, kind: str) -> None:
    if body is None:
        e = event("lim")
        if limits.max_signals == 1:
            e["event_signals"] = e["event_signals"] * 2
        elif limits.max_text_chars == 256:
            e["event_descriptor"]["vtn_comment"] = "c" * 300
        body = distribution(e)
    if limits.max_depth == 16:
        body = b"<r>" + b"<a>" * 20 + b"</a>" * 20 + b"</r>"
    err = refused(body, limits)
    assert err.kind == kind, str(err)


def test_a_refused_distribution_carries_its_type_and_a_usable_request_id() -> None:
    err = refused(distribution(event("a"), event("b"), request_id="req-77"), VenLimits(max_events=1))
    assert err.message_type == "oadrDistributeEvent" and err.request_id == "req-77"


def test_a_oadr_response_message_is_typed() -> None:
    body = create_message("oadrResponse", response={"response_code": 200, "response_description": "OK",
                                                    "request_id": None}, ven_id="v").encode()
    assert admit(body, LIMITS).message_type == "oadrResponse"
