"""Effects in a time-series DB (InfluxDB 2.x/3.x, or VictoriaMetrics through its InfluxDB write API).

``TsdbSink`` is the gateway's ``Sink``; ``points`` maps records to line protocol and ``writer``
batches them to the database, through the journal's outbox when it is down. The measurements are
documented in ``docs/measurements.md``.
"""

from gateway.sinks.tsdb.sink import TsdbSink
from gateway.sinks.tsdb.writer import TsdbWriter

__all__ = ["TsdbSink", "TsdbWriter"]
