"""Building the operators' outputs a configuration asks for (``[sinks.mqtt]``, ``[sinks.influxdb]``, the
notices' webhook)
and wiring them to the engine: their outages become alerts, MQTT overrides reach the engine
(``OperatorControl``) and are journaled as ``override`` records.

Both share the journal's outbox (``gateway.journal.Outbox``), so what a broker or database outage
holds back survives a restart of the gateway too.
"""

from __future__ import annotations

from collections.abc import Mapping

from gateway.clock import Clock
from gateway.config import DcflexConfig
from gateway.engine import Engine
from gateway.journal import Outbox
from gateway.ports import ServiceSink

# how loud each sink problem is
_SEVERITY = {"mqtt_unavailable": "error", "tsdb_unavailable": "error", "tsdb_rejected": "error",
             "override_refused": "warning", "webhook_failed": "error", "webhook_refused": "error"}


def build_outputs(cfg: DcflexConfig, engine: Engine, outbox: Outbox, clock: Clock) -> dict[str, ServiceSink]:
    """The enabled sinks by name (``mqtt``, ``tsdb``), already handed to the engine."""

    async def problem(code: str, message: str) -> None:
        await engine.out.alert("", code, message, _SEVERITY.get(code, "info"))

    async def override(identity: str, command: Mapping[str, object], accepted: bool, answer: str) -> None:
        event_id = command.get("event_id")
        await engine.out.emit("override", event_id if isinstance(event_id, str) else "", {
            "client": identity, "command": dict(command), "accepted": accepted, "answer": answer})

    outputs: dict[str, ServiceSink] = {}
    if cfg.sinks.mqtt.enabled:
        from gateway.sinks.mqtt import MqttSink

        outputs["mqtt"] = MqttSink(cfg.sinks.mqtt, outbox, engine, clock=clock, on_problem=problem, on_override=override)
    if cfg.sinks.influxdb.enabled:
        from gateway.sinks.tsdb import TsdbSink

        outputs["tsdb"] = TsdbSink(cfg.sinks.influxdb, outbox, clock=clock, on_problem=problem, site=cfg.site.site_id)
    if cfg.notices.enabled and cfg.notices.webhook_url is not None:
        from gateway.sinks.webhook import WebhookSink

        outputs["webhook"] = WebhookSink(cfg.notices, outbox, clock=clock, on_problem=problem, site=cfg.site.site_id)
    engine.out.sinks.extend(outputs.values())
    return outputs
