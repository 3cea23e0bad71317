"""Building the undo of whatever an event's commands changed, staggered under the ramp rate.

Restore works from the journal's record of what was done, not from the last plan, so commands
from every re-plan (and from before a restart) are undone exactly once. Order: stopped jobs come
back first (their restart takes time, so starting them early shortens their loss), with their held
nodes released just before; then paused jobs resume; then services get their replicas back, one per
command, the last taken first; caps are lifted last because capped jobs were still working. Each
command waits until the previous one's power has come back at the ramp rate, so the site returns
without a step and without a rebound above its baseline.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from gateway.domain import Action, ActionKind
from gateway.journal import ActionRecord

_ORDER = {ActionKind.RELEASE_NODES: 0, ActionKind.RESTART: 1, ActionKind.RESUME: 2, ActionKind.SCALE_UP: 3,
          ActionKind.UNCAP: 4}


@dataclass(frozen=True, slots=True)
class Undo:
    """An undo command and the shed commands it reverses."""

    action: Action
    covers: tuple[str, ...]


def build_restore(
    owner: str,
    outstanding: Sequence[ActionRecord],
    start: datetime,
    ramp_kw_per_min: float,
    generation: int = 0,
    prior_caps: Mapping[str, float] | None = None,
) -> list[Undo]:
    """One undo per (job, lever) for ``owner``'s outstanding commands, timed from ``start``.

    ``prior_caps`` are limits jobs had before the event (set by someone else): lifting the event's
    cap puts that limit back instead of removing every limit. ``generation`` makes the keys unique
    when a job is shed, restored and shed again within one event (a relaxed and re-tightened plan):
    each restore batch gets its own keys.
    """
    groups: dict[tuple[ActionKind, str, int], list[Action]] = defaultdict(list)
    for rec in outstanding:
        a = rec.action
        target = a.job_id if a.kind is not ActionKind.HOLD_NODES else ",".join(a.nodes)
        # each replica taken from a service comes back by its own command, to one more than it left
        up = (a.replicas or 0) + 1 if a.kind is ActionKind.SCALE_DOWN else 0
        groups[(a.kind.undo, a.job_id or target, up)].append(a)

    def sort_key(item: tuple[tuple[ActionKind, str, int], list[Action]]) -> tuple[int, str, int, int]:
        (kind, subject, up), _ = item
        # a job's node release goes right before its restart
        rank = _ORDER[ActionKind.RESTART] if kind is ActionKind.RELEASE_NODES else _ORDER[kind]
        return (rank, subject, 0 if kind is ActionKind.RELEASE_NODES else 1, up)

    undos: list[Undo] = []
    at = start
    for (kind, subject, up), sheds in sorted(groups.items(), key=sort_key):
        first = sheds[0]
        nodes = tuple(sorted({n for s in sheds for n in s.nodes})) if kind is ActionKind.RELEASE_NODES else ()
        delta = -sum(s.delta_kw for s in sheds)
        action = Action(
            key=f"{owner}/{kind.value}/{subject}" + (f"/{up}" if up else "") + (f"/g{generation}" if generation else ""),
            kind=kind,
            at=at,
            job_id=first.job_id,
            nodes=nodes,
            watts=(prior_caps or {}).get(first.job_id) if kind is ActionKind.UNCAP else None,
            delta_kw=max(0.0, delta),
            tier=first.tier,
            reason=f"undo {', '.join(s.kind.value for s in sheds)} at the end of {owner}",
            replicas=up if up else None,
        )
        undos.append(Undo(action=action, covers=tuple(s.key for s in sheds)))
        at = at + timedelta(minutes=max(0.0, delta) / ramp_kw_per_min)
    return undos
