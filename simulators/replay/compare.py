"""``dcflex replay``: every strategy of a scenario on the same job stream, and the report that compares them.

The job stream is built once from the scenario's seed and handed to each strategy's run, one after the
other (each run owns its clock, cluster and journal); the report's ``checks`` then verify what the
comparison rests on: identical job streams, energy that adds up, no critical job touched, every
event's commands undone.
"""

from __future__ import annotations

import asyncio
import json
import logging
import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from simulators.replay.jobs import JobStream, job_stream
from simulators.replay.metrics import strategy_figures
from simulators.replay.report import plot_power, plot_tiers, render
from simulators.replay.run import StrategyRun, run_fast
from simulators.replay.scenario import LoadedScenario

_UNDONE_OK = ("undone", "failed", "dry-run")  # a failed shed command changed nothing to undo


@dataclass(frozen=True, slots=True)
class ReplayOptions:
    mode: str | None = None  # None: the scenario's own
    strategies: tuple[str, ...] = ()  # empty: the scenario's own
    out: Path | None = None
    plots_dir: Path | None = None
    quiet: bool = False
    speed: float | None = None  # protocol mode's compression (None: the scenario's)
    workers: int | None = None  # fast mode: strategies run in this many processes (None: one per CPU; 1: here)


async def _in_processes(scn: LoadedScenario, names: Sequence[str], workers: int,
                        tick: Callable[[str, float], None]) -> dict[str, StrategyRun]:
    """Fast mode's strategies side by side, one process each (they share nothing but the scenario, and each
    rebuilds the same job stream from its seed); progress comes back through a manager's shared values."""
    loop = asyncio.get_running_loop()
    ctx = multiprocessing.get_context("spawn")  # a fork would inherit this process's running event loop
    with ctx.Manager() as manager, ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        shares = {n: manager.Value("d", 0.0) for n in names}
        futures = {n: loop.run_in_executor(pool, _fast_in_process, scn, n, shares[n]) for n in names}
        pending = set(futures.values())
        while pending:
            _, pending = await asyncio.wait(pending, timeout=0.25)
            for n, share in shares.items():
                tick(n, share.value)
        return {n: f.result() for n, f in futures.items()}


def _fast_in_process(scn: LoadedScenario, strategy: str, share: Any) -> StrategyRun:
    """One strategy's fast run in a worker process."""
    logging.getLogger("dcflex").setLevel(logging.CRITICAL)  # the report counts what the engine would log

    def tick(_: str, done: float) -> None:
        share.value = done

    return asyncio.run(run_fast(scn, job_stream(scn), strategy, tick))


def limited(scn: LoadedScenario, hours: float | None = None, events: int | None = None) -> LoadedScenario:
    """The scenario cut short: its first ``events`` events and/or its first ``hours`` (events that do not fit
    are left out); generated events are drawn first, so the cut keeps exactly those the full run has."""
    evs = scn.events()
    spec = scn.spec
    end = spec.end if hours is None else min(spec.end, spec.start + timedelta(hours=hours))
    if events is not None:
        evs = evs[:events]
    evs = [e for e in evs if e.end + timedelta(minutes=e.recovery_min) <= end]
    meta = spec.scenario.model_copy(update={"hours": (end - spec.start).total_seconds() / 3600.0})
    cut = spec.model_copy(update={"scenario": meta, "events": tuple(evs), "events_generator": None})
    return replace(scn, spec=cut)


