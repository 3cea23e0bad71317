"""The engine's two loops: sampling the meter (readings, targets reached, advance notices) and control (a step
of every event whenever something falls due or the state changes)."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

from gateway.clock import sleep_unless
from gateway.engine.control import Control
from gateway.engine.shared import ACTIVE, WAITING, Shared
from gateway.exceptions import AdapterError, DcflexError

__all__ = ["Loops"]

log = logging.getLogger("dcflex.engine")


class Loops:
    def __init__(self, shared: Shared, control: Control) -> None:
        self.s = shared
        self.control = control

    async def run(self) -> None:
        """Sample and control until cancelled."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._sample_loop())
            tg.create_task(self._control_loop())

    async def _sample_loop(self) -> None:
        s = self.s
        failing = False
        while True:
            now = s.clock.now()
            try:
                kw = await s.meter.read_kw()
            except DcflexError as exc:
                if not failing:
                    await s.out.alert("", "meter_unavailable", f"cannot read site power: {exc}")
                failing = True
            else:
                failing = False
                await self._reading(now, kw)
            await s.clock.sleep(s.settings.sample_interval_s)

    async def _reading(self, now: datetime, kw: float) -> None:
        s = self.s
        s.history.add(now, kw)
        target = s.effective_target(now)
        tolerance = s.settings.policy.tolerance_kw
        for run in s.runs.values():
            if run.state in ACTIVE and run.reached_at is None and target is not None and kw <= target + tolerance:
                run.reached_at = now
                ttt = (now - run.directive.ramp_start).total_seconds()
                await s.out.emit("target_reached", run.event_id, {"kw": kw, "target_kw": target, "time_to_target_s": ttt})
        active = [r for r in s.runs.values() if r.state in ACTIVE]
        if target is not None and kw > target + tolerance:
            for run in active:  # over target: check now rather than at the next periodic check
                run.next_check = now
            s.wake.set()
        await s.out.emit("power", "", s.out.power_facts(now, kw, target, active))
        await self._notices_step(now, kw)

    async def _notices_step(self, now: datetime, kw: float) -> None:
        """Advance notice: jobs' ends from a snapshot now and then, events over, what is due, drops seen."""
        s = self.s
        notices = s.notices
        for eid in [d.event_id for d in notices.events.values()]:
            run = s.runs.get(eid)
            if run is None or run.state not in (*WAITING, *ACTIVE) or run.cancelled:
                notices.event_over(eid)
        if notices.wants_snapshot(now):
            snapshot = s.last_snapshot  # a re-plan's read is fresh enough: no second one
            if snapshot is None or (now - snapshot.at).total_seconds() >= notices.cfg.snapshot_interval_s:
                try:
                    snapshot = s.last_snapshot = await s.scheduler.snapshot()
                except AdapterError as exc:
                    log.warning("notices: cannot read the cluster for jobs' expected ends: %s", exc)
                    snapshot = None
            if snapshot is not None:
                notices.on_snapshot(snapshot, now, s.journal.jobs_with_open_commands())
        await notices.on_reading(now, kw, s.commanded_at)

    async def _control_loop(self) -> None:
        s = self.s
        while True:
            s.wake.clear()
            async with s.lock:
                await self.control.step(s.clock.now())
                wake_at = self.control.next_wake(s.clock.now())
            delay = (wake_at - s.clock.now()).total_seconds()
            if delay > 0:
                await sleep_unless(s.clock, delay, s.wake)
