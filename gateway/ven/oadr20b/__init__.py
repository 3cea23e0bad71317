"""The OpenADR 2.0b edge: openleadr's client behind dcflex's bounded transport and intake, translating the
VTN's events into ``GridEvent``s and the core's answers, opt-outs and reports back into 2.0b messages."""

from gateway.ven.oadr20b.client import Ven
from gateway.ven.oadr20b.translate import event_identity, event_status, jsonable, startafter_offset, translate_event

__all__ = ["Ven", "event_identity", "event_status", "jsonable", "startafter_offset", "translate_event"]
