"""Engine records → InfluxDB line protocol: which record becomes which point (``docs/measurements.md``).

Pure mapping, no I/O. Lines are built as strings, once, because a ``Point`` object per record costs
several times more than the write itself; the writer only joins them per batch.

Time: every point carries its record's own time (``at``), in **milliseconds** since the epoch
(``PRECISION``). Milliseconds because that is what VictoriaMetrics stores, and because one
precision for every line keeps a batch one request. Two different points must never share a
series and a millisecond: InfluxDB keeps only the last of them and VictoriaMetrics with
deduplication on keeps one, so the engine's many records of one instant (a plan's caps, all done
at the same clock tick) would collapse. ``LineMapper`` therefore moves a point that lands on or
before its series' last millisecond to one millisecond after it. A retried line is the same
string, so it still lands on its original millisecond and deduplicates.

Escaping follows the line-protocol rules: in tag values a backslash, comma, equals sign and
space are escaped with a backslash (line breaks and tabs, which cannot appear in a line, become
an escaped space); in string fields a double quote and a backslash are escaped (line breaks become
spaces). Measurement and field names are constants here and need none. Empty tag values are left
out (line protocol has no empty tag). Numbers that are not finite are left out; a point with no
field left is dropped. Each field always has one type (float, integer ``…i``, boolean or string),
since InfluxDB refuses a batch that changes a field's type.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

__all__ = [
    "ACTION",
    "DROP",
    "EVENT",
    "IMPACT",
    "NOTICE",
    "PRECISION",
    "SITE_POWER",
    "STATE_CODES",
    "LineMapper",
    "PowerDownsampler",
    "PowerMean",
    "escape_string",
    "escape_tag",
    "timestamp_ms",
]

PRECISION = "ms"
EVENT = "dcflex_event"
SITE_POWER = "dcflex_site_power"
ACTION = "dcflex_action"
IMPACT = "dcflex_job_impact"
NOTICE = "dcflex_notice"
DROP = "dcflex_drop"

#: ``state_code`` field of ``dcflex_event``: the lifecycle state as a number a graph can plot.
STATE_CODES: dict[str, int] = {
    "received": 0, "planned": 1, "noticed": 2, "ramping": 3, "holding": 4, "restoring": 5,
    "completed": 6, "cancelled": 7, "failed": 8, "opted_out": 9,
}

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_TAG_ESCAPES = str.maketrans({
    "\\": "\\\\", ",": "\\,", "=": "\\=", " ": "\\ ", "\n": "\\ ", "\r": "\\ ", "\t": "\\ ",
})
_TAG_SPECIAL = frozenset("\\,= \n\r\t")
_STRING_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": " ", "\r": " "})
_SERIES_MAX = 100_000
_SERIES_KEEP_MS = 600_000
_INT_MAX = 2**63
_NO_TIME = object()  # matches no record's time


def escape_tag(value: str) -> str:
    """A tag value (or key) escaped for line protocol."""
    return value.translate(_TAG_ESCAPES) if not _TAG_SPECIAL.isdisjoint(value) else value


def escape_string(value: str) -> str:
    """The inside of a string field value (the caller adds the quotes)."""
    return value.translate(_STRING_ESCAPES)


def timestamp_ms(at: object) -> int:
    """Milliseconds since the epoch of an ISO-8601 string or aware datetime (floored). ``ValueError`` if neither."""
    dt = datetime.fromisoformat(at) if isinstance(at, str) else at
    if not isinstance(dt, datetime) or dt.tzinfo is None:
        raise ValueError(f"not a timezone-aware time: {at!r}")
    return (dt - _EPOCH) // _MS


def _fv(value: object) -> str | None:
    """A number as a line-protocol float (no suffix), or None for anything else (None, bool, text, NaN, ±inf)."""
    if type(value) is float:
        return repr(value) if value - value == 0.0 else None  # inf - inf and nan - nan are nan
    if type(value) is int and -_INT_MAX < value < _INT_MAX:
        return str(value)  # without "i" it is read as a float, the field's one type
    return None


def _int(value: object) -> int | None:
    """An integer field value (a float is truncated), or None when there is no 64-bit integer to write."""
    if isinstance(value, float) and math.isfinite(value):
        value = int(value)
    if type(value) is int and -_INT_MAX < value < _INT_MAX:
        return value
    return None


def _text(value: object) -> str:
    return value if isinstance(value, str) else "" if value is None else str(value)


@dataclass(frozen=True, slots=True)
class PowerMean:
    """Site power over one interval: the mean of its samples (None when no sample had the value)."""

    start_ms: int
    actual_kw: float
    baseline_kw: float | None
    target_kw: float | None
    shed_kw: float | None
    samples: int


class _Acc:
    """Running sums of one interval (sum, count) for each of the four values."""

    __slots__ = ("n", "sums")

    def __init__(self) -> None:
        self.sums = [0.0, 0.0, 0.0, 0.0]
        self.n = [0, 0, 0, 0]

    def add(self, values: tuple[float | None, float | None, float | None, float | None]) -> None:
        for i, v in enumerate(values):
            if v is not None:
                self.sums[i] += v
                self.n[i] += 1

    def mean(self, i: int) -> float | None:
        return self.sums[i] / self.n[i] if self.n[i] else None


class PowerDownsampler:
    """At most one site-power point per interval: the mean of the samples in ``[start, start + interval)``.

    Intervals are aligned on multiples of the interval since the epoch, so restarts and other
    gateways agree on them; a point is stamped at its interval's start. An interval is closed by the
    first sample of a later one, or by ``close_due`` once the clock has passed its end (the meter
    may stop sending). A sample that arrives for an interval already closed is counted in the open
    one, never written as a second point for the old one.
    """

    def __init__(self, interval_s: float) -> None:
        if not interval_s > 0:
            raise ValueError("the power interval must be positive")
        self.interval_ms = max(1, round(interval_s * 1000))
        self._start: int | None = None
        self._closed_end = -(2**62)
        self._acc = _Acc()

    def add(self, ms: int, kw: float, target_kw: float | None, baseline_kw: float | None,
            shed_kw: float | None) -> PowerMean | None:
        """Count one sample; returns the interval this sample closed, if any."""
        start = max(ms - ms % self.interval_ms, self._closed_end)
        closed = None
        if self._start is not None and start > self._start:
            closed = self._close()
        if self._start is None:
            self._start = start
        self._acc.add((kw, baseline_kw, target_kw, shed_kw))
        return closed

    def close_due(self, now_ms: int) -> PowerMean | None:
        """Close the open interval if ``now_ms`` is past its end."""
        if self._start is not None and now_ms >= self._start + self.interval_ms:
            return self._close()
        return None

    def flush(self) -> PowerMean | None:
        """Close the open interval, complete or not (shutdown)."""
        return self._close() if self._start is not None else None

    def _close(self) -> PowerMean:
        assert self._start is not None
        acc = self._acc
        actual = acc.mean(0)
        mean = PowerMean(self._start, actual if actual is not None else 0.0, acc.mean(1), acc.mean(2), acc.mean(3), acc.n[0])
        self._closed_end = self._start + self.interval_ms
        self._start = None
        self._acc = _Acc()
        return mean


class _Series:
    """One series' line prefix (measurement and tags) and the millisecond of its last point."""

    __slots__ = ("last", "prefix")

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.last = -(2**62)


