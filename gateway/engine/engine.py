"""The engine: each event's life, from delivery to the last restored job.

It answers the VEN (opt in or out, from the policy), plans through the pure planner, sends the
plan's commands through the scheduler port when they fall due, watches the measured power and
re-plans when it drifts or a target changes, and restores everything the event changed when it
ends or is cancelled. Every transition is journaled before it is acted on; ``run()`` starts by
picking up whatever the journal says is unfinished, so a restarted gateway carries on.

Overlapping events merge: while several are active, the strictest target in force wins; when one
ends while another is still active, its commands are handed to the other instead of being undone.

``Engine`` composes its parts, each on one ``Shared`` state: ``Intake`` (the VEN's calls), ``Recovery``
(start-up from the journal), ``Control`` (each event's steps), ``Loops`` (meter and control loops) and
``Overrides`` (operators' calls); ``status`` is built from read-only views.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from types import MappingProxyType

from gateway.clock import Clock
from gateway.domain import GridEvent, OptDecision
from gateway.engine.control import Control
from gateway.engine.executor import Executor
from gateway.engine.feed import EngineFeed
from gateway.engine.intake import Intake
from gateway.engine.loops import Loops
from gateway.engine.outputs import Outputs
from gateway.engine.overrides import Overrides
from gateway.engine.recovery import Recovery
from gateway.engine.run import Run
from gateway.engine.settings import EngineSettings
from gateway.engine.shared import Shared
from gateway.engine.status import RunView, status_of
from gateway.journal import Journal
from gateway.notices.service import NoticeService
from gateway.planner import PlannerPolicy, plan
from gateway.ports import Planner, PowerMeter, SchedulerPort, Sink, VtnAnswers
from gateway.power import PowerModel
from gateway.power.history import PowerHistory
from gateway.power.site import site_power_model


class Engine:
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
        site = settings.site
        model = model or site_power_model(site)
        history = PowerHistory()
        out = Outputs(journal, clock, sinks, history, model, keep_power_days=2 * site.baseline_y_days + 8)
        self.shared = Shared(
            settings=settings, clock=clock, journal=journal, scheduler=scheduler, meter=meter, planner=planner,
            planner_policy=PlannerPolicy(
                model=model,
                ramp_rate_kw_per_min=site.ramp_rate_kw_per_min,
                tolerance_kw=settings.policy.tolerance_kw,
                min_cap_w=site.min_cap_w,
                max_cap_w=site.max_cap_w,
                job_weights=settings.policy.tier_weights if settings.policy.objective == "weighted-jobs" else None,
                headroom_kw=settings.policy.headroom_kw,
            ),
            model=model, history=history, out=out,
            notices=NoticeService(settings.notices, model, journal, out.emit, sample_interval_s=settings.sample_interval_s),
            executor=Executor(scheduler, journal, clock, out.emit, dry_run=settings.dry_run,
                              concurrency=settings.max_concurrency),
        )
        self.control = Control(self.shared)
        self.intake = Intake(self.shared, self.control)
        self.recovery = Recovery(self.shared, self.control)
        self.loops = Loops(self.shared, self.control)
        self.overrides = Overrides(self.shared, self.control)
        self.feed = EngineFeed(history, self.shared.notices, announces_drops=settings.notices.enabled)

    # ---------------------------------------------------------------- what others read
    @property
    def settings(self) -> EngineSettings:
        return self.shared.settings

    @property
    def clock(self) -> Clock:
        return self.shared.clock

    @property
    def journal(self) -> Journal:
        return self.shared.journal

    @journal.setter
    def journal(self, journal: Journal) -> None:
        """A journal reopened on the same file (after closing it to hand the file to another reader)."""
        self.shared.journal = journal

    @property
    def scheduler(self) -> SchedulerPort:
        return self.shared.scheduler

    @property
    def model(self) -> PowerModel:
        return self.shared.model

    @property
    def history(self) -> PowerHistory:
        return self.shared.history

    @property
    def out(self) -> Outputs:
        return self.shared.out

    @property
    def notices(self) -> NoticeService:
        return self.shared.notices

    @property
    def runs(self) -> Mapping[str, Run]:
        """The events in progress, by id (read-only: the parts change them)."""
        return MappingProxyType(self.shared.runs)

    @property
    def paused(self) -> str | None:
        """Why operators paused new commands (None: not paused)."""
        return self.shared.paused

    @property
    def vtn(self) -> VtnAnswers | None:
        return self.shared.vtn

    def connect_vtn(self, vtn: VtnAnswers) -> None:
        """The VEN this engine answers through. Set once, after both exist: the VEN hands events to the engine
        (``EventHandler``), and the engine tells the VEN an operator's later opt-out."""
        self.shared.vtn = vtn

    def effective_target(self, at: datetime) -> float | None:
        """The strictest target in force at ``at`` among active events (None: no target)."""
        return self.shared.effective_target(at)

    # ---------------------------------------------------------------- EventHandler
    async def on_event(self, event: GridEvent) -> OptDecision:
        """Answer one delivery of an event (new, modified, or a duplicate)."""
        return await self.intake.on_event(event)

    async def on_cancel(self, event_id: str, reason: str) -> None:
        await self.intake.on_cancel(event_id, reason)

    # ---------------------------------------------------------------- OperatorControl
    async def opt_out(self, event_id: str, reason: str) -> str:
        return await self.overrides.opt_out(event_id, reason)

    async def pause_actions(self, reason: str) -> str:
        return await self.overrides.pause_actions(reason)

    async def resume_actions(self, reason: str) -> str:
        return await self.overrides.resume_actions(reason)

    # ---------------------------------------------------------------- the service
    async def run(self) -> None:
        """Resume unfinished events from the journal, then sample and control until cancelled."""
        await self.recovery.resume()
        self.shared.started.set()
        await self.loops.run()

    async def wait_started(self) -> None:
        await self.shared.started.wait()

    @property
    def commands_in_flight(self) -> int:
        """Commands out at the scheduler now (journaled ``sending``)."""
        return self.shared.executor.in_flight

    async def commands_done(self) -> None:
        """Return once no command is out at the scheduler: a graceful stop waits here (bounded) before it
        cancels the engine, so what was sent is journaled ``done`` or ``failed`` rather than ``sending``."""
        await self.shared.executor.idle()

    def status(self) -> dict[str, object]:
        """What ``GET /status`` shows: every journaled event, its commands, site power and target."""
        s = self.shared
        now = s.clock.now()
        latest = s.history.latest
        return status_of(
            now=now, site_kw=latest[1] if latest else None, target_kw=s.effective_target(now),
            dry_run=s.settings.dry_run, journal=s.journal, notices=s.notices,
            runs={eid: RunView(tuple(a.key for a in r.pending), r.shortfall_kw) for eid, r in s.runs.items()},
        )
