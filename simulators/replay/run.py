"""Running one strategy over a scenario: the real engine on the simulated cluster, events fed in on time.

Both modes drive the same pieces: the gateway's ``Engine`` with the strategy as its planner, the shared
simulated cluster built from the scenario's job stream, a journal, and a recorder of what the engine
emits. They differ in how events arrive and how time passes:

- ``fast``: a ``ManualClock`` steps through the horizon one meter sample at a time and each event goes
  straight to the engine (translated from the very OpenADR payload the VTN would send, so the engine
  sees what the VEN would hand it). With ``episodes`` the clock jumps over the quiet hours between
  events: the cluster still lives through them (its jobs end and arrive), the gateway simply has
  nothing to do, which is what lets a year on 10,000 GPUs run in seconds.
- ``protocol`` (``simulators.replay.protocol``): a real openleadr VTN sends the events to the real VEN
  over loopback, with time compressed.

What a run keeps (``StrategyRun``) is raw: power samples, the directives and commands from the journal,
each job's work over the measured windows. ``simulators.replay.metrics`` turns it into the report.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from gateway.clock import Clock, ManualClock
from gateway.domain import ActionKind, Directive, Tier
from gateway.engine import Engine, EngineSettings
from gateway.journal import Journal
from gateway.power.site import site_power_model
from gateway.ven.oadr20b.translate import translate_event
from simulators.cluster import CommandRecord, JobLedger, SimulatedCluster
from simulators.effects import Recorder
from simulators.replay.baselines import STRATEGIES
from simulators.replay.jobs import JobStream
from simulators.replay.scenario import EventSpec, LoadedScenario
from simulators.vtn import ScriptedVtn

VEN_ID = "dcflex-replay"
Progress = Callable[[str, float], None]  # (strategy, share of the horizon done 0..1)


@dataclass(frozen=True, slots=True)
class Decision:
    """One command a strategy sent, as the journal has it: what protocol and fast mode must agree on."""

    event_id: str
    key: str
    kind: ActionKind
    job_id: str | None
    watts: float | None
    state: str


@dataclass
class JobWindow:
    """One job's work summed over the measured windows, and its whole-run accounts at the end."""

    job_id: str
    tier: Tier
    gpus: int
    weight: float
    done_s: float = 0.0
    run_s: float = 0.0
    end: JobLedger | None = None

    @property
    def kept(self) -> float:
        """Throughput kept over its time in the windows (1.0 when it never ran in them)."""
        return min(1.0, self.done_s / self.run_s) if self.run_s > 0 else 1.0

    @property
    def lost_gpu_hours(self) -> float:
        return max(0.0, self.run_s - self.done_s) * self.gpus / 3600.0

    @property
    def within_tier(self) -> bool:
        """The tier's contract over the job's whole run (what ran before, in and after the windows, and what
        is left): lost at most ``max_loss`` of it."""
        e = self.end
        if e is None:
            return True
        run = e.elapsed_s + e.remaining_s
        return e.lost_s <= self.tier.max_loss * run + 1.0  # a second of float slack over a whole run


@dataclass
class StrategyRun:
    strategy: str
    mode: str
    power: list[tuple[datetime, float]] = field(default_factory=list)
    directives: dict[str, Directive] = field(default_factory=dict)
    states: dict[str, str] = field(default_factory=dict)
    decisions: list[Decision] = field(default_factory=list)
    commands: list[CommandRecord] = field(default_factory=list)
    jobs: dict[str, JobWindow] = field(default_factory=dict)
    windows: list[tuple[datetime, datetime]] = field(default_factory=list)
    reached: dict[str, float] = field(default_factory=dict)  # event id → time to target (s, from the ramp start)
    drops: list[dict[str, Any]] = field(default_factory=list)  # drop_observed records
    opt_responses: list[tuple[object, ...]] = field(default_factory=list)  # protocol mode: what the VTN heard
    wall_s: float = 0.0
    simulated_s: float = 0.0


