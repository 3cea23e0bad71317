"""Reading Slurm's current jobs and nodes, and remembering the last answer.

Every lever re-reads before it acts (that is what makes ``apply`` idempotent against the real
state, not against a stale snapshot); ``describe()`` cannot wait, so it uses the last answer.
Slurm 22.05's ``--json`` output ignores ``--jobs``/``--nodes`` filters, so the whole queue is read
and filtered here. Parsing a large queue is CPU work, so it runs in a thread and the event loop
keeps serving the API and the VEN meanwhile.

Reads of the queue are shared. ``read_jobs`` always gets a read that *started after* it was called;
callers that ask while a read is running share the next one. ``job(id)`` goes further: the last read
serves when it started after the adapter's last command on that job ended (``touched``) and is at
most ``MAX_READ_AGE_S`` old, because what a lever must see is the effect of its own earlier
commands (per-job locks order those), and anything older than a few seconds is re-read anyway.
Slurm 22.05 serialises the whole queue for every ``squeue --json`` (over a second at 1,000 jobs):
one read per lever would make a 500-job shed take minutes and load slurmctld while it happens.
"""

from __future__ import annotations

import asyncio
import time

from adapters.slurm.commands import SlurmCommands
from adapters.slurm.model import SlurmJob, SlurmNode
from adapters.slurm.parse import parse_sinfo, parse_squeue
from adapters.slurm.runner import CommandRunner

__all__ = ["MAX_READ_AGE_S", "SlurmReader"]

MAX_READ_AGE_S = 5.0


class SlurmReader:
    def __init__(self, runner: CommandRunner, commands: SlurmCommands) -> None:
        self._runner = runner
        self._commands = commands
        self.jobs: dict[str, SlurmJob] = {}
        self.nodes: dict[str, SlurmNode] = {}
        self._next: asyncio.Future[dict[str, SlurmJob]] | None = None  # the read not started yet
        self._pump: asyncio.Task[None] | None = None
        self.job_reads = 0  # squeue runs so far (what sharing saves shows here)
        self._read_at: float | None = None  # when the last completed read started (monotonic)
        self._touched: dict[str, float] = {}  # job id -> when the adapter's last command on it ended

    async def read_jobs(self) -> dict[str, SlurmJob]:
        """Every job, from a read that started after this call (shared with concurrent callers)."""
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
        waiter = self._next
        if self._pump is None or self._pump.done():
            self._pump = asyncio.create_task(self._read_while_asked())
        return await asyncio.shield(waiter)

    async def _read_while_asked(self) -> None:
        while self._next is not None:
            waiter, self._next = self._next, None
            try:
                jobs = await self._read_jobs_once()
            except asyncio.CancelledError:
                waiter.cancel()
                raise
            except Exception as exc:  # every caller sharing this read gets its error
                if not waiter.done():
                    waiter.set_exception(exc)
                    waiter.exception()  # marked retrieved: the callers may all have been cancelled
            else:
                if not waiter.done():
                    waiter.set_result(jobs)

    async def _read_jobs_once(self) -> dict[str, SlurmJob]:
        self.job_reads += 1
        started = time.monotonic()
        result = await self._runner.run(self._commands.squeue(), readonly=True)
        parsed = await asyncio.to_thread(parse_squeue, result.stdout)
        self.jobs = {j.job_id: j for j in parsed}
        self._read_at = started
        cutoff = started - MAX_READ_AGE_S  # forget what no read can be older than
        self._touched = {k: t for k, t in self._touched.items() if t > cutoff}
        return self.jobs

    def touched(self, job_id: str) -> None:
        """The adapter's command on ``job_id`` just ended (or failed): only a later read shows its effect."""
        self._touched[job_id] = time.monotonic()

    async def read_nodes(self) -> dict[str, SlurmNode]:
        result = await self._runner.run(self._commands.sinfo(), readonly=True)
        parsed = await asyncio.to_thread(parse_sinfo, result.stdout)
        self.nodes = {n.name: n for n in parsed}
        return self.nodes

    async def job(self, job_id: str) -> SlurmJob | None:
        """``job_id`` as Slurm lists it now, or None when Slurm no longer (or never) knew it: from the last
        read when it is recent and started after the adapter last acted on this job, else from a new one."""
        read_at, touched = self._read_at, self._touched.get(job_id)
        if read_at is not None and time.monotonic() - read_at <= MAX_READ_AGE_S and (touched is None or read_at > touched):
            return self.jobs.get(job_id)
        return (await self.read_jobs()).get(job_id)
