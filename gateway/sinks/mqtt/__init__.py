"""MQTT sink: alerts, event states, notices and the gateway's status to operators, override commands
from them (``docs/mqtt.md`` describes every topic and payload)."""

from gateway.sinks.mqtt.messages import MessageIds, OutMessage, RecordMapper, Topics
from gateway.sinks.mqtt.override import OverrideHandler, OverrideHook, OverrideOutcome, ProblemHook, parse_override
from gateway.sinks.mqtt.payloads import (
    PAYLOAD_MODELS,
    Alert,
    EventStatus,
    Notice,
    Override,
    OverrideReply,
    Status,
    from_topic_level,
    to_topic_level,
)
from gateway.sinks.mqtt.sink import CHANNEL, MqttSink, MqttStats

__all__ = [
    "CHANNEL",
    "PAYLOAD_MODELS",
    "Alert",
    "EventStatus",
    "MessageIds",
    "MqttSink",
    "MqttStats",
    "Notice",
    "OutMessage",
    "Override",
    "OverrideHandler",
    "OverrideHook",
    "OverrideOutcome",
    "OverrideReply",
    "ProblemHook",
    "RecordMapper",
    "Status",
    "Topics",
    "from_topic_level",
    "parse_override",
    "to_topic_level",
]
