"""Every MQTT payload the gateway publishes or accepts, as a versioned pydantic model.

Each model carries ``v`` (the payload's major version, ``1`` today): a consumer that sees a ``v`` it
does not know must not guess. Additive changes (a new optional field) keep ``v``; anything else bumps
it and gets a new schema file (``docs/schemas/<name>.v<v>.json``, written by
``python -m gateway.sinks.mqtt.schemas``).

Outgoing payloads carry ``msg_id``, unique per message and stable across re-sends (it is stored in the
outbox with the message), so a consumer drops a duplicate that a lost PUBACK caused. The one input,
``Override``, forbids unknown fields and coercion: an operator's typo must be refused, not guessed at.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, JsonValue, model_validator

from gateway.domain import EventState

__all__ = [
    "PAYLOAD_MODELS",
    "Alert",
    "Command",
    "EventStatus",
    "Notice",
    "Override",
    "OverrideReply",
    "Severity",
    "Status",
    "from_topic_level",
    "to_topic_level",
]

Severity = Literal["info", "warning", "error", "critical"]
Command = Literal["opt_out", "pause", "resume"]


class _Out(BaseModel):
    """Fields every published payload has. The schemas list fields with defaults as required: the
    gateway always sends them."""

    model_config = ConfigDict(frozen=True, json_schema_serialization_defaults_required=True)

    v: Literal[1] = 1
    msg_id: str = Field(description="unique per message and kept across re-sends: drop a message whose msg_id you have seen")
    site: str = Field(description="the gateway's site id (second topic level)")
    at: AwareDatetime = Field(description="when the gateway produced the message (its clock, UTC)")


class Status(_Out):
    """``<prefix>/<site>/status`` (retained): is the gateway connected, and since when."""

    state: Literal["online", "offline"]
    since: AwareDatetime | None = Field(
        description="when this state began; null in the last will, whose moment the gateway cannot know in advance"
    )
    version: str = Field(description="dcflex version")
    reason: str = Field(description="'started', 'reconnected', 'shutdown', or 'connection lost' (the broker's last will)")


class Alert(_Out):
    """``<prefix>/<site>/alerts``: something an operator should know or act on."""

    severity: Severity
    code: str = Field(description="snake_case, stable: what to match on")
    message: str = Field(description="for people; wording may change")
    event_id: str | None = Field(description="the grid event concerned, if any")
    facts: dict[str, JsonValue] = Field(default_factory=dict, description="the record's other fields, as the engine gave them")


class EventStatus(_Out):
    """``<prefix>/<site>/events/<event id>`` (retained): an event's latest lifecycle state."""

    event_id: str
    state: EventState
    modification: int | None = None
    target_kw: float | None = Field(default=None, description="the strictest site load the event asks for")
    achieved_kw: float | None = Field(default=None, description="mean measured site load over the hold so far")
    detail: str = ""


class Notice(_Out):
    """``<prefix>/<site>/notices``: advance notice that the site's load will drop."""

    notice_id: str
    event_id: str | None = None
    drop_at: AwareDatetime
    drop_kw: float
    reason: str
    exact: bool = Field(description="true when the drop follows from commands the gateway will send, false for a forecast")
    modified: bool = Field(default=False, description="replaces an earlier notice with the same notice_id")
    action: Literal["notice", "update", "cancel"] = Field(
        default="notice", description="notice: announced (at a lead time); update: moved; cancel: will not happen")
    source: str = Field(default="", description="what drops the load: event (the gateway's shed) or job (a job's end)")
    drop_until: AwareDatetime | None = Field(default=None, description="the latest the drop is expected")
    lead_s: float | None = Field(default=None, description="seconds from this message to drop_at")
    seq: int | None = Field(default=None, description="1, 2, ... per notice_id: the latest wins")


class OverrideReply(_Out):
    """``<prefix>/<site>/override/<identity>/reply``: the answer to one override command."""

    request_id: str | None = Field(description="the command's request_id, when it had a readable one")
    command: str | None = Field(description="the command, when it was readable")
    accepted: bool
    answer: str = Field(description="what was done, or precisely why the command was refused")


class Override(BaseModel):
    """``<prefix>/<site>/override/<identity>`` (input): an operator's command to the gateway.

    ``opt_out`` takes the site out of one event (``event_id`` required); ``pause`` stops new shed
    commands site-wide until ``resume``; neither takes an ``event_id``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    v: Literal[1] = Field(default=1, description="payload version; absent means 1")
    command: Command
    event_id: str | None = Field(default=None, min_length=1, max_length=256)
    reason: str = Field(default="", max_length=1000, description="kept in the journal and passed on (e.g. to the VTN)")
    request_id: str | None = Field(
        default=None, min_length=1, max_length=128, description="echoed in the reply; a repeated id is answered again, not re-run"
    )

    @model_validator(mode="after")
    def _event_id_fits_command(self) -> Override:
        if self.command == "opt_out" and self.event_id is None:
            raise ValueError("opt_out needs an event_id")
        if self.command != "opt_out" and self.event_id is not None:
            raise ValueError(f"{self.command} applies to the whole site and takes no event_id")
        return self


PAYLOAD_MODELS: dict[str, type[BaseModel]] = {
    "status": Status,
    "alert": Alert,
    "event": EventStatus,
    "notice": Notice,
    "override": Override,
    "override_reply": OverrideReply,
}
"""Schema file name (``docs/schemas/<name>.v1.json``) → model."""


# Event ids come from the utility. A topic level must not contain '/' (a level separator) or the
# wildcards '+' and '#', and a NUL or control character has no business in a topic; '%' is encoded
# too so the mapping is reversible. Everything else (including non-ASCII) is kept as is.
_UNSAFE = re.compile(r"[%/+#\x00-\x1f\x7f]")
_ENCODED = re.compile(r"%([0-9A-F]{2})")


def to_topic_level(value: str) -> str:
    """``value`` as one topic level: ``% / + #`` and control characters become ``%XX`` (upper-case hex)."""
    if not value:
        raise ValueError("an empty string cannot be a topic level")
    return _UNSAFE.sub(lambda m: f"%{ord(m.group()):02X}", value)


def from_topic_level(level: str) -> str:
    """The inverse of ``to_topic_level``."""
    return _ENCODED.sub(lambda m: chr(int(m.group(1), 16)), level)


def parse_at(value: object, fallback: datetime) -> datetime:
    """A record's ``at`` (ISO-8601 string) as an aware datetime; ``fallback`` when absent or unreadable."""
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else fallback
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return fallback
        return parsed if parsed.tzinfo is not None else fallback
    return fallback
