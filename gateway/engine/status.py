"""Read-only views of the engine: ``GET /status`` and the facts of a plan, for operators and sinks."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.domain import ActionKind, Plan

if TYPE_CHECKING:
    from gateway.engine.engine import Engine


def status_of(engine: Engine) -> dict[str, object]:
    now = engine.clock.now()
    latest = engine.history.latest
    events = []
    for rec in engine.journal.events():
        actions = engine.journal.actions(rec.event_id)
        run = engine.runs.get(rec.event_id)
        d = rec.directive
        events.append({
            "event_id": rec.event_id,
            "modification": rec.modification,
            "state": rec.state.value,
            "opt_in": rec.opt_in,
            "reason": rec.reason,
            "baseline_kw": d.baseline_kw if d else None,
            "target_kw": d.strictest_kw if d else None,
            "start": d.start.isoformat() if d else None,
            "end": d.end.isoformat() if d else None,
            "planned_actions": [a.key for a in run.pending] if run else [],
            "done_actions": [r.action.key for r in actions if r.state == "done"],
            "failed_actions": [r.action.key for r in actions if r.state == "failed"],
            "shortfall_kw": run.shortfall_kw if run else None,
            "notice_coverage": engine.notices.coverage(now, rec.event_id),
        })
    return {
        "now": now.isoformat(),
        "site_kw": latest[1] if latest else None,
        "target_kw": engine.effective_target(now),
        "dry_run": engine.settings.dry_run,
        "events": events,
        "notices": {
            "coverage_24h": engine.notices.coverage(now),
            "announced": [{"notice_id": i, "drop_at": e.isoformat(), "first_sent": f.isoformat()}
                          for i, (e, _, f) in sorted(engine.notices.sent.items())],
        },
    }


def plan_facts(p: Plan) -> dict[str, object]:
    return {
        "modification": p.modification,
        "baseline_kw": round(p.baseline_kw, 3),
        "target_kw": round(p.target_kw, 3) if p.target_kw is not None else None,
        "expected_kw": round(p.expected_kw, 3),
        "shed_actions": len(p.shed),
        "restore_actions": len(p.restore),
        "shortfall_kw": p.shortfall.kw if p.shortfall else 0.0,
        "shortfall_reason": p.shortfall.reason if p.shortfall else "",
        "by_kind": {k.value: sum(1 for a in p.shed if a.kind is k) for k in ActionKind if k.sheds},
        "notes": list(p.notes),
    }
