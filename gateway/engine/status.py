"""Read-only views of the engine: ``GET /status`` and the facts of a plan, for operators and sinks.

``status_of`` reads only what it is handed: the journal's records, a frozen ``RunView`` of each event in
progress and the notices' own read methods; it never reaches into the engine's working state.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from gateway.domain import ActionKind, Plan
from gateway.journal import Journal
from gateway.notices.service import Announced


@dataclass(frozen=True, slots=True)
class RunView:
    """What status shows of an event in progress: its commands still planned and its shortfall."""

    planned_actions: tuple[str, ...]
    shortfall_kw: float


class NoticeView(Protocol):
    """The notices' side of status (``NoticeService``)."""

    def coverage(self, now: datetime, event_id: str | None = None) -> dict[str, object]: ...

    def announced(self) -> list[Announced]: ...


def status_of(*, now: datetime, site_kw: float | None, target_kw: float | None, dry_run: bool, journal: Journal,
              runs: Mapping[str, RunView], notices: NoticeView) -> dict[str, object]:
    events = []
    for rec in journal.events():
        actions = journal.actions(rec.event_id)
        run = runs.get(rec.event_id)
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
            "planned_actions": list(run.planned_actions) if run else [],
            "done_actions": [r.action.key for r in actions if r.state == "done"],
            "failed_actions": [r.action.key for r in actions if r.state == "failed"],
            "shortfall_kw": run.shortfall_kw if run else None,
            "notice_coverage": notices.coverage(now, rec.event_id),
        })
    return {
        "now": now.isoformat(),
        "site_kw": site_kw,
        "target_kw": target_kw,
        "dry_run": dry_run,
        "events": events,
        "notices": {
            "coverage_24h": notices.coverage(now),
            "announced": [{"notice_id": a.notice_id, "drop_at": a.drop_at.isoformat(), "first_sent": a.first_sent.isoformat()}
                          for a in notices.announced()],
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
