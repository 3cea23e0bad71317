"""From a strategy's run to the figures of the report, per event and over the whole scenario.

Definitions (the same for every strategy, so the columns compare):

- **target met**: the share of hold minutes (from the time the target is due to the event's end) whose
  meter readings average at or below the target plus the tolerance; a minute with no reading takes the
  last one if it is at most 90 s old (a compressed clock's jitter), else it is missed.
- **time to target**: from the ramp start to the first reading at or below target + tolerance.
- **rebound peak**: the highest reading within the rebound window after the event's end.
- **energy shed**: ∫ (baseline − site power) from the ramp start to the event's end, in kWh; a reading
  above the baseline counts negative, so over-consumption is never hidden.
- **throughput kept**: per job, work done over its time in the measured windows (1.0: untouched); per
  tier, GPU-weighted; ``weighted_throughput`` uses the scenario's tier weights (the Phoenix field
  demonstration's by default), each job counted once.
- **within tier**: each job's loss over its whole run (before, in and after the windows, and what is
  left) at most its tier's allowance — the contract the tiers promise.
- **lost GPU-hours**, **interruptions** (pauses and checkpoint-stops sent), **critical jobs touched**
  (commands sent to a critical job: must be 0), **notice coverage** (announced kW / dropped kW), commands
  carried out and commands that failed (mostly a job that ended just before its command).
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections import defaultdict
from datetime import datetime, timedelta
from itertools import pairwise
from typing import Any

from gateway.domain import ActionKind, Directive, Tier
from simulators.replay.run import JobWindow, StrategyRun

_INTERRUPTS = (ActionKind.PAUSE, ActionKind.CHECKPOINT_STOP)
_CARRY_S = 90.0  # a minute without a reading takes the last one if it is at most this old, else it is missed


def event_figures(run: StrategyRun, d: Directive, tolerance_kw: float, rebound_s: float,
                  times: list[datetime] | None = None) -> dict[str, Any]:
    """One event's figures for one strategy (``times``: the readings' times, when the caller has them)."""
    times = [t for t, _ in run.power] if times is None else times
    lo = bisect_left(times, d.ramp_start)
    hi = bisect_right(times, max(d.end + timedelta(seconds=rebound_s), d.end + timedelta(minutes=1)))
    power = run.power[lo:hi]  # readings are in time order: only the event's span is scanned
    minutes: dict[datetime, list[float]] = defaultdict(list)
    for t, kw in power:
        if d.target_by <= t < d.end + timedelta(minutes=1):
            minutes[t.replace(second=0, microsecond=0)].append(kw)
    held = met = 0
    t = d.target_by.replace(second=0, microsecond=0)
    if t < d.target_by:
        t += timedelta(minutes=1)
    last: tuple[datetime, float] | None = None  # the latest reading before the minute
    for_minute = iter(power)
    pending = next(for_minute, None)
    while t < d.end:
        while pending is not None and pending[0] < t:
            last, pending = pending, next(for_minute, None)
        target = d.target_at(t)
        if target is not None:
            held += 1
            vals = minutes.get(t)
            if not vals and last is not None and (t - last[0]).total_seconds() <= _CARRY_S:
                vals = [last[1]]  # a reading that fell just before the minute (a jittery clock) still holds
            if vals and sum(vals) / len(vals) <= target + tolerance_kw:
                met += 1
        t += timedelta(minutes=1)
    after = [kw for t, kw in power if d.end <= t < d.end + timedelta(seconds=rebound_s)]
    energy = _energy_shed(power, d)
    hold = [kw for t, kw in power if d.target_by <= t < d.end]
    return {
        "event_id": d.event_id,
        "state": run.states.get(d.event_id),
        "baseline_kw": round(d.baseline_kw, 3),
        "target_kw": None if d.strictest_kw is None else round(d.strictest_kw, 3),
        "economic": d.economic,
        "ramp_start": d.ramp_start.isoformat(),
        "target_by": d.target_by.isoformat(),
        "end": d.end.isoformat(),
        "hold_minutes": held,
        "met_minutes": met,
        "target_met_pct": round(100.0 * met / held, 2) if held else None,
        "time_to_target_s": run.reached.get(d.event_id),
        "mean_hold_kw": round(sum(hold) / len(hold), 3) if hold else None,
        "rebound_peak_kw": round(max(after), 3) if after else None,
        "energy_shed_kwh": round(energy, 4),
    }


def _energy_shed(power: list[tuple[datetime, float]], d: Directive) -> float:
    """Trapezoids between readings from the ramp start to the end, clipped to that span."""
    pts = [(t, kw) for t, kw in power if d.ramp_start <= t <= d.end]
    total = 0.0
    for (t0, k0), (t1, k1) in pairwise(pts):
        h = (t1 - t0).total_seconds() / 3600.0
        total += h * (d.baseline_kw - (k0 + k1) / 2.0)
    return total


def strategy_figures(run: StrategyRun, tolerance_kw: float, rebound_s: float) -> dict[str, Any]:
    """The report's object for one strategy: the required keys first, then the detail."""
    times = [t for t, _ in run.power]
    events = [event_figures(run, d, tolerance_kw, rebound_s, times)
              for d in sorted(run.directives.values(), key=lambda d: d.ramp_start)]
    held = sum(e["hold_minutes"] for e in events)
    met = sum(e["met_minutes"] for e in events)
    ttt = [e["time_to_target_s"] for e in events if e["time_to_target_s"] is not None]
    rebound = [e["rebound_peak_kw"] for e in events if e["rebound_peak_kw"] is not None]
    jobs = {jid: w for jid, w in run.jobs.items() if w.run_s > 0}
    tiers = {jid: w.tier for jid, w in run.jobs.items()}
    critical_touched = sorted({c.job_id for c in run.commands if c.job_id and tiers.get(c.job_id) is Tier.CRITICAL})
    interruptions = sum(1 for c in run.commands if c.kind in _INTERRUPTS)
    dropped = sum(float(b.get("kw") or 0.0) for b in run.drops)
    covered = sum(float(b.get("kw") or 0.0) for b in run.drops if b.get("covered"))
    outside = sorted(jid for jid, w in run.jobs.items() if not w.within_tier)
    return {
        "target_met_pct": round(100.0 * met / held, 2) if held else None,
        "time_to_target_s": round(sum(ttt) / len(ttt), 1) if ttt else None,
        "rebound_peak_kw": round(max(rebound), 3) if rebound else None,
        "weighted_throughput": round(weighted(jobs.values()), 5),
        "jobs_within_tier": not outside,
        "lost_gpu_hours": round(sum(w.lost_gpu_hours for w in jobs.values()), 3),
        "critical_jobs_touched": len(critical_touched),
        "energy_shed_kwh": round(sum(e["energy_shed_kwh"] for e in events), 4),
        "interruptions": interruptions,
        "commands": len(run.commands),
        "commands_failed": sum(1 for d in run.decisions if d.state == "failed"),
        "notice_coverage": round(covered / dropped, 4) if dropped > 0 else None,
        "events_met_fully": sum(1 for e in events if e["target_met_pct"] == 100.0),
        "hold_minutes": held,
        "met_minutes": met,
        "time_to_target_max_s": max(ttt) if ttt else None,
        "jobs_outside_tier": outside,
        "critical_job_ids": critical_touched,
        "throughput_by_tier": by_tier(jobs.values()),
        "jobs": {jid: {"tier": w.tier.value, "gpus": w.gpus, "weight": w.weight, "kept": round(w.kept, 5),
                       "lost_gpu_hours": round(w.lost_gpu_hours, 4), "within_tier": w.within_tier}
                 for jid, w in sorted(jobs.items())} if len(jobs) <= 200 else {},
        "jobs_counted": len(jobs),
        "events": events,
        "wall_s": round(run.wall_s, 3),
        "simulated_s_per_wall_s": round(run.simulated_s / run.wall_s, 1) if run.wall_s > 0 else None,
    }


def weighted(jobs: Any) -> float:
    """Σ weight × kept / Σ weight (1.0 with no weight at all)."""
    js: list[JobWindow] = list(jobs)
    total = math.fsum(w.weight for w in js)
    return math.fsum(w.weight * w.kept for w in js) / total if total > 0 else 1.0


def by_tier(jobs: Any) -> dict[str, float | None]:
    """GPU-time-weighted throughput kept per tier (None: no job of the tier ran)."""
    done: dict[Tier, float] = defaultdict(float)
    ran: dict[Tier, float] = defaultdict(float)
    for w in jobs:
        done[w.tier] += w.done_s * w.gpus
        ran[w.tier] += w.run_s * w.gpus
    return {t.value: (round(min(1.0, done[t] / ran[t]), 5) if ran[t] > 0 else None) for t in Tier}
