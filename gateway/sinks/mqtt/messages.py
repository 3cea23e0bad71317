"""Topics, message ids, and the mapping from the engine's records to MQTT messages.

Kept apart from the connection handling (``sink.py``) because it is pure: a record in, at most one
``OutMessage`` out, ready to be stored in the outbox and published later, unchanged, as often as
it takes.
"""

from __future__ import annotations

import itertools
import logging
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

import orjson
from pydantic import BaseModel

from gateway.exceptions import ConfigError
from gateway.sinks.mqtt.payloads import Alert, EventStatus, Notice, parse_at, to_topic_level

__all__ = ["MessageIds", "OutMessage", "RecordMapper", "Topics"]

log = logging.getLogger(__name__)

_BAD_PREFIX = re.compile(r"[+#\x00-\x1f\x7f]")
_SEVERITIES = frozenset({"info", "warning", "error", "critical"})
_ALERT_FIELDS = frozenset({"at", "event_id", "severity", "code", "message"})


@dataclass(frozen=True)
class Topics:
    """Every topic of one site: ``<prefix>/<site>/...`` (see ``docs/mqtt.md``)."""

    prefix: str
    site: str

    def __post_init__(self) -> None:
        problems = []
        p = self.prefix
        if not p or p.startswith(("/", "$")) or p.endswith("/") or "//" in p or _BAD_PREFIX.search(p):
            problems.append(("sinks.mqtt.topic_prefix",
                             f"{p!r} is not a usable topic prefix: it must be non-empty, not start with '/' or '$', "
                             "not end with '/', and contain no empty level, '+', '#' or control character"))
        if not self.site or "/" in self.site or _BAD_PREFIX.search(self.site):
            problems.append(("sinks.mqtt.site_id", f"{self.site!r} is not usable as one topic level"))
        if problems:
            raise ConfigError("sinks.mqtt", problems)

    @property
    def base(self) -> str:
        return f"{self.prefix}/{self.site}"

    @property
    def status(self) -> str:
        return f"{self.base}/status"

    @property
    def alerts(self) -> str:
        return f"{self.base}/alerts"

    @property
    def notices(self) -> str:
        return f"{self.base}/notices"

    @property
    def override_filter(self) -> str:
        """What the gateway subscribes to: one level (the sender's identity) below ``override``."""
        return f"{self.base}/override/+"

    def event(self, event_id: str) -> str:
        return f"{self.base}/events/{to_topic_level(event_id)}"

    def reply(self, identity: str) -> str:
        return f"{self.base}/override/{identity}/reply"

    def identity_of(self, topic: str) -> str | None:
        """The identity level of an override topic; None for any other topic (e.g. a reply)."""
        head = f"{self.base}/override/"
        if not topic.startswith(head):
            return None
        rest = topic[len(head):]
        return None if "/" in rest else rest


class MessageIds:
    """``<nonce>-<n>``: a random nonce per gateway start and a counter, so ids never repeat across
    restarts and a consumer can still see the order (and gaps) within one run."""

    def __init__(self, nonce: str | None = None) -> None:
        self.nonce = nonce or secrets.token_hex(6)
        self._seq = itertools.count(1)

    def next(self) -> str:
        return f"{self.nonce}-{next(self._seq)}"


@dataclass(frozen=True)
class OutMessage:
    """One message to publish (QoS 1). ``encode``/``decode`` give the outbox's text form:
    a retain flag character, the topic, a newline, the JSON payload (topics hold no newline)."""

    topic: str
    payload: str
    retain: bool = False

    def encode(self) -> str:
        return ("R" if self.retain else "-") + self.topic + "\n" + self.payload

    @staticmethod
    def decode(body: str) -> OutMessage:
        head, _, payload = body.partition("\n")
        return OutMessage(topic=head[1:], payload=payload, retain=head[:1] == "R")


def _json_safe(facts: Mapping[str, object]) -> dict[str, object]:
    """Facts as plain JSON values (anything else becomes its ``str``), so an odd fact never costs the alert."""
    safe: dict[str, object] = orjson.loads(orjson.dumps(dict(facts), default=str, option=orjson.OPT_NON_STR_KEYS))
    return safe


class RecordMapper:
    """Turns the engine's records (``alert``, ``state``, ``notice``) into messages; other kinds → None.

    ``opt`` and ``plan`` are not mapped: the events topic is retained and must hold the lifecycle
    state, and their substance reaches operators as the state change that follows them.
    """

    def __init__(self, topics: Topics, ids: MessageIds) -> None:
        self.topics = topics
        self.ids = ids

    def map(self, kind: str, record: Mapping[str, object], now: datetime) -> OutMessage | None:
        at = parse_at(record.get("at"), now)
        event_id = record.get("event_id")
        eid = event_id if isinstance(event_id, str) and event_id else None
        if kind == "alert":
            return self._alert(record, eid, at)
        if kind == "state":
            if eid is None:
                log.warning("a state record without an event id is not published: %r", record)
                return None
            model: BaseModel = EventStatus(
                msg_id=self.ids.next(), site=self.topics.site, at=at, event_id=eid, state=record["state"],  # type: ignore[arg-type]
                modification=record.get("modification"), target_kw=record.get("target_kw"),  # type: ignore[arg-type]
                achieved_kw=record.get("achieved_kw"), detail=str(record.get("detail") or ""),  # type: ignore[arg-type]
            )
            return OutMessage(self.topics.event(eid), model.model_dump_json(), retain=True)
        if kind == "notice":
            model = Notice(
                msg_id=self.ids.next(), site=self.topics.site, at=at, event_id=eid,
                notice_id=str(record.get("notice_id") or ""), drop_at=record["drop_at"],  # type: ignore[arg-type]
                drop_kw=record["drop_kw"], reason=str(record.get("reason") or ""),  # type: ignore[arg-type]
                exact=bool(record.get("exact", False)), modified=bool(record.get("modified", False)),
                action=record.get("action") or "notice", source=str(record.get("source") or ""),  # type: ignore[arg-type]
                drop_until=record.get("drop_until"), lead_s=record.get("lead_s"), seq=record.get("seq"),  # type: ignore[arg-type]
            )
            return OutMessage(self.topics.notices, model.model_dump_json())
        return None

    def _alert(self, record: Mapping[str, object], eid: str | None, at: datetime) -> OutMessage:
        facts = {k: v for k, v in record.items() if k not in _ALERT_FIELDS}
        severity = record.get("severity")
        if severity not in _SEVERITIES:
            facts["given_severity"] = severity
            severity = "warning"
        model = Alert(
            msg_id=self.ids.next(), site=self.topics.site, at=at, severity=severity,  # type: ignore[arg-type]
            code=str(record.get("code") or "unknown"), message=str(record.get("message") or ""), event_id=eid,
            facts=_json_safe(facts) if facts else {},  # type: ignore[arg-type]
        )
        return OutMessage(self.topics.alerts, model.model_dump_json())
