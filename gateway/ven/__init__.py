"""The protocol edge: a ``VenPort`` per protocol, and what every protocol shares.

``build_ven`` picks the adapter ``[ven] protocol`` names (``"openadr2"``: OpenADR 2.0b, in
``gateway.ven.oadr20b``). Shared and protocol-free: the event book (``gateway.ven.book``: answers per
revision, live events, implied cancellation) and the back-off that keeps a VEN registered
(``gateway.ven.backoff``).
"""

from __future__ import annotations

from gateway.clock import Clock
from gateway.config.models import VenConfig
from gateway.ports import EventHandler, SiteFeed, VenPort
from gateway.ven.book import ENDED_REASON, IMPLIED_CANCEL_REASON, VTN_CANCEL_REASON, Answer, EventBook
from gateway.ven.oadr20b import Ven
from gateway.ven.oadr20b.refusals import Alert

__all__ = ["ENDED_REASON", "IMPLIED_CANCEL_REASON", "VTN_CANCEL_REASON", "Answer", "EventBook", "Ven", "build_ven"]


def build_ven(config: VenConfig, handler: EventHandler, clock: Clock, feed: SiteFeed | None = None, *,
              alert: Alert | None = None) -> VenPort:
    """The VEN for ``config.protocol``, handing events to ``handler`` and reporting what ``feed`` tells it;
    ``alert(code, message)`` is told of a VTN's input refused (once per kind an hour)."""
    if config.protocol == "openadr2":
        return Ven(config, handler, clock, feed, alert=alert)
    raise AssertionError(f"unhandled ven.protocol {config.protocol!r}")  # the config's Literal allows no other
