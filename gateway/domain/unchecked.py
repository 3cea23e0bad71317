"""The one fast path for building frozen domain values: ``unchecked(cls)``.

A frozen, slotted dataclass pays, per object, ``object.__setattr__`` for every field (its frozen guard is in
the way) and its ``__post_init__`` checks. Three hot paths build values whose fields are valid by
construction, hundreds of thousands at a time: the planner's actions (``gateway.planner.actions``), the
simulated cluster's job snapshots (``simulators._simcore``) and Slurm's parsed job records
(``adapters.slurm.jobrecord``). For those, and only those, ``unchecked(cls)`` makes a constructor that fills a
mutable twin of ``cls`` (the same slots) by plain stores and then switches its class to ``cls``, a switch Python
allows only between equal layouts: half the cost of ``cls(...)``, a fifth of it with a ``__post_init__``.

What it builds is an ordinary instance of ``cls`` (equality, hash, repr, pickling, still frozen). Anything
built from outside input (an event, a configuration, a request) goes through the class itself and is
validated; ``tests/gateway/domain/test_unchecked.py`` holds each user's output equal to the validated one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["unchecked"]

T = TypeVar("T")


def unchecked(cls: type[T]) -> Callable[..., T]:
    """``cls(*values)`` for a frozen, slotted dataclass, every field positional in field order (the trailing
    fields with a plain default may be left out), without ``__post_init__``: for values valid by construction only."""
    if not dataclasses.is_dataclass(cls) or not cls.__dataclass_params__.frozen:  # type: ignore[attr-defined]
        raise TypeError(f"{cls.__name__} is not a frozen dataclass")
    fields = dataclasses.fields(cls)
    if tuple(getattr(cls, "__slots__", ())) != tuple(f.name for f in fields):
        raise TypeError(f"{cls.__name__} does not keep its fields in slots")
    names = [f.name for f in fields]
    required = [i for i, f in enumerate(fields) if f.default is dataclasses.MISSING]
    last_required = required[-1] if required else -1
    params: list[str] = []
    namespace: dict[str, Any] = {"new": object.__new__, "cls": cls}
    for i, f in enumerate(fields):
        if i > last_required:  # only a trailing run of defaults can be left out of a positional call
            namespace[f"default_{i}"] = f.default
            params.append(f"{f.name}=default_{i}")
        else:
            params.append(f.name)
    # A mutable twin with the same slots is filled by plain attribute stores (no frozen guard), then becomes a
    # ``cls``: Python allows the class switch only between classes of the same layout, and checks it here, once.
    twin = type(f"_{cls.__name__}Twin", (), {"__slots__": tuple(names)})
    try:
        probe: Any = object.__new__(twin)
        probe.__class__ = cls
    except TypeError as exc:
        raise TypeError(f"{cls.__name__}'s layout is not that of plain slots: {exc}") from None
    namespace["twin"] = twin
    body = "".join(f"    obj.{n} = {n}\n" for n in names)
    start = "    obj = new(twin)\n"
    end = "    obj.__class__ = cls\n"
    source = f"def build_{cls.__name__}({', '.join(params)}):\n{start}{body}{end}    return obj\n"
    exec(source, namespace)  # as ``dataclasses`` generates ``__init__``
    built: Callable[..., T] = namespace[f"build_{cls.__name__}"]
    built.__doc__ = f"A {cls.__name__} from valid-by-construction values, unchecked (``gateway.domain.unchecked``)."
    return built
