"""JSON encoding of the domain values the journal stores (directives and actions)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from gateway.domain import Action, ActionKind, Directive, Segment


def _t(value: datetime) -> str:
    return value.isoformat()


def _p(value: str) -> datetime:
    return datetime.fromisoformat(value)


def directive_to_dict(d: Directive) -> dict[str, Any]:
    return {
        "event_id": d.event_id,
        "modification": d.modification,
        "segments": [
            {"start": _t(s.start), "end": _t(s.end), "target_kw": s.target_kw, "price_per_mwh": s.price_per_mwh}
            for s in d.segments
        ],
        "baseline_kw": d.baseline_kw,
        "ramp_start": _t(d.ramp_start),
        "target_by": _t(d.target_by),
        "end": _t(d.end),
        "recovery_end": _t(d.recovery_end),
        "reason": d.reason,
    }


def directive_from_dict(data: dict[str, Any]) -> Directive:
    return Directive(
        event_id=data["event_id"],
        modification=int(data["modification"]),
        segments=tuple(
            Segment(
                start=_p(s["start"]), end=_p(s["end"]), target_kw=s["target_kw"], price_per_mwh=s["price_per_mwh"]
            )
            for s in data["segments"]
        ),
        baseline_kw=float(data["baseline_kw"]),
        ramp_start=_p(data["ramp_start"]),
        target_by=_p(data["target_by"]),
        end=_p(data["end"]),
        recovery_end=_p(data["recovery_end"]),
        reason=data.get("reason", ""),
    )


def action_to_dict(a: Action) -> dict[str, Any]:
    out = {
        "key": a.key,
        "kind": a.kind.value,
        "at": _t(a.at),
        "job_id": a.job_id,
        "nodes": list(a.nodes),
        "watts": a.watts,
        "delta_kw": a.delta_kw,
        "tier": a.tier,
        "reason": a.reason,
    }
    if a.replicas is not None:
        out["replicas"] = a.replicas
    return out


def action_from_dict(data: dict[str, Any]) -> Action:
    return Action(
        key=data["key"],
        kind=ActionKind(data["kind"]),
        at=_p(data["at"]),
        job_id=data.get("job_id", ""),
        nodes=tuple(data.get("nodes", ())),
        watts=data.get("watts"),
        delta_kw=float(data.get("delta_kw", 0.0)),
        tier=data.get("tier", ""),
        reason=data.get("reason", ""),
        replicas=data.get("replicas"),
    )
