"""The MQTT sink: operators' alerts, event states and notices over a real broker, with nothing lost.

``emit`` maps an engine record to a message and queues it for the journal's outbox (channel ``mqtt``);
``publisher.OutboxPublisher`` writes it there (batched per event-loop turn: read its docstring for what
a hard kill can lose) and publishes the outbox in order, at most ``max_inflight`` QoS 1 publishes
awaiting their PUBACK, removing a message only after its PUBACK. ``run`` keeps one connection at a time
(a fresh aiomqtt client each time, so paho never re-sends on its own behind the outbox's back); when the
broker goes away it retries with exponential backoff (``reconnect_min_s`` … ``reconnect_max_s``, on the
injected clock) and continues from the outbox's oldest message.

Delivery is at least once. The messages in flight when a connection dies are published again after
the reconnect, with the ``msg_id`` stored with them; the few the broker had taken before it died
arrive twice, and consumers drop the second copy by ``msg_id`` (``docs/mqtt.md``).

``status`` is published directly (retained, QoS 1) on every connect, and the broker's last will (the
same topic, retained) says ``offline`` when the connection dies without a DISCONNECT; ``aclose`` (or
cancelling ``run``) publishes ``offline`` itself first. Override commands (``override.py``) are read
on ``override/+`` and run one at a time outside the connection, so a lost connection never cancels a
command half-way; their replies go out directly, or through the outbox when there is no connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Mapping
from typing import TypedDict

import aiomqtt
from aiomqtt.exceptions import MqttConnectError

from gateway import __version__
from gateway.clock import Clock, sleep_unless
from gateway.config.models import MqttSinkConfig
from gateway.exceptions import ConfigError
from gateway.journal.outbox import Outbox
from gateway.ports import OperatorControl
from gateway.sinks.mqtt.messages import MessageIds, OutMessage, RecordMapper, Topics
from gateway.sinks.mqtt.override import OverrideHandler, OverrideHook, OverrideOutcome, ProblemHook
from gateway.sinks.mqtt.payloads import OverrideReply, Status
from gateway.sinks.mqtt.publisher import OutboxPublisher

__all__ = ["CHANNEL", "MqttSink", "MqttStats"]

log = logging.getLogger(__name__)

CHANNEL = "mqtt"
_INBOX_MAX = 100  # override commands waiting to be handled; more are dropped (and logged)
_LOST = (aiomqtt.MqttError, OSError)  # what a broken or refused connection raises


class MqttStats(TypedDict):
    """``MqttSink.stats()``: for ``/status``."""

    connected: bool
    queued: int  # in the outbox (or about to be written to it), not yet acknowledged by the broker
    published: int  # PUBACKs received since this sink was made
    connects: int
    last_error: str | None
    overrides_handled: int
    overrides_refused: int


class _Stopped(Exception):
    """Raised inside the task groups to end them when ``aclose`` asked for it."""


def _tls_context(config: MqttSinkConfig) -> ssl.SSLContext | None:
    tls = config.tls
    if not tls.enabled:
        return None
    try:
        ctx = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file else None)
        if tls.cert_file is not None:
            ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file) if tls.key_file else None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError("sinks.mqtt", [("sinks.mqtt.tls", f"cannot load the TLS files: {exc}")]) from exc
    return ctx


class MqttSink:
    """``gateway.ports.Sink`` over MQTT (see the module docstring and ``docs/mqtt.md``)."""

    def __init__(
        self,
        config: MqttSinkConfig,
        outbox: Outbox,
        control: OperatorControl | None,
        *,
        clock: Clock,
        on_problem: ProblemHook | None = None,
        on_override: OverrideHook | None = None,
    ) -> None:
        self.config = config
        self.topics = Topics(config.topic_prefix, config.site_id)
        self._out = OutboxPublisher(outbox, CHANNEL, config.max_inflight)
        self._clock = clock
        self._on_problem = on_problem
        self._ids = MessageIds()
        self._mapper = RecordMapper(self.topics, self._ids)
        self._overrides = OverrideHandler(allow=config.override_allow, max_bytes=config.max_override_bytes,
                                          control=control, on_override=on_override, on_problem=on_problem)
        self._tls = _tls_context(config)
        self._timeout = max(10.0, 2.0 * config.keepalive_s)  # a PUBACK or CONNACK later than this: the link is dead
        self._stop = asyncio.Event()
        self._done = asyncio.Event()
        self._inbox: asyncio.Queue[tuple[str, bytes, bool]] = asyncio.Queue(_INBOX_MAX)
        self._no_command = asyncio.Event()  # no override command is being carried out
        self._no_command.set()
        self._client: aiomqtt.Client | None = None
        self._running = False
        self._unavailable = False
        self._delay = config.reconnect_min_s
        self._started_once = False
        self._drain_s = 2.0
        self.connects = 0
        self.last_error: str | None = None
        self._why: str | None = None  # the last failure in words (see _reason)

    # ------------------------------------------------------------------ the engine's side
    async def emit(self, kind: str, payload: Mapping[str, object]) -> None:
        """Map the record and queue its message for the outbox (written by the end of this loop turn)."""
        msg = self._mapper.map(kind, payload, self._clock.now())
        if msg is not None:
            self._out.queue(msg)

    async def drained(self) -> None:
        """Return once everything emitted so far has its PUBACK (waits through outages; bound it yourself)."""
        await self._out.drained()

    def stats(self) -> MqttStats:
        """For ``/status``: connected, queued (not yet acknowledged), published (since start), ..."""
        return {
            "connected": self._client is not None,
            "queued": self._out.queued(),
            "published": self._out.published,
            "connects": self.connects,
            "last_error": self.last_error,
            "overrides_handled": self._overrides.handled,
            "overrides_refused": self._overrides.refused,
        }

    # ------------------------------------------------------------------ lifecycle
    async def run(self) -> None:
        """Connect, publish, reconnect, until ``aclose``. Raises only for what is not an outage."""
        if self._running:
            raise RuntimeError("MqttSink.run is already running")
        self._running = True
        self._done.clear()
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._serve_overrides())
                tg.create_task(self._connection_loop())
        except* _Stopped:
            pass
        finally:
            self._out.write()
            self._running = False
            self._done.set()

    async def aclose(self, drain_s: float = 2.0) -> None:
        """Give the outbox up to ``drain_s`` to empty, publish ``offline`` (a clean shutdown) and disconnect.
        What is still queued stays in the outbox for the next start."""
        self._drain_s = max(0.0, drain_s)
        self._out.write()
        self._stop.set()
        if self._running:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(drain_s + self._timeout):
                    await self._done.wait()

    # ------------------------------------------------------------------ connections
    async def _connection_loop(self) -> None:
        while not self._stop.is_set():
            try:
                await self._connect_and_serve()
                break  # stopped on purpose
            except _LOST as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                self._why = self._reason(exc)
            await self._went_away()
            if await self._pause(self._delay):
                break
            self._delay = min(self._delay * 2, self.config.reconnect_max_s)
        with contextlib.suppress(TimeoutError):  # let a command being carried out finish (its reply is queued)
            async with asyncio.timeout(self._timeout):
                await self._no_command.wait()
        raise _Stopped

    def _new_client(self, will: Status) -> aiomqtt.Client:
        cfg = self.config
        client = aiomqtt.Client(
            cfg.host, cfg.port, identifier=cfg.client_id, clean_session=True, keepalive=cfg.keepalive_s,
            username=cfg.username, password=cfg.password.get_secret_value() if cfg.password else None,
            will=aiomqtt.Will(self.topics.status, will.model_dump_json(), qos=1, retain=True),
            tls_context=self._tls, timeout=self._timeout, max_inflight_messages=cfg.max_inflight,
            max_queued_incoming_messages=1000,
        )
        client.pending_calls_threshold = cfg.max_inflight + 16  # aiomqtt warns above this many pending calls
        return client

    def _status(self, state: str, reason: str) -> Status:
        now = self._clock.now()
        return Status(msg_id=self._ids.next(), site=self.topics.site, at=now, state=state,  # type: ignore[arg-type]
                      since=now if state == "online" or reason == "shutdown" else None, version=__version__, reason=reason)

    async def _connect_and_serve(self) -> None:
        client = self._new_client(self._status("offline", "connection lost"))
        async with client:
            self._client = client
            try:
                self.connects += 1
                self._delay = self.config.reconnect_min_s
                online = self._status("online", "reconnected" if self._started_once else "started")
                self._started_once = True
                await client.publish(self.topics.status, online.model_dump_json(), qos=1, retain=True)
                granted = await client.subscribe(self.topics.override_filter, qos=1)
                if any(_refused(code) for code in granted):
                    log.error("the broker refused the subscription to %s (ACL?): override commands cannot be received",
                              self.topics.override_filter)
                await self._came_back()
                await self._serve(client)
                await self._say_offline(client)
            except asyncio.CancelledError:
                await self._say_offline(client)
                raise
            finally:
                self._client = None

    async def _say_offline(self, client: aiomqtt.Client) -> None:
        """Publish the clean-shutdown status (bounded: a dead link must not hold up the shutdown)."""
        with contextlib.suppress(*_LOST, TimeoutError):
            async with asyncio.timeout(2.0):
                await client.publish(self.topics.status, self._status("offline", "shutdown").model_dump_json(),
                                     qos=1, retain=True)

    async def _serve(self, client: aiomqtt.Client) -> None:
        """Run until ``aclose`` (returns) or the connection is lost (raises an ``_LOST`` error)."""
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._listen(client))
                tg.create_task(self._out.serve(client))
                tg.create_task(self._until_stopped())
        except BaseExceptionGroup as group:
            _, rest = group.split(_Stopped)
            if rest is None:
                return
            lost, other = rest.split(_LOST)
            if other is not None or lost is None:
                raise
            raise _first(lost) from None

    async def _until_stopped(self) -> None:
        await self._stop.wait()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._drain_s):
                await self.drained()
        raise _Stopped

    async def _pause(self, seconds: float) -> bool:
        """Sleep ``seconds`` on the clock, or less if ``aclose`` is called; True when it was."""
        return await sleep_unless(self._clock, seconds, self._stop)

    def _reason(self, exc: BaseException) -> str:
        """What went wrong, in words that point at the setting to fix: a broker that refused the login
        or whose certificate was rejected was reached, so "unreachable" would send operators the wrong way."""
        cfg = self.config
        if isinstance(exc, MqttConnectError):
            code = getattr(exc.rc, "value", exc.rc)
            if code in (4, 5, 134, 135):  # MQTT 3.1.1 bad credentials / not authorized, and their MQTT 5 codes
                return f"refused the login as {cfg.username!r} ({exc}): check sinks.mqtt.username and password"
            return f"refused the connection ({exc})"
        cause = exc.__context__
        if isinstance(cause, ssl.SSLCertVerificationError):
            return (f"presented a TLS certificate that was not accepted ({cause.verify_message}): check "
                    "sinks.mqtt.tls.ca_file and that sinks.mqtt.host is a name in the certificate")
        return f"is unreachable ({type(exc).__name__}: {exc})"

    async def _went_away(self) -> None:
        if not self._unavailable:
            self._unavailable = True
            cfg = self.config
            why = self._why or f"is unreachable ({self.last_error})"
            log.warning("MQTT broker %s:%s %s", cfg.host, cfg.port, why)
            await self._problem("mqtt_unavailable",
                                f"MQTT broker {cfg.host}:{cfg.port} {why}; messages wait in the "
                                f"outbox, retrying every {cfg.reconnect_min_s:g}–{cfg.reconnect_max_s:g} s")

    async def _came_back(self) -> None:
        if self._unavailable:
            self._unavailable = False
            cfg = self.config
            await self._problem("mqtt_recovered", f"MQTT broker {cfg.host}:{cfg.port} is reachable again; "
                                f"{self._out.queued()} queued message(s) are going out in order")

    async def _problem(self, code: str, message: str) -> None:
        if self._on_problem is None:
            return
        try:
            await self._on_problem(code, message)
        except Exception:  # the alert hook's failure must not stop the sink
            log.exception("on_problem(%s) failed", code)

    # ------------------------------------------------------------------ overrides
    async def _listen(self, client: aiomqtt.Client) -> None:
        """Queue override commands for ``_serve_overrides``; raises when the connection is lost."""
        async for message in client.messages:
            identity = self.topics.identity_of(message.topic.value)
            if identity is None:
                continue
            payload = message.payload if isinstance(message.payload, bytes) else str(message.payload).encode()
            try:
                self._inbox.put_nowait((identity, payload, bool(message.retain)))
            except asyncio.QueueFull:
                log.warning("override from %r dropped: %d commands are already waiting", identity, _INBOX_MAX)

    async def _serve_overrides(self) -> None:
        while True:
            identity, payload, retained = await self._inbox.get()
            self._no_command.clear()
            try:
                outcome = await self._overrides.handle(identity, payload, retained=retained)
                await self._reply(outcome)
            finally:
                self._no_command.set()

    async def _reply(self, outcome: OverrideOutcome) -> None:
        reply = OverrideReply(msg_id=self._ids.next(), site=self.topics.site, at=self._clock.now(),
                              request_id=outcome.request_id, command=outcome.command_name,
                              accepted=outcome.accepted, answer=outcome.answer)
        msg = OutMessage(self.topics.reply(outcome.identity), reply.model_dump_json())
        client = self._client
        if client is not None:
            try:
                await client.publish(msg.topic, msg.payload, qos=1)
                return
            except _LOST as exc:
                log.warning("override reply to %r goes through the outbox: %s", outcome.identity, exc)
        self._out.queue(msg)


def _refused(code: object) -> bool:
    """A SUBACK return code that means failure (0x80 in MQTT 3.1.1, >= 0x80 in 5)."""
    value = getattr(code, "value", code)
    return isinstance(value, int) and value >= 0x80


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc
