"""Slurm hostlist expressions, expanded in pure Python.

Slurm prints node sets compressed: ``gpu[001-004,007],cpu1`` is ``gpu001 gpu002 gpu003 gpu004 gpu007
cpu1``. The gateway acts per node (drain, count GPUs, match jobs to nodes), so every list Slurm gives
is expanded here. Zero padding follows Slurm's rule: a range is as wide as its lower bound as written
(``[01-10]`` gives ``01``..``10``, ``[8-10]`` gives ``8``, ``9``, ``10``). Several bracket groups in one
name (``r[1-2]n[1-2]``) expand to their product, in order.

A hostile or mistyped expression (``n[0-999999999]``) must not exhaust memory, so one expression may
expand to at most ``MAX_HOSTS`` names; past that, or on any syntax error, ``ValueError`` says why.
"""

from __future__ import annotations

from functools import lru_cache
from itertools import product

__all__ = ["MAX_HOSTS", "expand_hostlist"]

MAX_HOSTS = 1_000_000


def expand_hostlist(expr: str) -> tuple[str, ...]:
    """Every host name in ``expr``, in Slurm's order, duplicates kept; ``""`` gives ``()``."""
    if "[" not in expr and "]" not in expr:
        return tuple(name for part in expr.split(",") if (name := part.strip()))
    return _expand_cached(expr)


@lru_cache(maxsize=4096)
def _expand_cached(expr: str) -> tuple[str, ...]:
    hosts: list[str] = []
    for item in _split_top_level(expr):
        hosts.extend(_expand_one(item, expr))
        if len(hosts) > MAX_HOSTS:
            raise ValueError(f"hostlist {_short(expr)} expands to more than {MAX_HOSTS} names")
    return tuple(hosts)


def _split_top_level(expr: str) -> list[str]:
    """Split on the commas that are not inside brackets."""
    items: list[str] = []
    depth = 0
    start = 0
    for i, ch in enumerate(expr):
        if ch == "[":
            depth += 1
            if depth > 1:
                raise ValueError(f"nested '[' in hostlist {_short(expr)}")
        elif ch == "]":
            depth -= 1
            if depth < 0:
                raise ValueError(f"unbalanced ']' in hostlist {_short(expr)}")
        elif ch == "," and depth == 0:
            items.append(expr[start:i])
            start = i + 1
    if depth:
        raise ValueError(f"unclosed '[' in hostlist {_short(expr)}")
    items.append(expr[start:])
    return [s for item in items if (s := item.strip())]


def _expand_one(item: str, expr: str) -> list[str]:
    """Expand one name that may hold several ``[...]`` groups (their cartesian product)."""
    pieces: list[list[str]] = []
    rest = item
    while "[" in rest:
        head, _, tail = rest.partition("[")
        body, closed, rest = tail.partition("]")
        if not closed:
            raise ValueError(f"unclosed '[' in hostlist {_short(expr)}")
        pieces.append([head])
        pieces.append(_expand_ranges(body, expr))
    if "]" in rest:
        raise ValueError(f"unbalanced ']' in hostlist {_short(expr)}")
    pieces.append([rest])
    total = 1
    for p in pieces:
        total *= len(p)
    if total > MAX_HOSTS:
        raise ValueError(f"hostlist {_short(expr)} expands to more than {MAX_HOSTS} names")
    return ["".join(combo) for combo in product(*pieces)]


def _expand_ranges(body: str, expr: str) -> list[str]:
    """``001-004,007`` → ``["001", "002", "003", "004", "007"]``."""
    out: list[str] = []
    for part in body.split(","):
        part = part.strip()
        lo, dash, hi = part.partition("-")
        if not lo.isdigit() or (dash and not hi.isdigit()):
            raise ValueError(f"bad range {part!r} in hostlist {_short(expr)}")
        if not dash:
            out.append(lo)
            continue
        a, b = int(lo), int(hi)
        if b < a:
            raise ValueError(f"range {part!r} runs backwards in hostlist {_short(expr)}")
        if b - a + 1 + len(out) > MAX_HOSTS:
            raise ValueError(f"hostlist {_short(expr)} expands to more than {MAX_HOSTS} names")
        width = len(lo)
        out.extend(str(n).zfill(width) for n in range(a, b + 1))
    return out


def _short(expr: str) -> str:
    return repr(expr if len(expr) <= 80 else expr[:77] + "...")
