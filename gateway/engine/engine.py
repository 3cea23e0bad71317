"""The engine: each event's life, from delivery to the last restored job.

It answers the VEN (opt in or out, from the policy), plans through the pure planner, sends the
plan's commands through the scheduler port when they fall due, watches the measured power and
re-plans when it drifts or a target changes, and restores everything the event changed when it
ends or is cancelled. Every transition is journaled before it is acted on; ``run()`` starts by
picking up whatever the journal says is unfinished, so a restarted gateway carries on.

Overlapping events merge: while several are active, the strictest target in force wins; when one
ends while another is still active, its commands are handed to the other instead of being undone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta

from gateway.clock import Clock
from gateway.domain import (
    Action,
    ActionKind,
    ClusterSnapshot,
    Directive,
    EventState,
    GridEvent,
    JobState,
    OptDecision,
    Plan,
)
from gateway.engine.context import metered, site_context
from gateway.engine.executor import Executor
from gateway.engine.feed import EngineFeed
from gateway.engine.outputs import Outputs
from gateway.engine.overrides import OPERATOR_OUT, OperatorOverrides
from gateway.engine.restore import Undo, build_restore
from gateway.engine.run import Run
from gateway.engine.settings import EngineSettings
from gateway.engine.status import plan_facts, status_of
from gateway.exceptions import AdapterError, DcflexError
from gateway.journal import Journal
from gateway.notices.defer import deferred
from gateway.notices.service import NoticeService
from gateway.planner import PlannerPolicy, plan
from gateway.policy import map_event
from gateway.ports import Planner, PowerMeter, Recall, SchedulerPort, Sink, VtnAnswers
from gateway.power import PowerModel
from gateway.power.history import PowerHistory
from gateway.power.site import site_power_model

log = logging.getLogger("dcflex.engine")

_ACTIVE = (EventState.RAMPING, EventState.HOLDING)
_WAITING = (EventState.RECEIVED, EventState.PLANNED, EventState.NOTICED)


class Engine(OperatorOverrides):
    """Implements ``EventHandler`` for the VEN and ``OperatorControl`` for operators' overrides;
    ``run()`` is its long-running loop."""

    def __init__(
        self,
        *,
        scheduler: SchedulerPort,
        meter: PowerMeter,
        journal: Journal,
        clock: Clock,
        settings: EngineSettings,
        model: PowerModel | None = None,
        sinks: Sequence[Sink] = (),
        planner: Planner = plan,
    ) -> None:
        self.scheduler = scheduler
        self.planner = planner
        self.meter = meter
        self.journal = journal
        self.clock = clock
        self.settings = settings
        site = settings.site
        self.model = model or site_power_model(site)
        self.planner_policy = PlannerPolicy(
            model=self.model,
            ramp_rate_kw_per_min=site.ramp_rate_kw_per_min,
            tolerance_kw=settings.policy.tolerance_kw,
            min_cap_w=site.min_cap_w,
            max_cap_w=site.max_cap_w,
            job_weights=settings.policy.tier_weights if settings.policy.objective == "weighted-jobs" else None,
            headroom_kw=settings.policy.headroom_kw,
        )
        self.history = PowerHistory()
        self.runs: dict[str, Run] = {}
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._last_snapshot: ClusterSnapshot | None = None
        self._commanded_at: datetime | None = None  # when commands last returned (a reading before is stale)
        self._executor = Executor(
            scheduler, journal, clock, self._emit, dry_run=settings.dry_run, concurrency=settings.max_concurrency
        )
        self._started = asyncio.Event()
        self.out = Outputs(journal, clock, sinks, self.history, self.model, keep_power_days=2 * site.baseline_y_days + 8)
        self.paused: str | None = None  # why operators paused new commands (None: not paused)
        self.vtn: VtnAnswers | None = None  # the VEN, once connected (``connect_vtn``): an operator's opt-out reaches it
        self.notices = NoticeService(settings.notices, self.model, journal, self._emit,
                                     sample_interval_s=settings.sample_interval_s)
        self.feed = EngineFeed(self.history, self.notices, announces_drops=settings.notices.enabled)

    def connect_vtn(self, vtn: VtnAnswers) -> None:
        """The VEN this engine answers through. Set once, after both exist: the VEN hands events to the engine
        (``EventHandler``), and the engine tells the VEN an operator's later opt-out."""
        self.vtn = vtn

    # ---------------------------------------------------------------- outputs
    async def _emit(self, kind: str, event_id: str, payload: Mapping[str, object]) -> None:
        await self.out.emit(kind, event_id, payload)

    async def _alert(self, event_id: str, code: str, message: str, severity: str = "warning", **facts: object) -> None:
        await self.out.alert(event_id, code, message, severity, **facts)

    async def _transition(self, run: Run, state: EventState, detail: str = "") -> None:
        self.journal.set_state(run.event_id, state, self.clock.now(), detail)
        run.state = state
        await self._emit("state", run.event_id, self.out.state_facts(run.directive, state, detail))
        self._wake.set()

    # ---------------------------------------------------------------- the VEN's side
    async def on_event(self, event: GridEvent) -> OptDecision:
        """Answer one delivery of an event (new, modified, or a duplicate)."""
        async with self._lock:
            now = self.clock.now()
            self.journal.record_delivery(event.event_id, event.modification, now, dict(event.raw))
            known = self.journal.event(event.event_id)
            if known is not None and (event.modification <= known.modification or known.state.terminal
                                      or known.reason.startswith(OPERATOR_OUT)):
                what = "duplicate delivery" if event.modification == known.modification else "stale or late modification"
                log.info("event %s mod %d: %s, answered as before", event.event_id, event.modification, what)
                return OptDecision(known.opt_in, known.reason)
            try:
                snapshot = await self.scheduler.snapshot()
                self._last_snapshot = snapshot
            except AdapterError as exc:
                snapshot = self._last_snapshot  # type: ignore[assignment]
                if snapshot is None:
                    reason = f"cannot read the cluster to plan: {exc}"
                    await self._record_opt_out(event, reason, now)
                    return OptDecision(False, reason)
            site = site_context(self.settings.site, self.journal, self.history, self.model, snapshot, now, event)
            policy = self.settings.policy.for_program(event.program)  # [[policy.programs]]: its own signal reading
            mapping = map_event(event, site, self.settings.site, policy, now)
            if not mapping.decision.opt_in or mapping.directive is None:
                await self._record_opt_out(event, mapping.decision.reason, now)
                return mapping.decision
            await self._accept(event, mapping.directive, mapping.decision, snapshot, now)
            return mapping.decision

    def _deferred(self, directive: Directive, now: datetime) -> Directive:
        """``notices.defer_drops``: the shed waits for its notice's lead time when the event allows it."""
        latest = self.history.latest
        threshold = self.notices.book.threshold_kw(latest[1] if latest else directive.baseline_kw)
        later = deferred(directive, now, self.settings.notices, threshold)
        if later is not directive:
            self.journal.log(directive.event_id, "deferred", now, {"ramp_start": directive.ramp_start.isoformat(),
                                                                   "deferred_to": later.ramp_start.isoformat()})
        return later

    async def _notices_step(self, now: datetime, kw: float) -> None:
        """Advance notice: jobs' ends from a snapshot now and then, events over, what is due, drops seen."""
        notices = self.notices
        for eid in [d.event_id for d in notices.events.values()]:
            run = self.runs.get(eid)
            if run is None or run.state not in (*_WAITING, *_ACTIVE) or run.cancelled:
                notices.event_over(eid)
        if notices.wants_snapshot(now):
            snapshot = self._last_snapshot  # a re-plan's read is fresh enough: no second one
            if snapshot is None or (now - snapshot.at).total_seconds() >= notices.cfg.snapshot_interval_s:
                try:
                    snapshot = self._last_snapshot = await self.scheduler.snapshot()
                except AdapterError as exc:
                    log.warning("notices: cannot read the cluster for jobs' expected ends: %s", exc)
                    snapshot = None
            if snapshot is not None:
                notices.on_snapshot(snapshot, now, self.journal.jobs_with_open_commands())
        await notices.on_reading(now, kw, self._commanded_at)

    def _metered(self, snapshot: ClusterSnapshot, now: datetime) -> ClusterSnapshot:
        return metered(snapshot, self.history.latest, now, self.settings.sample_interval_s, self._commanded_at)

    async def _record_opt_out(self, event: GridEvent, reason: str, now: datetime) -> None:
        log.warning("opting out of event %s (mod %d): %s", event.event_id, event.modification, reason)
        run = self.runs.get(event.event_id)
        self.journal.save_event(
            event.event_id, event.modification, EventState.OPTED_OUT if run is None else EventState.RESTORING,
            opt_in=False, reason=reason, directive=run.directive if run else None, at=now, detail=reason,
        )
        await self._emit("opt", event.event_id, {"opt": "optOut", "reason": reason, "modification": event.modification})
        if run is not None:  # a modification we cannot follow: undo what the earlier version did
            run.cancelled = True
            await self._start_restore(run, now, f"opted out of modification {event.modification}")

    async def _accept(
        self, event: GridEvent, directive: Directive, decision: OptDecision, snapshot: ClusterSnapshot,
        now: datetime,
    ) -> None:
        directive = self._deferred(directive, now)
        self.journal.save_event(
            event.event_id, event.modification, EventState.PLANNED, opt_in=True, reason=decision.reason,
            directive=directive, at=now, detail=directive.reason,
        )
        await self._emit(
            "opt", event.event_id,
            {"opt": "optIn", "reason": decision.reason, "modification": event.modification, "directive": directive.reason},
        )
        first = self.planner(directive, self._metered(snapshot, now), self.planner_policy, now)
        await self._emit("plan", event.event_id, plan_facts(first))
        old = self.runs.get(event.event_id)
        run = Run(directive=directive, state=EventState.PLANNED, first_plan=first)
        if old is not None:
            run.jobs.update(old.jobs)
        run.remember(snapshot, first)
        if old is not None and old.state in _ACTIVE:
            run.state = old.state
            run.needs_plan = True
            run.reached_at = old.reached_at
            self.journal.set_state(event.event_id, old.state, now, f"re-plan for modification {event.modification}")
        self.runs[event.event_id] = run
        drop = max(0.0, directive.baseline_kw - first.expected_kw)
        latest = self.history.latest
        await self.notices.on_plan(directive, first, now, latest[1] if latest else directive.baseline_kw)
        if run.state is EventState.PLANNED:
            await self._transition(run, EventState.NOTICED, f"notice: -{drop:.0f} kW at {directive.ramp_start.isoformat()}")
        self._wake.set()

    async def on_cancel(self, event_id: str, reason: str) -> None:
        async with self._lock:
            now = self.clock.now()
            known = self.journal.event(event_id)
            self.journal.log(event_id, "cancel", now, {"reason": reason})
            if known is None or known.state.terminal:
                log.info("cancellation of %s (%s): nothing to do", event_id, reason)
                return
            run = self.runs.get(event_id)
            if run is None or run.state in _WAITING:
                self.journal.set_state(event_id, EventState.CANCELLED, now, reason)
                self.runs.pop(event_id, None)
                await self._emit("state", event_id, self.out.state_facts(known.directive, EventState.CANCELLED, reason))
                return
            run.cancelled = True
            if run.state in _ACTIVE:
                await self._start_restore(run, now, f"cancelled: {reason}")

    def effective_target(self, at: datetime) -> float | None:
        """The strictest target in force at ``at`` among active events (None: no target)."""
        targets = [t for r in self.runs.values() if r.state in _ACTIVE if (t := r.directive.target_at(at)) is not None]
        return min(targets) if targets else None

    # ---------------------------------------------------------------- the loop
    async def run(self) -> None:
        """Resume unfinished events from the journal, then sample and control until cancelled."""
        await self._resume()
        self._started.set()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._sample_loop())
            tg.create_task(self._control_loop())

    async def wait_started(self) -> None:
        await self._started.wait()

    @property
    def commands_in_flight(self) -> int:
        """Commands out at the scheduler now (journaled ``sending``)."""
        return self._executor.in_flight

    async def commands_done(self) -> None:
        """Return once no command is out at the scheduler: a graceful stop waits here (bounded) before it
        cancels the engine, so what was sent is journaled ``done`` or ``failed`` rather than ``sending``."""
        await self._executor.idle()

    async def _resume(self) -> None:
        now = self.clock.now()
        in_force = self.journal.in_force()
        self.scheduler.recall(Recall(caps=self.journal.caps_in_force(), in_force=tuple(in_force),
                                     facts=self.journal.command_facts(a.key for a in in_force)))
        for _, _, kind, body in self.journal.log_entries("", ("actions_paused", "actions_resumed")):
            self.paused = str(body.get("reason")) if kind == "actions_paused" else None  # a pause outlives a restart
        for rec in self.journal.events(active_only=True):
            if rec.directive is None:
                self.journal.set_state(rec.event_id, EventState.FAILED, now, "no directive in the journal")
                continue
            run = Run(directive=rec.directive, state=rec.state)
            run.cancelled = any(k == "cancel" for _, _, k, _ in self.journal.log_entries(rec.event_id))
            self.runs[rec.event_id] = run
            self.journal.log(rec.event_id, "resumed", now, {"state": rec.state.value})
            await self._emit("resumed", rec.event_id, {"state": rec.state.value})
            if rec.state is EventState.RESTORING:
                run.undos = self._restore_for(run, now)
            elif rec.state in _ACTIVE:
                run.needs_plan = True
        await self._reconcile_stranded(now)

    async def _reconcile_stranded(self, now: datetime) -> None:
        """Commands of finished events that were never undone (a crash at the worst moment, a
        journal edited by hand): restore them now rather than leave a job paused or a node drained."""
        for rec in self.journal.events():
            if not rec.state.terminal or rec.directive is None or not self.journal.outstanding(rec.event_id):
                continue
            run = Run(directive=rec.directive, state=EventState.RESTORING, cancelled=rec.state is EventState.CANCELLED)
            self.runs[rec.event_id] = run
            run.undos = self._restore_for(run, now)
            self.journal.set_state(rec.event_id, EventState.RESTORING, now, "stranded commands found at start-up")
            await self._alert(rec.event_id, "stranded_commands",
                              f"{len(run.undos)} command(s) of finished event {rec.event_id} were never undone; "
                              "undoing them now")

    async def _sample_loop(self) -> None:
        failing = False
        while True:
            now = self.clock.now()
            try:
                kw = await self.meter.read_kw()
            except DcflexError as exc:
                if not failing:
                    await self._alert("", "meter_unavailable", f"cannot read site power: {exc}")
                failing = True
            else:
                failing = False
                self.history.add(now, kw)
                target = self.effective_target(now)
                for run in self.runs.values():
                    if run.state in _ACTIVE and run.reached_at is None and target is not None:
                        if kw <= target + self.settings.policy.tolerance_kw:
                            run.reached_at = now
                            ttt = (now - run.directive.ramp_start).total_seconds()
                            facts = {"kw": kw, "target_kw": target, "time_to_target_s": ttt}
                            await self._emit("target_reached", run.event_id, facts)
                active = [r for r in self.runs.values() if r.state in _ACTIVE]
                if target is not None and kw > target + self.settings.policy.tolerance_kw:
                    for run in active:  # over target: check now rather than at the next periodic check
                        run.next_check = now
                    self._wake.set()
                await self._emit("power", "", self.out.power_facts(now, kw, target, active))
                await self._notices_step(now, kw)
            await self.clock.sleep(self.settings.sample_interval_s)

    async def _control_loop(self) -> None:
        while True:
            self._wake.clear()
            async with self._lock:
                await self._step(self.clock.now())
                wake_at = self._next_wake(self.clock.now())
            delay = (wake_at - self.clock.now()).total_seconds()
            if delay > 0:
                sleeper = asyncio.create_task(self.clock.sleep(delay))
                waker = asyncio.create_task(self._wake.wait())
                try:
                    await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    sleeper.cancel()
                    waker.cancel()
                    # gather (not a suppressed await) so a cancellation of this loop is never swallowed
                    await asyncio.gather(sleeper, waker, return_exceptions=True)

    def _next_wake(self, now: datetime) -> datetime:
        commands = [a.at for r in self.runs.values() for a in r.pending] if self.paused is None else []
        commands += [u.action.at for r in self.runs.values() for u in r.undos]
        if any(t <= now for t in commands):
            return now  # fell due while the last step ran: go again at once
        times = [*commands, now + timedelta(seconds=self.settings.policy.replan_interval_s)]
        for run in self.runs.values():
            d = run.directive
            if run.state in _WAITING:
                times.append(d.ramp_start)
            if run.state in _ACTIVE:
                times += [d.end, d.target_by] + [s.start for s in d.segments if s.start > now]
                if run.next_check:
                    times.append(run.next_check)
        future = [t for t in times if t > now]
        return min(future) if future else now + timedelta(seconds=1)

    async def _step(self, now: datetime) -> None:
        for run in list(self.runs.values()):
            await self._advance(run, now)
        await self._send_due(now)
        for run in list(self.runs.values()):
            if run.state is EventState.RESTORING and not run.undos and not self.journal.outstanding(run.event_id):
                final = run.final or (EventState.CANCELLED if run.cancelled else EventState.COMPLETED)
                await self.out.impacts(run, self._last_snapshot.jobs if self._last_snapshot else ())
                await self._transition(run, final, "every command undone")
                del self.runs[run.event_id]

    async def _advance(self, run: Run, now: datetime) -> None:
        d = run.directive
        if run.state in _WAITING and now >= d.ramp_start:
            goal = f"{d.strictest_kw:.1f} kW" if d.strictest_kw is not None else "the price signal"
            await self._transition(run, EventState.RAMPING, f"ramp to {goal} by {d.target_by.isoformat()}")
            run.needs_plan = True
        if run.state in _ACTIVE and now >= d.end:
            await self._finish(run, now)
            return
        if run.state not in _ACTIVE:
            return
        target = d.target_at(now)
        if target != run.last_target:
            run.last_target = target
            run.needs_plan = True
        if run.next_check is None or now >= run.next_check:
            run.next_check = now + timedelta(seconds=self.settings.policy.replan_interval_s)
            await self._check_drift(run, now)
        if run.needs_plan:
            fresh = run.first_plan is not None and (now - run.first_plan.created_at).total_seconds() < 1.0
            await self._replan(run, now, reuse=run.first_plan if fresh else None)
            run.first_plan = None
        if run.state is EventState.RAMPING and not run.pending and now >= d.target_by:
            await self._transition(run, EventState.HOLDING, "every planned command sent")

    async def _check_drift(self, run: Run, now: datetime) -> None:
        """Re-plan when measured power drifts above target or the set of running jobs changed
        (jobs ended or started); give back commands when the site sits well below target."""
        if run.pending or run.needs_plan or run.undos:  # commands (or give-backs) still to land: wait for them
            return
        latest = self.history.latest
        target = self.effective_target(now)
        if latest is None or target is None:
            return
        kw = latest[1]
        policy = self.settings.policy
        if kw > target + policy.replan_drift_kw:
            self.journal.log(run.event_id, "drift", now, {"kw": kw, "target_kw": target})
            run.needs_plan = True
        elif kw < target - policy.replan_drift_kw and run.state is EventState.HOLDING and self.settings.relax:
            await self._relax(run, now, target - kw)
        elif kw > target + policy.tolerance_kw:
            # over target by less than the drift threshold: re-plan when the jobs changed, or when the
            # last check was over target too (two readings in a row are not noise)
            changed = run.running_jobs is None
            if not changed:
                try:
                    snapshot = await self.scheduler.snapshot()
                except AdapterError:
                    return  # the next check tries again; a failing scheduler is alerted by the re-plan
                changed = _running(snapshot) != run.running_jobs
            if changed or run.over_target:
                self.journal.log(run.event_id, "over_target", now,
                                 {"kw": kw, "target_kw": target, "jobs_changed": changed})
                run.needs_plan = True
        run.over_target = kw > target + policy.tolerance_kw

    async def _replan(self, run: Run, now: datetime, reuse: Plan | None = None) -> None:
        """Plan from a fresh snapshot (or reuse the acceptance plan when it is under a second old)."""
        if reuse is None:
            try:
                snapshot = await self.scheduler.snapshot()
            except AdapterError as exc:
                await self._alert(run.event_id, "snapshot_failed", f"cannot read the cluster to re-plan: {exc}", "error")
                return  # needs_plan stays set: the next step tries again
            self._last_snapshot = snapshot
            run.running_jobs = _running(snapshot)
        run.needs_plan = False
        p = reuse or self.planner(run.directive, self._metered(snapshot, now), self.planner_policy, now)
        if reuse is None:
            run.remember(snapshot, p)
        ours = self.journal.jobs_with_open_commands()  # a cap the gateway set is not a prior limit
        self.journal.remember_prior_caps(run.event_id, {
            a.job_id: a.watts for a in p.restore
            if a.kind is ActionKind.UNCAP and a.watts is not None and a.job_id not in ours
        })
        fresh: list[Action] = []
        for a in p.shed:
            rec = self.journal.action(a.key)
            if rec is None or rec.state == "undone" or (
                rec.state == "failed" and rec.attempts < self.settings.max_shed_attempts
            ):
                fresh.append(a)
        run.pending = sorted(fresh, key=lambda a: (a.at, a.key))
        if p.shortfall is not None and abs(p.shortfall.kw - run.shortfall_kw) > self.settings.policy.tolerance_kw:
            await self._alert(run.event_id, "shortfall", f"target out of reach by {p.shortfall.kw:.0f} kW: {p.shortfall.reason}")
        run.shortfall_kw = p.shortfall.kw if p.shortfall else 0.0
        await self._emit("plan", run.event_id, {**plan_facts(p), "new_commands": len(fresh)})

    async def _relax(self, run: Run, now: datetime, slack_kw: float) -> None:
        """Give back caps/pauses (newest first) when the site is well below target (jobs ended)."""
        budget = slack_kw - self.settings.policy.tolerance_kw
        chosen = []
        for rec in reversed(self.journal.outstanding(run.event_id)):
            if rec.action.kind in _RELAXABLE and -rec.action.delta_kw <= budget:
                budget += rec.action.delta_kw
                chosen.append(rec)
        if chosen:
            self.journal.log(run.event_id, "relax", now, {"slack_kw": slack_kw, "undo": [r.action.key for r in chosen]})
            run.undos += build_restore(
                run.event_id, chosen, now, self.settings.site.ramp_rate_kw_per_min, generation=int(now.timestamp()),
                prior_caps=self.journal.prior_caps(run.event_id),
            )

    def _restore_for(self, run: Run, now: datetime) -> list[Undo]:
        outstanding = self.journal.outstanding(run.event_id)
        return build_restore(
            run.event_id, outstanding, now, self.settings.site.ramp_rate_kw_per_min,
            prior_caps=self.journal.prior_caps(run.event_id),
        )

    async def _start_restore(self, run: Run, now: datetime, detail: str) -> None:
        run.pending = []
        run.undos = self._restore_for(run, now)
        await self._transition(run, EventState.RESTORING, f"{detail}; {len(run.undos)} command(s) to undo")

    async def _finish(self, run: Run, now: datetime) -> None:
        heirs = [r for r in self.runs.values() if r is not run and r.state in _ACTIVE and r.directive.end > now]
        if heirs:
            heir = min(heirs, key=lambda r: (r.directive.strictest_kw or float("inf"), r.event_id))
            moved = self.journal.transfer(run.event_id, heir.event_id)
            run.pending = []
            heir.needs_plan = True
            await self._transition(run, EventState.COMPLETED, f"ended; {moved} command(s) handed to {heir.event_id}")
            self.runs.pop(run.event_id, None)
            return
        await self._start_restore(run, now, "event ended")

    async def _send_due(self, now: datetime) -> None:
        for run in list(self.runs.values()):
            due = [a for a in run.pending if a.at <= now] if self.paused is None else []
            if due:
                run.pending = [a for a in run.pending if a.at > now]
                await self._executor.run_all(run.event_id, due, {})
                self._commanded_at = self.clock.now()
            due_undos = [u for u in run.undos if u.action.at <= now]
            if due_undos:
                run.undos = [u for u in run.undos if u.action.at > now]
                outcomes = await self._executor.run_all(
                    run.event_id, [u.action for u in due_undos], {u.action.key: u.covers for u in due_undos}
                )
                self._commanded_at = self.clock.now()
                retry_at = now + timedelta(seconds=self.settings.restore_retry_s)
                for undo, outcome in zip(due_undos, outcomes, strict=True):
                    if not outcome.ok:  # an undo is retried until it succeeds
                        run.undos.append(Undo(action=replace(undo.action, at=retry_at), covers=undo.covers))

    def status(self) -> dict[str, object]:
        """What ``GET /status`` shows: every journaled event, its commands, site power and target."""
        return status_of(self)


_RELAXABLE = (ActionKind.CAP, ActionKind.PAUSE, ActionKind.SCALE_DOWN)


def _running(snapshot: ClusterSnapshot) -> frozenset[str]:
    return frozenset(j.job_id for j in snapshot.jobs if j.state is JobState.RUNNING)
