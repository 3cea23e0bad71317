"""A property-based fuzzer of everything the VEN does with the bytes a VTN sends: valid 2.0b messages mutated in
structure (elements dropped, doubled, moved, nested), values (any text, huge numbers, control characters,
markup), bytes (flipped, cut, spliced) and encodings (re-encoded, declared wrongly, a DOCTYPE added).

The property: the receive path (``admit`` → openleadr's parser → ``translate_event``) either accepts a message or
refuses it with a ``ProtocolError`` (``HostileInput`` is one); nothing else escapes, nothing crashes. A small
budget runs in ``make test``; ``make fuzz`` sets ``DCFLEX_FUZZ_EXAMPLES`` for a large one.
"""

from __future__ import annotations

import copy
import os
import re
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree
from openleadr.messaging import create_message, parse_message

from gateway.config.models import VenLimits
from gateway.exceptions import ProtocolError
from gateway.ven.oadr20b.intake import admit
from gateway.ven.oadr20b.translate import translate_event
from tests.hostile_vtn import distribution, event

EXAMPLES = int(os.environ.get("DCFLEX_FUZZ_EXAMPLES", "150"))
LIMITS = VenLimits()
NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=EXAMPLES <= 150,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _seeds() -> list[bytes]:
    ok = {"response_code": 200, "response_description": "OK", "request_id": "r-1"}
    two = event("e-2", start=NOW + timedelta(hours=1), signal_name="SIMPLE", signal_type="level", kw=2)
    return [
        distribution(event("e-1", start=NOW + timedelta(minutes=10))),
        distribution(event("e-1", start=NOW), two),
        create_message("oadrResponse", response=ok, ven_id="v-1").encode(),
        create_message("oadrCreatedPartyRegistration", response=ok, ven_id="v-1", registration_id="reg",
                       vtn_id="VTN", profiles=[{"profile_name": "2.0b", "transports": [{"transport_name": "simpleHttp"}]}],
                       requested_oadr_poll_freq=timedelta(seconds=10)).encode(),
        create_message("oadrRequestReregistration", ven_id="v-1").encode(),
    ]


SEEDS = _seeds()
TEXTS = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["NaN", "inf", "-1", "1e309", "9" * 5000, "", " ", "&amp;", "<x/>", "]]>", "\x00", "P1000000D",
                     "PT-5M", "2026-13-45T99:99:99Z", "0" * 300, "true", "far", "cancelled", "x-nope"]),
    st.binary(max_size=20).map(lambda b: b.decode("latin-1")),
)


def receive(body: bytes) -> None:
    """The VEN's path for one answer, as the client runs it (without the network)."""
    admitted = admit(body, LIMITS)
    try:
        kind, payload = parse_message(admitted.body)
    except Exception as err:  # the client turns this into a refusal of kind "unreadable"
        raise ProtocolError(f"unreadable: {type(err).__name__}") from err
    if kind == "oadrDistributeEvent":
        for raw in payload.get("events") or []:
            translate_event(raw, ven_key="v-1", received_at=NOW)


def check(body: bytes) -> None:
    try:
        receive(body)
    except ProtocolError:
        pass


_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _xmlable(text: str) -> str:
    """What an lxml tree can hold (control characters go in through the byte mutations instead)."""
    return _NOT_XML.sub("", text)


def _mutate_tree(data: st.DataObject, body: bytes) -> bytes:
    root = etree.fromstring(body)
    nodes = [n for n in root.iter() if isinstance(n.tag, str)]
    for _ in range(data.draw(st.integers(1, 4), label="edits")):
        node = data.draw(st.sampled_from(nodes), label="node")
        parent = node.getparent()
        op = data.draw(st.sampled_from(["text", "drop", "double", "move", "wrap", "attr", "tail"]), label="op")
        if op == "text":
            node.text = _xmlable(data.draw(TEXTS, label="text"))
        elif op == "drop" and parent is not None:
            parent.remove(node)
        elif op == "double" and parent is not None:
            parent.insert(parent.index(node), copy.deepcopy(node))
        elif op == "move" and parent is not None:
            target = data.draw(st.sampled_from(nodes), label="target")
            if node not in list(target.iterancestors()) and target is not node:
                target.append(node)
        elif op == "wrap" and parent is not None:
            wrapper = etree.Element(data.draw(st.sampled_from(["x", "{urn:x}y", node.tag]), label="wrapper"))
            parent.replace(node, wrapper)
            wrapper.append(node)
        elif op == "attr":
            node.set(data.draw(st.sampled_from(["a", "{urn:x}b", "Id"]), label="attr"),
                     _xmlable(data.draw(TEXTS, label="value")))
        elif op == "tail":
            node.tail = _xmlable(data.draw(TEXTS, label="tail"))
    return bytes(etree.tostring(root, xml_declaration=True, encoding="utf-8"))


def _mutate_bytes(data: st.DataObject, body: bytes) -> bytes:
    out = bytearray(body)
    for _ in range(data.draw(st.integers(1, 6), label="byte edits")):
        if not out:
            break
        at = data.draw(st.integers(0, len(out) - 1), label="at")
        op = data.draw(st.sampled_from(["flip", "insert", "delete", "cut", "splice"]), label="byte op")
        if op == "flip":
            out[at] = data.draw(st.integers(0, 255), label="byte")
        elif op == "insert":
            out[at:at] = data.draw(st.sampled_from([b"<", b"&", b"&a;", b"]]>", b"<!--", b"\x00", b"\xef\xbb\xbf",
                                                    b"<!DOCTYPE x [<!ENTITY a 'b'>]>", b"\xff\xfe"]), label="insert")
        elif op == "delete":
            del out[at:at + data.draw(st.integers(1, 50), label="span")]
        elif op == "cut":
            del out[at:]
        elif op == "splice":
            other = data.draw(st.sampled_from(SEEDS), label="other")
            start = data.draw(st.integers(0, len(other) - 1), label="start")
            out[at:at] = other[start:start + 200]
    return bytes(out)


def _reencode(data: st.DataObject, body: bytes) -> bytes:
    text = body.decode("utf-8")
    codec = data.draw(st.sampled_from(["utf-16", "utf-16-le", "utf-32", "iso-8859-1", "cp1252", "ascii", "utf-8-sig"]),
                      label="codec")
    declared = data.draw(st.sampled_from(["UTF-8", "UTF-16", "ISO-8859-1", "EBCDIC-nope", codec]), label="declared")
    text = text.replace('encoding="utf-8"', f'encoding="{declared}"', 1)
    return text.encode(codec, errors="replace")


@FUZZ
@given(st.data())
def test_mutated_messages_are_accepted_or_refused_never_crash(data: st.DataObject) -> None:
    body = data.draw(st.sampled_from(SEEDS), label="seed")
    how = data.draw(st.sampled_from(["tree", "bytes", "encoding", "tree+bytes", "tree+encoding"]), label="how")
    if "tree" in how:
        body = _mutate_tree(data, body)
    if how.endswith("bytes"):
        body = _mutate_bytes(data, body)
    if how.endswith("encoding"):
        body = _reencode(data, body)
    check(body)


@FUZZ
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_never_crash(body: bytes) -> None:
    check(body)


def test_the_seeds_themselves_are_accepted() -> None:
    for seed in SEEDS:
        receive(seed)
