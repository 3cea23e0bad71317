"""The dcflex VEN: openleadr's ``OpenADRClient`` (OpenADR 2.0b, pull mode) plus what it lacks.

openleadr registers, polls, parses and answers; around it this module adds:

* **Translation and a never-crash answer path.** Every delivered event goes through
  ``translate_event``; a malformed or hostile one is opted out of (code 454, the error as the
  response description) and logged on ``dcflex.ven``. A handler that raises costs an opt-out of
  that one event, not of the whole distribution (openleadr opts out of all of them).
* **Decisions on the injected clock.** An event whose end is already past (``Clock``) is answered
  ``optOut`` / "event already ended" and never reaches the handler. openleadr's own protocol
  timing (polls, report jobs, its VTN's event status) stays on the wall clock: the protocol is real.
* **Cancellation, explicit and implied.** Status ``cancelled`` → ``on_cancel(id, "cancelled by VTN")``.
  An event handed to the handler that is missing from a later distribution (and has not ended) →
  ``on_cancel(id, IMPLIED_CANCEL_REASON)``. openleadr's VTN never sends an *empty* distribution: when
  its last event for a VEN is removed, the next poll is a bare ``oadrResponse``. So the VEN also
  re-syncs with ``oadrRequestEvent`` every ``resync_every_polls`` polls, and takes a successful bare
  ``oadrResponse`` to that request (openleadr's "no events") or an empty ``oadrDistributeEvent``
  (other VTNs) as "none of your events remain".
* **Modifications** reach ``on_event`` again; identical re-deliveries are answered from memory, as
  openleadr does. A modification that is rejected or already over withdraws the earlier version
  (``on_cancel``), since the plan for it no longer matches what the VTN asks.
* **Opting out later** (``Ven.opt_out``, in ``gateway.ven.oadr20b.opt``): an operator's opt-out of an event
  already opted in to goes to the VTN as ``oadrCreateOpt`` (EiOpt), and the VEN's memory answers later
  re-deliveries of that version ``optOut`` instead of re-sending the cached ``optIn``.
* **openleadr defects guarded:** every queued message is drained per poll (openleadr handles one);
  an ``oadrUpdateReport`` from the VTN is logged and ignored (openleadr raises AttributeError);
  ``stop()`` waits for in-flight polls, shuts the scheduler down and closes the HTTP session; the
  request timeout and TLS come from ``VenConfig``.

Poll interval: the shorter of the VTN's ``requestedOadrPollFreq`` and ``VenConfig.poll_interval_s``
(the config is the operator's ceiling; a VTN asking for slower polls cannot make dcflex deaf).

Nothing here persists: after a restart the handler sees events again and deduplicates from its journal.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import ssl
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any

import aiohttp
from openleadr import OpenADRClient, enums, errors, utils
from openleadr.messaging import parse_message, validate_xml_signature

from gateway.clock import Clock
from gateway.config.models import VenConfig
from gateway.domain import OptDecision
from gateway.exceptions import AdapterUnavailable, ConfigError, HostileInput, ProtocolError
from gateway.ports import EventHandler, SiteFeed
from gateway.ven.backoff import keep_started
from gateway.ven.book import ENDED_REASON, IMPLIED_CANCEL_REASON, OK, VTN_CANCEL_REASON, Answer, EventBook
from gateway.ven.oadr20b.intake import admit, check_report_requests
from gateway.ven.oadr20b.opt import check_opt_target, send_opt_out
from gateway.ven.oadr20b.outbound import escaping, xml_legal
from gateway.ven.oadr20b.projections import ProjectedReport
from gateway.ven.oadr20b.refusals import ANSWERS, INVALID_DATA, Alert, Refusals, safe_request_id
from gateway.ven.oadr20b.reports import TelemetrySampler, drain_report_queue, register_telemetry_report
from gateway.ven.oadr20b.translate import event_identity, event_status, translate_event
from gateway.ven.oadr20b.transport import post_bounded, session_options

__all__ = ["Ven"]

logger = logging.getLogger("dcflex.ven")

MAX_MESSAGES_PER_POLL = 10
_INVALID_DATA = 454  # enums.STATUS_CODES.INVALID_DATA
_SIGNAL_NOT_SUPPORTED = 460  # enums.STATUS_CODES.SIGNAL_NOT_SUPPORTED, as openleadr answers unknown names
# Set while the VEN sends its answer to a refused message (per task): a refused reply to that answer is not answered.
_ANSWERING_REFUSAL: contextvars.ContextVar[bool] = contextvars.ContextVar("dcflex_answering_refusal", default=False)


class Ven:
    """The OpenADR 2.0b ``VenPort``: ``async with Ven(...)`` registers and polls until exit; ``run()`` is the
    service form.

    With a ``feed`` the VEN offers a TELEMETRY_USAGE report of the site's kW the VTN may request, and, when the
    feed ``announces_drops``, a Projected one of the drops announced (``gateway.ven.oadr20b.projections``).
    """

    def __init__(self, config: VenConfig, handler: EventHandler, clock: Clock, feed: SiteFeed | None = None, *,
                 resync_every_polls: int = 6, alert: Alert | None = None) -> None:
        if resync_every_polls < 0:
            raise ValueError("resync_every_polls must be >= 0 (0 disables the re-sync)")
        self._config = config
        self._handler = handler
        self._clock = clock
        self._sampler = TelemetrySampler(feed.site_kw) if feed is not None else None
        self._projections = feed.announced_drops if feed is not None and feed.announces_drops else None
        self._resync_every = resync_every_polls
        self._client: _Client | None = None
        self._stopped = asyncio.Event()
        self.refusals = Refusals(clock, alert)  # kept across re-registrations: one alert per kind, not per client

    @property
    def ven_id(self) -> str | None:
        """The VEN id in use: the VTN's answer once registered, else the configured one."""
        return self._client.ven_id if self._client is not None else self._config.ven_id

    @property
    def registration_id(self) -> str | None:
        return self._client.registration_id if self._client is not None else None

    @property
    def poll_interval(self) -> timedelta | None:
        return self._client.poll_frequency if self._client is not None else None

    @property
    def running(self) -> bool:
        return self._client is not None

    @property
    def refused(self) -> Mapping[str, int]:
        return self.refusals.counts

    async def start(self) -> None:
        """Register (query, create party registration, register reports), sync events, start polling.

        Raises ``AdapterUnavailable`` when the VTN cannot be reached or does not register the VEN,
        ``ConfigError`` when the TLS files cannot be read.
        """
        if self._client is not None:
            return
        try:
            client = _Client(self._config, self._handler, self._clock, self._sampler, self._resync_every,
                             self._projections, self.refusals)
        except OSError as err:  # openleadr reads the certificate and key files here
            raise ConfigError("ven", [("ven.cert / ven.key", f"cannot read: {err}")]) from err
        self._client = client
        try:
            await client.run()
        except BaseException as err:
            await self._drop(client)
            if isinstance(err, Exception):
                raise AdapterUnavailable(f"VEN start failed against {self._config.vtn_url}: {err}",
                                         adapter="openadr-ven") from err
            raise
        if self._client is not client:  # stop() was called while starting
            return
        if not client.registration_id or client.ven_id is None:
            await self._drop(client)
            raise AdapterUnavailable(f"the VTN at {self._config.vtn_url} did not register VEN "
                                     f"{self._config.ven_name!r} (unreachable, or registration refused)",
                                     adapter="openadr-ven")
        logger.info("VEN %s registered with %s (registration %s), polling every %s",
                    client.ven_id, self._config.vtn_url, client.registration_id, client.poll_frequency)

    async def stop(self) -> None:
        """Stop polling and reporting and close the HTTP session. Safe to call twice."""
        self._stopped.set()
        client, self._client = self._client, None
        if client is not None:
            await client.stop()

    async def run(self) -> None:
        """Start (retrying with back-off on the injected clock) and serve until ``stop()`` or cancellation."""
        self._stopped.clear()
        try:
            await keep_started(self.start, self._stopped, self._clock, logger)
        finally:
            await self.stop()

    async def opt_out(self, event_id: str, revision: int, reason: str) -> None:
        """Take the site out of an event version it had opted in to, and tell the VTN (``oadrCreateOpt``).

        The VEN's own answer changes first, so a re-delivery of that version is answered ``optOut`` with
        ``reason`` rather than the cached ``optIn``: the operator's decision stands even if the VTN cannot
        be told. Bounded by ``request_timeout_s``. Raises ``AdapterUnavailable`` (not registered; VTN
        unreachable, HTTP error or no answer in time) or ``ProtocolError`` (the VTN answered without
        acknowledging; or ``revision`` (the modificationNumber) is older than one already answered, and nothing
        changed).
        """
        modification = revision
        check_opt_target(event_id, modification)
        client = self._client
        if client is None or client._closed or not client.registration_id or client.ven_id is None:
            raise AdapterUnavailable(f"cannot opt out of event {event_id}: the VEN is not registered with "
                                     f"{self._config.vtn_url}; start it (or wait for registration) and retry",
                                     adapter="openadr-ven")
        async with client._lock:
            client.book.opt_out(event_id, modification, reason)
        # its own task, so that stop() waits for this request and not for the caller's whole task
        send = asyncio.create_task(send_opt_out(client, event_id, modification, vtn_url=self._config.vtn_url,
                                                timeout_s=self._config.request_timeout_s))
        client._inflight.add(send)
        send.add_done_callback(client._inflight.discard)
        await send

    async def __aenter__(self) -> Ven:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    async def _drop(self, client: _Client) -> None:
        self._client = None
        await client.stop()