def openadr_event(ev: EventSpec, vtn: ScriptedVtn) -> dict[str, Any]:
    """The event as the VTN sends it (one signal, equal intervals, x-eiRampUp and x-eiRecovery)."""
    ramp = timedelta(minutes=ev.ramp_up_min) if ev.ramp_up_min else None
    recovery = timedelta(minutes=ev.recovery_min) if ev.recovery_min else None
    return vtn.build_event(VEN_ID, ev.signal, ev.type, [(ev.interval, v) for v in ev.values], ev.start,
                           ramp=ramp, recovery=recovery, event_id=ev.id)


def build_cluster(scn: LoadedScenario, stream: JobStream, clock: Clock) -> SimulatedCluster:
    s = scn.spec.site
    model = site_power_model(scn.gateway.site)
    return SimulatedCluster(clock, model, s.nodes, s.gpus_per_node, stream.initial, seed=scn.spec.scenario.seed,
                            noise_kw=s.noise_kw, sched_interval_s=s.sched_interval_s, arrivals=stream.arrivals,
                            trace=stream.later)


def build_engine(scn: LoadedScenario, strategy: str, cluster: SimulatedCluster, clock: Clock, journal: Journal,
                 recorder: Recorder) -> Engine:
    settings = EngineSettings.from_config(scn.gateway, sample_interval_s=scn.spec.scenario.sample_s, dry_run=False,
                                          relax=strategy == "dcflex")
    return Engine(scheduler=cluster, meter=cluster, journal=journal, clock=clock, settings=settings,
                  model=site_power_model(scn.gateway.site), sinks=[recorder], planner=STRATEGIES[strategy])


def windows(scn: LoadedScenario, events: list[EventSpec]) -> list[tuple[datetime, datetime]]:
    """The spans simulated step by step: the whole horizon, or with ``episodes`` the hours around each event
    (from before its notice, for the baseline, to the end of its recovery and rebound window), merged."""
    if not scn.spec.scenario.episodes:
        return [(scn.spec.start, scn.spec.end)]
    cfg = scn.gateway
    warm = timedelta(minutes=cfg.site.baseline_minutes + 5)
    lead = timedelta(minutes=max(cfg.notices.lead_times_min or [0]) + 5)
    after = timedelta(minutes=scn.spec.report.rebound_window_min)
    spans = []
    for ev in events:
        ramp_start = ev.start - timedelta(minutes=ev.ramp_up_min)
        spans.append((ev.sent_at - warm, ev.sent_at + timedelta(minutes=1)))
        spans.append((min(ramp_start - lead, ramp_start - warm), ev.end + timedelta(minutes=ev.recovery_min) + after))
    spans = [(max(a, scn.spec.start), min(b, scn.spec.end)) for a, b in sorted(spans)]
    merged: list[tuple[datetime, datetime]] = []
    for a, b in spans:
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged


class Accounts:
    """Each job's work over the measured windows: a ledger at each window's start, the difference at its end."""

    def __init__(self, stream: JobStream, tier_weights: dict[Tier, float]) -> None:
        self._stream = stream
        self._weights = tier_weights
        # a job submitted during a window starts it with the run its spec says it already had
        self._prior = {s.job_id: s.elapsed_s for s in stream.initial} | {s.job_id: s.elapsed_s for _, s in stream.later}
        self._open: dict[str, JobLedger] = {}
        self._final: set[str] = set()  # jobs that ended before a window: left out of later ledgers
        self.jobs: dict[str, JobWindow] = {}

    def open(self, cluster: SimulatedCluster) -> None:
        self._open = cluster.ledger(skip=self._final)

    def close(self, cluster: SimulatedCluster) -> None:
        now = cluster.ledger(skip=self._final)
        for jid, led in now.items():
            if led.completed and (jid not in self._open or self._open[jid].completed):
                self._final.add(jid)  # ended before this window: nothing more to count, ever
            before = self._open.get(jid)
            prior = self._prior.get(jid, 0.0)
            done = led.progress_s - (before.progress_s if before else prior)
            run = led.elapsed_s - (before.elapsed_s if before else prior)
            w = self.jobs.get(jid)
            if w is None:
                w = self.jobs[jid] = JobWindow(jid, led.tier, led.gpus, self._stream.weight(jid, led.tier, self._weights))
            w.done_s += done
            w.run_s += run
            w.end = led
        self._open = {}


