"""The outbox → broker pipeline: write messages to the journal's outbox, publish them in order, remove
each only after its PUBACK.

Writes are batched: what is queued during one event-loop turn goes into the outbox in one transaction at
the end of that turn (``loop.call_soon``), or at once when ``WRITE_BATCH`` wait. One transaction per
message costs about 50 µs and would halve the sink's throughput (``benchmarks/mqtt_bench.py``). The
price: a hard kill (SIGKILL, OOM, power cut) between a ``queue`` and the end of its loop turn loses those
few messages; and with SQLite's ``synchronous=NORMAL`` a power cut can also lose the last committed
transactions. Nothing is published before it is in the outbox.

Publishing: ``max_inflight`` publisher coroutines take the oldest buffered message and hand it to paho
without an await in between, so paho sends in outbox order, and each then awaits its PUBACK. A pump
refills their buffer from the outbox and removes acknowledged ids in one transaction per loop turn.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

import aiomqtt

from gateway.exceptions import JournalError
from gateway.journal.outbox import Outbox
from gateway.sinks.mqtt.messages import OutMessage

__all__ = ["WRITE_BATCH", "OutboxPublisher"]

log = logging.getLogger(__name__)

WRITE_BATCH = 1000  # messages queued in one loop turn that are written at once, without waiting for its end


class OutboxPublisher:
    """One outbox channel, published over whichever connection ``serve`` is given."""

    def __init__(self, outbox: Outbox, channel: str, max_inflight: int) -> None:
        self.outbox = outbox
        self.channel = channel
        self.max_inflight = max_inflight
        self.published = 0
        self._batch = max(500, max_inflight)
        self._wake = asyncio.Event()  # the pump has something to do (new messages, acks, room in the buffer)
        self._have_work = asyncio.Event()  # the buffer has messages for the publishers
        self._idle = asyncio.Event()  # the pump found the outbox empty
        self._buf: deque[tuple[int, str]] = deque()
        self._acked: list[int] = []
        self._unwritten: list[str] = []
        self._write_scheduled = False

    def queue(self, msg: OutMessage) -> None:
        """Append ``msg`` to the outbox by the end of this loop turn (see the module docstring)."""
        self._unwritten.append(msg.encode())
        self._idle.clear()
        if len(self._unwritten) >= WRITE_BATCH:
            self.write()
        elif not self._write_scheduled:
            self._write_scheduled = True
            asyncio.get_running_loop().call_soon(self.write)

    def write(self) -> None:
        """Move the queued messages into the outbox now (kept for the next try if the journal refuses)."""
        self._write_scheduled = False
        if not self._unwritten:
            return
        bodies, self._unwritten = self._unwritten, []
        try:
            self.outbox.put(self.channel, bodies)
        except JournalError:
            log.exception("cannot store %d MQTT message(s) in the outbox; kept in memory, retried on the next one", len(bodies))
            self._unwritten = bodies + self._unwritten
            return
        self._wake.set()

    def flush_acks(self) -> None:
        """Remove acknowledged messages from the outbox; if the journal refuses, keep the ids for the next
        try (a restart before it succeeds publishes them again: duplicates with the same msg_id, no loss)."""
        if self._acked:
            ids, self._acked = self._acked, []
            try:
                self.outbox.done(ids)
            except JournalError:
                log.exception("cannot remove %d acknowledged MQTT message(s) from the outbox", len(ids))
                self._acked = ids + self._acked

    def queued(self) -> int:
        """Messages not yet acknowledged (in the outbox, or about to be written to it)."""
        return self.outbox.count(self.channel) + len(self._unwritten)

    async def drained(self) -> None:
        """Return once everything queued so far has its PUBACK (waits through outages; bound it yourself)."""
        while self._unwritten or self.outbox.count(self.channel):
            self._idle.clear()
            self._wake.set()
            await self._idle.wait()

    async def serve(self, client: aiomqtt.Client) -> None:
        """Publish over ``client`` until cancelled or a publish fails (the error propagates)."""
        self._buf.clear()
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._pump())
                for _ in range(self.max_inflight):
                    tg.create_task(self._publisher(client))
        finally:
            self.flush_acks()

    async def _pump(self) -> None:
        sent_upto = 0  # the newest outbox id handed to the publishers on this connection
        while True:
            self._wake.clear()
            self.write()
            self.flush_acks()
            if len(self._buf) < self.max_inflight:
                rows = self.outbox.pending(self.channel, self.max_inflight + len(self._buf) + self._batch)
                fresh = [r for r in rows if r[0] > sent_upto]
                if fresh:
                    self._buf.extend(fresh)
                    sent_upto = fresh[-1][0]
                    self._have_work.set()
                elif not rows:
                    self._idle.set()
            await self._wake.wait()

    async def _publisher(self, client: aiomqtt.Client) -> None:
        buf = self._buf
        while True:
            while not buf:
                self._have_work.clear()
                await self._have_work.wait()
            row_id, body = buf.popleft()
            if len(buf) < self.max_inflight:
                self._wake.set()
            msg = OutMessage.decode(body)
            await client.publish(msg.topic, msg.payload, qos=1, retain=msg.retain)
            self._acked.append(row_id)
            self.published += 1
            self._wake.set()