class _Client(OpenADRClient):  # type: ignore[misc]  # openleadr ships no type information
    """openleadr's client with dcflex's event path, polling and shutdown (see the module docstring)."""

    client_session: aiohttp.ClientSession | None

    def __init__(self, config: VenConfig, handler: EventHandler, clock: Clock, sampler: TelemetrySampler | None,
                 resync_every_polls: int, projections: Callable[[], Mapping[str, tuple[datetime, float]]] | None = None,
                 refusals: Refusals | None = None) -> None:
        super().__init__(
            ven_name=config.ven_name, vtn_url=config.vtn_url, ven_id=config.ven_id,
            cert=_path(config.cert), key=_path(config.key), ca_file=_path(config.ca_file),
            passphrase=config.passphrase.get_secret_value() if config.passphrase else None,
            vtn_fingerprint=config.vtn_fingerprint, show_fingerprint=False,
            disable_signature=config.disable_signature, check_hostname=config.check_hostname,
        )
        self._create_message: Callable[..., str] = escaping(self._create_message)  # every string escaped (outbound)
        self._config = config
        self._handler = handler
        self._clock = clock
        self._sampler = sampler
        self._resync_every = resync_every_polls
        self.book = EventBook()
        self._lock = asyncio.Lock()
        self._inflight: set[asyncio.Task[Any]] = set()
        self._worker_task: asyncio.Task[Any] | None = None
        self._polls = 0
        self._closed = False
        self._empty_warned: set[str] = set()
        self._limits = config.limits
        self._refusals = refusals if refusals is not None else Refusals(clock, None)
        if sampler is not None:
            register_telemetry_report(self, sampler, config)
        self._projected = ProjectedReport(projections, config) if projections is not None else None
        if self._projected is not None:
            self._projected.offer(self)

    # ------------------------------------------------------------------ events

    async def _on_event(self, message: Mapping[str, Any], pushed: bool = True) -> None:
        """Handle one distribution (the VTN's full list of this VEN's events).

        ``pushed``: the VTN sent it on a poll and expects every answer again; ``False`` for our own
        re-sync, where only new or modified events are answered.
        """
        if _response_code(message) != OK:
            logger.warning("ignoring an oadrDistributeEvent carrying error %s", message.get("response"))
            return
        events = message.get("events") or []
        if not isinstance(events, list):
            events = []
        async with self._lock:
            present = set()
            for raw in events:
                try:
                    present.add(event_identity(raw)[0])
                except ProtocolError:
                    continue
            for event_id in self.book.absent(present, self._clock.now()):
                logger.warning("event %s is missing from the VTN's distribution: %s", event_id, IMPLIED_CANCEL_REASON)
                self.book.mark_cancelled(event_id)
                await self._cancel(event_id, IMPLIED_CANCEL_REASON)
            answers = []
            for raw in events:
                answer = await self._answer(raw, pushed)
                if answer is not None and raw.get("response_required", "always") == "always":
                    answers.append(answer)
            if answers:
                await self._send_created_event(message.get("request_id"), answers)

    async def _answer(self, raw: Mapping[str, Any], pushed: bool) -> Answer | None:
        try:
            event_id, modification = event_identity(raw)
        except ProtocolError as err:
            logger.error("ignoring an event that cannot be answered (no usable identity): %s", err)
            return None
        status = event_status(raw)
        if status == "completed":  # the VTN has already dropped it: an answer would be refused
            self.book.finish(event_id)
            logger.info("event %s is completed according to the VTN", event_id)
            return None
        cached = self.book.cached(event_id, modification)
        if cached is not None:
            return cached if pushed else None
        if status == "cancelled":
            if self.book.mark_cancelled(event_id):
                logger.info("event %s modification %d: %s", event_id, modification, VTN_CANCEL_REASON)
                await self._cancel(event_id, VTN_CANCEL_REASON)
            previous = self.book.answer(event_id)
            answer = Answer(event_id, modification, previous.opt_type if previous else "optOut", VTN_CANCEL_REASON)
        else:
            answer = await self._decide(raw, event_id, modification)
        self.book.remember(answer)
        return answer

    async def _decide(self, raw: Mapping[str, Any], event_id: str, modification: int) -> Answer:
        code = OK if _signals_known(raw) else _SIGNAL_NOT_SUPPORTED
        now = self._clock.now()
        try:
            event = translate_event(raw, ven_key=self.ven_id or self.ven_name, received_at=now)
        except ProtocolError as err:
            logger.error("opting out of event %s modification %d, malformed: %s", event_id, modification, err)
            await self._withdraw(event_id, f"modification {modification} rejected: {err}")
            return Answer(event_id, modification, "optOut", str(err), _INVALID_DATA)
        if event.end <= now:
            logger.warning("event %s modification %d ended at %s (now %s): %s", event_id, modification,
                           event.end.isoformat(), now.isoformat(), ENDED_REASON)
            await self._withdraw(event_id, ENDED_REASON)
            return Answer(event_id, modification, "optOut", ENDED_REASON, code)
        self.book.track(event_id, event.end)
        try:
            decision = await self._handler.on_event(event)
        except Exception as err:
            logger.exception("the event handler failed on event %s modification %d; opting out", event_id, modification)
            return Answer(event_id, modification, "optOut", f"handler error: {type(err).__name__}: {err}", code)
        if not isinstance(decision, OptDecision):
            logger.error("the event handler returned %r for event %s, not an OptDecision; opting out", decision, event_id)
            return Answer(event_id, modification, "optOut", "handler returned no decision", code)
        logger.info("event %s modification %d: %s %s", event_id, modification, decision.opt_type, decision.reason)
        return Answer(event_id, modification, decision.opt_type,
                      decision.reason or ("OK" if decision.opt_in else "opted out"), code)

    async def _withdraw(self, event_id: str, reason: str) -> None:
        """An earlier version went to the handler but this one will not: cancel the earlier plan."""
        if self.book.is_live(event_id) and self.book.mark_cancelled(event_id):
            await self._cancel(event_id, reason)

    async def _cancel(self, event_id: str, reason: str) -> None:
        try:
            await self._handler.on_cancel(event_id, reason)
        except Exception:
            logger.exception("the event handler failed to cancel event %s (%s)", event_id, reason)

    async def _send_created_event(self, request_id: object, answers: list[Answer]) -> None:
        rid = _xml_text(str(request_id)) if request_id is not None else ""
        responses = [{"response_code": a.code, "response_description": _xml_text(a.description),
                      "opt_type": a.opt_type, "request_id": rid, "modification_number": a.revision,
                      "event_id": _xml_text(a.event_id)} for a in answers]
        message = self._create_message("oadrCreatedEvent", ven_id=self.ven_id, event_responses=responses,
                                       response={"response_code": OK, "response_description": "OK", "request_id": rid})
        result = await self._perform_request("EiEvent", message)
        if isinstance(result, tuple) and len(result) == 2 and result[0] is not None and _response_code(result[1]) != OK:
            logger.warning("the VTN refused our oadrCreatedEvent: %s", result[1].get("response"))

    # ----------------------------------------------------------------- polling

    async def _poll(self) -> None:
        if self._closed:
            return
        with self._tracked():
            await self._poll_once()

    async def _poll_once(self) -> None:
        try:
            self._polls += 1
            if self._projected is not None and self.registration_id is not None:
                await self._projected.sync(self)  # a new notice: its data point, registered again
            for _ in range(MAX_MESSAGES_PER_POLL):
                result = await self.poll()
                if not isinstance(result, tuple) or len(result) != 2 or result[0] in (None, "oadrResponse"):
                    break
                await self._dispatch(result[0], result[1])
            if self._resync_every and self._polls % self._resync_every == 0 and not self._closed:
                await self.sync_events()
        except Exception:
            logger.exception("polling the VTN failed; the next poll retries")

    async def _dispatch(self, message_type: str, payload: dict[str, Any]) -> None:
        """openleadr's ``_poll`` message switch, with its gaps filled."""
        if message_type == "oadrDistributeEvent":
            await self._on_event(payload)
        elif message_type == "oadrUpdateReport":
            logger.warning("the VTN sent an oadrUpdateReport; dcflex does not consume VTN reports (ignored)")
        elif message_type == "oadrRequestReregistration":
            logger.info("the VTN asked us to re-register")
            await self.send_response(service="EiRegisterParty")
            await self.create_party_reregistration()
        elif message_type == "oadrCreateReport":
            try:
                check_report_requests(payload, in_force=len(self.report_requests), limit=self._limits.max_report_requests)
            except HostileInput as err:
                await self._refusals.refused(err, f"{self.vtn_url}/OadrPoll")
                await self._answer_refused(err)
                return
            if "report_requests" in payload:
                await self.create_report(payload)
        elif message_type == "oadrRegisterReport":
            logger.warning("the VTN offered reports; dcflex does not subscribe to VTN reports")
            message = self._create_message("oadrRegisteredReport", report_requests=[], ven_id=self.ven_id,
                                           response={"response_code": OK, "response_description": "OK",
                                                     "request_id": payload.get("request_id")})
            await self._perform_request("EiReport", message)
        elif message_type == "oadrCancelPartyRegistration":
            logger.error("the VTN cancelled this VEN's registration; polling stops")
            await self.on_cancel_party_registration(payload)
        elif message_type == "oadrCancelReport":
            await self.cancel_report(payload)
        else:
            logger.warning("no handler for %s from the VTN; ignored", message_type)

    async def sync_events(self) -> None:
        """``oadrRequestEvent``: the VTN's complete list of our events, also when it is empty."""
        result = await self.request_event()
        if not isinstance(result, tuple) or len(result) != 2:
            return
        message_type, payload = result
        if message_type == "oadrDistributeEvent":
            await self._on_event(payload, pushed=False)
        elif message_type == "oadrResponse" and isinstance(payload, dict) and "response" in payload \
                and _response_code(payload) == OK:
            await self._on_event({"events": [], "request_id": payload.get("request_id")}, pushed=False)

    async def create_party_registration(self, *args: Any, **kwargs: Any) -> Any:
        result = await super().create_party_registration(*args, **kwargs)
        ours = timedelta(seconds=self._config.poll_interval_s)
        requested = result[1].get("requested_oadr_poll_freq") if isinstance(result, tuple) else None
        if isinstance(requested, timedelta) and requested > timedelta(0):
            self.poll_frequency = min(requested, ours)  # openleadr parses durations to whole seconds: >= 1 s
        elif self.registration_id:
            self.poll_frequency = ours
        return result

    # ----------------------------------------------------------------- reports

    async def update_report(self, report_request_id: str) -> None:
        if self._closed:
            return
        with self._tracked():
            await self._update_report_once(report_request_id)

    async def _update_report_once(self, report_request_id: str) -> None:
        try:
            request = utils.find_by(self.report_requests, "report_request_id", report_request_id)
            if request is not None and not request.get("r_ids"):
                # openleadr keeps a request whose data points it could not match (e.g. a granularity
                # faster than the offered minimum) and would send it empty, which VTNs reject
                if report_request_id not in self._empty_warned:
                    self._empty_warned.add(report_request_id)
                    logger.warning("report request %s asks for no data point this VEN offers (granularity %s); "
                                   "nothing will be sent for it", report_request_id, request.get("granularity"))
                return
            if self._sampler is not None and self._sampler.sample() is not None:
                await super().update_report(report_request_id)
        except Exception:
            logger.exception("could not build report %s", report_request_id)

    @contextlib.contextmanager
    def _tracked(self) -> Iterator[None]:
        """Count the current task as in flight, so ``stop()`` waits for it instead of cutting it off."""
        task = asyncio.current_task()
        if task is not None:
            self._inflight.add(task)
        try:
            yield
        finally:
            if task is not None:
                self._inflight.discard(task)

    async def _report_queue_worker(self) -> None:
        if self._worker_task is not None and not self._worker_task.done():
            return  # openleadr starts another one on each re-registration
        self._worker_task = asyncio.current_task()
        await drain_report_queue(self)

    # --------------------------------------------------------------- transport

    async def _ensure_client_session(self) -> None:
        if self.client_session is not None:
            return
        context: ssl.SSLContext | None = None
        if self.cert_path or self.ca_file:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = self.check_hostname
            if self.ca_file:
                context.load_verify_locations(self.ca_file)
            else:
                context.load_default_certs()
            if self.cert_path:
                context.load_cert_chain(self.cert_path, self.key_path, self.passphrase)
        self.client_session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self._config.request_timeout_s),
            connector=aiohttp.TCPConnector(ssl=context) if context is not None else None,
            **session_options(),  # type: ignore[arg-type]
        )

    async def _perform_request(self, service: str, message: str) -> tuple[str | None, dict[str, Any]]:
        """openleadr's request, through dcflex's bounded transport and intake (``gateway.ven.oadr20b.transport``,
        ``gateway.ven.oadr20b.intake``): ``(message type, payload)``, or ``(None, {})`` for no usable answer."""
        await self._ensure_client_session()
        assert self.client_session is not None
        url = f"{self.vtn_url}/{service}"
        try:
            reply = await post_bounded(self.client_session, url, message, self._limits)
        except HostileInput as err:
            await self._refusals.refused(err, url)
            return None, {}
        except (aiohttp.ClientError, TimeoutError, OSError) as err:
            logger.error("no answer from the VTN at %s: %s: %s", url, type(err).__name__, err)
            return None, {}
        except Exception as err:  # whatever else a broken answer makes a library raise: reported, never fatal
            logger.error("unusable answer from the VTN at %s: %s: %s", url, type(err).__name__, _xml_text(str(err), 300))
            logger.debug("details", exc_info=True)
            return None, {}
        if reply.status != OK:
            logger.warning("the VTN answered HTTP %d to %s: %s", reply.status, reply.url, _preview(reply.body))
            return None, {}
        if not reply.body.strip():
            logger.warning("the VTN answered %s with HTTP 200 and an empty body; taken as no message", url)
            return None, {}
        try:
            admitted = admit(reply.body, self._limits)
        except HostileInput as err:
            await self._refusals.refused(err, url)
            if err.message_type in ANSWERS:
                await self._answer_refused(err)
            return None, {}
        try:
            if self.vtn_fingerprint:
                validate_xml_signature(admitted.tree, cert_fingerprint=self.vtn_fingerprint)
            message_type, payload = parse_message(admitted.body)
        except errors.FingerprintMismatch as err:
            logger.warning("a message from %s was signed with another certificate: %s (ignored)", url, err)
            return None, {}
        except Exception as err:  # the schema passed, so this is a signature or a shape openleadr cannot read
            await self._refusals.refused(HostileInput("unreadable", f"{type(err).__name__}: {err}"[:300],
                                                      message_type=admitted.message_type), url)
            return None, {}
        response = payload.get("response") if isinstance(payload, dict) else None
        if isinstance(response, dict) and response.get("response_code") not in (None, OK):
            logger.warning("the VTN answered %s with OpenADR code %s: %s", service, response.get("response_code"),
                           _xml_text(str(response.get("response_description")), 200))
        return message_type, payload

    async def _answer_refused(self, err: HostileInput) -> None:
        """A refused message the VTN expects an answer to gets its 2.0b answer with 454 Invalid Data and nothing
        else (``ANSWERS``): a refused oadrDistributeEvent, an oadrCreatedEvent with no event response."""
        if _ANSWERING_REFUSAL.get():  # the VTN answered our 454 with another refused message: no ping-pong
            return
        kind, service, extra = ANSWERS[str(err.message_type)]
        response = {"response_code": INVALID_DATA, "response_description": _xml_text(f"refused: {err}", 200),
                    "request_id": safe_request_id(err.request_id)}
        try:
            message = self._create_message(kind, ven_id=self.ven_id, response=response, **extra)
        except Exception:
            logger.exception("could not build the %s answering a refused %s", kind, err.message_type)
            return
        token = _ANSWERING_REFUSAL.set(True)
        try:
            await self._perform_request(service, message)
        finally:
            _ANSWERING_REFUSAL.reset(token)

    async def run(self) -> None:
        await super().run()
        if self._closed:  # stop() came while openleadr was still starting: undo what it started since
            await self._teardown()

    async def stop(self) -> None:
        """Let in-flight polls and reports finish (bounded by the request timeout), then tear down."""
        if self._closed:
            return
        self._closed = True
        if self.scheduler.running:
            self.scheduler.pause()
        current = asyncio.current_task()
        others = [t for t in self._inflight if t is not current and not t.done()]
        if others:
            await asyncio.wait(others, timeout=self._config.request_timeout_s + 1.0)
        await self._teardown()

    async def _teardown(self) -> None:
        current = asyncio.current_task()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        for task in {self._worker_task, self.report_queue_task}:
            if task is not None and task is not current and not task.done():
                task.cancel()
                await asyncio.wait([task])
        if self.client_session is not None:
            session, self.client_session = self.client_session, None
            await session.close()


def _path(value: object) -> str | None:
    return None if value is None else str(value)


def _response_code(payload: Mapping[str, Any]) -> int:
    """The eiResponse code of a parsed message; 200 when it carries none."""
    response = payload.get("response") if isinstance(payload, Mapping) else None
    code = response.get("response_code") if isinstance(response, Mapping) else None
    try:
        return int(code) if code is not None else OK
    except (TypeError, ValueError):
        return _INVALID_DATA


def _signals_known(raw: Mapping[str, Any]) -> bool:
    """openleadr's rule for the response code: every signal name is one OpenADR defines."""
    signals = raw.get("event_signals")
    if not isinstance(signals, list):
        return True
    return all(not isinstance(s, Mapping) or s.get("signal_name") in enums.SIGNAL_NAME.values for s in signals)


def _preview(body: bytes, limit: int = 200) -> str:
    """A bounded, printable glimpse of an error body (any encoding) for a log line."""
    return _xml_text(body[:limit].decode("utf-8", "replace").replace("\n", " "), limit)


def _xml_text(text: str, limit: int = 240) -> str:
    """Text for a message or a log line: bounded and XML-legal (``escaping`` escapes it in messages)."""
    return xml_legal(text[:limit])

