"""Protocol mode: the scenario's events reach the gateway the way a utility's would.

A real openleadr VTN on loopback (``simulators.vtn.ScriptedVtn``) queues each event when the scenario
says the utility sends it; the gateway's own VEN polls, translates and answers it over HTTP, and the
engine acts on the simulated cluster. Time runs ``speed`` times faster than the wall (a ``ScaledClock``)
so a 7-hour scenario takes well under a minute while every exchange is real. The run is summarised
exactly as in fast mode (``simulators.replay.run``), so the two can be compared decision by decision.

The VTN judges an event's status (far, near, active, completed) by its own wall clock, so a scenario set
in the past is moved to start now (by whole minutes, so every reading keeps its place in its minute) and
the run's times are moved back before it is summarised.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from gateway.app import Gateway
from gateway.clock import ScaledClock
from gateway.config import DcflexConfig
from gateway.domain import Directive
from gateway.journal import Journal
from gateway.power.site import site_power_model
from simulators.demo import wait_registered
from simulators.effects import Recorder
from simulators.replay.baselines import STRATEGIES
from simulators.replay.jobs import JobStream
from simulators.replay.run import (
    VEN_ID,
    Accounts,
    Progress,
    StrategyRun,
    build_cluster,
    collect,
    openadr_event,
)
from simulators.replay.scenario import LoadedScenario
from simulators.vtn import ScriptedVtn


def _config(scn: LoadedScenario, vtn_url: str, journal: Path) -> DcflexConfig:
    data = scn.gateway.model_dump(mode="python", exclude_unset=True)
    data["ven"] = {"vtn_url": vtn_url, "ven_name": VEN_ID, "ven_id": VEN_ID, "poll_interval_s": 0.25}
    data["journal"] = {"path": str(journal)}
    data["api"] = {"enabled": False}
    data["scheduler"] = {"kind": "simulated", "dry_run": False}
    return DcflexConfig.model_validate(data)


async def run_protocol(scn: LoadedScenario, stream: JobStream, strategy: str, progress: Progress | None = None,
                       speed: float | None = None) -> StrategyRun:
    """One strategy over the scenario through a real VTN and VEN (see the module docstring)."""
    wall0 = time.perf_counter()
    shift = _shift_to_now(scn.spec.start)
    scn = shifted(scn, shift)
    spec = scn.spec
    speed = speed or spec.scenario.speed
    events = scn.events()
    out = StrategyRun(strategy=strategy, mode="protocol", windows=[(spec.start, spec.end)])
    recorder = Recorder()
    with tempfile.TemporaryDirectory(prefix="dcflex-replay-") as tmp:
        async with ScriptedVtn(poll_interval_s=0.25) as vtn:
            cfg = _config(scn, vtn.vtn_url, Path(tmp) / "journal.sqlite3")
            clock = ScaledClock(spec.start, speed)
            cluster = build_cluster(scn, stream, clock)
            accounts = Accounts(stream, spec.report.tier_weights)
            gateway = Gateway(cfg, scheduler=cluster, meter=cluster, clock=clock, model=site_power_model(cfg.site),
                              sinks=[recorder], sample_interval_s=spec.scenario.sample_s, planner=STRATEGIES[strategy],
                              relax=strategy == "dcflex")
            serving = asyncio.create_task(gateway.serve())
            try:
                await wait_registered(gateway, serving)
                accounts.open(cluster)
                pending = sorted(((ev.sent_at, openadr_event(ev, vtn)) for ev in events), key=lambda p: p[0])
                horizon = (spec.end - spec.start).total_seconds()
                while clock.now() < spec.end:
                    while pending and pending[0][0] <= clock.now():
                        vtn.add_raw_event(VEN_ID, pending.pop(0)[1])
                    if serving.done():
                        serving.result()
                    if progress is not None:
                        progress(strategy, min(1.0, (clock.now() - spec.start).total_seconds() / horizon))
                    await asyncio.sleep(min(0.05, 30.0 / speed))
                accounts.close(cluster)
                deadline = clock.now() + timedelta(hours=6)
                while gateway.engine.runs and clock.now() < deadline:  # let restores finish
                    if serving.done():
                        serving.result()
                    await asyncio.sleep(0.05)
            finally:
                serving.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await serving
            with Journal(cfg.journal.path) as journal:
                collect(out, journal, cluster, recorder, accounts)
            out.opt_responses = [tuple(r) for r in vtn.responses]
    out.wall_s = time.perf_counter() - wall0
    out.simulated_s = (spec.end - spec.start).total_seconds()
    return unshift(out, shift)


def _shift_to_now(start: datetime) -> timedelta:
    now = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
    return timedelta(minutes=round((now - start).total_seconds() / 60))


def shifted(scn: LoadedScenario, by: timedelta) -> LoadedScenario:
    """The scenario ``by`` later: its start and every event (generated ones drawn first, then moved)."""
    spec = scn.spec
    meta = spec.scenario.model_copy(update={"start": spec.start + by})
    evs = tuple(e.model_copy(update={"start": e.start + by}) for e in scn.events())
    return replace(scn, spec=spec.model_copy(update={"scenario": meta, "events": evs, "events_generator": None}))


def unshift(run: StrategyRun, by: timedelta) -> StrategyRun:
    """The run's times moved back by ``by``: as if it had happened when the scenario says."""

    def back(d: Directive) -> Directive:
        segs = tuple(replace(x, start=x.start - by, end=x.end - by) for x in d.segments)
        return replace(d, segments=segs, ramp_start=d.ramp_start - by, target_by=d.target_by - by, end=d.end - by,
                       recovery_end=d.recovery_end - by)

    run.power = [(t - by, kw) for t, kw in run.power]
    run.directives = {k: back(d) for k, d in run.directives.items()}
    run.commands = [replace(c, at=c.at - by) for c in run.commands]
    run.windows = [(a - by, b - by) for a, b in run.windows]
    for drop in run.drops:
        drop["at"] = (datetime.fromisoformat(str(drop["at"])) - by).isoformat()
    return run
