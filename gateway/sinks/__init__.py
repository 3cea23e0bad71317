"""Operators' outputs: MQTT (``gateway.sinks.mqtt``) and the time-series DB (``gateway.sinks.tsdb``).

Each sink implements ``gateway.ports.Sink``: ``emit`` never blocks the engine and never raises for
an outage; what cannot be delivered now waits in the journal's outbox (``gateway.journal.Outbox``)
and goes out in order when the service is back.
"""
