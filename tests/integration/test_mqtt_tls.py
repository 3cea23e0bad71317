"""The MQTT sink over TLS with a user name and password, against the test Mosquitto's second listener.

``scripts/services.sh up`` gives Mosquitto a TLS listener (``DCFLEX_TEST_MQTT_TLS_PORT``, default 18831)
with a throwaway CA (``DCFLEX_TEST_MQTT_CA``) and one user (``DCFLEX_TEST_MQTT_USER``, its password in
``DCFLEX_TEST_MQTT_PASSWORD_FILE``); anonymous clients are refused there. The settings come from the
environment, else from var/services/env. What is checked is what a site with a secured broker relies on:
the sink verifies the broker's certificate and logs in with the configured credentials, and when either
side is wrong it keeps running and raises one ``mqtt_unavailable`` that says why.
The second CA of the untrusted-CA test is made with the ``openssl`` CLI, which the broker's setup needs too.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from gateway.clock import SystemClock
from gateway.config.models import MqttSinkConfig
from gateway.journal.outbox import Outbox
from gateway.sinks.mqtt import MqttSink
from tests.services import HINT, service_env
from tests.waiting import until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class TlsBroker:
    host: str
    port: int
    ca: Path
    user: str
    password: str

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))

    def client(self, **kw: Any) -> aiomqtt.Client:
        """A real aiomqtt client over TLS; the test user's credentials unless ``kw`` says otherwise."""
        base: dict[str, Any] = {"username": self.user, "password": self.password, "tls_context": self.context(),
                                "timeout": 5}
        return aiomqtt.Client(self.host, self.port, **(base | kw))


@pytest.fixture
def broker() -> TlsBroker:
    host = service_env("DCFLEX_TEST_MQTT_HOST")
    port = int(service_env("DCFLEX_TEST_MQTT_TLS_PORT"))
    ca = Path(service_env("DCFLEX_TEST_MQTT_CA"))
    password_file = Path(service_env("DCFLEX_TEST_MQTT_PASSWORD_FILE"))
    for path in (ca, password_file):
        if not path.is_file():
            pytest.fail(f"{path} is missing: {HINT}")
    return TlsBroker(host, port, ca, service_env("DCFLEX_TEST_MQTT_USER"), password_file.read_text().strip())


@pytest.fixture
async def prefix(broker: TlsBroker) -> AsyncIterator[str]:
    """A fresh topic prefix; the retained status the sink leaves under it is cleared afterwards."""
    p = f"dcflex-tls-{uuid.uuid4().hex[:10]}"
    yield p
    try:
        async with broker.client() as client:
            await client.publish(f"{p}/site-a/status", b"", qos=1, retain=True)
    except aiomqtt.MqttError:
        pass  # a failed run; `services.sh up` starts the broker clean anyway


def sink_config(broker: TlsBroker, prefix: str, **kw: Any) -> MqttSinkConfig:
    base: dict[str, Any] = {
        "enabled": True, "host": broker.host, "port": broker.port, "topic_prefix": prefix, "site_id": "site-a",
        "client_id": f"gw-{prefix}", "username": broker.user, "password": broker.password,
        "tls": {"enabled": True, "ca_file": str(broker.ca)},
        "keepalive_s": 10, "reconnect_min_s": 0.2, "reconnect_max_s": 0.4,
    }
    return MqttSinkConfig.model_validate(base | kw)


class CountingClock(SystemClock):
    """Wall-clock time that counts the sink's back-off sleeps: one per failed connection attempt."""

    def __init__(self) -> None:
        self.sleeps = 0

    async def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        await super().sleep(seconds)


class Problems:
    """The sink's ``on_problem`` hook: keeps (code, message)."""

    def __init__(self) -> None:
        self.got: list[tuple[str, str]] = []

    async def __call__(self, code: str, message: str) -> None:
        self.got.append((code, message))


@asynccontextmanager
async def running(sink: MqttSink) -> AsyncIterator[asyncio.Task[None]]:
    """``sink.run`` in a task; on the way out ``aclose`` must end it, without an exception."""
    task = asyncio.create_task(sink.run())
    try:
        yield task
    finally:
        await sink.aclose(drain_s=0.5)
        await asyncio.wait_for(task, 10)


async def refused_to_connect(sink: MqttSink, clock: CountingClock, problems: Problems) -> tuple[str, str]:
    """Run a sink that cannot connect through several attempts; return its one problem."""
    async with running(sink) as task:
        await until("an on_problem call", lambda: bool(problems.got), 8.0, every=0.02)
        await until("three more attempts", lambda: clock.sleeps >= 4, 8.0, every=0.02)
        assert not task.done(), "the sink's run() ended on a refused connection instead of retrying"
        stats = sink.stats()
        assert stats["connected"] is False and stats["connects"] == 0
        assert stats["last_error"]
    assert len(problems.got) == 1, f"one alert per outage, not per attempt: {problems.got}"
    return problems.got[0]


