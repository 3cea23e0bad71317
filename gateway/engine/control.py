"""Control: each event's life once accepted. Ramp, hold, re-plan on drift or a changed target, give back when
there is slack, hand commands to an overlapping event, restore at the end, send what falls due."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from gateway.domain import Action, ActionKind, ClusterSnapshot, EventState, JobState, Plan
from gateway.engine.context import metered
from gateway.engine.restore import Undo, build_restore
from gateway.engine.run import Run
from gateway.engine.shared import ACTIVE, WAITING, Shared
from gateway.engine.status import plan_facts
from gateway.exceptions import AdapterError

__all__ = ["Control"]


_RELAXABLE = (ActionKind.CAP, ActionKind.PAUSE, ActionKind.SCALE_DOWN)


class Control:
    """One step of every event in progress (``step``) and when the next is due (``next_wake``); the
    transitions and restores the other parts start through it."""

    def __init__(self, shared: Shared) -> None:
        self.s = shared

    async def transition(self, run: Run, state: EventState, detail: str = "") -> None:
        s = self.s
        s.journal.set_state(run.event_id, state, s.clock.now(), detail)
        run.state = state
        await s.out.emit("state", run.event_id, s.out.state_facts(run.directive, state, detail))
        s.wake.set()

    def metered(self, snapshot: ClusterSnapshot, now: datetime) -> ClusterSnapshot:
        s = self.s
        return metered(snapshot, s.history.latest, now, s.settings.sample_interval_s, s.commanded_at)

    def restore_for(self, run: Run, now: datetime) -> list[Undo]:
        """The undos of every command of ``run`` still in force, last first, under the ramp rate."""
        s = self.s
        return build_restore(run.event_id, s.journal.outstanding(run.event_id), now, s.settings.site.ramp_rate_kw_per_min,
                             prior_caps=s.journal.prior_caps(run.event_id))

    async def start_restore(self, run: Run, now: datetime, detail: str) -> None:
        run.pending = []
        run.undos = self.restore_for(run, now)
        await self.transition(run, EventState.RESTORING, f"{detail}; {len(run.undos)} command(s) to undo")

    # ---------------------------------------------------------------- one step
    async def step(self, now: datetime) -> None:
        s = self.s
        for run in list(s.runs.values()):
            await self._advance(run, now)
        await self._send_due(now)
        for run in list(s.runs.values()):
            if run.state is EventState.RESTORING and not run.undos and not s.journal.outstanding(run.event_id):
                final = run.final or (EventState.CANCELLED if run.cancelled else EventState.COMPLETED)
                await s.out.impacts(run, s.last_snapshot.jobs if s.last_snapshot else ())
                await self.transition(run, final, "every command undone")
                del s.runs[run.event_id]

    def next_wake(self, now: datetime) -> datetime:
        s = self.s
        commands = [a.at for r in s.runs.values() for a in r.pending] if s.paused is None else []
        commands += [u.action.at for r in s.runs.values() for u in r.undos]
        if any(t <= now for t in commands):
            return now  # fell due while the last step ran: go again at once
        times = [*commands, now + timedelta(seconds=s.settings.policy.replan_interval_s)]
        for run in s.runs.values():
            d = run.directive
            if run.state in WAITING:
                times.append(d.ramp_start)
            if run.state in ACTIVE:
                times += [d.end, d.target_by] + [seg.start for seg in d.segments if seg.start > now]
                if run.next_check:
                    times.append(run.next_check)
        future = [t for t in times if t > now]
        return min(future) if future else now + timedelta(seconds=1)

    async def _advance(self, run: Run, now: datetime) -> None:
        d = run.directive
        if run.state in WAITING and now >= d.ramp_start:
            goal = f"{d.strictest_kw:.1f} kW" if d.strictest_kw is not None else "the price signal"
            await self.transition(run, EventState.RAMPING, f"ramp to {goal} by {d.target_by.isoformat()}")
            run.needs_plan = True
        if run.state in ACTIVE and now >= d.end:
            await self._finish(run, now)
            return
        if run.state not in ACTIVE:
            return
        target = d.target_at(now)
        if target != run.last_target:
            run.last_target = target
            run.needs_plan = True
        if run.next_check is None or now >= run.next_check:
            run.next_check = now + timedelta(seconds=self.s.settings.policy.replan_interval_s)
            await self._check_drift(run, now)
        if run.needs_plan:
            fresh = run.first_plan is not None and (now - run.first_plan.created_at).total_seconds() < 1.0
            await self._replan(run, now, reuse=run.first_plan if fresh else None)
            run.first_plan = None
        if run.state is EventState.RAMPING and not run.pending and now >= d.target_by:
            await self.transition(run, EventState.HOLDING, "every planned command sent")

    async def _check_drift(self, run: Run, now: datetime) -> None:
        """Re-plan when measured power drifts above target or the set of running jobs changed
        (jobs ended or started); give back commands when the site sits well below target."""
        s = self.s
        if run.pending or run.needs_plan or run.undos:  # commands (or give-backs) still to land: wait for them
            return
        latest = s.history.latest
        target = s.effective_target(now)
        if latest is None or target is None:
            return
        kw = latest[1]
        policy = s.settings.policy
        if kw > target + policy.replan_drift_kw:
            s.journal.log(run.event_id, "drift", now, {"kw": kw, "target_kw": target})
            run.needs_plan = True
        elif kw < target - policy.replan_drift_kw and run.state is EventState.HOLDING and s.settings.relax:
            self._relax(run, now, target - kw)
        elif kw > target + policy.tolerance_kw:
            # over target by less than the drift threshold: re-plan when the jobs changed, or when the
            # last check was over target too (two readings in a row are not noise)
            changed = run.running_jobs is None
            if not changed:
                try:
                    snapshot = await s.scheduler.snapshot()
                except AdapterError:
                    return  # the next check tries again; a failing scheduler is alerted by the re-plan
                changed = _running(snapshot) != run.running_jobs
            if changed or run.over_target:
                s.journal.log(run.event_id, "over_target", now, {"kw": kw, "target_kw": target, "jobs_changed": changed})
                run.needs_plan = True
        run.over_target = kw > target + policy.tolerance_kw

    async def _replan(self, run: Run, now: datetime, reuse: Plan | None = None) -> None:
        """Plan from a fresh snapshot (or reuse the acceptance plan when it is under a second old)."""
        s = self.s
        if reuse is None:
            try:
                snapshot = await s.scheduler.snapshot()
            except AdapterError as exc:
                await s.out.alert(run.event_id, "snapshot_failed", f"cannot read the cluster to re-plan: {exc}", "error")
                return  # needs_plan stays set: the next step tries again
            s.last_snapshot = snapshot
            run.running_jobs = _running(snapshot)
        run.needs_plan = False
        p = reuse or s.planner(run.directive, self.metered(snapshot, now), s.planner_policy, now)
        if reuse is None:
            run.remember(snapshot, p)
        ours = s.journal.jobs_with_open_commands()  # a cap the gateway set is not a prior limit
        s.journal.remember_prior_caps(run.event_id, {
            a.job_id: a.watts for a in p.restore
            if a.kind is ActionKind.UNCAP and a.watts is not None and a.job_id not in ours
        })
        fresh: list[Action] = []
        for a in p.shed:
            rec = s.journal.action(a.key)
            if rec is None or rec.state == "undone" or (
                rec.state == "failed" and rec.attempts < s.settings.max_shed_attempts
            ):
                fresh.append(a)
        run.pending = sorted(fresh, key=lambda a: (a.at, a.key))
        if p.shortfall is not None and abs(p.shortfall.kw - run.shortfall_kw) > s.settings.policy.tolerance_kw:
            await s.out.alert(run.event_id, "shortfall", f"target out of reach by {p.shortfall.kw:.0f} kW: {p.shortfall.reason}")
        run.shortfall_kw = p.shortfall.kw if p.shortfall else 0.0
        await s.out.emit("plan", run.event_id, {**plan_facts(p), "new_commands": len(fresh)})

    def _relax(self, run: Run, now: datetime, slack_kw: float) -> None:
        """Give back caps/pauses (newest first) when the site is well below target (jobs ended)."""
        s = self.s
        budget = slack_kw - s.settings.policy.tolerance_kw
        chosen = []
        for rec in reversed(s.journal.outstanding(run.event_id)):
            if rec.action.kind in _RELAXABLE and -rec.action.delta_kw <= budget:
                budget += rec.action.delta_kw
                chosen.append(rec)
        if chosen:
            s.journal.log(run.event_id, "relax", now, {"slack_kw": slack_kw, "undo": [r.action.key for r in chosen]})
            run.undos += build_restore(
                run.event_id, chosen, now, s.settings.site.ramp_rate_kw_per_min, generation=int(now.timestamp()),
                prior_caps=s.journal.prior_caps(run.event_id),
            )

    async def _finish(self, run: Run, now: datetime) -> None:
        s = self.s
        heirs = [r for r in s.runs.values() if r is not run and r.state in ACTIVE and r.directive.end > now]
        if heirs:
            heir = min(heirs, key=lambda r: (r.directive.strictest_kw or float("inf"), r.event_id))
            moved = s.journal.transfer(run.event_id, heir.event_id)
            run.pending = []
            heir.needs_plan = True
            await self.transition(run, EventState.COMPLETED, f"ended; {moved} command(s) handed to {heir.event_id}")
            s.runs.pop(run.event_id, None)
            return
        await self.start_restore(run, now, "event ended")

    async def _send_due(self, now: datetime) -> None:
        s = self.s
        for run in list(s.runs.values()):
            due = [a for a in run.pending if a.at <= now] if s.paused is None else []
            if due:
                run.pending = [a for a in run.pending if a.at > now]
                await s.executor.run_all(run.event_id, due, {})
                s.commanded_at = s.clock.now()
            due_undos = [u for u in run.undos if u.action.at <= now]
            if due_undos:
                run.undos = [u for u in run.undos if u.action.at > now]
                outcomes = await s.executor.run_all(
                    run.event_id, [u.action for u in due_undos], {u.action.key: u.covers for u in due_undos}
                )
                s.commanded_at = s.clock.now()
                retry_at = now + timedelta(seconds=s.settings.restore_retry_s)
                for undo, outcome in zip(due_undos, outcomes, strict=True):
                    if not outcome.ok:  # an undo is retried until it succeeds
                        run.undos.append(Undo(action=replace(undo.action, at=retry_at), covers=undo.covers))


def _running(snapshot: ClusterSnapshot) -> frozenset[str]:
    return frozenset(j.job_id for j in snapshot.jobs if j.state is JobState.RUNNING)
