"""The one intake for every byte a VTN sends: bytes in, a clean document out, or a precise refusal.

Why it exists: openleadr hands a VTN's answer straight to a schema-validating lxml parser, and such a parser
segfaults on one internal entity; it also decodes as UTF-8 only and bounds nothing. So before openleadr sees a
message, this module

1. decodes it by the rules XML gives for finding an encoding (a byte-order mark, else the XML declaration,
   else UTF-8), refusing an encoding Python does not know or bytes that are not in the declared one;
2. refuses any DOCTYPE (with it every entity, external reference and internal subset) before any parser runs;
3. parses the text, re-encoded as UTF-8, with a hardened parser (no entity resolution, no DTD, no network,
   libxml2's own size limits) and refuses entity references, XInclude and processing instructions it finds;
4. walks the tree once for the limits (depth, elements, events, signals, intervals, every id and string);
5. validates the tree against the OpenADR 2.0b schema.

Once parsed, ``check_report_requests`` refuses what the schema allows but the VEN must not act on in an
``oadrCreateReport`` (negative periods, more report requests in force than the limit).

What comes out is the document as clean UTF-8 bytes (no declaration of another encoding, no DTD), which is safe
for openleadr's own parser. Everything here is pure and bounded by the limits; the streamed, size-bounded read
of the HTTP body (compressed or not) is ``gateway.ven.oadr20b.transport``.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from lxml import etree
from openleadr.messaging import XML_SCHEMA  # the 2.0b schema openleadr's own parser validates against

from gateway.config.models import VenLimits
from gateway.exceptions import HostileInput

__all__ = ["Admitted", "admit", "check_report_requests", "decode_xml", "message_type_of"]

_XINCLUDE_NS = "http://www.w3.org/2001/XInclude"
_OADR_NS = "http://openadr.org/oadr-2.0b/2012/07"
_EI_NS = "http://docs.oasis-open.org/ns/energyinterop/201110"
_STRM_NS = "urn:ietf:params:xml:ns:icalendar-2.0:stream"
_PYLD_NS = "http://docs.oasis-open.org/ns/energyinterop/201110/payloads"
_DECL = re.compile(r"^<\?xml\s[^>]*?\?>", re.DOTALL)
_DECL_ENCODING = re.compile(rb"""^<\?xml\s[^>]*?encoding\s*=\s*["']([A-Za-z][A-Za-z0-9._-]{0,39})["']""")
_DOCTYPE = re.compile(r"<!DOCTYPE", re.IGNORECASE)
# Elements whose text is an identifier (eventID, venID, rID, requestID, marketContext, ...): held to the id limit.
_ID_NAME = re.compile(r"(ID|Id|id|marketContext|venName|resourceID|groupID|partyID)$")
_BOMS = ((codecs.BOM_UTF32_LE, "utf-32-le"), (codecs.BOM_UTF32_BE, "utf-32-be"), (codecs.BOM_UTF8, "utf-8"),
         (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"))


@dataclass(frozen=True, slots=True)
class Admitted:
    """A message that passed the intake: its type (``oadrDistributeEvent``, ...) and clean UTF-8 bytes."""

    message_type: str
    body: bytes
    tree: etree._Element


def _parser() -> etree.XMLParser:
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False,
                           huge_tree=False, collect_ids=False, remove_pis=False, strip_cdata=True)


_PARSER = _parser()


def decode_xml(body: bytes) -> str:
    """The document's text, by XML's rules for its encoding (BOM, then declaration, then UTF-8)."""
    encoding = None
    for bom, name in _BOMS:
        if body.startswith(bom):
            body, encoding = body[len(bom):], name
            break
    if encoding is None:
        if body[:4] in (b"<\x00?\x00", b"\x00<\x00?"):  # UTF-16 without a BOM, as XML's appendix F allows
            encoding = "utf-16-le" if body[0] == 0x3C else "utf-16-be"
        else:
            found = _DECL_ENCODING.match(body.lstrip()[:200])
            encoding = found.group(1).decode("ascii") if found else "utf-8"
    try:
        codec = codecs.lookup(encoding)
    except LookupError:
        raise HostileInput("encoding", f"the document declares encoding {encoding!r}, which is unknown",
                           where="XML declaration") from None
    try:
        return body.decode(codec.name)
    except UnicodeDecodeError as err:
        raise HostileInput("encoding", f"the bytes are not valid {codec.name} ({err.reason} at byte {err.start})",
                           where=f"byte {err.start}") from None


def message_type_of(tree: etree._Element) -> str:
    """The 2.0b message a payload carries (``oadrSignedObject``'s child), or the root's name."""
    signed = tree.find(f"{{{_OADR_NS}}}oadrSignedObject")
    holder = signed if signed is not None else tree
    for child in holder:
        if isinstance(child.tag, str):
            return str(etree.QName(child).localname)
    return etree.QName(tree).localname if isinstance(tree.tag, str) else "?"


def _path(element: etree._Element) -> str:
    parts: list[str] = []
    node: etree._Element | None = element
    while node is not None and len(parts) < 12:
        if isinstance(node.tag, str):
            name = etree.QName(node).localname
            parent = node.getparent()
            if parent is not None:
                same = [c for c in parent if c.tag == node.tag]
                if len(same) > 1:
                    name += f"[{same.index(node) + 1}]"
            parts.append(name)
        node = node.getparent()
    return "/".join(reversed(parts))


def _walk(root: etree._Element, limits: VenLimits) -> None:
    """One pass over the tree: refused kinds of node, depth, counts and lengths."""
    elements = 0
    stack: list[tuple[etree._Element, int]] = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, etree._Entity):
            raise HostileInput("entity", f"an entity reference &{node.name}; (entities are refused)",
                               where=_path(node.getparent()) if node.getparent() is not None else "")
        if isinstance(node, etree._ProcessingInstruction):
            raise HostileInput("processing_instruction", f"a processing instruction <?{node.target}?>",
                               where=_path(node.getparent()) if node.getparent() is not None else "")
        if not isinstance(node.tag, str):  # a comment
            continue
        elements += 1
        if elements > limits.max_elements:
            raise HostileInput("too_many", f"more than {limits.max_elements} elements", where=_path(node))
        if depth > limits.max_depth:
            raise HostileInput("too_deep", f"nesting deeper than {limits.max_depth}", where=_path(node))
        qname = etree.QName(node)
        if qname.namespace == _XINCLUDE_NS:
            raise HostileInput("xinclude", "an XInclude element (external references are refused)", where=_path(node))
        text = node.text
        if text is not None:
            limit = limits.max_id_chars if _ID_NAME.search(qname.localname) else limits.max_text_chars
            if len(text) > limit:
                raise HostileInput("too_long", f"{len(text)} characters, more than {limit}", where=_path(node))
        for name, value in node.attrib.items():
            if len(value) > limits.max_id_chars:
                raise HostileInput("too_long", f"attribute {etree.QName(name).localname} of {len(value)} characters, "
                                   f"more than {limits.max_id_chars}", where=_path(node))
        if node.tail is not None and len(node.tail) > limits.max_text_chars:
            raise HostileInput("too_long", f"{len(node.tail)} characters of text after an element", where=_path(node))
        _count(node, qname, limits)
        stack.extend((child, depth + 1) for child in reversed(node))


def _count(node: etree._Element, qname: etree.QName, limits: VenLimits) -> None:
    """Per-container counts: events per distribution, signals per event, intervals per signal, report requests
    per oadrCreateReport."""
    local = qname.localname
    if local == "oadrDistributeEvent" and qname.namespace == _OADR_NS:
        found, limit, what = len(node.findall(f"{{{_OADR_NS}}}oadrEvent")), limits.max_events, "events"
    elif local == "eiEventSignals" and qname.namespace == _EI_NS:
        found = len(node.findall(f"{{{_EI_NS}}}eiEventSignal")) + len(node.findall(f"{{{_EI_NS}}}eiEventBaseline"))
        limit, what = limits.max_signals, "signals in one event"
    elif local == "intervals" and qname.namespace == _STRM_NS:
        found, limit, what = len(node), limits.max_intervals, "intervals in one signal"
    elif local == "oadrCreateReport" and qname.namespace == _OADR_NS:
        found = len(node.findall(f"{{{_OADR_NS}}}oadrReportRequest"))
        limit, what = limits.max_report_requests, "report requests"
    else:
        return
    if found > limit:
        raise HostileInput("too_many", f"{found} {what}, more than {limit}", where=_path(node))


def admit(body: bytes, limits: VenLimits) -> Admitted:
    """Pass ``body`` (the whole, already size-bounded and decompressed answer) or raise ``HostileInput``."""
    if len(body) > limits.max_body_bytes:
        raise HostileInput("too_large", f"{len(body)} bytes, more than {limits.max_body_bytes}", where="body")
    text = decode_xml(body).lstrip("\ufeff \t\r\n")
    declaration = _DECL.match(text)
    rest = text[declaration.end():] if declaration else text
    if _DOCTYPE.search(rest, 0, _prolog_end(rest)):
        raise HostileInput("doctype", "a DOCTYPE declaration (DTDs, entities and external references are refused)",
                           where="prolog")
    clean = ('<?xml version="1.0" encoding="UTF-8"?>' + rest).encode("utf-8")
    try:
        root = etree.fromstring(clean, _PARSER)
    except etree.XMLSyntaxError as err:
        raise HostileInput("not_xml", f"not well-formed XML: {_short(str(err))}", where=f"line {err.lineno}") from None
    if root.getroottree().docinfo.doctype:
        raise HostileInput("doctype", "a DOCTYPE declaration", where="prolog")
    for outside in (*root.itersiblings(preceding=True), *root.itersiblings()):
        if isinstance(outside, etree._ProcessingInstruction):
            raise HostileInput("processing_instruction", f"a processing instruction <?{outside.target}?>",
                               where="outside the root element")
    message_type = message_type_of(root)
    try:
        _walk(root, limits)
        if not XML_SCHEMA.validate(root):
            error = XML_SCHEMA.error_log.last_error
            detail = _short(error.message) if error is not None else "invalid"
            raise HostileInput("schema", f"not a valid OpenADR 2.0b {message_type}: {detail}",
                               where=f"line {error.line}" if error is not None else message_type)
    except HostileInput as err:
        err.message_type = message_type
        err.request_id = _request_id(root, limits)
        raise
    return Admitted(message_type, clean, root)


def _request_id(root: etree._Element, limits: VenLimits) -> str | None:
    """The message's first requestID (the one its answer echoes), when it is within the id limit."""
    for node in root.iter(f"{{{_PYLD_NS}}}requestID"):
        text = node.text or ""
        return text if 0 < len(text) <= limits.max_id_chars else None
    return None


def _prolog_end(text: str) -> int:
    """Where the root element starts (a DOCTYPE can only come before it): the first ``<`` that opens a name."""
    found = re.search(r"<[^?!]", text)
    return found.start() if found else len(text)


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def check_report_requests(payload: Mapping[str, Any], *, in_force: int = 0, limit: int = 20) -> None:
    """Refuse an ``oadrCreateReport`` asking for a negative period (xs:duration allows ``-PT5S``: openleadr would
    schedule its report job from it and fail inside its scheduler, after answering the VTN 200), or that would put
    more than ``limit`` report requests in force (each is a job the VEN runs; new ids would pile up)."""
    requests = payload.get("report_requests") or []
    if in_force + len(requests) > limit:
        raise HostileInput("too_many", f"{len(requests)} more report request(s) on top of {in_force} in force, more "
                           f"than {limit} (max_report_requests)", where="oadrCreateReport",
                           message_type="oadrCreateReport", request_id=payload.get("request_id"))
    for request in requests:
        spec = request.get("report_specifier") if isinstance(request, Mapping) else None
        if not isinstance(spec, Mapping):
            continue
        for name in ("granularity", "report_back_duration"):
            value = spec.get(name)
            if isinstance(value, timedelta) and value < timedelta(0):
                raise HostileInput("bad_value", f"{name} {value} of report request {request.get('report_request_id')!r}"
                                   " is negative",
                                   where=f"oadrCreateReport/{name}", message_type="oadrCreateReport",
                                   request_id=payload.get("request_id"))
