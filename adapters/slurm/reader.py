"""Reading Slurm's current jobs and nodes, and remembering the last answer.

Every lever re-reads before it acts (that is what makes ``apply`` idempotent against the real
state, not against a stale snapshot); ``describe()`` cannot wait, so it uses the last answer.
Slurm 22.05's ``--json`` output ignores ``--jobs``/``--nodes`` filters, so the whole queue is read
and filtered here. Parsing a large queue is CPU work, so it runs in a thread and the event loop
keeps serving the API and the VEN meanwhile.
"""

from __future__ import annotations

import asyncio

from adapters.slurm.commands import SlurmCommands
from adapters.slurm.model import SlurmJob, SlurmNode
from adapters.slurm.parse import parse_sinfo, parse_squeue
from adapters.slurm.runner import CommandRunner

__all__ = ["SlurmReader"]


class SlurmReader:
    def __init__(self, runner: CommandRunner, commands: SlurmCommands) -> None:
        self._runner = runner
        self._commands = commands
        self.jobs: dict[str, SlurmJob] = {}
        self.nodes: dict[str, SlurmNode] = {}

    async def read_jobs(self) -> dict[str, SlurmJob]:
        result = await self._runner.run(self._commands.squeue(), readonly=True)
        parsed = await asyncio.to_thread(parse_squeue, result.stdout)
        self.jobs = {j.job_id: j for j in parsed}
        return self.jobs

    async def read_nodes(self) -> dict[str, SlurmNode]:
        result = await self._runner.run(self._commands.sinfo(), readonly=True)
        parsed = await asyncio.to_thread(parse_sinfo, result.stdout)
        self.nodes = {n.name: n for n in parsed}
        return self.nodes

    async def job(self, job_id: str) -> SlurmJob | None:
        """``job_id`` as Slurm lists it now, or None when Slurm no longer (or never) knew it."""
        return (await self.read_jobs()).get(job_id)
