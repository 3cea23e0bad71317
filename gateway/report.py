"""``dcflex report EVENT_ID``: what an event asked, what the site delivered minute by minute, and
what it cost the jobs — from the journal alone, so it works after the fact and offline.

- **Asked**: the directive (each segment's target, the ramp and recovery windows, the baseline and
  how it was measured, the modification followed).
- **Delivered**: per minute from the ramp start to the end of recovery, the mean measured site power
  (the journal's per-minute power log), the baseline (flat, or the X-of-Y-days profile when that is
  the site's method and the history is there), the target, and shed = baseline − actual.
- **Compliance**: the share of the hold's minutes (target time to end) within ``tolerance_kw`` of
  the target or below it. A hold minute with no reading counts as missed and is listed, so a gap
  in the record never flatters the figure.
- **Impact**: the jobs' ``impact`` records (throughput kept, lost GPU-hours), summed per tier.
- **Notices**: the drops the meter saw from the ramp start to the end of recovery (``drop_observed``)
  and the share of their kW announced at least the shortest lead time ahead (notice coverage).
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from typing import Any

from gateway.config import SiteConfig
from gateway.exceptions import DcflexError
from gateway.journal import Journal
from gateway.power.baseline import x_of_y_days

__all__ = ["build_report", "render"]


def build_report(journal: Journal, event_id: str, site: SiteConfig, tolerance_kw: float) -> dict[str, Any]:
    """The report as a JSON-able dict (``render`` makes the terminal table of it)."""
    rec = journal.event(event_id)
    if rec is None:
        known = ", ".join(r.event_id for r in journal.events()[-10:]) or "none"
        raise DcflexError(f"no event {event_id!r} in the journal at {journal.path} (latest known: {known})")
    d = rec.directive
    if d is None:
        return {"event_id": event_id, "state": rec.state.value, "opt_in": rec.opt_in, "reason": rec.reason,
                "asked": None, "minutes": [], "compliance_pct": None, "impact": _impact(journal, event_id)}
    logged = journal.log_entries(event_id, ("baseline",))
    basis: dict[str, Any] = logged[-1][3] if logged else {}
    profile = None
    if site.baseline_method == "x-of-y-days":
        skip = {r.directive.start.date() for r in journal.events() if r.directive is not None}
        profile = x_of_y_days(journal.power.minutes, d.start, d.end, site.baseline_x_days, site.baseline_y_days, skip)
    rows = []
    missed: list[str] = []
    held = met = 0
    asked_kwh = delivered_kwh = 0.0
    recorded = {t: (kw, target) for t, kw, target in journal.power.minutes(d.ramp_start, d.recovery_end)}
    t = d.ramp_start.replace(second=0, microsecond=0)
    while t < d.recovery_end:
        target = d.target_at(t)
        base = profile.at(int((t - d.start).total_seconds() // 60)) if profile and d.start <= t < d.end else d.baseline_kw
        kw = recorded.get(t, (None, None))[0]
        in_hold = d.target_by <= t < d.end
        ok = None
        if in_hold and target is not None:
            held += 1
            ok = kw is not None and kw <= target + tolerance_kw
            met += bool(ok)
            if kw is None:
                missed.append(t.isoformat())
            asked_kwh += max(0.0, base - target) / 60.0
            if kw is not None:
                delivered_kwh += max(0.0, base - kw) / 60.0
        rows.append({"minute": t.isoformat(), "actual_kw": _r(kw), "baseline_kw": _r(base), "target_kw": _r(target),
                     "shed_kw": _r(None if kw is None else base - kw), "in_hold": in_hold, "met": ok})
        t += timedelta(minutes=1)
    actions = Counter(str(b.get("kind")) for _, _, _, b in journal.log_entries(event_id, ("action",))
                      if b.get("outcome") == "done")
    alerts = Counter(str(b.get("code")) for _, _, _, b in journal.log_entries(event_id, ("alert",)))
    return {
        "event_id": event_id,
        "state": rec.state.value,
        "opt_in": rec.opt_in,
        "reason": rec.reason,
        "asked": {
            "modification": d.modification,
            "ramp_start": d.ramp_start.isoformat(), "target_by": d.target_by.isoformat(),
            "end": d.end.isoformat(), "recovery_end": d.recovery_end.isoformat(),
            "segments": [{"start": s.start.isoformat(), "end": s.end.isoformat(), "target_kw": _r(s.target_kw),
                          "price_per_mwh": s.price_per_mwh} for s in d.segments],
            "baseline_kw": _r(d.baseline_kw),
            "baseline_basis": profile.basis if profile else basis.get("basis", "not recorded"),
            "reason": d.reason,
        },
        "hold_minutes": held,
        "hold_minutes_met": met,
        "hold_minutes_without_reading": missed,
        "compliance_pct": round(100.0 * met / held, 1) if held else None,
        "asked_kwh": round(asked_kwh, 3),
        "delivered_kwh": round(delivered_kwh, 3),
        "commands_done": dict(actions),
        "alerts": dict(alerts),
        "impact": _impact(journal, event_id),
        "notices": _notices(journal, d.ramp_start, d.recovery_end),
        "minutes": rows,
    }


def _notices(journal: Journal, start: datetime, end: datetime) -> dict[str, Any]:
    drops = [b for at, _, _, b in journal.log_entries(None, ("drop_observed",))
             if start <= datetime.fromisoformat(at) <= end]
    total = sum(float(b.get("kw") or 0.0) for b in drops)
    covered = sum(float(b.get("kw") or 0.0) for b in drops if b.get("covered"))
    return {"drops": len(drops), "dropped_kw": round(total, 3), "announced_kw": round(covered, 3),
            "coverage": round(covered / total, 4) if total > 0 else None,
            "unannounced": [b for b in drops if not b.get("notice_id")]}


def _impact(journal: Journal, event_id: str) -> dict[str, Any]:
    jobs = [b for _, _, _, b in journal.log_entries(event_id, ("impact",))]
    tiers: dict[str, dict[str, float]] = {}
    for j in jobs:
        t = tiers.setdefault(str(j.get("tier")), {"jobs": 0, "lost_gpu_hours": 0.0, "throughput_kept_sum": 0.0})
        t["jobs"] += 1
        t["lost_gpu_hours"] += float(j.get("lost_gpu_hours") or 0.0)
        t["throughput_kept_sum"] += float(j.get("throughput_kept") or 0.0)
    per_tier = {name: {"jobs": int(t["jobs"]), "lost_gpu_hours": round(t["lost_gpu_hours"], 3),
                       "mean_throughput_kept": round(t["throughput_kept_sum"] / t["jobs"], 4)}
                for name, t in sorted(tiers.items())}
    return {"jobs": jobs, "per_tier": per_tier,
            "lost_gpu_hours": round(sum(float(j.get("lost_gpu_hours") or 0.0) for j in jobs), 3)}


def render(report: dict[str, Any]) -> str:
    """A terminal summary: what was asked, compliance, energy, impact per tier, then the minutes."""
    lines = [f"event {report['event_id']}: {report['state']} ({'opted in' if report['opt_in'] else 'opted out'}: "
             f"{report['reason']})"]
    asked = report.get("asked")
    if not asked:
        return "\n".join([*lines, "no directive: the gateway did not take part"])
    lines.append(f"asked: baseline {asked['baseline_kw']} kW ({asked['baseline_basis']})")
    for s in asked["segments"]:
        lines.append(f"  {s['start']} → {s['end']}: target {s['target_kw']} kW")
    pct = report["compliance_pct"]
    lines.append(f"delivered: {report['hold_minutes_met']} of {report['hold_minutes']} hold minutes at or below target"
                 f" ({'n/a' if pct is None else f'{pct}%'}); shed {report['delivered_kwh']} kWh of "
                 f"{report['asked_kwh']} kWh asked")
    if report["hold_minutes_without_reading"]:
        lines.append(f"  {len(report['hold_minutes_without_reading'])} hold minute(s) without a reading (counted as missed)")
    impact = report["impact"]
    lines.append(f"impact: {len(impact['jobs'])} job(s), {impact['lost_gpu_hours']} GPU-hours lost")
    for tier, t in impact["per_tier"].items():
        lines.append(f"  {tier:<12} {t['jobs']:>4} job(s)  kept {t['mean_throughput_kept']:.1%}  "
                     f"lost {t['lost_gpu_hours']} GPU-h")
    notices = report.get("notices")
    if notices:
        cover = "n/a" if notices["coverage"] is None else f"{notices['coverage']:.0%}"
        lines.append(f"notices: {notices['drops']} drop(s) of {notices['dropped_kw']} kW measured, {cover} of it announced "
                     f"ahead; {len(notices['unannounced'])} unannounced")
    lines.append(f"{'minute':<26} {'actual kW':>10} {'baseline':>10} {'target':>10} {'shed':>10}  met")
    for m in report["minutes"]:
        met = "" if m["met"] is None else ("yes" if m["met"] else "NO")
        lines.append(f"{m['minute']:<26} {_f(m['actual_kw'])} {_f(m['baseline_kw'])} {_f(m['target_kw'])} "
                     f"{_f(m['shed_kw'])}  {met}")
    return "\n".join(lines)


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 3)


def _f(v: float | None) -> str:
    return f"{'-':>10}" if v is None else f"{v:>10.1f}"