# ------------------------------------------------------------------------------------------ tests


async def test_sink_over_tls_with_credentials_publishes_status_and_alerts(broker: TlsBroker, prefix: str) -> None:
    # The listener takes no anonymous client: the sink getting through below means it sent the credentials.
    with pytest.raises(aiomqtt.MqttCodeError):
        async with broker.client(username=None, password=None):
            pass

    problems = Problems()
    sink = MqttSink(sink_config(broker, prefix), Outbox(":memory:"), None, clock=SystemClock(), on_problem=problems)
    got: list[tuple[str, bool, Any]] = []
    async with broker.client(identifier=f"sub-{prefix}") as sub:
        await sub.subscribe(f"{prefix}/#", qos=1)

        async def read() -> None:
            async for m in sub.messages:
                raw = m.payload if isinstance(m.payload, bytes) else str(m.payload).encode()
                got.append((m.topic.value, bool(m.retain), json.loads(raw) if raw else None))

        reader = asyncio.create_task(read())
        try:
            async with running(sink):
                await until("the sink connects", lambda: sink.stats()["connected"], 8.0, every=0.02)
                await until("the online status", lambda: any(t.endswith("/status") for t, _, _ in got), 8.0, every=0.02)
                await sink.emit("alert", {"at": "2025-05-20T17:00:00+00:00", "event_id": "e1", "severity": "warning",
                                          "code": "tls-check", "message": "over TLS"})
                await until("the alert", lambda: any(t.endswith("/alerts") for t, _, _ in got), 8.0, every=0.02)
                await asyncio.wait_for(sink.drained(), 5)
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)

    status = next(body for topic, _, body in got if topic == f"{prefix}/site-a/status")
    assert (status["state"], status["reason"], status["site"]) == ("online", "started", "site-a")
    alert = next(body for topic, _, body in got if topic == f"{prefix}/site-a/alerts")
    assert (alert["code"], alert["message"], alert["severity"]) == ("tls-check", "over TLS", "warning")
    assert sink.stats()["published"] == 1 and sink.stats()["queued"] == 0  # the alert, acked (status goes direct)
    assert problems.got == []

    # The status is retained: a later TLS subscriber gets it from the broker's store (offline: it shut down).
    async with broker.client() as late:
        await late.subscribe(f"{prefix}/site-a/status", qos=1)
        async with asyncio.timeout(5):
            retained = await anext(aiter(late.messages))
    assert retained.retain is True
    assert json.loads(retained.payload if isinstance(retained.payload, bytes) else b"{}")["reason"] == "shutdown"


async def test_wrong_password_is_one_problem_saying_the_broker_refused_the_login(broker: TlsBroker, prefix: str) -> None:
    wrong = f"not-{broker.password}"
    clock, problems = CountingClock(), Problems()
    sink = MqttSink(sink_config(broker, prefix, password=wrong), Outbox(":memory:"), None, clock=clock,
                    on_problem=problems)
    code, message = await refused_to_connect(sink, clock, problems)
    assert code == "mqtt_unavailable"
    assert f"{broker.host}:{broker.port}" in message
    # Mosquitto answers a bad login (MQTT 3.1.1) with CONNACK 5, "not authorised"; aiomqtt: "Not authorized".
    assert "not authorized" in message.lower(), message
    assert f"refused the login as {broker.user!r}" in message and "sinks.mqtt.username" in message, message
    assert wrong not in message and broker.password not in message  # never the secret itself


@pytest.fixture
def other_ca(tmp_path: Path) -> Path:
    """A second throwaway CA, one that did not sign the broker's certificate."""
    ca = tmp_path / "other-ca.crt"
    subprocess.run(
        ["openssl", "req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(tmp_path / "other-ca.key"), "-out", str(ca), "-days", "1", "-subj", "/CN=not the broker's CA",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        check=True, capture_output=True, timeout=20,
    )
    return ca


async def test_untrusted_ca_is_one_problem_naming_the_certificate_failure(
    broker: TlsBroker, prefix: str, other_ca: Path
) -> None:
    clock, problems = CountingClock(), Problems()
    sink = MqttSink(sink_config(broker, prefix, tls={"enabled": True, "ca_file": str(other_ca)}), Outbox(":memory:"),
                    None, clock=clock, on_problem=problems)
    code, message = await refused_to_connect(sink, clock, problems)
    assert code == "mqtt_unavailable"
    assert f"{broker.host}:{broker.port}" in message
    assert "TLS certificate that was not accepted" in message and "sinks.mqtt.tls.ca_file" in message, message
    assert broker.password not in message