class LineMapper:
    """Turns records into lines; keeps only caches and each series' last millisecond (see the module doc).

    ``site``, when given, becomes a ``site`` tag on every point. ``line`` is the hot path (an
    action record in about 2 µs): the series prefix is cached per tag values, fields are formatted
    straight into one string, and the time of the previous record is reused when it repeats.
    """

    def __init__(self, site: str = "") -> None:
        self._site = escape_tag(site) if site else ""
        self._series: dict[tuple[object, ...], _Series] = {}  # by the record's tag values
        self._by_prefix: dict[str, _Series] = {}  # the same series reached through other values ("" / None)
        self._prune_at = _SERIES_MAX
        self._last_at: object = _NO_TIME
        self._last_at_ms = 0
        self._builders: dict[str, Callable[[Mapping[str, object]], str | None]] = {
            "state": self._event, "action": self._action, "alert": self._alert, "impact": self._impact,
            "notice": self._notice, "drop": self._drop,
        }

    def line(self, kind: str, payload: Mapping[str, object]) -> str | None:
        """The line for one record; None for the kinds not written (``power`` goes through ``power_line``).

        Raises ``ValueError`` (or ``TypeError``) when ``at`` is not a time or a tag value is not text.
        """
        build = self._builders.get(kind)
        return build(payload) if build is not None else None

    def power_line(self, mean: PowerMean) -> str | None:
        """The ``dcflex_site_power`` line of one closed interval."""
        fields = f"actual_kw={mean.actual_kw!r}"
        for name, v in ((",baseline_kw=", mean.baseline_kw), (",target_kw=", mean.target_kw), (",shed_kw=", mean.shed_kw)):
            if v is not None:
                fields += name + repr(v)
        key = (SITE_POWER,)
        series = self._series.get(key) or self._new_series(key, ())
        return self._stamp(series, f"{fields},samples={mean.samples}i", mean.start_ms)

    # ------------------------------------------------------------------ helpers
    def _new_series(self, key: tuple[object, ...], names: tuple[str, ...]) -> _Series:
        """The series of ``key = (measurement, *tag values)``: its prefix has the tags sorted by key, empty ones left out."""
        tags = [(name, escape_tag(_text(value))) for name, value in zip(names, key[1:], strict=True)]
        if self._site:
            tags.append(("site", self._site))
        tags.sort()
        prefix = ",".join([str(key[0]), *(f"{name}={value}" for name, value in tags if value)])
        if len(self._series) >= self._prune_at:
            self._prune()
        series = self._by_prefix.get(prefix)
        if series is None:
            series = self._by_prefix[prefix] = _Series(prefix)
        self._series[key] = series
        return series

    def _prune(self) -> None:
        """Forget the series without a point in the last ten minutes (of record time): memory stays bounded, and
        a record that late for its series is not expected."""
        newest = max(s.last for s in self._by_prefix.values())
        self._by_prefix = {p: s for p, s in self._by_prefix.items() if s.last >= newest - _SERIES_KEEP_MS}
        self._series = {k: s for k, s in self._series.items() if s.prefix in self._by_prefix}
        self._prune_at = max(_SERIES_MAX, 2 * len(self._series))

    @staticmethod
    def _stamp(series: _Series, fields: str, ms: int) -> str | None:
        """The line, its time moved past the series' last point if it would land on or before it."""
        if not fields:
            return None
        if ms <= series.last:
            ms = series.last + 1
        series.last = ms
        return f"{series.prefix} {fields} {ms}"

    def _ms(self, at: object) -> int:
        if at != self._last_at:  # the records of one instant share their time
            dt = datetime.fromisoformat(at) if type(at) is str else at
            if not isinstance(dt, datetime) or dt.tzinfo is None:
                raise ValueError(f"not a timezone-aware time: {at!r}")
            self._last_at_ms = (dt - _EPOCH) // _MS
            self._last_at = at
        return self._last_at_ms

    # ------------------------------------------------------------------ records
    def _event(self, p: Mapping[str, object]) -> str | None:
        get = p.get
        ms = self._ms(get("at"))
        state = get("state")
        parts: list[str] = []
        code = STATE_CODES.get(state) if isinstance(state, str) else None
        if code is not None:
            parts.append(f"state_code={code}i")
        if (m := _int(get("modification"))) is not None:
            parts.append(f"modification={m}i")
        if (v := _fv(get("target_kw"))) is not None:
            parts.append("target_kw=" + v)
        if (v := _fv(get("achieved_kw"))) is not None:
            parts.append("achieved_kw=" + v)
        if detail := _text(get("detail")):
            parts.append(f'detail="{escape_string(detail)}"')
        key = (EVENT, get("event_id"), state)
        series = self._series.get(key) or self._new_series(key, _EVENT_TAGS)
        return self._stamp(series, ",".join(parts), ms)

    def _action(self, p: Mapping[str, object], outcome: object = None, message: str = "") -> str | None:
        get = p.get
        at = get("at")
        ms = self._last_at_ms if at == self._last_at else self._ms(at)
        nodes = get("nodes")
        fields = f"nodes={len(nodes)}i" if isinstance(nodes, list | tuple) else "nodes=0i"
        for name, field in _ACTION_NUMBERS:  # _fv, inlined: this is the hottest loop of the sink
            v = get(field)
            if type(v) is float:
                if v - v == 0.0:
                    fields += name + repr(v)
            elif type(v) is int and -_INT_MAX < v < _INT_MAX:
                fields += name + str(v)
        if message:
            fields += f',message="{escape_string(message)}"'
        key = (ACTION, get("event_id"), get("job_id"), get("kind"), outcome or get("outcome"), get("scheduler"), get("tier"))
        series = self._series.get(key) or self._new_series(key, _ACTION_TAGS)
        return self._stamp(series, fields, ms)

    def _alert(self, p: Mapping[str, object]) -> str | None:
        """Only a failed command becomes a point: an action with ``outcome=failed`` and the alert's message."""
        if p.get("code") != "command_failed":
            return None
        return self._action(p, "failed", _text(p.get("message")) or "failed")

    def _impact(self, p: Mapping[str, object]) -> str | None:
        get = p.get
        ms = self._ms(get("at"))
        parts: list[str] = []
        if (v := _fv(get("throughput_kept"))) is not None:
            parts.append("throughput_kept=" + v)
        if (v := _fv(get("lost_gpu_hours"))) is not None:
            parts.append("lost_gpu_hours=" + v)
        if (g := _int(get("gpus"))) is not None:
            parts.append(f"gpus={g}i")
        key = (IMPACT, get("event_id"), get("job_id"), get("tier"))
        series = self._series.get(key) or self._new_series(key, _IMPACT_TAGS)
        return self._stamp(series, ",".join(parts), ms)

    def _notice(self, p: Mapping[str, object]) -> str | None:
        get = p.get
        ms = self._ms(get("at"))
        parts: list[str] = []
        if (v := _fv(get("drop_kw"))) is not None:
            parts.append("drop_kw=" + v)
        try:
            lead_s = (timestamp_ms(p["drop_at"]) - ms) / 1000
        except (KeyError, ValueError, TypeError):
            pass  # no usable drop time: the rest of the notice is still worth a point
        else:
            parts.append(f"lead_s={lead_s!r}")
        for name in ("exact", "modified"):
            if isinstance(b := get(name), bool):
                parts.append(f"{name}={'true' if b else 'false'}")
        for name in ("notice_id", "reason", "action", "source"):
            if text := _text(get(name)):
                parts.append(f'{name}="{escape_string(text)}"')
        key = (NOTICE, get("event_id"))
        series = self._series.get(key) or self._new_series(key, _NOTICE_TAGS)
        return self._stamp(series, ",".join(parts), ms)

    def _drop(self, p: Mapping[str, object]) -> str | None:
        """A measured drop of the site's load: its kW and, as ``covered_kw``, the kW of it announced at least the
        shortest lead time ahead (0 otherwise), so coverage over any window is sum(covered_kw) / sum(kw)."""
        get = p.get
        ms = self._ms(get("at"))
        kw = _fv(get("kw"))
        if kw is None:
            return None
        covered = get("covered") is True
        parts = [f"kw={kw}", f"covered_kw={kw if covered else '0.0'}", f"covered={'true' if covered else 'false'}"]
        if (lead := _fv(get("lead_s"))) is not None:
            parts.append(f"lead_s={lead}")
        if notice_id := _text(get("notice_id")):
            parts.append(f'notice_id="{escape_string(notice_id)}"')
        key = (DROP, get("event_id"))
        series = self._series.get(key) or self._new_series(key, _DROP_TAGS)
        return self._stamp(series, ",".join(parts), ms)


_ACTION_NUMBERS = ((",delta_kw=", "delta_kw"), (",watts=", "watts"), (",latency_s=", "latency_s"))
_EVENT_TAGS = ("event_id", "state")
_ACTION_TAGS = ("event_id", "job_id", "kind", "outcome", "scheduler", "tier")
_IMPACT_TAGS = ("event_id", "job_id", "tier")
_NOTICE_TAGS = ("event_id",)
_DROP_TAGS = ("event_id",)
