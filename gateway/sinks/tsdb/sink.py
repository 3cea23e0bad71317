"""The time-series sink: engine records → points (``points``) → batched writes (``writer``).

``emit`` is called by the engine for every record; it only maps the record to a line and appends
it to the writer's buffer (a few microseconds, no I/O, no await), so the engine never waits on the
database. Site power records are averaged per ``power_interval_s`` before they become points.
The gateway runs ``run()`` in its task group and calls ``aclose()`` on the way out.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from gateway.clock import Clock
from gateway.config.models import InfluxSinkConfig
from gateway.journal.outbox import Outbox
from gateway.sinks.tsdb.points import LineMapper, PowerDownsampler, PowerMean, timestamp_ms
from gateway.sinks.tsdb.writer import CHANNEL, ProblemHook, TsdbWriter

__all__ = ["TsdbSink"]

log = logging.getLogger(__name__)


def _opt_float(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if value == value and abs(value) != float("inf") else None


class TsdbSink:
    """``gateway.ports.Sink`` writing the measurements of ``docs/measurements.md``.

    ``on_problem(code, message)`` is the gateway's alert path: it hears ``tsdb_unavailable`` once
    when the database stops answering (points are then kept in the outbox), ``tsdb_recovered`` once
    when the backlog is written, and ``tsdb_rejected`` when the database refuses a batch as
    malformed. ``site``, when given, tags every point with ``site``.
    """

    def __init__(self, config: InfluxSinkConfig, outbox: Outbox, *, clock: Clock,
                 on_problem: ProblemHook | None = None, site: str = "", channel: str = CHANNEL) -> None:
        self.config = config
        self._clock = clock
        self._mapper = LineMapper(site)
        self._power = PowerDownsampler(config.power_interval_s)
        self._writer = TsdbWriter(config, outbox, clock=clock, on_problem=on_problem, channel=channel)
        self._line = self._mapper.line  # bound once: emit is the hot path
        self._add = self._writer.add_line
        self._skipped = 0
        self._warned: set[str] = set()

    def __repr__(self) -> str:
        return f"TsdbSink({self.config.url!r}, bucket={self.config.bucket!r})"

    async def emit(self, kind: str, payload: Mapping[str, object]) -> None:
        """Map one record and buffer its point; records of kinds that have no point are ignored."""
        try:
            line = self._line(kind, payload)
            if line is None:
                if kind == "power":
                    self._power_sample(payload)
                return
        except (ValueError, TypeError, KeyError) as exc:
            self._skip(kind, exc)
            return
        self._add(line)

    def _power_sample(self, payload: Mapping[str, object]) -> None:
        kw = _opt_float(payload.get("kw"))
        if kw is None:
            raise ValueError(f"power record without a numeric kw: {payload.get('kw')!r}")
        closed = self._power.add(
            timestamp_ms(payload.get("at")), kw, _opt_float(payload.get("target_kw")),
            _opt_float(payload.get("baseline_kw")), _opt_float(payload.get("shed_kw")),
        )
        if closed is not None:
            self._add_power(closed)

    def _add_power(self, mean: PowerMean) -> None:
        line = self._mapper.power_line(mean)
        if line is not None:
            self._writer.add_line(line)

    def _skip(self, kind: str, exc: Exception) -> None:
        self._skipped += 1
        if kind not in self._warned:  # once per kind: a malformed stream must not flood the log
            self._warned.add(kind)
            log.warning("time-series sink skipped a %s record it cannot map: %s", kind, exc)

    async def run(self) -> None:
        """The writer's loop and the power-interval timer, until cancelled (cancel-safe)."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._writer.run(), name="tsdb-writer")
            tg.create_task(self._power_timer(), name="tsdb-power")

    async def _power_timer(self) -> None:
        """Close a power interval the meter went quiet in, half an interval after its end."""
        interval_ms = self._power.interval_ms
        while True:
            await self._clock.sleep(interval_ms / 1000)
            closed = self._power.close_due(timestamp_ms(self._clock.now()) - interval_ms // 2)
            if closed is not None:
                self._add_power(closed)

    async def aclose(self) -> None:
        """Write the open power interval and everything buffered (to the outbox if the DB is down)."""
        mean = self._power.flush()
        if mean is not None:
            self._add_power(mean)
        await self._writer.aclose()

    def stats(self) -> dict[str, object]:
        """For ``/status``: the writer's counters plus records skipped as unmappable."""
        return {**self._writer.stats(), "skipped": self._skipped}
