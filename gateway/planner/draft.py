"""Building ``Action`` objects fast: a plan can hold a hundred thousand of them.

Every value the planner puts in an action is valid by construction (non-empty keys and job ids,
aware times, finite kW, watts on caps, nodes on holds), so re-validating each one in
``Action.__post_init__`` would only cost time: ~3 µs each, more than the whole plan's budget.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Protocol

from gateway.domain import Action, ActionKind

_FIELDS = ("key", "kind", "at", "job_id", "nodes", "watts", "delta_kw", "tier", "reason", "replicas")


class _Draft:
    """A mutable twin of ``Action`` (same slots, same order) that becomes an ``Action`` once filled.

    A frozen, validated dataclass pays ``object.__setattr__`` per field and ``__post_init__``; here the
    slots are filled by plain attribute stores and the object's class is then switched to
    ``Action``: from there on it is an ordinary, frozen ``Action`` (equality, hash, repr, pickling).
    Python allows the switch only between classes of the same layout; ``_fast_path_works`` checks it
    once at import and otherwise the validated constructor is used. (``_fast`` fills it rather than an
    ``__init__``: a plain function call is cheaper than calling a class.)
    """

    __slots__ = _FIELDS
    key: str
    kind: ActionKind
    at: datetime
    job_id: str
    nodes: tuple[str, ...]
    watts: float | None
    delta_kw: float
    tier: str
    reason: str
    replicas: int | None


_new_object = object.__new__


def _fast(key: str, kind: ActionKind, at: datetime, job_id: str, nodes: tuple[str, ...],
          watts: float | None, delta_kw: float, tier: str, reason: str, replicas: int | None = None) -> Action:
    a = _new_object(_Draft)
    a.key = key
    a.kind = kind
    a.at = at
    a.job_id = job_id
    a.nodes = nodes
    a.watts = watts
    a.delta_kw = delta_kw
    a.tier = tier
    a.reason = reason
    a.replicas = replicas
    a.__class__ = Action  # type: ignore[assignment]  # same layout: see ``_Draft``
    return a  # type: ignore[return-value]


def _validated(key: str, kind: ActionKind, at: datetime, job_id: str, nodes: tuple[str, ...],
               watts: float | None, delta_kw: float, tier: str, reason: str, replicas: int | None = None) -> Action:
    return Action(key=key, kind=kind, at=at, job_id=job_id, nodes=nodes, watts=watts, delta_kw=delta_kw,
                  tier=tier, reason=reason, replicas=replicas)


def _fast_path_works() -> bool:
    """Whether ``_Draft`` has ``Action``'s layout, and what it builds equals the validated constructor."""
    names = tuple(f.name for f in dataclasses.fields(Action))
    if names != _FIELDS or tuple(getattr(Action, "__slots__", ())) != _FIELDS:
        return False
    args = ("probe/cap/j/250", ActionKind.CAP, datetime(2025, 1, 1, tzinfo=UTC), "j", (), 250.0, -1.5, "flex-25", "r")
    scale = ("probe/scale_down/j/2", ActionKind.SCALE_DOWN, datetime(2025, 1, 1, tzinfo=UTC), "j", (), None, -1.5,
             "flex-25", "r", 2)
    try:
        fast: object = _fast(*args)
        fast_scale: object = _fast(*scale)
    except TypeError:  # layouts differ: Python refuses the class switch
        return False
    return type(fast) is Action and fast == _validated(*args) and fast_scale == _validated(*scale)


class _MakeAction(Protocol):
    def __call__(self, key: str, kind: ActionKind, at: datetime, job_id: str, nodes: tuple[str, ...],
                 watts: float | None, delta_kw: float, tier: str, reason: str, replicas: int | None = None) -> Action: ...


make_action: _MakeAction = _fast if _fast_path_works() else _validated
"""``make_action(key, kind, at, job_id, nodes, watts, delta_kw, tier, reason, replicas=None)``: an ``Action`` equal to
``Action(key=..., ...)``, built without re-validating (see ``_Draft``)."""
