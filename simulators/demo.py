"""``dcflex demo``: the whole loop in one process on embedded defaults.

A local OpenADR 2.0b VTN (openleadr, real HTTP on loopback) issues a scripted event to the
gateway's VEN; the gateway plans and acts on a simulated cluster of 64 nodes / 512 GPUs; time is
compressed by a scaled clock, so a two-hour window takes about half a minute while every protocol
exchange is real. Prints a timeline and a summary; writes ``demo-report.json`` and
``demo-report.png``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Table

from gateway.app import Gateway, power_model
from gateway.clock import ScaledClock
from gateway.config import DcflexConfig
from simulators.cluster import SimulatedCluster
from simulators.effects import Recorder, event_effects, plot_power
from simulators.timeline import Timeline
from simulators.vtn import ScriptedVtn
from simulators.workloads import demo_arrivals, demo_mix

VEN_ID = "dcflex-demo"
LEAD = timedelta(minutes=20)      # event announced this long before it starts
DURATION = timedelta(hours=1)
RAMP = timedelta(minutes=10)      # x-eiRampUp: load may start falling this long before the start
RECOVERY = timedelta(minutes=30)  # x-eiRecovery
AFTER = timedelta(minutes=40)     # watched after the end, for the rebound
ARRIVALS_PER_HOUR = 10.0          # new jobs backfill what finishes, as on a busy cluster
FILL = 0.97                       # share of the GPUs busy when the demo starts
SHED_PCT = 25.0                   # LOAD_CONTROL x-loadControlPercentOffset, as in the Phoenix event


@dataclass(frozen=True, slots=True)
class DemoOptions:
    out_dir: Path = Path(".")
    speed: float = 300.0
    quiet: bool = False
    seed: int = 7


def demo_config(vtn_url: str, journal: Path) -> DcflexConfig:
    """The embedded defaults, pointed at the local VTN, with a throw-away journal."""
    return DcflexConfig.model_validate({
        "ven": {"vtn_url": vtn_url, "ven_name": "dcflex-demo", "ven_id": VEN_ID, "poll_interval_s": 0.5},
        "site": {"site_id": "demo", "nodes": 64, "gpus_per_node": 8, "ramp_rate_kw_per_min": 15.0, "baseline_minutes": 15},
        "policy": {"replan_interval_s": 60.0, "replan_drift_kw": 6.0, "tolerance_kw": 2.0},
        "journal": {"path": str(journal)},
        "api": {"enabled": True, "port": 0},
    })


async def run_demo(opts: DemoOptions) -> dict[str, Any]:
    console = Console(quiet=opts.quiet, highlight=False)
    start = datetime.now(UTC).replace(microsecond=0)
    clock = ScaledClock(start, opts.speed)
    recorder = Recorder()
    with tempfile.TemporaryDirectory(prefix="dcflex-demo-") as tmp:
        async with ScriptedVtn(poll_interval_s=0.5) as vtn:
            cfg = demo_config(vtn.vtn_url, Path(tmp) / "journal.sqlite3")
            model = power_model(cfg)
            cluster = SimulatedCluster(
                clock, model, cfg.site.nodes, cfg.site.gpus_per_node, demo_mix(opts.seed, fill=FILL),
                seed=opts.seed, noise_kw=0.3, arrivals=demo_arrivals(ARRIVALS_PER_HOUR),
            )
            timeline = Timeline(console, clock, start)
            gateway = Gateway(cfg, scheduler=cluster, meter=cluster, clock=clock, model=model,
                              sinks=[recorder, timeline], sample_interval_s=30.0)
            serving = asyncio.create_task(gateway.serve())
            try:
                event_start = clock.now() + LEAD
                end = event_start + DURATION
                await wait_registered(gateway, serving)
                event_id = vtn.add_event(
                    ven_id=VEN_ID, signal_name="LOAD_CONTROL", signal_type="x-loadControlPercentOffset",
                    intervals=[(DURATION, SHED_PCT)], start=event_start, ramp=RAMP, recovery=RECOVERY,
                )
                timeline.note(f"VTN issues event {event_id}: LOAD_CONTROL -{SHED_PCT:g}% for {DURATION}, "
                              f"starting {event_start:%H:%M:%S} (ramp {RAMP}, recovery {RECOVERY})")
                await _run_until(clock, end + AFTER, console, serving, opts.quiet)
                record = gateway.journal.event(event_id)
                if record is None or record.directive is None:
                    raise RuntimeError(f"the gateway did not accept event {event_id}: {record}")
                directive = record.directive
                touched = {c.job_id for c in cluster.commands if c.job_id}
                report = event_effects(directive, recorder, cluster.job_throughput_report(), touched)
                report["state"] = record.state.value
                report["commands_sent"] = len(cluster.commands)
                report["opt_responses"] = [list(r) for r in vtn.responses]
                report["timeline"] = timeline.lines
            finally:
                serving.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await serving
    opts.out_dir.mkdir(parents=True, exist_ok=True)
    (opts.out_dir / "demo-report.json").write_text(json.dumps(report, indent=2))
    plot_power(opts.out_dir / "demo-report.png", directive, recorder,
               f"dcflex demo: LOAD_CONTROL -{SHED_PCT:g}% on 512 simulated A100 GPUs")
    _summary(Console(highlight=False), report, opts.out_dir)
    return report


async def wait_registered(gateway: Gateway, serving: asyncio.Task[None], timeout_s: float = 10.0) -> None:
    """Until the gateway's VEN has registered with the local VTN (the gateway's failure, if it stopped)."""
    for _ in range(int(timeout_s / 0.05)):
        if gateway.ven.registration_id:
            return
        if serving.done():
            serving.result()
        await asyncio.sleep(0.05)
    raise RuntimeError(f"the VEN did not register with the local VTN within {timeout_s:g} s")


async def _run_until(clock: ScaledClock, until: datetime, console: Console, serving: asyncio.Task[None],
                     quiet: bool) -> None:
    total = (until - clock.now()).total_seconds()
    t0 = clock.now()
    with Progress(TextColumn("[bold]simulated time[/] {task.fields[now]}"), BarColumn(),
                  TextColumn("{task.percentage:>3.0f}%"), console=console, transient=True, disable=quiet) as bar:
        task = bar.add_task("demo", total=total, now="")
        while clock.now() < until:
            if serving.done():
                serving.result()
            elapsed = (clock.now() - t0).total_seconds()
            bar.update(task, completed=min(elapsed, total), now=f"{clock.now():%H:%M:%S}")
            await asyncio.sleep(0.1)


def _summary(console: Console, r: dict[str, Any], out_dir: Path) -> None:
    table = Table(title="dcflex demo: event summary", show_header=False)
    table.add_column("figure")
    table.add_column("value", justify="right")

    def kw(v: float | None) -> str:
        return "—" if v is None else f"{v:,.1f} kW"

    table.add_row("baseline", kw(r["baseline_kw"]))
    table.add_row("target", kw(r["target_kw"]))
    table.add_row("achieved (mean over hold)", kw(r["achieved_kw"]))
    table.add_row("time to target", "—" if r["time_to_target_s"] is None else f"{r['time_to_target_s'] / 60:.1f} min")
    table.add_row("rebound peak after the event", kw(r["rebound_peak_kw"]))
    table.add_row("lost GPU-hours", f"{r['lost_gpu_hours']:.2f}")
    table.add_row("jobs touched per tier", ", ".join(f"{k} {v}" for k, v in r["jobs_touched"].items()))
    table.add_row("critical jobs touched", str(r["critical_jobs_touched"]))
    table.add_row("jobs within their tier", "yes" if r["jobs_within_tier"] else "NO")
    table.add_row("final state", r["state"])
    console.print(table)
    console.print(f"wrote {out_dir / 'demo-report.json'} and {out_dir / 'demo-report.png'}")
