"""What the VEN does with a refused message: one alert per kind, a count per kind, the specification's answer.

Why: a hostile or broken VTN repeats itself every poll. The operator needs to hear once per kind of refusal what
was refused and where (and again an hour later if it goes on), not a line every ten seconds; the VTN needs the
2.0b error code where the message type has an answer (``oadrDistributeEvent`` → ``oadrCreatedEvent`` with 454
Invalid Data, nothing acted on); and ``/status`` can show the counts.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from gateway.clock import Clock
from gateway.exceptions import HostileInput

__all__ = ["ALERT_CODE", "ANSWERS", "Alert", "Refusals", "safe_request_id"]

log = logging.getLogger("dcflex.ven")

ALERT_CODE = "vtn_input_refused"
INVALID_DATA = 454
REALERT_AFTER = timedelta(hours=1)
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")

# A refused message that the VTN expects an answer to: (the answer's message type, the service it goes to, what
# its template needs besides the eiResponse). Other messages (answers to the VEN's own requests) get none.
ANSWERS: dict[str, tuple[str, str, dict[str, object]]] = {
    "oadrDistributeEvent": ("oadrCreatedEvent", "EiEvent", {}),
    "oadrCreateReport": ("oadrCreatedReport", "EiReport", {"pending_reports": []}),
    "oadrRegisterReport": ("oadrRegisteredReport", "EiReport", {"report_requests": []}),
    "oadrCancelReport": ("oadrCanceledReport", "EiReport", {"pending_reports": []}),
    "oadrUpdateReport": ("oadrUpdatedReport", "EiReport", {}),
    "oadrRequestReregistration": ("oadrResponse", "EiRegisterParty", {}),
}

Alert = Callable[[str, str], Awaitable[None]]
"""``alert(code, message)``: tell the operators (the gateway's alert outputs)."""


def safe_request_id(value: object) -> str | None:
    """A requestID worth echoing back: short and of plain characters; else none (the answer still goes out)."""
    return value if isinstance(value, str) and _SAFE_ID.match(value) else None


class Refusals:
    """Counts refusals per kind and alerts the first of each kind (again after ``REALERT_AFTER``)."""

    def __init__(self, clock: Clock, alert: Alert | None) -> None:
        self._clock = clock
        self._alert = alert
        self._alerted: dict[str, datetime] = {}
        self.counts: dict[str, int] = {}

    async def refused(self, err: HostileInput, source: str) -> None:
        """Record one refusal of a message from ``source`` (the URL it came from)."""
        kind = err.kind if len(self.counts) < 64 or err.kind in self.counts else "other"
        self.counts[kind] = self.counts.get(kind, 0) + 1
        what = f" ({err.message_type})" if err.message_type else ""
        message = (f"refused a message from the VTN{what} at {source}: [{kind}] {err}; nothing in it was acted on. "
                   "If the VTN is yours, fix what it sends; if the limit is too tight for it, raise it under [ven.limits]")
        now = self._clock.now()
        last = self._alerted.get(kind)
        if last is not None and now - last < REALERT_AFTER:
            log.debug("%s (refusal %d of kind %s)", message, self.counts[kind], kind)
            return
        self._alerted[kind] = now
        if self._alert is None:
            log.error("%s", message)
            return
        try:
            await self._alert(ALERT_CODE, message)  # which logs it too
        except Exception:  # the alert outputs must not stop the VEN
            log.exception("could not alert the refusal: %s", message)
