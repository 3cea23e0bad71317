"""The OpenADR 2.0b VEN: openleadr's client, translation of events into ``GridEvent``s, and reports.

``Ven`` is the long-running edge the engine hands to; ``translate_event`` is its pure gate.
"""

from gateway.ven.client import ENDED_REASON, IMPLIED_CANCEL_REASON, VTN_CANCEL_REASON, Answer, EventBook, Ven
from gateway.ven.translate import event_identity, event_status, jsonable, startafter_offset, translate_event

__all__ = [
    "ENDED_REASON",
    "IMPLIED_CANCEL_REASON",
    "VTN_CANCEL_REASON",
    "Answer",
    "EventBook",
    "Ven",
    "event_identity",
    "event_status",
    "jsonable",
    "startafter_offset",
    "translate_event",
]
