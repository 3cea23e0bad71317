"""Intake: the VEN's side of the engine. Each delivery of an event is journaled, mapped by the policy (with its
program's keys), answered opt in or out, and, when followed, planned and noticed; a cancellation ends it."""

from __future__ import annotations

import logging
from datetime import datetime

from gateway.domain import ClusterSnapshot, Directive, EventState, GridEvent, OptDecision
from gateway.engine.context import site_context
from gateway.engine.control import Control
from gateway.engine.run import Run
from gateway.engine.shared import ACTIVE, OPERATOR_OUT, WAITING, Shared
from gateway.engine.status import plan_facts
from gateway.exceptions import AdapterError
from gateway.notices.defer import deferred
from gateway.policy import map_event

__all__ = ["Intake"]

log = logging.getLogger("dcflex.engine")


class Intake:
    """``EventHandler``'s two calls, on the shared state under its lock."""

    def __init__(self, shared: Shared, control: Control) -> None:
        self.s = shared
        self.control = control

    async def on_event(self, event: GridEvent) -> OptDecision:
        """Answer one delivery of an event (new, modified, or a duplicate)."""
        s = self.s
        async with s.lock:
            now = s.clock.now()
            s.journal.record_delivery(event.event_id, event.modification, now, dict(event.raw))
            known = s.journal.event(event.event_id)
            if known is not None and (event.modification <= known.modification or known.state.terminal
                                      or known.reason.startswith(OPERATOR_OUT)):
                what = "duplicate delivery" if event.modification == known.modification else "stale or late modification"
                log.info("event %s mod %d: %s, answered as before", event.event_id, event.modification, what)
                return OptDecision(known.opt_in, known.reason)
            try:
                snapshot = await s.scheduler.snapshot()
                s.last_snapshot = snapshot
            except AdapterError as exc:
                if s.last_snapshot is None:
                    reason = f"cannot read the cluster to plan: {exc}"
                    await self._opt_out(event, reason, now)
                    return OptDecision(False, reason)
                snapshot = s.last_snapshot
            site = site_context(s.settings.site, s.journal, s.history, s.model, snapshot, now, event)
            policy = s.settings.policy.for_program(event.program)  # [[policy.programs]]: its own signal reading
            mapping = map_event(event, site, s.settings.site, policy, now)
            if not mapping.decision.opt_in or mapping.directive is None:
                await self._opt_out(event, mapping.decision.reason, now)
                return mapping.decision
            await self._accept(event, mapping.directive, mapping.decision, snapshot, now)
            return mapping.decision

    async def on_cancel(self, event_id: str, reason: str) -> None:
        s = self.s
        async with s.lock:
            now = s.clock.now()
            known = s.journal.event(event_id)
            s.journal.log(event_id, "cancel", now, {"reason": reason})
            if known is None or known.state.terminal:
                log.info("cancellation of %s (%s): nothing to do", event_id, reason)
                return
            run = s.runs.get(event_id)
            if run is None or run.state in WAITING:
                s.journal.set_state(event_id, EventState.CANCELLED, now, reason)
                s.runs.pop(event_id, None)
                await s.out.emit("state", event_id, s.out.state_facts(known.directive, EventState.CANCELLED, reason))
                return
            run.cancelled = True
            if run.state in ACTIVE:
                await self.control.start_restore(run, now, f"cancelled: {reason}")

    def _deferred(self, directive: Directive, now: datetime) -> Directive:
        """``notices.defer_drops``: the shed waits for its notice's lead time when the event allows it."""
        s = self.s
        latest = s.history.latest
        threshold = s.notices.book.threshold_kw(latest[1] if latest else directive.baseline_kw)
        later = deferred(directive, now, s.settings.notices, threshold)
        if later is not directive:
            s.journal.log(directive.event_id, "deferred", now, {"ramp_start": directive.ramp_start.isoformat(),
                                                                "deferred_to": later.ramp_start.isoformat()})
        return later

    async def _opt_out(self, event: GridEvent, reason: str, now: datetime) -> None:
        s = self.s
        log.warning("opting out of event %s (mod %d): %s", event.event_id, event.modification, reason)
        run = s.runs.get(event.event_id)
        s.journal.save_event(
            event.event_id, event.modification, EventState.OPTED_OUT if run is None else EventState.RESTORING,
            opt_in=False, reason=reason, directive=run.directive if run else None, at=now, detail=reason,
        )
        await s.out.emit("opt", event.event_id, {"opt": "optOut", "reason": reason, "modification": event.modification})
        if run is not None:  # a modification we cannot follow: undo what the earlier version did
            run.cancelled = True
            await self.control.start_restore(run, now, f"opted out of modification {event.modification}")

    async def _accept(self, event: GridEvent, directive: Directive, decision: OptDecision, snapshot: ClusterSnapshot,
                      now: datetime) -> None:
        s = self.s
        directive = self._deferred(directive, now)
        s.journal.save_event(
            event.event_id, event.modification, EventState.PLANNED, opt_in=True, reason=decision.reason,
            directive=directive, at=now, detail=directive.reason,
        )
        await s.out.emit(
            "opt", event.event_id,
            {"opt": "optIn", "reason": decision.reason, "modification": event.modification, "directive": directive.reason},
        )
        first = s.planner(directive, self.control.metered(snapshot, now), s.planner_policy, now)
        await s.out.emit("plan", event.event_id, plan_facts(first))
        old = s.runs.get(event.event_id)
        run = Run(directive=directive, state=EventState.PLANNED, first_plan=first)
        if old is not None:
            run.jobs.update(old.jobs)
        run.remember(snapshot, first)
        if old is not None and old.state in ACTIVE:
            run.state = old.state
            run.needs_plan = True
            run.reached_at = old.reached_at
            s.journal.set_state(event.event_id, old.state, now, f"re-plan for modification {event.modification}")
        s.runs[event.event_id] = run
        drop = max(0.0, directive.baseline_kw - first.expected_kw)
        latest = s.history.latest
        await s.notices.on_plan(directive, first, now, latest[1] if latest else directive.baseline_kw)
        if run.state is EventState.PLANNED:
            detail = f"notice: -{drop:.0f} kW at {directive.ramp_start.isoformat()}"
            await self.control.transition(run, EventState.NOTICED, detail)
        s.wake.set()
