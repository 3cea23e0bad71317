"""Small validators shared by the domain dataclasses (raise ValueError with the field's name)."""

from __future__ import annotations

import math
from datetime import datetime


def aware(name: str, value: datetime) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got naive {value.isoformat()}")


def finite(name: str, value: float, *, lo: float | None = None, hi: float | None = None) -> None:
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if lo is not None and value < lo:
        raise ValueError(f"{name} must be >= {lo:g}, got {value:g}")
    if hi is not None and value > hi:
        raise ValueError(f"{name} must be <= {hi:g}, got {value:g}")
