"""GPU power-cap → (power per GPU, throughput) curves, measured per workload.

The embedded default is the DVFS sweep of the 2025 Phoenix field demonstration (A100 GPUs,
``gateway/data/dvfs_sweep.csv``, Apache-2.0). Between measured caps the curves are interpolated
linearly; outside them they are clamped, because a cap below the lowest measured point is not a
setting dcflex will ever send.
"""

from __future__ import annotations

import csv
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path


@dataclass(frozen=True, slots=True)
class PowerCurve:
    """One workload's measured points, sorted by cap: (cap W, power per GPU W, throughput 0..1)."""

    workload: str
    caps_w: tuple[float, ...]
    power_w: tuple[float, ...]
    throughput: tuple[float, ...]

    def __post_init__(self) -> None:
        n = len(self.caps_w)
        if n < 2 or len(self.power_w) != n or len(self.throughput) != n:
            raise ValueError(f"curve {self.workload}: needs at least two points of equal length")
        if list(self.caps_w) != sorted(self.caps_w):
            raise ValueError(f"curve {self.workload}: caps must be increasing")

    @property
    def min_cap_w(self) -> float:
        return self.caps_w[0]

    @property
    def max_cap_w(self) -> float:
        return self.caps_w[-1]

    @property
    def full_power_w(self) -> float:
        return self.power_w[-1]

    def _interp(self, xs: tuple[float, ...], ys: tuple[float, ...], x: float) -> float:
        if x <= xs[0]:
            return ys[0]
        if x >= xs[-1]:
            return ys[-1]
        i = bisect_left(xs, x)
        x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
        return y0 + (y1 - y0) * (x - x0) / (x1 - x0)

    def power_at(self, cap_w: float | None) -> float:
        """Draw per GPU (W) under ``cap_w`` (None: uncapped)."""
        return self.full_power_w if cap_w is None else self._interp(self.caps_w, self.power_w, cap_w)

    def throughput_at(self, cap_w: float | None) -> float:
        """Throughput kept (0..1) under ``cap_w``."""
        return 1.0 if cap_w is None else self._interp(self.caps_w, self.throughput, cap_w)

    def cap_for_throughput(self, kept: float) -> float:
        """The lowest cap that keeps at least ``kept`` of the throughput (clamped to the curve)."""
        if kept <= self.throughput[0]:
            return self.caps_w[0]
        if kept >= self.throughput[-1]:
            return self.caps_w[-1]
        for i in range(1, len(self.caps_w)):
            if self.throughput[i] >= kept:
                t0, t1 = self.throughput[i - 1], self.throughput[i]
                c0, c1 = self.caps_w[i - 1], self.caps_w[i]
                return c0 + (c1 - c0) * (kept - t0) / (t1 - t0) if t1 > t0 else c1
        return self.caps_w[-1]


@dataclass(frozen=True, slots=True)
class CurveLibrary:
    """Curves by workload name, with a default for jobs whose workload is unknown."""

    curves: Mapping[str, PowerCurve]
    default_name: str

    def __post_init__(self) -> None:
        if self.default_name not in self.curves:
            raise ValueError(f"default curve {self.default_name!r} is not in the library")

    def get(self, workload: str) -> PowerCurve:
        return self.curves.get(workload) or self.curves[self.default_name]

    @property
    def default(self) -> PowerCurve:
        return self.curves[self.default_name]


def _average(name: str, curves: Iterable[PowerCurve]) -> PowerCurve:
    cs = list(curves)
    caps = cs[0].caps_w
    if any(c.caps_w != caps for c in cs):
        raise ValueError("curves to average must share their caps")
    return PowerCurve(
        workload=name,
        caps_w=caps,
        power_w=tuple(sum(c.power_w[i] for c in cs) / len(cs) for i in range(len(caps))),
        throughput=tuple(sum(c.throughput[i] for c in cs) / len(cs) for i in range(len(caps))),
    )


def load_curves(lines: Iterable[str], default_name: str = "average") -> CurveLibrary:
    """Read a DVFS sweep CSV (columns as in the Phoenix ``dvfs_sweep.csv``) into a library.

    A curve named ``average`` (the mean of all workloads) is added as the default.
    """
    points: dict[str, list[tuple[float, float, float]]] = defaultdict(list)
    for row in csv.DictReader(lines):
        points[row["Workload"].strip()].append(
            (float(row["GPU power cap"]), float(row["power per GPU"]), float(row["normalized throughput"]))
        )
    curves: dict[str, PowerCurve] = {}
    for name, pts in points.items():
        pts.sort()
        curves[name] = PowerCurve(
            workload=name,
            caps_w=tuple(p[0] for p in pts),
            power_w=tuple(p[1] for p in pts),
            throughput=tuple(p[2] for p in pts),
        )
    if "average" not in curves and curves:
        curves["average"] = _average("average", curves.values())
    return CurveLibrary(curves=curves, default_name=default_name)


def load_curves_file(path: Path) -> CurveLibrary:
    with path.open(newline="") as fh:
        return load_curves(fh)


@cache
def default_curves() -> CurveLibrary:
    """The embedded Phoenix 2025 A100 curves."""
    text = resources.files("gateway").joinpath("data/dvfs_sweep.csv").read_text()
    return load_curves(text.splitlines())
