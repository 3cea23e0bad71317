"""Checkpoint acknowledgements from jobs.

A job told to checkpoint reports back (HTTP endpoint, marker file or ``dcflex ack``) once its
checkpoint is safely written; an adapter waits here for that acknowledgement, bounded by the job's
grace time. An adapter ``expect``s an acknowledgement just before it asks the job; one that arrives
before anyone waits is then kept, so a fast job is never missed. An acknowledgement nobody expects or
waits for is refused (the API answers 404) and nothing is kept for it: the store holds at most
``max_jobs`` expectations, the oldest forgotten first.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class Ack:
    job_id: str
    at: datetime
    checkpoint_path: str = ""
    event_id: str = ""


class CheckpointAcks:
    def __init__(self, *, max_jobs: int = 100_000) -> None:
        self._acks: dict[str, Ack] = {}
        self._expected: dict[str, None] = {}
        self._waiters: dict[str, list[asyncio.Future[Ack]]] = {}
        self._max = max_jobs

    def expect(self, job_id: str) -> None:
        """Forget an earlier acknowledgement of ``job_id`` and accept a new one: call just before asking it."""
        self._acks.pop(job_id, None)
        self._expected.pop(job_id, None)
        self._expected[job_id] = None
        while len(self._expected) > self._max:
            oldest = next(iter(self._expected))
            del self._expected[oldest]
            self._acks.pop(oldest, None)

    def ack(self, ack: Ack, *, asked: bool = False) -> bool:
        """Take an acknowledgement; False (nothing kept) when nobody expects or waits for one from that job
        (``asked``: the caller knows the job was asked, e.g. it has a checkpoint directive pending)."""
        if not asked and ack.job_id not in self._expected and not self._waiters.get(ack.job_id):
            return False
        self._acks[ack.job_id] = ack
        for fut in self._waiters.pop(ack.job_id, []):
            if not fut.done():
                fut.set_result(ack)
        return True

    def get(self, job_id: str) -> Ack | None:
        return self._acks.get(job_id)

    def clear(self, job_id: str) -> None:
        """Forget ``job_id``'s acknowledgement and stop expecting one (the checkpoint is over)."""
        self._acks.pop(job_id, None)
        self._expected.pop(job_id, None)

    async def wait(self, job_id: str) -> Ack:
        """Wait for ``job_id``'s acknowledgement (callers bound this with their own timeout)."""
        if job_id in self._acks:
            return self._acks[job_id]
        fut: asyncio.Future[Ack] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(job_id, []).append(fut)
        try:
            return await fut
        finally:
            waiters = self._waiters.get(job_id, [])
            if fut in waiters:
                waiters.remove(fut)
