"""Batched, ordered, loss-free writes of line-protocol lines to InfluxDB (or VictoriaMetrics).

``add`` only appends to an in-memory buffer; one background loop (``run``) cuts the buffer into
batches of ``batch_size`` lines (a full batch at once, a partial one every ``flush_interval_s``)
and posts each with influxdb-client's async API, one request at a time so batches land in the
order they were produced.

When a write fails for a reason that may pass (connection refused, timeout, HTTP 5xx, 429, and
401/403/404, which are a token or bucket to fix, not bad data), that batch and every batch after
it go to the journal's outbox (channel ``tsdb``), one row per batch. While the outbox holds
anything, new batches are appended to it too, so order is kept; a drain retries from the outbox
with exponential backoff (``retry_min_s`` doubling up to ``retry_max_s``), and removes each batch
once the database has accepted it. A batch the database refuses as malformed (HTTP 400, 413, 422;
it should not happen) is logged with its first line, reported once per streak, and dropped, so it
cannot block everything behind it.

A batch whose write timed out may have landed; it is sent again. VictoriaMetrics then keeps both
copies unless started with ``-dedup.minScrapeInterval=1ms``; InfluxDB keeps one by itself (same
series, same timestamp). ``docs/measurements.md`` says more.

Shutdown: ``aclose`` writes what is buffered (or puts it in the outbox if the database is down),
so a clean stop loses nothing. A hard kill loses what was not yet in the outbox or the database:
at most the points of the last ``flush_interval_s`` and the batch in flight.

Timers (flush, backoff) run on the injected ``Clock``; each request's timeout is wall time.
The outbox's bulk work (writing batches in, reading them back) runs in a worker thread
(``asyncio.to_thread``); only its small statements (counting rows once at start, deleting the ids of
written rows) run on the loop. Those stay on the loop on purpose: while the loop is busy, a worker
thread waits for the GIL in 5 ms steps, and a count that took a few microseconds took 650 ms in the
benchmark, long enough for a quarter-million points to pile up behind it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta

import aiohttp
from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync
from influxdb_client.client.write_api_async import WriteApiAsync
from influxdb_client.domain.write_precision import WritePrecision
from influxdb_client.rest import ApiException

from gateway.clock import Clock, sleep_unless
from gateway.config.models import InfluxSinkConfig
from gateway.exceptions import JournalError
from gateway.journal.outbox import Outbox

__all__ = ["CHANNEL", "ProblemHook", "TsdbWriter"]

log = logging.getLogger(__name__)

CHANNEL = "tsdb"
ProblemHook = Callable[[str, str], Awaitable[None]]
_REJECTED = frozenset({400, 413, 422})  # the body itself is wrong: sending it again cannot help
_OK, _RETRY, _REJECT = 0, 1, 2
_DRAIN_ROWS = 20  # rows read from the outbox at a time (at most 20 batches in memory)
_PRECISION: WritePrecision = WritePrecision.MS  # type: ignore[assignment]  # the client's enum is a str constant


def _lines_in(body: str) -> int:
    return body.count("\n") + 1


class TsdbWriter:
    """See the module docstring. ``on_problem(code, message)`` hears ``tsdb_unavailable`` once when the
    database stops answering, ``tsdb_recovered`` once when the outbox is drained again, and
    ``tsdb_rejected`` once per streak of refused batches.

    ``max_pending`` bounds the lines kept in memory (cut into batches, not yet written) when the
    database is slower than the producer (200k lines: some 50 MB); beyond it they all go to the
    outbox and are drained from there, in order.
    """

    def __init__(self, config: InfluxSinkConfig, outbox: Outbox, *, clock: Clock,
                 on_problem: ProblemHook | None = None, channel: str = CHANNEL, max_pending: int = 200_000) -> None:
        self._cfg = config
        self._outbox = outbox
        self._clock = clock
        self._on_problem = on_problem
        self._channel = channel
        self._max_pending = max(1, max_pending)
        self._buf: list[str] = []
        self._pending: deque[list[str]] = deque()  # batches cut, not yet written or queued (joined when sent)
        self._backlog: int | None = None  # rows in the outbox; None until read at start
        self._kick = asyncio.Event()
        self._io = asyncio.Lock()
        self._client: InfluxDBClientAsync | None = None
        self._api: WriteApiAsync | None = None
        self._closed = False
        self._down = False
        self._rejecting = False
        self._delay = config.retry_min_s
        self._next_try: datetime | None = None
        self._drained_since_down = 0
        self.written = 0
        self.queued = 0
        self.drained = 0
        self.failed = 0
        self.last_error: str | None = None

    # ------------------------------------------------------------------ producer side
    def add(self, lines: Sequence[str]) -> None:
        """Buffer lines for writing (never blocks, never raises for an outage)."""
        self._buf.extend(lines)
        if len(self._buf) >= self._cfg.batch_size:
            self._kick.set()

    def add_line(self, line: str) -> None:
        """``add`` for one line, without building a list."""
        self._buf.append(line)
        if len(self._buf) >= self._cfg.batch_size:
            self._kick.set()

    def stats(self) -> dict[str, object]:
        """Counters for ``/status``: points written, queued in the outbox, drained from it, dropped."""
        state = "unavailable" if self._down else "draining" if self._backlog else "ok"
        return {
            "url": self._cfg.url,
            "state": state,
            "buffered": len(self._buf) + sum(len(batch) for batch in self._pending),
            "written": self.written,
            "queued": self.queued,
            "drained": self.drained,
            "failed": self.failed,
            "outbox_batches": self._backlog,
            "last_error": self.last_error,
        }

    # ------------------------------------------------------------------ the loop
    async def run(self) -> None:
        """Write until cancelled or closed. Cancel-safe: a batch in flight stays queued for ``aclose``."""
        self._load_backlog()
        timed_out = False  # the first pass at once (full batches only): it drains what an earlier run left
        while not self._closed:
            async with self._io:
                if self._closed:
                    return
                self._cut(everything=timed_out)
                try:
                    await self._cycle()
                except JournalError as exc:  # the outbox failed under us: keep what is in memory, try later
                    log.error("time-series outbox failed (points kept in memory; trying again): %s", exc)
                    self.last_error = f"outbox: {exc}"
                    self._next_try = self._clock.now() + timedelta(seconds=self._delay)
            timed_out = await self._wait(self._timeout())

    async def aclose(self) -> None:
        """Write (or queue in the outbox) everything buffered, then close the HTTP client."""
        self._closed = True
        self._kick.set()
        async with self._io:
            try:
                self._cut(everything=True)
                if self._pending:
                    self._load_backlog()
                    if self._backlog or self._down:
                        await self._spill()
                    else:
                        await self._send_pending()
            finally:
                if self._client is not None:
                    client, self._client, self._api = self._client, None, None
                    await client.close()  # type: ignore[no-untyped-call]

    def _timeout(self) -> float:
        wait = self._cfg.flush_interval_s
        if self._backlog and self._next_try is not None:
            wait = min(wait, (self._next_try - self._clock.now()).total_seconds())
        return max(0.0, wait)

    async def _wait(self, seconds: float) -> bool:
        """Sleep ``seconds`` of clock time or until a full batch is waiting; True if the time ran out."""
        kicked = await sleep_unless(self._clock, seconds, self._kick)
        self._kick.clear()
        return not kicked

    def _cut(self, *, everything: bool) -> None:
        """Move full batches (all lines, if ``everything``) from the buffer to the pending queue."""
        size = self._cfg.batch_size
        buf = self._buf
        take = len(buf) if everything else len(buf) - len(buf) % size
        if take == len(buf) and take <= size:
            if buf:
                self._pending.append(buf)
                self._buf = []
            return
        for i in range(0, take, size):
            self._pending.append(buf[i : i + size])
        del buf[:take]

    async def _cycle(self) -> None:
        if not self._backlog and len(self._pending) * self._cfg.batch_size <= self._max_pending:
            await self._send_pending()
            return
        if self._pending:
            await self._spill()
        if self._next_try is None or self._clock.now() >= self._next_try:
            await self._drain()

    # ------------------------------------------------------------------ direct path
    async def _send_pending(self) -> None:
        """Write pending batches in order; on the first that cannot be written, queue it and the rest."""
        while self._pending:
            batch = self._pending[0]
            body = "\n".join(batch)
            result, error = await self._post(body)
            if result == _RETRY:
                await self._unavailable(error)
                await self._spill()
                return
            self._pending.popleft()
            if result == _OK:
                self.written += len(batch)
                self._rejecting = False
            else:
                await self._rejected(body, len(batch), error)

    async def _spill(self) -> None:
        """Append every pending batch to the outbox (in a worker thread), in order."""
        batches = list(self._pending)
        self._pending.clear()
        if not batches:
            return
        self._load_backlog()
        assert self._backlog is not None
        points = sum(len(batch) for batch in batches)
        # counted before the await: a cancelled to_thread still finishes its put
        self._backlog += len(batches)
        self.queued += points
        try:
            await asyncio.to_thread(self._put, batches)
        except JournalError as exc:
            self._backlog -= len(batches)
            self.queued -= points
            self._pending.extendleft(reversed(batches))
            log.error("cannot keep %d time-series batches in the outbox (kept in memory): %s", len(batches), exc)

    # ------------------------------------------------------------------ outbox path
    def _put(self, batches: list[list[str]]) -> None:
        """In a worker thread: one outbox row per batch, its lines joined there rather than on the loop."""
        self._outbox.put(self._channel, ["\n".join(batch) for batch in batches])

    def _load_backlog(self) -> None:
        if self._backlog is None:
            self._backlog = self._outbox.count(self._channel)  # one indexed COUNT, once: on the loop
            if self._backlog:
                log.info("time-series outbox holds %d batches from before; writing them first", self._backlog)

    async def _drain(self) -> None:
        """Write the outbox's batches, oldest first, until it is empty or a write fails (then back off)."""
        while self._backlog:
            if self._closed:  # shutting down: what is left waits in the outbox for the next start
                return
            rows = await asyncio.to_thread(self._outbox.pending, self._channel, _DRAIN_ROWS)
            if not rows:
                self._backlog = 0
                break
            ok = await self._drain_rows(rows)
            self._cut(everything=False)  # points produced meanwhile join the queue behind
            if self._pending:
                await self._spill()
            if not ok:
                return  # ``_unavailable`` set the next try
        self._delay = self._cfg.retry_min_s
        self._next_try = None
        if self._down:
            self._down = False
            drained, self._drained_since_down = self._drained_since_down, 0
            log.warning("time-series DB at %s is back; %d points written from the outbox", self._cfg.url, drained)
            await self._tell("tsdb_recovered", f"time-series DB at {self._cfg.url} is back; "
                             f"{drained} points kept in the outbox meanwhile were written with their original times")

    async def _drain_rows(self, rows: list[tuple[int, str]]) -> bool:
        """Write ``rows`` (merged up to ``batch_size`` lines per request); False when the DB failed."""
        size = self._cfg.batch_size
        i = 0
        while i < len(rows):
            group = [rows[i]]
            lines = _lines_in(rows[i][1])
            while i + len(group) < len(rows) and lines + _lines_in(rows[i + len(group)][1]) <= size:
                lines += _lines_in(rows[i + len(group)][1])
                group.append(rows[i + len(group)])
            result, error = await self._post("\n".join(body for _, body in group))
            if result == _REJECT and len(group) > 1:
                group = group[:1]  # find the bad one: retry the first alone
                lines = _lines_in(group[0][1])
                result, error = await self._post(group[0][1])
            if result == _RETRY:
                await self._unavailable(error)
                return False
            if result == _OK:
                self._delay = self._cfg.retry_min_s  # progress: the next failure starts the backoff afresh
                self.written += lines
                self.drained += lines
                self._drained_since_down += lines
                self._rejecting = False
            else:
                await self._rejected(group[0][1], lines, error)
            ids = [row_id for row_id, _ in group]
            self._outbox.done(ids)  # a few ids by primary key: on the loop (see the module docstring)
            self._backlog = max(0, (self._backlog or 0) - len(ids))
            i += len(group)
        return True

    # ------------------------------------------------------------------ HTTP
    async def _post(self, body: str) -> tuple[int, str]:
        """One write request: (_OK | _RETRY | _REJECT, error text)."""
        if self._api is None:
            token = self._cfg.token.get_secret_value() if self._cfg.token is not None else ""
            self._client = InfluxDBClientAsync(
                url=self._cfg.url, token=token, org=self._cfg.org, timeout=int(self._cfg.timeout_s * 1000)
            )
            self._api = self._client.write_api()
        try:
            async with asyncio.timeout(self._cfg.timeout_s):
                await self._api.write(self._cfg.bucket, self._cfg.org, record=body.encode(),
                                      write_precision=_PRECISION)
        except ApiException as exc:
            detail = exc.body.decode(errors="replace") if isinstance(exc.body, bytes) else str(exc.body or "")
            error = f"HTTP {exc.status} {exc.reason or ''}: {detail.strip()[:300]}"
            return (_REJECT if exc.status in _REJECTED else _RETRY), error
        except TimeoutError:
            return _RETRY, f"no answer within {self._cfg.timeout_s:g} s"
        except (aiohttp.ClientError, OSError) as exc:
            return _RETRY, f"{type(exc).__name__}: {exc}"
        except Exception as exc:  # unforeseen: keep the points and try again rather than stop writing
            log.exception("unexpected error writing to the time-series DB")
            return _RETRY, f"{type(exc).__name__}: {exc}"
        return _OK, ""

    async def _unavailable(self, error: str) -> None:
        self.last_error = error
        self._next_try = self._clock.now() + timedelta(seconds=self._delay)
        self._delay = min(self._delay * 2, self._cfg.retry_max_s)
        if self._down:
            log.info("time-series DB still unavailable (%s); next try at %s", error, self._next_try.isoformat())
            return
        self._down = True
        log.warning("time-series DB at %s unavailable: %s", self._cfg.url, error)
        await self._tell("tsdb_unavailable", f"time-series DB at {self._cfg.url} cannot be reached ({error}); "
                         "points are kept in the journal's outbox and written in order when it is back")

    async def _rejected(self, body: str, lines: int, error: str) -> None:
        self.failed += lines
        self.last_error = error
        first = body.split("\n", 1)[0][:300]
        log.error("time-series DB refused a batch of %d points (%s); dropped. First line: %s", lines, error, first)
        if not self._rejecting:
            self._rejecting = True
            await self._tell("tsdb_rejected", f"time-series DB at {self._cfg.url} refused a batch of {lines} points "
                             f"as malformed ({error}); it was dropped. First line: {first}")

    async def _tell(self, code: str, message: str) -> None:
        if self._on_problem is None:
            return
        try:
            await self._on_problem(code, message)
        except Exception:  # the alert path failing must not stop the writes
            log.exception("could not report %s", code)
