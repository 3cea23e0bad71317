"""The composition root: builds the gateway's parts from a configuration and runs them together.

``Gateway`` is used by ``dcflex run`` (wall clock, configured scheduler) and by the demo (scaled
clock, simulated cluster, scripted VTN); it is the only module that knows every concrete part.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol, runtime_checkable

from adapters.guarded import GuardedScheduler
from gateway.api import ApiServer, build_app
from gateway.clock import Clock, SystemClock
from gateway.config import DcflexConfig
from gateway.engine import Engine, EngineSettings
from gateway.exceptions import AdapterError, ConfigError
from gateway.jobchannel import CheckpointAcks, JobDirectives
from gateway.journal import Journal, Outbox
from gateway.outputs import build_outputs
from gateway.planner import plan
from gateway.ports import Planner, PowerMeter, SchedulerPort, ServiceSink, Sink
from gateway.power import PowerModel
from gateway.power.meter import ModelledMeter
from gateway.power.site import site_power_model
from gateway.ven import build_ven

log = logging.getLogger("dcflex")

_JOBS_SEEN_S = 30.0
_WATCHDOG_SLACK_S = 5.0


def _watchdog(after_s: float, journal: object) -> None:
    """A stop must end: if the process is still here ``after_s`` seconds after the signal (a part that does not
    honour cancellation, a blocked loop), a thread ends it. The journal is written before every command, so the next
    start resumes from it."""

    def force() -> None:
        log.error("dcflex did not stop within %.0f s of the signal; exiting now (the next start resumes from %s)",
                  after_s, journal)
        logging.shutdown()
        os._exit(1)

    timer = threading.Timer(after_s, force)
    timer.daemon = True
    timer.start()


@runtime_checkable
class Closeable(Protocol):
    """A part holding a connection of its own (an HTTP session) that the gateway closes on the way out."""

    async def aclose(self) -> None: ...


def power_model(cfg: DcflexConfig) -> PowerModel:
    return site_power_model(cfg.site)


@dataclass
class Parts:
    """A scheduler and its meter; ``guarded`` says whether the engine should add the generic
    timeout/retry guard (the Slurm adapter bounds and retries each command itself, and a
    checkpoint-then-stop legitimately waits up to the job's grace time)."""

    scheduler: SchedulerPort
    meter: PowerMeter
    guarded: bool = True


def build_scheduler(cfg: DcflexConfig, clock: Clock, model: PowerModel, acks: CheckpointAcks, *,
                    directives: JobDirectives | None = None) -> Parts:
    """The configured scheduler adapter (and the power meter that goes with it). ``directives`` is the store
    the HTTP API serves to jobs (``GET /v1/jobs/{id}/directive``): the Ray adapter asks jobs to checkpoint
    through it, so it must be the one given to ``build_app``."""
    kind = cfg.scheduler.kind
    if kind == "slurm":
        from adapters.slurm.adapter import SlurmAdapter

        slurm = SlurmAdapter.from_config(cfg, acks=acks, clock=clock)
        meter = ModelledMeter(slurm, model, nodes=cfg.site.nodes, gpus_per_node=cfg.site.gpus_per_node)
        return Parts(scheduler=slurm, meter=meter, guarded=False)
    if kind == "ray":
        from adapters.ray.adapter import RayAdapter

        if directives is None:
            log.warning("the Ray adapter has no directive store shared with the HTTP API: jobs will not hear "
                        "checkpoint requests, and each checkpoint-then-stop waits the job's whole grace time")
            directives = JobDirectives(clock)
        # Not guarded: the client bounds and retries each HTTP call itself, and a checkpoint-then-stop
        # legitimately waits up to the job's grace time.
        ray = RayAdapter.from_config(cfg, directives=directives, acks=acks, clock=clock)
        meter = ModelledMeter(ray, model, nodes=cfg.site.nodes, gpus_per_node=cfg.site.gpus_per_node)
        return Parts(scheduler=ray, meter=meter, guarded=False)
    if kind == "simulated":
        from simulators import SimulatedCluster, demo_arrivals, mix_for

        sim = cfg.scheduler.simulated
        cluster = SimulatedCluster(
            clock, model, cfg.site.nodes, cfg.site.gpus_per_node,
            mix_for(sim.workload_mix, sim.seed, cfg.site.nodes, cfg.site.gpus_per_node),
            seed=sim.seed, noise_kw=sim.noise_kw,
            arrivals=demo_arrivals() if sim.workload_mix == "demo" else None,
        )
        return Parts(scheduler=cluster, meter=cluster)
    raise ConfigError(
        "scheduler.kind",
        [("scheduler.kind", f"the {kind!r} adapter is not available in this version; use 'simulated', 'slurm' or 'ray'")],
    )


class Gateway:
    """VEN + engine + HTTP API around one scheduler, journal and clock."""

    def __init__(
        self,
        cfg: DcflexConfig,
        *,
        scheduler: SchedulerPort,
        meter: PowerMeter,
        clock: Clock,
        model: PowerModel | None = None,
        sinks: Sequence[Sink] = (),
        dry_run: bool | None = None,
        sample_interval_s: float = 60.0,
        guard: bool = True,
        acks: CheckpointAcks | None = None,
        directives: JobDirectives | None = None,
        planner: Planner = plan,
        relax: bool = True,
    ) -> None:
        self.cfg = cfg
        self.clock = clock
        self.journal = Journal(cfg.journal.path)
        port: SchedulerPort = scheduler
        if guard:
            port = GuardedScheduler(scheduler, timeout_s=cfg.scheduler.command_timeout_s, retries=cfg.scheduler.retries)
        overrides: dict[str, object] = {"sample_interval_s": sample_interval_s, "relax": relax}
        if dry_run is not None:
            overrides["dry_run"] = dry_run
        self.engine = Engine(
            scheduler=port, meter=meter, journal=self.journal, clock=clock,
            settings=EngineSettings.from_config(cfg, **overrides), model=model or power_model(cfg), sinks=sinks,
            planner=planner,
        )
        # ``is None``, not ``or``: an empty store is falsy, and a second one would split jobs from the adapter
        self.acks = acks if acks is not None else CheckpointAcks()
        self.directives = directives if directives is not None else JobDirectives(clock)  # the Ray adapter writes to it
        self._scheduler = scheduler
        self.ven = build_ven(cfg.ven, self.engine, clock, self.engine.feed, alert=self._vtn_alert)
        self.engine.connect_vtn(self.ven)
        self.outbox = Outbox(cfg.journal.path)
        self.outputs = build_outputs(cfg, self.engine, self.outbox, clock)
        self.api: ApiServer | None = None
        self._jobs_seen: tuple[datetime, frozenset[str]] | None = None

    async def _vtn_alert(self, code: str, message: str) -> None:
        await self.engine.out.alert("", code, message, "warning")

    async def knows_job(self, job_id: str) -> bool:
        """Whether ``job_id`` is on the cluster (for the API: an ETA from any other job is refused). The cluster
        is read again at most every ``_JOBS_SEEN_S`` seconds, so a flood of requests costs one read."""
        now = self.clock.now()
        seen = self._jobs_seen
        if seen is not None and job_id in seen[1]:
            return True
        if seen is None or now - seen[0] >= timedelta(seconds=_JOBS_SEEN_S):
            try:
                async with asyncio.timeout(self.cfg.scheduler.command_timeout_s):
                    snapshot = await self._scheduler.snapshot()
            except (AdapterError, TimeoutError) as exc:
                log.warning("cannot read the cluster to check job %s: %s", job_id, exc)
                return False
            seen = self._jobs_seen = (now, frozenset(job.job_id for job in snapshot.jobs))
        return job_id in seen[1]

    def status(self) -> dict[str, object]:
        """``GET /status``: the engine's view, whether operators paused it, and each output's state."""
        return {**self.engine.status(), "paused": self.engine.paused,
                "outputs": {name: dict(sink.stats()) for name, sink in self.outputs.items()},
                "vtn_refused": dict(self.ven.refused)}

    async def _supervise(self, name: str, sink: ServiceSink) -> None:
        """Keep an output running: an unexpected error in it is alerted and the output restarted after a
        pause (doubling to a minute), never allowed to end the gateway — the event and the jobs come first."""
        delay = 1.0
        while True:
            try:
                await sink.run()
                return
            except Exception as exc:
                log.exception("the %s output failed; restarting it in %.0f s", name, delay)
                await self.engine.out.alert("", "output_failed", f"the {name} output stopped on an unexpected error "
                                            f"({type(exc).__name__}: {exc}); restarting it in {delay:.0f} s, its messages "
                                            "wait in the outbox", "error")
            await asyncio.sleep(delay)  # wall time: a restart loop must not spin under a scaled clock
            delay = min(60.0, delay * 2)

    async def stop(self, serving: asyncio.Task[None], why: str, timeout_s: float) -> None:
        """A graceful stop of ``serving`` (this gateway's ``serve``), bounded by ``timeout_s``: the VEN first (no
        new event), then commands out at the scheduler may finish (half the time at most; one still out after
        that stays journaled ``sending``, which the next start takes as sent), then everything is cancelled:
        outputs say ``offline`` and put what they could not send in the outbox, the journal closes. One log line
        says what state it left."""
        started = time.monotonic()
        deadline = started + timeout_s
        try:
            async with asyncio.timeout(max(0.1, timeout_s * 0.25)):
                await self.ven.stop()
        except TimeoutError:
            log.warning("stopping: the VEN did not stop in time; its requests are cut off")
        try:
            async with asyncio.timeout(max(0.1, started + timeout_s * 0.5 - time.monotonic())):
                await self.engine.commands_done()
        except TimeoutError:
            pass
        cut_off = self.engine.commands_in_flight
        active = {eid: run.state.value for eid, run in self.engine.runs.items() if not run.state.terminal}
        in_force = len(self.journal.in_force())
        serving.cancel()
        try:
            async with asyncio.timeout(max(0.1, deadline - time.monotonic())):
                await asyncio.gather(serving, return_exceptions=True)
        except TimeoutError:
            log.error("stopping: outputs and journal did not close within service.stop_timeout_s (%g s)", timeout_s)
        events = ", ".join(f"{eid} {state}" for eid, state in sorted(active.items())) or "none"
        log.warning("dcflex stopped on %s in %.1f s: events active: %s; %d command(s) in force; %d cut off while out at "
                    "the scheduler (journaled as sending: the next start takes them as sent and undoes them at the "
                    "event's end); the next start resumes from %s", why, time.monotonic() - started, events, in_force,
                    cut_off, self.cfg.journal.path)

    async def serve(self) -> None:
        """Run until cancelled: outputs and engine first (it resumes the journal), then the API and
        the VEN; on the way out the outputs flush what is waiting (to their service or the outbox)."""
        try:
            async with asyncio.TaskGroup() as tg:
                for name, sink in self.outputs.items():
                    tg.create_task(self._supervise(name, sink))
                engine_task = tg.create_task(self.engine.run())
                await self.engine.wait_started()
                if self.cfg.api.enabled:
                    app = build_app(
                        status=self.status, healthy=lambda: not engine_task.done(), acks=self.acks, clock=self.clock,
                        directives=self.directives, known_job=self.knows_job,
                    )
                    self.api = ApiServer(app, self.cfg.api.host, self.cfg.api.port)
                    await self.api.__aenter__()
                    log.info("HTTP API on %s", self.api.url)
                tg.create_task(self.ven.run())
        finally:
            await self.ven.stop()
            if self.api is not None:
                await self.api.__aexit__(None, None, None)
            for sink in self.outputs.values():
                try:
                    await sink.aclose()
                except Exception:  # one output failing to close must not keep the others from flushing
                    log.exception("closing the %r output failed", sink)
            if isinstance(self._scheduler, Closeable):
                await self._scheduler.aclose()  # e.g. the Ray adapter's HTTP session
            self.outbox.close()
            self.journal.close()


async def run_gateway(cfg: DcflexConfig, *, dry_run: bool = False) -> None:
    """``dcflex run``: the long-running gateway on the wall clock, until SIGTERM or SIGINT (then ``stop``)."""
    clock = SystemClock()
    model = power_model(cfg)
    acks = CheckpointAcks()
    directives = JobDirectives(clock)
    parts = build_scheduler(cfg, clock, model, acks, directives=directives)
    gateway = Gateway(
        cfg, scheduler=parts.scheduler, meter=parts.meter, clock=clock, model=model,
        dry_run=dry_run or cfg.scheduler.dry_run, guard=parts.guarded, acks=acks, directives=directives,
    )
    loop = asyncio.get_running_loop()
    asked = asyncio.Event()
    reason: list[str] = []

    def on_signal(sig: signal.Signals) -> None:
        if not reason:
            log.info("%s received: stopping within %g s (service.stop_timeout_s)", sig.name, cfg.service.stop_timeout_s)
            _watchdog(cfg.service.stop_timeout_s + _WATCHDOG_SLACK_S, cfg.journal.path)
        reason.append(sig.name)
        asked.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    serving = asyncio.create_task(gateway.serve())
    waiting = asyncio.create_task(asked.wait())
    try:
        await asyncio.wait([serving, waiting], return_when=asyncio.FIRST_COMPLETED)
        if serving.done():
            serving.result()  # the gateway ended on its own: an error, raised here
            return
        await gateway.stop(serving, reason[0], cfg.service.stop_timeout_s)
    finally:
        waiting.cancel()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