def _steps(start: datetime, end: datetime, step_s: float, marks: list[datetime]) -> Iterator[datetime]:
    """Times to stop at: every ``step_s`` from ``start`` to ``end``, plus each of ``marks`` inside."""
    t = start
    pending = sorted(m for m in marks if start < m < end)
    while t < end:
        nxt = min(t + timedelta(seconds=step_s), end)
        while pending and pending[0] <= t:
            pending.pop(0)
        if pending and pending[0] < nxt:
            nxt = pending[0]
        yield nxt
        t = nxt


async def run_fast(scn: LoadedScenario, stream: JobStream, strategy: str, progress: Progress | None = None) -> StrategyRun:
    """One strategy over the scenario on a virtual clock (see the module docstring)."""
    wall0 = time.perf_counter()
    spec = scn.spec
    clock = ManualClock(spec.start, settle=True)
    cluster = build_cluster(scn, stream, clock)
    recorder = Recorder()
    journal = Journal(":memory:")
    engine = build_engine(scn, strategy, cluster, clock, journal, recorder)
    events = scn.events()
    vtn = ScriptedVtn()
    payloads = sorted(((ev.sent_at, openadr_event(ev, vtn)) for ev in events), key=lambda p: p[0])
    spans = windows(scn, events)
    accounts = Accounts(stream, spec.report.tier_weights)
    out = StrategyRun(strategy=strategy, mode="fast", windows=spans)
    horizon = (spec.end - spec.start).total_seconds()
    task = asyncio.create_task(engine.run())
    try:
        await engine.wait_started()
        for a, b in spans:
            if clock.now() < a:
                await clock.jump((a - clock.now()).total_seconds())
            accounts.open(cluster)
            for t in _steps(a, b, spec.scenario.sample_s, [p[0] for p in payloads]):
                while payloads and payloads[0][0] <= clock.now():
                    _, raw = payloads.pop(0)
                    await engine.on_event(translate_event(raw, ven_key=VEN_ID, received_at=clock.now()))
                await clock.advance((t - clock.now()).total_seconds())
                if task.done():
                    task.result()
                if progress is not None:
                    progress(strategy, (clock.now() - spec.start).total_seconds() / horizon)
            accounts.close(cluster)
        await _drain(engine, clock, task)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    collect(out, journal, cluster, recorder, accounts)
    journal.close()
    out.wall_s = time.perf_counter() - wall0
    out.simulated_s = horizon
    return out


async def _drain(engine: Engine, clock: ManualClock, task: asyncio.Task[None], limit_s: float = 6 * 3600) -> None:
    """After the horizon, let the engine finish restoring (a scenario that ends mid-recovery must still
    leave no job paused): step until no event is active, for at most ``limit_s`` of virtual time."""
    waited = 0.0
    while engine.runs and waited < limit_s:
        await clock.advance(60.0)
        waited += 60.0
        if task.done():
            task.result()


def collect(out: StrategyRun, journal: Journal, cluster: SimulatedCluster, recorder: Recorder, accounts: Accounts) -> None:
    """What a run keeps, from the journal, the cluster and the recorder once the engine has stopped."""
    out.power = [(t, kw) for t, kw, _ in recorder.power]
    for rec in journal.events():
        out.states[rec.event_id] = rec.state.value
        if rec.directive is not None:
            out.directives[rec.event_id] = rec.directive
    out.decisions = [Decision(r.owner, r.action.key, r.action.kind, r.action.job_id, r.action.watts, r.state)
                     for r in journal.actions()]
    out.commands = list(cluster.commands)
    out.jobs = accounts.jobs
    for body in recorder.of("target_reached"):
        eid = str(body.get("event_id", ""))
        if eid and eid not in out.reached:
            out.reached[eid] = float(body["time_to_target_s"])
    out.drops = [dict(b) | {"event_id": e, "at": at} for at, e, _, b in journal.log_entries(None, ("drop_observed",))]
