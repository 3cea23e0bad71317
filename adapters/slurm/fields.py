"""Readers for one field of Slurm's JSON, whatever shape the running Slurm version gives it.

Each reader takes the record (a dict), the key and the record's path (``$.jobs[3]``) and returns a plain
Python value, or raises ``FieldError`` naming the exact path of a value of the wrong shape, so the
caller can skip that one record and say why. Internal to ``adapters.slurm``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from adapters.slurm.hostlist import expand_hostlist

NO_VAL = 0xFFFFFFFE  # Slurm's "not set" (and 0xFFFFFFFF "infinite") for 32-bit counters in 22.05


class FieldError(Exception):
    """One field has the wrong shape; ``path`` points at it (``$.jobs[3].time_limit``)."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.message = message
        super().__init__(f"{message} at {path}")


def kind(v: object) -> str:
    return "null" if v is None else type(v).__name__


def read_str(j: dict[str, object], key: str, path: str) -> str:
    v = j.get(key)
    if type(v) is str:
        return v
    if v is None:
        return ""
    raise FieldError(f"{path}.{key}", f"expected a string, got {kind(v)}")


def read_num(j: dict[str, object], key: str, path: str, no_val: int = NO_VAL) -> int | None:
    """An integer counter as 22.05 (int/null) or 23.x+ (``{"set", "infinite", "number"}``) prints it.

    ``None`` when unset or infinite; 22.05 marks those with 32-bit sentinels (``no_val`` and above).
    """
    v = j.get(key)
    if type(v) is int:
        return v if v < no_val else None
    if v is None:
        return None
    if type(v) is dict:
        if v.get("set") is False or v.get("infinite") is True:
            return None
        n = v.get("number")
        if type(n) is int:
            return n if n < no_val else None
        if type(n) is float and n.is_integer():
            return int(n)
        raise FieldError(f"{path}.{key}.number", f"expected an integer, got {kind(n)}")
    if type(v) is float and v.is_integer():
        return int(v)
    raise FieldError(f"{path}.{key}", f"expected an integer or a {{set, infinite, number}} object, got {kind(v)}")


def read_time(j: dict[str, object], key: str, path: str) -> datetime | None:
    ts = read_num(j, key, path, no_val=1 << 62)  # times are 64-bit; no sentinel
    if ts is None or ts <= 0:
        return None
    try:
        return datetime.fromtimestamp(ts, UTC)
    except (OverflowError, OSError, ValueError):
        return None  # beyond datetime's range: Slurm's "never" for an unlimited job's end


def read_bool(j: dict[str, object], key: str, path: str) -> bool:
    v = j.get(key)
    if v is True or v is False:
        return v
    if v is None:
        return False
    if type(v) is int and v in (0, 1):
        return bool(v)
    raise FieldError(f"{path}.{key}", f"expected a boolean, got {kind(v)}")


def read_strings(j: dict[str, object], key: str, path: str) -> list[str]:
    v = j.get(key)
    if v is None:
        return []
    if type(v) is list and all(type(x) is str for x in v):
        return v
    raise FieldError(f"{path}.{key}", "expected a list of strings")


def read_hosts(expr: str, path: str, key: str) -> tuple[str, ...]:
    """``expr`` (found at ``path.key``) expanded to host names."""
    try:
        return expand_hostlist(expr)
    except ValueError as exc:
        raise FieldError(f"{path}.{key}", str(exc)) from None


def gpu_count(fn: Callable[[str], int | None], text: str, path: str, key: str) -> int | None:
    """``fn(text)`` for the string found at ``path.key``; ``None`` for an empty string."""
    try:
        return fn(text) if text else None
    except ValueError as exc:
        raise FieldError(f"{path}.{key}", str(exc)) from None


def read_obj(j: dict[str, object], key: str, path: str) -> dict[str, object]:
    v = j.get(key)
    if v is None:
        return {}
    if type(v) is dict:
        return v
    raise FieldError(f"{path}.{key}", f"expected an object, got {kind(v)}")
