"""Operators' overrides of a running gateway (``gateway.ports.OperatorControl``), one part of the engine.

An opt-out undoes what the event changed, tells the VTN (``vtn``, the connected VEN) and keeps
the site out of later modifications of that event; a pause stops new shed commands (a plan's
pending ones wait) while undos go on, so no job is left paused past its event; both are journaled
and a pause outlives a restart.
"""

from __future__ import annotations

from gateway.domain import EventState
from gateway.engine.control import Control
from gateway.engine.shared import ACTIVE, OPERATOR_OUT, Shared
from gateway.exceptions import DcflexError, OverrideRefused

__all__ = ["Overrides"]


class Overrides:
    """``OperatorControl`` on the engine's shared state, under its lock; restores go through ``Control``."""

    def __init__(self, shared: Shared, control: Control) -> None:
        self.s = shared
        self.control = control

    async def opt_out(self, event_id: str, reason: str) -> str:
        """An operator takes the site out of an event: undo what was done, tell the VTN, stay out."""
        s = self.s
        async with s.lock:
            now = s.clock.now()
            known = s.journal.event(event_id)
            if known is None:
                raise OverrideRefused(f"no event {event_id!r} is known to this gateway")
            if known.state.terminal or known.state is EventState.RESTORING or not known.opt_in:
                raise OverrideRefused(f"event {event_id} is {known.state.value}: there is nothing to opt out of")
            text = f"{OPERATOR_OUT}: {reason}" if reason else OPERATOR_OUT
            run = s.runs.get(event_id)
            active = run is not None and run.state in ACTIVE
            s.journal.save_event(event_id, known.modification, EventState.RESTORING if active else EventState.OPTED_OUT,
                                 opt_in=False, reason=text, directive=known.directive, at=now, detail=text)
            await s.out.emit("opt", event_id, {"opt": "optOut", "reason": text, "modification": known.modification})
            if run is not None and active:
                run.final = EventState.OPTED_OUT
                await self.control.start_restore(run, now, text)
                answer = f"opted out of {event_id}: undoing {len(run.undos)} command(s)"
            else:
                s.runs.pop(event_id, None)
                await s.out.emit("state", event_id, s.out.state_facts(known.directive, EventState.OPTED_OUT, text))
                answer = f"opted out of {event_id} before it started: nothing was sent"
        if s.vtn is not None:
            try:
                await s.vtn.opt_out(event_id, known.modification, text)
            except DcflexError as exc:
                await s.out.alert(event_id, "vtn_opt_failed", f"opted out locally, but the VTN was not told: {exc}", "error")
                answer += " (the VTN could not be told: see the alert)"
            else:
                answer += "; the VTN was told"
        return answer

    async def pause_actions(self, reason: str) -> str:
        """Send no new shed command until ``resume_actions``; undos go on (no job stays paused)."""
        s = self.s
        async with s.lock:
            if s.paused is not None:
                return f"already paused ({s.paused})"
            s.paused = reason or "no reason given"
            s.journal.log("", "actions_paused", s.clock.now(), {"reason": s.paused})
        await s.out.alert("", "actions_paused", f"operators paused the gateway's commands: {s.paused}; "
                       "undoing earlier ones goes on", "warning")
        return "paused: no new commands are sent until resume; undoing earlier ones goes on"

    async def resume_actions(self, reason: str) -> str:
        s = self.s
        async with s.lock:
            if s.paused is None:
                return "not paused"
            s.paused = None
            s.journal.log("", "actions_resumed", s.clock.now(), {"reason": reason})
            s.wake.set()
        await s.out.alert("", "actions_resumed", f"operators resumed the gateway's commands: {reason or 'no reason given'}",
                       "info")
        return "resumed: planned commands are sent as they fall due"
