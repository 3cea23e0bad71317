"""Checkpoint acknowledgements from jobs.

A job told to checkpoint reports back (HTTP endpoint, marker file or ``dcflex ack``) once its
checkpoint is safely written; an adapter waits here for that acknowledgement, bounded by the job's
grace time. An acknowledgement that arrives before anyone waits is kept, so a fast job is never
missed.
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
    def __init__(self) -> None:
        self._acks: dict[str, Ack] = {}
        self._waiters: dict[str, list[asyncio.Future[Ack]]] = {}

    def ack(self, ack: Ack) -> None:
        self._acks[ack.job_id] = ack
        for fut in self._waiters.pop(ack.job_id, []):
            if not fut.done():
                fut.set_result(ack)

    def get(self, job_id: str) -> Ack | None:
        return self._acks.get(job_id)

    def clear(self, job_id: str) -> None:
        self._acks.pop(job_id, None)

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
