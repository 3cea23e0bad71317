"""Opting out after the fact: OpenADR 2.0b ``oadrCreateOpt`` on the VTN's EiOpt service.

An operator may take the site out of an event the gateway already opted in to. The VTN learned the
``optIn`` from our ``oadrCreatedEvent``; EiOpt is how a VEN changes its mind about one event version:
an opt *qualified* by the event id and modification number, targeted at this VEN.

The reason sent is ``overrideStatus`` (``OPT_OUT_REASON``): of OpenADR's ``optReason`` values it is the
one for a local, manual override of the automated response, which is what an operator's opt-out is.
``notParticipating`` is the generic "not taking part", ``mustRun`` would claim the load cannot be shed
at all, ``economic`` / ``emergency`` / ``outageRunStatus`` would misstate the cause, and
``participating`` / ``x-schedule`` belong to opt-ins and availability schedules. The operator's own
words cannot travel in ``oadrCreateOpt`` (it has no description field); they go into the VEN's
``responseDescription`` when the VTN next distributes the event.

Why not openleadr's ``OpenADRClient.create_opt``: it returns the opt id or ``False`` (unreachable and
refused look alike), ignores the eiResponse code, raises ``TypeError`` on an empty HTTP body, logs with a
format call that itself fails when the request failed, and renders ids into the XML unescaped. This
module builds the same message from openleadr's template and reads the answer itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any, Final, Protocol

from openleadr import enums, objects, utils

from gateway.exceptions import AdapterUnavailable, ProtocolError

__all__ = ["OPT_OUT_REASON", "OptChannel", "check_opt_target", "send_opt_out"]

logger = logging.getLogger("dcflex.ven")

OPT_OUT_REASON: Final[str] = enums.OPT_REASON.OVERRIDE_STATUS
_OK = 200
# openleadr's HTTP session already ends each request after the VEN's request timeout; this outer bound
# only guards the parsing around it (and a session configured otherwise)
_SLACK_S = 1.0


class OptChannel(Protocol):
    """The part of openleadr's client this needs (the VEN's ``_Client`` provides it)."""

    ven_id: str | None

    def _create_message(self, message_type: str, **payload: Any) -> str: ...

    async def _perform_request(self, service: str, message: str) -> Any: ...


def check_opt_target(event_id: str, modification: int) -> None:
    """Refuse an opt that could not name an event version (before anything changes)."""
    if not event_id:
        raise ProtocolError("an opt-out needs the event's id", field="event_id")
    if modification < 0:
        raise ProtocolError(f"modification number {modification} is negative", event_id=event_id,
                            field="modification_number")


async def send_opt_out(client: OptChannel, event_id: str, modification: int, *, vtn_url: str,
                       timeout_s: float) -> str:
    """Send ``oadrCreateOpt`` (optOut, ``OPT_OUT_REASON``, this VEN as target); the acknowledged opt id.

    Raises ``AdapterUnavailable`` when no usable answer came (unreachable, HTTP error, a reply that is
    not valid OpenADR, or none within ``timeout_s``) and ``ProtocolError`` when the VTN answered but did
    not acknowledge the opt (an error code, or no ``oadrCreatedOpt`` carrying our opt id).
    """
    what = f"opt-out of event {event_id} modification {modification}"
    where = f"the VTN at {vtn_url}"
    ven_id = client.ven_id or ""  # the client's create_message escapes every string (gateway.ven.oadr20b.outbound)
    try:
        opt = objects.Opt(opt_type=enums.OPT.OPT_OUT, opt_reason=OPT_OUT_REASON, opt_id=utils.generate_id(),
                          event_id=event_id, modification_number=modification,
                          targets=[objects.Target(ven_id=ven_id)])
        message = client._create_message("oadrCreateOpt", request_id=utils.generate_id(), ven_id=ven_id, **asdict(opt))
        async with asyncio.timeout(timeout_s + _SLACK_S):
            result = await client._perform_request("EiOpt", message)
    except TimeoutError as err:
        raise AdapterUnavailable(f"{where} did not answer the {what} within {timeout_s:g} s; the site stays "
                                 "opted out locally: retry, or tell the utility another way",
                                 adapter="openadr-ven") from err
    except Exception as err:  # openleadr's own errors stop here
        raise AdapterUnavailable(f"the {what} could not be sent to {where}: {type(err).__name__}: {err}",
                                 adapter="openadr-ven") from err
    if not isinstance(result, tuple) or len(result) != 2 or result[0] is None:
        raise AdapterUnavailable(f"the {what} got no usable answer from {where} (unreachable, an HTTP error or a "
                                 "reply that is not valid OpenADR; the openleadr log has the cause); the site stays "
                                 "opted out locally: retry, or tell the utility another way", adapter="openadr-ven")
    message_type, payload = result
    code, description = _eiresponse(payload)
    if code != _OK:
        raise ProtocolError(f"{where} refused the {what}: {code} {description}", event_id=event_id, field="oadrCreateOpt")
    acknowledged = payload.get("opt_id") if isinstance(payload, Mapping) else None
    if message_type != "oadrCreatedOpt" or acknowledged != opt.opt_id:
        raise ProtocolError(f"{where} did not acknowledge the {what}: it answered {message_type} without our optID "
                            f"{opt.opt_id} (does it implement EiOpt?); tell the utility another way",
                            event_id=event_id, field="oadrCreateOpt")
    logger.info("told %s: opted out of event %s modification %d (opt %s, %s)", where, event_id, modification,
                opt.opt_id, OPT_OUT_REASON)
    return str(opt.opt_id)


def _eiresponse(payload: object) -> tuple[int, str]:
    """The eiResponse code and description of a parsed answer; 200 when it carries none."""
    response = payload.get("response") if isinstance(payload, Mapping) else None
    if not isinstance(response, Mapping) or response.get("response_code") is None:
        return _OK, ""
    try:
        code = int(response["response_code"])
    except (TypeError, ValueError):
        code = 0
    return code, str(response.get("response_description") or "")
