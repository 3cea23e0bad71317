"""What a VEN remembers of the VTN's events, whatever the protocol: its answer to each revision, and which
events went to the handler and are still live (what an implied cancellation is judged against).

Protocol-free: the OpenADR 2.0b adapter (``gateway.ven.oadr20b``) keeps one per registration; a revision is
2.0b's modificationNumber there, and whatever monotonic number another protocol gives its events elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gateway.exceptions import ProtocolError

__all__ = ["ENDED_REASON", "IMPLIED_CANCEL_REASON", "OK", "VTN_CANCEL_REASON", "Answer", "EventBook"]

VTN_CANCEL_REASON = "cancelled by VTN"
IMPLIED_CANCEL_REASON = "implied cancellation: absent from the VTN's latest distribution"
ENDED_REASON = "event already ended"
OK = 200
MEMORY = 1000  # answers and cancellations remembered (oldest forgotten first)


@dataclass(frozen=True, slots=True)
class Answer:
    """What the VEN told the VTN about one revision of an event: opt type, why, and the status code."""

    event_id: str
    revision: int
    opt_type: str
    description: str
    code: int = OK


class EventBook:
    """What this VEN process has seen: its answer per event, and the events handed to the handler
    that are still live (their end), which is what implied cancellation is judged against."""

    def __init__(self) -> None:
        self._answers: dict[str, Answer] = {}
        self._live: dict[str, datetime] = {}
        self._cancelled: dict[str, None] = {}

    def answer(self, event_id: str) -> Answer | None:
        return self._answers.get(event_id)

    def cached(self, event_id: str, revision: int) -> Answer | None:
        answer = self._answers.get(event_id)
        return answer if answer is not None and answer.revision == revision else None

    def remember(self, answer: Answer) -> None:
        self._answers.pop(answer.event_id, None)
        self._answers[answer.event_id] = answer
        _trim(self._answers)

    def opt_out(self, event_id: str, revision: int, reason: str) -> None:
        """Answer this event revision ``optOut`` from now on (an operator's override of our optIn)."""
        previous = self._answers.get(event_id)
        if previous is not None and previous.revision > revision:
            raise ProtocolError(f"cannot opt out of modification {revision}: the VTN has since sent modification "
                                f"{previous.revision}; opt out of that one", event_id=event_id)
        code = previous.code if previous is not None and previous.revision == revision else OK
        self.remember(Answer(event_id, revision, "optOut", reason or "opted out", code))

    def track(self, event_id: str, end: datetime) -> None:
        self._live[event_id] = end
        self._cancelled.pop(event_id, None)

    def is_live(self, event_id: str) -> bool:
        return event_id in self._live

    def finish(self, event_id: str) -> None:
        self._live.pop(event_id, None)

    def mark_cancelled(self, event_id: str) -> bool:
        """Record a cancellation; False when it was already recorded (``on_cancel`` was called)."""
        self._live.pop(event_id, None)
        if event_id in self._cancelled:
            return False
        self._cancelled[event_id] = None
        _trim(self._cancelled)
        return True

    def absent(self, present: set[str], now: datetime) -> list[str]:
        """Live events missing from a distribution listing ``present``; ended ones are let go."""
        gone = []
        for event_id, end in list(self._live.items()):
            if end <= now:
                del self._live[event_id]
            elif event_id not in present:
                gone.append(event_id)
        return gone


def _trim(ordered: dict[str, Any]) -> None:
    while len(ordered) > MEMORY:
        del ordered[next(iter(ordered))]
