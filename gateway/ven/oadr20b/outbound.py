"""What the VEN writes into a message is escaped, and ids it derives from foreign ids are safe by construction.

Why: openleadr renders its XML templates without escaping, so a VTN's eventID holding ``&lt;/ei:rID&gt;`` came
back as markup inside dcflex's own ``oadrRegisterReport``. Every message the VEN builds goes through
``escaping(create_message)``, which escapes every string in the payload (``&``, ``<``, ``>``, quotes) and replaces
characters XML cannot carry, whatever its origin; and an id dcflex makes from a foreign one (a notice's data point
and resource) keeps the foreign id only when it is short and plain, else a digest of it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Callable
from typing import Any
from xml.sax.saxutils import escape

__all__ = ["escaping", "safe_token", "xml_legal", "xml_safe"]

_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_PLAIN = re.compile(r"^[A-Za-z0-9._:@-]{1,80}$")
_QUOTES = {'"': "&quot;", "'": "&apos;"}


def safe_token(foreign: str) -> str:
    """``foreign`` itself when it is at most 80 plain characters (letters, digits, ``._:@-``), else ``h-`` and
    24 hex digits of its SHA-256: stable, short and inert wherever it is written."""
    if _PLAIN.match(foreign):
        return foreign
    return "h-" + hashlib.sha256(foreign.encode("utf-8", "surrogatepass")).hexdigest()[:24]


def xml_legal(text: str) -> str:
    """``text`` with every character XML cannot carry replaced by ``?`` (not escaped: for logs and for strings that
    ``xml_safe`` escapes later)."""
    return _NOT_XML.sub("?", text)


def xml_safe(value: Any) -> Any:
    """``value`` with every string in it (in dicts, lists, tuples and dataclasses) escaped for XML text."""
    if isinstance(value, str):
        return escape(xml_legal(value), _QUOTES)
    if isinstance(value, dict):
        return {key: xml_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [xml_safe(item) for item in value]
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        return tuple(xml_safe(item) for item in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changes = {f.name: xml_safe(getattr(value, f.name)) for f in dataclasses.fields(value) if f.init}
        return dataclasses.replace(value, **changes)
    return value


def escaping(create_message: Callable[..., str]) -> Callable[..., str]:
    """Wrap openleadr's ``create_message`` so that every payload is ``xml_safe`` before it is rendered."""

    def create(message_type: str, **payload: Any) -> str:
        return create_message(message_type, **xml_safe(payload))

    return create
