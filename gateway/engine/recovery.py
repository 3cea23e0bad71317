"""Recovery: a started gateway carries on from its journal. The scheduler is told what is still in force, a
pause outlives the restart, unfinished events resume where they were, and commands of finished events that
were never undone (a crash at the worst moment) are undone now."""

from __future__ import annotations

from datetime import datetime

from gateway.domain import EventState
from gateway.engine.control import Control
from gateway.engine.run import Run
from gateway.engine.shared import ACTIVE, Shared
from gateway.ports import Recall

__all__ = ["Recovery"]


class Recovery:
    def __init__(self, shared: Shared, control: Control) -> None:
        self.s = shared
        self.control = control

    async def resume(self) -> None:
        s = self.s
        now = s.clock.now()
        in_force = s.journal.in_force()
        s.scheduler.recall(Recall(caps=s.journal.caps_in_force(), in_force=tuple(in_force),
                                  facts=s.journal.command_facts(a.key for a in in_force)))
        for _, _, kind, body in s.journal.log_entries("", ("actions_paused", "actions_resumed")):
            s.paused = str(body.get("reason")) if kind == "actions_paused" else None  # a pause outlives a restart
        for rec in s.journal.events(active_only=True):
            if rec.directive is None:
                s.journal.set_state(rec.event_id, EventState.FAILED, now, "no directive in the journal")
                continue
            run = Run(directive=rec.directive, state=rec.state)
            run.cancelled = any(k == "cancel" for _, _, k, _ in s.journal.log_entries(rec.event_id))
            s.runs[rec.event_id] = run
            s.journal.log(rec.event_id, "resumed", now, {"state": rec.state.value})
            await s.out.emit("resumed", rec.event_id, {"state": rec.state.value})
            if rec.state is EventState.RESTORING:
                run.undos = self.control.restore_for(run, now)
            elif rec.state in ACTIVE:
                run.needs_plan = True
        await self._reconcile_stranded(now)

    async def _reconcile_stranded(self, now: datetime) -> None:
        """Commands of finished events that were never undone (a crash at the worst moment, a
        journal edited by hand): restore them now rather than leave a job paused or a node drained."""
        s = self.s
        for rec in s.journal.events():
            if not rec.state.terminal or rec.directive is None or not s.journal.outstanding(rec.event_id):
                continue
            run = Run(directive=rec.directive, state=EventState.RESTORING, cancelled=rec.state is EventState.CANCELLED)
            s.runs[rec.event_id] = run
            run.undos = self.control.restore_for(run, now)
            s.journal.set_state(rec.event_id, EventState.RESTORING, now, "stranded commands found at start-up")
            await s.out.alert(rec.event_id, "stranded_commands",
                              f"{len(run.undos)} command(s) of finished event {rec.event_id} were never undone; "
                              "undoing them now")
