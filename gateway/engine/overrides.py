"""Operators' overrides of a running gateway (``gateway.ports.OperatorControl``), part of the engine.

An opt-out undoes what the event changed, tells the VTN (``vtn``, the connected VEN) and keeps
the site out of later modifications of that event; a pause stops new shed commands (a plan's
pending ones wait) while undos go on, so no job is left paused past its event; both are journaled
and a pause outlives a restart.
"""

from __future__ import annotations

import asyncio
from datetime import datetime

from gateway.clock import Clock
from gateway.domain import EventState
from gateway.engine.outputs import Outputs
from gateway.engine.run import Run
from gateway.exceptions import DcflexError, OverrideRefused
from gateway.journal import Journal
from gateway.ports import VtnAnswers

__all__ = ["OPERATOR_OUT", "OperatorOverrides"]

OPERATOR_OUT = "operator opt-out"  # how an operator's opt-out reason starts (the journal keeps it)
_ACTIVE = (EventState.RAMPING, EventState.HOLDING)


class OperatorOverrides:
    """The ``OperatorControl`` half of ``Engine`` (which provides the attributes declared here)."""

    journal: Journal
    clock: Clock
    runs: dict[str, Run]
    out: Outputs
    paused: str | None
    vtn: VtnAnswers | None
    _lock: asyncio.Lock
    _wake: asyncio.Event

    async def _start_restore(self, run: Run, now: datetime, detail: str) -> None:
        raise NotImplementedError  # the engine's

    async def opt_out(self, event_id: str, reason: str) -> str:
        """An operator takes the site out of an event: undo what was done, tell the VTN, stay out."""
        async with self._lock:
            now = self.clock.now()
            known = self.journal.event(event_id)
            if known is None:
                raise OverrideRefused(f"no event {event_id!r} is known to this gateway")
            if known.state.terminal or known.state is EventState.RESTORING or not known.opt_in:
                raise OverrideRefused(f"event {event_id} is {known.state.value}: there is nothing to opt out of")
            text = f"{OPERATOR_OUT}: {reason}" if reason else OPERATOR_OUT
            run = self.runs.get(event_id)
            active = run is not None and run.state in _ACTIVE
            self.journal.save_event(event_id, known.modification, EventState.RESTORING if active else EventState.OPTED_OUT,
                                    opt_in=False, reason=text, directive=known.directive, at=now, detail=text)
            await self.out.emit("opt", event_id, {"opt": "optOut", "reason": text, "modification": known.modification})
            if run is not None and active:
                run.final = EventState.OPTED_OUT
                await self._start_restore(run, now, text)
                answer = f"opted out of {event_id}: undoing {len(run.undos)} command(s)"
            else:
                self.runs.pop(event_id, None)
                await self.out.emit("state", event_id, self.out.state_facts(known.directive, EventState.OPTED_OUT, text))
                answer = f"opted out of {event_id} before it started: nothing was sent"
        if self.vtn is not None:
            try:
                await self.vtn.opt_out(event_id, known.modification, text)
            except DcflexError as exc:
                await self.out.alert(event_id, "vtn_opt_failed", f"opted out locally, but the VTN was not told: {exc}", "error")
                answer += " (the VTN could not be told: see the alert)"
            else:
                answer += "; the VTN was told"
        return answer

    async def pause_actions(self, reason: str) -> str:
        """Send no new shed command until ``resume_actions``; undos go on (no job stays paused)."""
        async with self._lock:
            if self.paused is not None:
                return f"already paused ({self.paused})"
            self.paused = reason or "no reason given"
            self.journal.log("", "actions_paused", self.clock.now(), {"reason": self.paused})
        await self.out.alert("", "actions_paused", f"operators paused the gateway's commands: {self.paused}; "
                          "undoing earlier ones goes on", "warning")
        return "paused: no new commands are sent until resume; undoing earlier ones goes on"

    async def resume_actions(self, reason: str) -> str:
        async with self._lock:
            if self.paused is None:
                return "not paused"
            self.paused = None
            self.journal.log("", "actions_resumed", self.clock.now(), {"reason": reason})
            self._wake.set()
        await self.out.alert("", "actions_resumed", f"operators resumed the gateway's commands: {reason or 'no reason given'}",
                          "info")
        return "resumed: planned commands are sent as they fall due"

    # ---------------------------------------------------------------- the site
