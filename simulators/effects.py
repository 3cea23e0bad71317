"""What an event did, computed from the gateway's own records: the figures a utility asks for.

``Recorder`` is a ``Sink`` that keeps every record the engine emits (power samples, plans,
commands, state changes). ``event_effects`` turns them into the summary: baseline, target,
achieved load over the hold window, time to target, rebound after the event, jobs touched per
tier and lost GPU-hours. ``plot_power`` draws site power against baseline and target.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from gateway.domain import Directive, Tier
from simulators.cluster import JobReport


@dataclass
class Recorder:
    """Keeps every record; ``power`` holds (time, kW, target kW or None) samples in order."""

    records: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    power: list[tuple[datetime, float, float | None]] = field(default_factory=list)

    async def emit(self, kind: str, payload: Mapping[str, object]) -> None:
        body = dict(payload)
        if kind == "power":
            target = body.get("target_kw")
            self.power.append((
                datetime.fromisoformat(str(body["at"])),
                float(body["kw"]),  # type: ignore[arg-type]
                float(target) if isinstance(target, int | float) else None,
            ))
        self.records.append((kind, body))

    def of(self, kind: str, event_id: str | None = None) -> list[dict[str, Any]]:
        return [b for k, b in self.records if k == kind and (event_id is None or b.get("event_id") == event_id)]


def _mean(values: Iterable[float]) -> float | None:
    vs = list(values)
    return sum(vs) / len(vs) if vs else None


def event_effects(
    directive: Directive,
    recorder: Recorder,
    jobs: Iterable[JobReport],
    touched_job_ids: Iterable[str],
    *,
    rebound_window: timedelta = timedelta(minutes=30),
) -> dict[str, Any]:
    """The summary of one event (the demo report's top-level figures)."""
    samples = recorder.power
    hold = [kw for t, kw, _ in samples if directive.target_by <= t < directive.end]
    after = [kw for t, kw, _ in samples if directive.end <= t < directive.end + rebound_window]
    reached = recorder.of("target_reached", directive.event_id)
    reports = {j.job_id: j for j in jobs}
    touched = sorted(set(touched_job_ids))
    per_tier = {t.value: 0 for t in Tier}
    for job_id in touched:
        if job_id in reports:
            per_tier[reports[job_id].tier.value] += 1
    target = directive.strictest_kw
    achieved = _mean(hold)
    tolerance_hits = [kw for kw in hold if target is not None and kw <= target * 1.02]
    return {
        "event_id": directive.event_id,
        "baseline_kw": round(directive.baseline_kw, 2),
        "target_kw": round(target, 2) if target is not None else None,
        "achieved_kw": round(achieved, 2) if achieved is not None else None,
        "shed_kw": round(directive.baseline_kw - achieved, 2) if achieved is not None else None,
        "target_met_pct": round(100.0 * len(tolerance_hits) / len(hold), 1) if hold else None,
        "time_to_target_s": reached[0]["time_to_target_s"] if reached else None,
        "rebound_peak_kw": round(max(after), 2) if after else None,
        "rebound_over_baseline_kw": round(max(0.0, max(after) - directive.baseline_kw), 2) if after else None,
        "lost_gpu_hours": round(sum(j.lost_gpu_hours for j in reports.values()), 3),
        "jobs_touched": per_tier,
        "critical_jobs_touched": per_tier[Tier.CRITICAL.value],
        "weighted_throughput_kept": _weighted_kept(reports.values()),
        "jobs_within_tier": all(1.0 - j.throughput_kept <= j.tier.max_loss + 1e-6 for j in reports.values()),
        "ramp_start": directive.ramp_start.isoformat(),
        "target_by": directive.target_by.isoformat(),
        "end": directive.end.isoformat(),
        "directive": directive.reason,
    }


def _weighted_kept(jobs: Iterable[JobReport]) -> float:
    js = list(jobs)
    gpus = sum(j.gpus for j in js)
    return round(sum(j.throughput_kept * j.gpus for j in js) / gpus, 4) if gpus else 1.0


def plot_power(path: Path, directive: Directive, recorder: Recorder, title: str) -> None:
    """Site power vs time, with the baseline and the target drawn; the event window shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t0 = directive.start
    xs = [(t - t0).total_seconds() / 60 for t, _, _ in recorder.power]
    ys = [kw for _, kw, _ in recorder.power]
    fig, ax = plt.subplots(figsize=(10, 4.5), dpi=110)
    ax.plot(xs, ys, color="#1f77b4", lw=1.6, label="site power (measured)")
    ax.axhline(directive.baseline_kw, color="#7f7f7f", ls="--", lw=1.2, label=f"baseline {directive.baseline_kw:.0f} kW")
    tx: list[float] = []
    ty: list[float] = []
    for s in directive.segments:
        if s.target_kw is not None:
            tx += [(s.start - t0).total_seconds() / 60, (s.end - t0).total_seconds() / 60]
            ty += [s.target_kw, s.target_kw]
    if tx:
        ax.plot(tx, ty, color="#d62728", lw=2, label="target")
    ax.axvspan((directive.ramp_start - t0).total_seconds() / 60, (directive.target_by - t0).total_seconds() / 60,
               color="#ff7f0e", alpha=0.12, label="ramp")
    ax.axvspan((directive.target_by - t0).total_seconds() / 60, (directive.end - t0).total_seconds() / 60,
               color="#d62728", alpha=0.06, label="hold")
    ax.set_xlabel("minutes from event start")
    ax.set_ylabel("kW")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
