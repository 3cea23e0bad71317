"""The replay report: a table on the terminal, the JSON file, and two PNG plots.

JSON (``--out FILE``): ``scenario`` (what ran), ``strategies`` keyed by strategy name (``dcflex`` is the
planner; see ``simulators.replay.metrics`` for every figure), ``checks`` (the report's own consistency:
identical job streams, energy adding up, no critical job touched) and ``wall_s``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from gateway.domain import Tier
from simulators.replay.run import StrategyRun

_ROWS: tuple[tuple[str, str, str], ...] = (
    ("target_met_pct", "target met (% of hold minutes)", "{:.1f}"),
    ("time_to_target_s", "time to target (mean, min)", "min"),
    ("rebound_peak_kw", "rebound peak (kW)", "{:,.1f}"),
    ("energy_shed_kwh", "energy shed (kWh)", "{:,.1f}"),
    ("weighted_throughput", "weighted throughput kept", "{:.4f}"),
    ("jobs_within_tier", "every job within its tier", "yesno"),
    ("lost_gpu_hours", "lost GPU-hours", "{:,.1f}"),
    ("interruptions", "interruptions (pauses, stops)", "{:d}"),
    ("critical_jobs_touched", "critical jobs touched", "{:d}"),
    ("notice_coverage", "notice coverage", "{:.2f}"),
)


def _cell(value: object, fmt: str) -> str:
    if value is None:
        return "—"
    if fmt == "yesno":
        return "yes" if value else "NO"
    if fmt == "min":
        return f"{float(value) / 60:.1f}"  # type: ignore[arg-type]
    return fmt.format(value)


def render(report: Mapping[str, Any], console: Console) -> None:
    """The comparison table, one column per strategy, then the per-tier throughput."""
    strategies: Mapping[str, Mapping[str, Any]] = report["strategies"]
    s = report["scenario"]
    table = Table(title=f"replay {s['name']} ({s['mode']} mode): {s['events']} event(s), {s['jobs']} job(s)")
    table.add_column("figure")
    for name in strategies:
        table.add_column(name, justify="right")
    for key, label, fmt in _ROWS:
        table.add_row(label, *(_cell(f.get(key), fmt) for f in strategies.values()))
    for tier in Tier:
        vals = [f["throughput_by_tier"].get(tier.value) for f in strategies.values()]
        if any(v is not None for v in vals):
            table.add_row(f"throughput kept, {tier.value}", *(_cell(v, "{:.4f}") for v in vals))
    console.print(table)
    for name, f in strategies.items():
        if f["jobs_outside_tier"]:
            shown = ", ".join(f["jobs_outside_tier"][:8]) + (" ..." if len(f["jobs_outside_tier"]) > 8 else "")
            console.print(f"[yellow]{name}[/]: {len(f['jobs_outside_tier'])} job(s) outside their tier: {shown}")
    bad = [c for c, ok in report["checks"].items() if ok is False]
    if bad:
        console.print(f"[red]consistency checks failed:[/] {', '.join(bad)}")


def plot_power(path: Path, runs: Mapping[str, StrategyRun], event_ids: list[str], title: str) -> None:
    """Site power against the target, one panel per event shown, one line per strategy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = event_ids or [""]
    fig, axes = plt.subplots(len(panels), 1, figsize=(11, 3.6 * len(panels)), dpi=100, squeeze=False)
    first = next(iter(runs.values()))
    for ax, eid in zip(axes[:, 0], panels, strict=True):
        d = first.directives.get(eid)
        lo = d.ramp_start - timedelta(minutes=60) if d else None
        hi = d.recovery_end + timedelta(minutes=60) if d else None
        t0 = d.start if d else None
        for name, run in runs.items():
            pts = [(t, kw) for t, kw in run.power if lo is None or (lo <= t <= hi)]  # type: ignore[operator]
            if not pts:
                continue
            ref = t0 or pts[0][0]
            ax.plot([(t - ref).total_seconds() / 60 for t, _ in pts], [kw for _, kw in pts], lw=1.4, label=name)
        if d is not None and t0 is not None:
            for seg in d.segments:
                if seg.target_kw is not None:
                    ax.plot([(seg.start - t0).total_seconds() / 60, (seg.end - t0).total_seconds() / 60],
                            [seg.target_kw, seg.target_kw], color="black", lw=2, ls="--", label="target")
            ax.axhline(d.baseline_kw, color="#7f7f7f", lw=1, ls=":", label=f"baseline {d.baseline_kw:,.0f} kW")
            ax.axvspan((d.ramp_start - t0).total_seconds() / 60, (d.target_by - t0).total_seconds() / 60,
                       color="#ff7f0e", alpha=0.12)
            ax.set_title(f"event {eid}", fontsize=9)
            ax.set_xlabel("minutes from event start")
        ax.set_ylabel("site kW")
        ax.grid(alpha=0.3)
        handles, labels = ax.get_legend_handles_labels()
        seen: dict[str, Any] = {}
        for h, lab in zip(handles, labels, strict=True):
            seen.setdefault(lab, h)
        ax.legend(seen.values(), seen.keys(), fontsize=7, loc="lower left")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_tiers(path: Path, strategies: Mapping[str, Mapping[str, Any]], title: str) -> None:
    """Throughput kept per tier, one bar per strategy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tiers = [t.value for t in Tier if any(f["throughput_by_tier"].get(t.value) is not None for f in strategies.values())]
    fig, ax = plt.subplots(figsize=(9, 4), dpi=100)
    width = 0.8 / max(1, len(strategies))
    for i, (name, f) in enumerate(strategies.items()):
        vals = [f["throughput_by_tier"].get(t) or 0.0 for t in tiers]
        ax.bar([x + i * width for x in range(len(tiers))], vals, width, label=name)
    for x, t in enumerate(tiers):
        floor = 1.0 - Tier(t).max_loss
        ax.plot([x - width / 2, x + width * len(strategies) - width / 2], [floor, floor], color="black", lw=1, ls="--")
    ax.set_xticks([x + width * (len(strategies) - 1) / 2 for x in range(len(tiers))], tiers)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("throughput kept (dashed: the tier's floor)")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