async def replay(scn: LoadedScenario, opts: ReplayOptions, console: Console | None = None) -> dict[str, Any]:
    """Run every strategy and build the report (written and plotted as ``opts`` says)."""
    console = console or Console(quiet=opts.quiet, highlight=False)
    mode = opts.mode or scn.spec.scenario.mode
    names = opts.strategies or scn.spec.scenario.strategies
    stream = job_stream(scn)
    runs: dict[str, StrategyRun] = {}
    workers = opts.workers if opts.workers is not None else min(len(names), os.cpu_count() or 1)
    with Progress(TextColumn("[bold]{task.description:<12}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                  TimeElapsedColumn(), console=console, transient=True, disable=opts.quiet) as bar:
        tasks: dict[str, TaskID] = {n: bar.add_task(n, total=1.0) for n in names}

        def tick(name: str, done: float) -> None:
            bar.update(tasks[name], completed=done)

        if mode == "fast" and workers > 1 and len(names) > 1:
            runs = await _in_processes(scn, names, workers, tick)
        for name in names:
            if name in runs:
                pass
            elif mode == "protocol":
                from simulators.replay.protocol import run_protocol

                runs[name] = await run_protocol(scn, stream, name, tick, speed=opts.speed)
            else:
                runs[name] = await run_fast(scn, stream, name, tick)
            bar.update(tasks[name], completed=1.0)
    runs = {n: runs[n] for n in names}
    report = build(scn, stream, runs, mode)
    render(report, console)
    if opts.out is not None:
        opts.out.parent.mkdir(parents=True, exist_ok=True)
        opts.out.write_text(json.dumps(report, indent=2) + "\n")
        console.print(f"written: {opts.out}")
    if opts.plots_dir is not None:
        written = plots(scn, runs, report, opts.plots_dir)
        console.print(f"written: {', '.join(str(p) for p in written)}")
    return report


def build(scn: LoadedScenario, stream: JobStream, runs: dict[str, StrategyRun], mode: str) -> dict[str, Any]:
    """The report as a JSON-able dict."""
    spec = scn.spec
    tol = spec.report.tolerance_kw if spec.report.tolerance_kw is not None else scn.gateway.policy.tolerance_kw
    rebound_s = spec.report.rebound_window_min * 60.0
    strategies = {name: strategy_figures(run, tol, rebound_s) for name, run in runs.items()}
    return {
        "scenario": {
            "name": scn.name, "description": spec.scenario.description, "source": scn.source, "mode": mode,
            "seed": spec.scenario.seed, "start": spec.start.isoformat(), "end": spec.end.isoformat(),
            "events": len(scn.events()), "jobs": max([len(stream), *(len(r.jobs) for r in runs.values())]),
            "site_gpus": spec.site.gpus,
            "tolerance_kw": tol, "episodes": spec.scenario.episodes,
        },
        "strategies": strategies,
        "checks": checks(runs, strategies),
        "wall_s": round(sum(r.wall_s for r in runs.values()), 3),
    }


def checks(runs: dict[str, StrategyRun], figures: dict[str, dict[str, Any]]) -> dict[str, bool]:
    """What makes the comparison fair and the figures trustworthy (each True when it holds)."""
    streams = {name: frozenset((w.job_id, w.tier, w.gpus) for w in r.jobs.values()) for name, r in runs.items()}
    same = len(set(streams.values())) <= 1
    energy = all(
        abs(sum(e["energy_shed_kwh"] for e in f["events"]) - f["energy_shed_kwh"]) < 1e-3 * max(1, len(f["events"]))
        and all(e["energy_shed_kwh"] <= e["baseline_kw"] * _span_h(e) + 1e-6 for e in f["events"])
        for f in figures.values()
    )
    restored = all(
        all(d.state in _UNDONE_OK for d in r.decisions if d.kind.sheds)
        for r in runs.values()
    )
    return {
        "same_job_stream": same,
        "energy_adds_up": energy,
        "no_critical_job_touched": all(f["critical_jobs_touched"] == 0 for f in figures.values()),
        "every_command_undone": restored,
    }


def _span_h(e: dict[str, Any]) -> float:
    return (datetime.fromisoformat(e["end"]) - datetime.fromisoformat(e["ramp_start"])).total_seconds() / 3600.0


def plots(scn: LoadedScenario, runs: dict[str, StrategyRun], report: dict[str, Any], out_dir: Path) -> Sequence[Path]:
    """``<name>-power.png`` (the first event and the deepest ask, at most three panels) and ``<name>-tiers.png``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    first = next(iter(runs.values()))
    ds = sorted(first.directives.values(), key=lambda d: d.ramp_start)
    shown = [d.event_id for d in ds[:2]]
    deepest = max(ds, key=lambda d: d.baseline_kw - (d.strictest_kw or d.baseline_kw), default=None)
    if deepest is not None and deepest.event_id not in shown:
        shown.append(deepest.event_id)
    power = out_dir / f"{scn.name}-power.png"
    tiers = out_dir / f"{scn.name}-tiers.png"
    plot_power(power, runs, shown, f"{scn.name}: site power vs target per strategy")
    plot_tiers(tiers, report["strategies"], f"{scn.name}: throughput kept per tier")
    return power, tiers
