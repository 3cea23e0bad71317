"""GPU counts from the ways Slurm writes generic resources (GRES) and trackable resources (TRES).

Slurm says how many GPUs a job has in several places, none of them always present:

- ``tres_alloc_str`` / ``tres_req_str``: ``cpu=8,mem=64G,node=2,gres/gpu=4,gres/gpu:a100=4`` (a total
  and per-type counts of the same GPUs; only when ``AccountingStorageTRES`` tracks ``gres/gpu``);
- ``gres_detail`` (one entry per allocated node): ``gpu:a100:2(IDX:0-1)``, ``gpu:h100:2(IDX:0-1),gpu:h200:4(IDX:2-5)``;
- ``tres_per_job`` / ``tres_per_node`` / ``tres_per_task`` / ``tres_per_socket``: ``gres:gpu:8`` (22.05),
  ``gres/gpu:a100:2`` (23.x and later), ``gpu:2`` (older);
- a node's ``gres``: ``gpu:8``, ``gpu:a100:8(S:0-1)``, ``gpu:a100:4,gpu:v100:2,shard:8``.

Each parser returns ``None`` when the string names no GPU at all, so callers can fall through to
the next source, and ``0`` only when Slurm says zero. Results are cached: on a large cluster the
same few strings repeat across thousands of jobs.
"""

from __future__ import annotations

import re
from functools import lru_cache

__all__ = ["gpus_in_gres", "gpus_in_tres"]

_PARENS = re.compile(r"\([^)]*\)")
_SUFFIX = {"k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def _count(token: str) -> int | None:
    """``"8"`` → 8, ``"2k"`` → 2048; ``None`` when ``token`` is not a count (e.g. a GPU type)."""
    if token.isdigit():
        return int(token)
    if len(token) > 1 and token[:-1].isdigit() and token[-1].lower() in _SUFFIX:
        return int(token[:-1]) * _SUFFIX[token[-1].lower()]
    return None


@lru_cache(maxsize=4096)
def gpus_in_tres(tres: str) -> int | None:
    """GPUs in a TRES string; the untyped ``gres/gpu`` total wins over the sum of typed entries."""
    if "gpu" not in tres:
        return None
    total: int | None = None
    typed = 0
    seen_typed = False
    for item in tres.split(","):
        key, eq, value = item.strip().partition("=")
        if not eq:
            continue
        if key == "gres/gpu":
            n = _count(value.strip())
            if n is None:
                raise ValueError(f"bad GPU count {value!r} in TRES {tres!r}")
            total = n
        elif key.startswith("gres/gpu:"):
            n = _count(value.strip())
            if n is None:
                raise ValueError(f"bad GPU count {value!r} in TRES {tres!r}")
            typed += n
            seen_typed = True
    if total is not None:
        return total
    return typed if seen_typed else None


@lru_cache(maxsize=4096)
def gpus_in_gres(gres: str) -> int | None:
    """GPUs in a GRES-style list (node ``gres``, ``gres_detail`` entries, ``tres_per_*`` fields)."""
    if "gpu" not in gres:
        return None
    total = 0
    found = False
    for item in _PARENS.sub("", gres).split(","):
        item = item.strip()
        if item.startswith(("gres:", "gres/")):
            item = item[5:]
        parts = item.replace("=", ":").split(":")
        if parts[0] != "gpu":
            continue
        found = True
        n = _count(parts[-1]) if len(parts) > 1 else None
        if n is None:
            if len(parts) > 2:  # gpu:type:<not a number>
                raise ValueError(f"bad GPU count {parts[-1]!r} in {gres!r}")
            n = 1  # "gpu" or "gpu:a100": one GPU
        total += n
    return total if found else None
