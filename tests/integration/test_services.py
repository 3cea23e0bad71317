"""The MQTT broker and the time-series DB that ``scripts/services.sh up`` starts behave as the gateway relies on.

Mosquitto keeps a retained QoS 1 message for a subscriber that arrives later; VictoriaMetrics takes InfluxDB
line protocol from influxdb_client's async API and gives the point back, value and timestamp, through
/api/v1/export. Host, port and URL come from the environment, else from var/services/env (written by `up`).
Without the services these tests fail, saying how to start them.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt
import pytest
from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync

from tests.services import HINT, service_env

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


async def test_retained_qos1_message_reaches_a_later_subscriber() -> None:
    host, port = service_env("DCFLEX_TEST_MQTT_HOST"), int(service_env("DCFLEX_TEST_MQTT_PORT"))
    run = uuid.uuid4().hex[:12]
    topic = f"dcflex/test/services/{run}/status"  # unique, so an earlier run's retained message cannot answer
    payload = b'{"site": "dc1", "kw": 812.5}'
    try:
        async with aiomqtt.Client(host, port, identifier=f"dcflex-test-pub-{run}", timeout=3) as publisher:
            await publisher.publish(topic, payload, qos=1, retain=True)  # returns once the broker acked
    except aiomqtt.MqttError as exc:
        pytest.fail(f"no MQTT broker answers on {host}:{port} ({exc}): {HINT}")

    try:
        async with aiomqtt.Client(host, port, identifier=f"dcflex-test-sub-{run}", timeout=3) as subscriber:
            await subscriber.subscribe(topic, qos=1)
            async with asyncio.timeout(5):
                message = await anext(aiter(subscriber.messages))
    finally:
        async with aiomqtt.Client(host, port, identifier=f"dcflex-test-clr-{run}", timeout=3) as cleaner:
            await cleaner.publish(topic, b"", qos=1, retain=True)  # an empty retained payload deletes it

    assert str(message.topic) == topic
    assert message.payload == payload
    assert message.retain is True  # delivered from the broker's store, not forwarded live
    assert message.qos == 1


async def test_line_protocol_point_written_async_is_exported_with_value_and_time() -> None:
    url = service_env("DCFLEX_TEST_TSDB_URL")
    measurement = f"dcflex_test_{uuid.uuid4().hex[:12]}"
    # A whole millisecond (VictoriaMetrics keeps ms), a minute back: clear of "now" rounding in the query API.
    ts_ms = time.time_ns() // 1_000_000 - 60_000
    line = f"{measurement},site=dc1,feed=a power_kw=812.5 {ts_ms * 1_000_000}"

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
        try:
            async with http.get(f"{url}/health") as health:
                assert health.status == 200, f"{url}/health answered {health.status}: {HINT}"
        except aiohttp.ClientError as exc:
            pytest.fail(f"no time-series DB answers at {url} ({exc}): {HINT}")

        # Token, org and bucket are required by the client and ignored by VictoriaMetrics (no `db` label
        # comes from a bucket on /api/v2/write).
        async with InfluxDBClientAsync(url=url, token="dcflex-test", org="dcflex", timeout=5_000) as influx:
            written = await influx.write_api().write(bucket="dcflex", record=line)
        assert written is True

        # Fresh rows become searchable only after ~1 s (a new series: up to ~10 s); this flushes them now.
        async with http.get(f"{url}/internal/force_flush") as flushed:
            assert flushed.status == 200
        params = {"match[]": f'{{__name__=~"{measurement}_.*"}}', "start": str(ts_ms / 1000 - 1),
                  "end": str(ts_ms / 1000 + 1)}
        async with http.get(f"{url}/api/v1/export", params=params) as exported:
            assert exported.status == 200, await exported.text()
            series: list[dict[str, Any]] = [json.loads(row) for row in (await exported.text()).splitlines()]

    # One series per field, named <measurement>_<field>; tags become labels.
    assert series == [{
        "metric": {"__name__": f"{measurement}_power_kw", "site": "dc1", "feed": "a"},
        "values": [812.5],
        "timestamps": [ts_ms],
    }]
