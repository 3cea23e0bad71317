"""Sending commands through the scheduler port, journaled before and after, at most N at once.

The journal is written *before* a command goes out (``sending``) and after it returns (``done`` or
``failed``), so a command that was done is never sent again and one that may have been sent is
treated as having happened (adapters are idempotent, so undoing it is always safe). In dry-run
mode nothing is sent: the command lines the adapter would run are logged and journaled instead.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

from gateway.clock import Clock
from gateway.domain import Action
from gateway.exceptions import AdapterError
from gateway.journal import Journal
from gateway.ports import SchedulerPort

log = logging.getLogger("dcflex.engine")

Emit = Callable[[str, str, Mapping[str, object]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Outcome:
    action: Action
    ok: bool
    skipped: bool = False
    error: str = ""


class Executor:
    def __init__(
        self, scheduler: SchedulerPort, journal: Journal, clock: Clock, emit: Emit, *, dry_run: bool, concurrency: int
    ) -> None:
        self._scheduler = scheduler
        self._journal = journal
        self._clock = clock
        self._emit = emit
        self._dry_run = dry_run
        self._sem = asyncio.Semaphore(max(1, concurrency))
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def idle(self) -> None:
        """Return once no command is out at the scheduler (a graceful stop lets those finish first)."""
        await self._idle.wait()

    async def run_all(self, owner: str, actions: Sequence[Action], undo_of: Mapping[str, Sequence[str]]) -> list[Outcome]:
        """Send ``actions`` concurrently (bounded); ``undo_of`` maps an undo's key to what it reverses."""
        if not actions:
            return []
        if not self._dry_run:
            self._scheduler.prepare(actions)
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(self._one(owner, a, tuple(undo_of.get(a.key, ())))) for a in actions]
        return [t.result() for t in tasks]

    async def _one(self, owner: str, action: Action, covers: tuple[str, ...]) -> Outcome:
        rec = self._journal.action(action.key)
        if rec is not None and rec.state in ("done", "dry-run"):
            return Outcome(action, ok=True, skipped=True)
        first_cover = covers[0] if covers else None
        facts = {
            "key": action.key,
            "kind": action.kind.value,
            "job_id": action.job_id,
            "nodes": list(action.nodes),
            "watts": action.watts,
            "delta_kw": round(action.delta_kw, 3),
            "tier": action.tier,
            "reason": action.reason,
            "scheduler": self._scheduler.name,
        }
        if action.replicas is not None:
            facts["replicas"] = action.replicas
        if self._dry_run:
            commands = self._scheduler.describe(action)
            self._journal.mark_action(action, owner, "dry-run", self._clock.now(), undo_of=first_cover)
            if covers:
                self._journal.mark_undone(covers, self._clock.now())
            await self._emit("action", owner, {**facts, "outcome": "dry-run", "commands": commands})
            return Outcome(action, ok=True)
        async with self._sem:
            self._journal.mark_action(action, owner, "sending", self._clock.now(), undo_of=first_cover)
            started = self._clock.now()
            self.in_flight += 1
            self._idle.clear()
            try:
                reported = await self._scheduler.apply(action)
            except AdapterError as exc:
                self._journal.mark_action(action, owner, "failed", self._clock.now(), error=str(exc), undo_of=first_cover)
                log.error("command %s failed: %s", action.key, exc)
                await self._emit(
                    "alert",
                    owner,
                    {
                        "severity": "error",
                        "code": "command_failed",
                        "message": f"{action.kind.value} {action.job_id or ','.join(action.nodes)} failed: {exc}",
                        **facts,
                        "command": list(exc.command),
                    },
                )
                return Outcome(action, ok=False, error=str(exc))
            finally:
                self.in_flight -= 1
                if self.in_flight == 0:
                    self._idle.set()
            done_at = self._clock.now()
            if reported:  # journaled before "done": a restarted gateway finds the facts of every done command
                self._journal.log(owner, "command_facts", done_at, {"key": action.key, "facts": dict(reported)})
            self._journal.mark_action(action, owner, "done", done_at, undo_of=first_cover)
            if covers:
                self._journal.mark_undone(covers, done_at)
            latency = (done_at - started).total_seconds()
            extra = {"result": dict(reported)} if reported else {}
            await self._emit("action", owner, {**facts, "outcome": "done", "latency_s": latency, **extra})
            if reported and reported.get("acknowledged") is False:
                await self._emit("alert", owner, {
                    "severity": "warning", "code": "checkpoint_not_acknowledged",
                    "message": f"{action.job_id} was stopped without a checkpoint acknowledgement: "
                               f"{reported.get('note') or 'work since its last checkpoint is probably lost'}",
                    **facts, "result": dict(reported),
                })
            return Outcome(action, ok=True)
