"""The best constant power caps for a window: the exact optimum the replay's strategies are measured against.

Every job runs the whole window; for ``capped_share`` of it the site must stay under a target, and each
job then runs under one constant cap; the rest of the window it runs at full speed. Which caps keep the
most weighted throughput? The measured curves are not concave (their top segment steepens again), so a
greedy or an LP relaxation over them misjudges, and the benchmark needs the true optimum over whole-watt
caps. Six jobs with ~300 caps each are far too many combinations to enumerate, but the problem is a
multiple-choice knapsack over power, which a dynamic program over discretised power solves exactly.

Discretisation, and why the answer is exact
-------------------------------------------
The DP indexes power in whole units of q watts (``resolution_w``, 0.5 W by default). The two ways to
round give two DPs that pin the optimum down, and a short search over exact powers closes what is left:

* Conservative: each job's power above idle rounded UP, the budget (target − idle floor) DOWN. Whatever
  it finds is truly feasible (Σp_j ≤ Σ⌈p_j/q⌉·q ≤ B): rounding can never make an over-target assignment
  look feasible. It can only miss assignments within n·q W of the budget (n jobs), so its answer is the
  exact optimum for some target in [target − n·q W, target]. On its own that is not good enough: over
  999 Phoenix (target, share) pairs at q = 0.5 W it lost up to 4.8e-4 of weighted throughput (worst just
  above the deepest caps, where combinations are sparse; elsewhere the front steps every ~3 W).
* Relaxation: powers rounded DOWN. Every truly feasible assignment stays feasible in it
  (Σ⌊p_j/q⌋ ≤ ⌊Σp_j/q⌋ ≤ ⌊B/q⌋), so its optimum is an upper bound, and if its best assignment is truly
  feasible (checked with the unrounded powers) that assignment is the exact optimum.
* Otherwise, a branch and bound over the jobs' exact powers, with the conservative answer as incumbent and
  the relaxation's DP tables as the (admissible, n·q-tight) bound on the jobs not yet fixed, finds any
  better assignment or proves there is none. The bound is so tight that it carries under 200 partial
  assignments at a time on the Phoenix six (at q = 0.5 W; coarser tables widen the search).

So the result is the exact optimum over the cap grid, to float rounding (~1e-16), whatever the
resolution; q only trades table size against search width. Checked: for the Phoenix six at 999
(target, capped share) pairs the answers at q = 1, 0.5 and 0.125 W agree to 2e-16, and a sample of them
equals an exhaustive float-exact Pareto-front enumeration bit for bit. A small float guard
(``_FLOAT_GUARD``) pushes each rounding the safe way despite float error in p/q.

Cost: one pass per job and cap over an array of min(budget − the jobs' least powers, their power spans)/q
entries, vectorised with numpy; the DP's argmax is recovered afterwards along the one backtracked path, so
the forward pass is a single in-place ``np.maximum`` per (job, cap). The six Phoenix jobs take 0.05-0.1 s
at a 25 % cut and at most ~0.3 s of CPU over the 999 pairs, on 2 vCPUs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from gateway.domain import Job, JobState, Tier
from gateway.power.model import PowerModel

DEFAULT_RESOLUTION_W = 0.5  # W, exact in binary: the fastest on the Phoenix six (exactness does not depend on it)
_MAX_STATES = 1 << 13  # partial assignments the branch and bound may carry (×options per level: ~2.5M floats)
_MAX_CELLS = 1 << 20  # how far a too-loose bound may be refined: a DP table of ~1M entries takes ~1.5 s
_FLOAT_GUARD = 1e-9  # in units: pushes every rounding the safe way despite float error in p/q
_KEPT_TOL = 1e-12  # 1 − s(1 − T) ≥ min_kept compared in floats: an exactly-on-the-tier cap must count

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class OptJob:
    """One job of the window: ``min_kept`` is its tier's minimum throughput over the window (0.9/0.75/0.5)."""

    job_id: str
    gpus: int
    workload: str
    weight: float
    min_kept: float

    def __post_init__(self) -> None:
        if not self.job_id:
            raise ValueError("job_id must not be empty")
        if self.gpus <= 0:
            raise ValueError(f"job {self.job_id}: gpus must be > 0, got {self.gpus}")
        if not (math.isfinite(self.weight) and self.weight >= 0):
            raise ValueError(f"job {self.job_id}: weight must be finite and >= 0, got {self.weight}")
        if not 0.0 <= self.min_kept <= 1.0:
            raise ValueError(f"job {self.job_id}: min_kept must be in [0, 1], got {self.min_kept}")


@dataclass(frozen=True, slots=True)
class Optimum:
    """The best caps found, and what they give.

    ``caps_w`` is each job's cap while capped (``max_cap_w`` means uncapped); ``kept`` each job's
    throughput over the whole window; ``site_kw`` the site power while capped. When several assignments
    tie (two jobs on the same curve with the same weight per GPU), which of them is reported is arbitrary.
    """

    weighted_throughput: float
    caps_w: dict[str, int]
    site_kw: float
    kept: dict[str, float]

    @property
    def upper_bound(self) -> float:
        """A certified bound no assignment beats. The search proves its answer optimal (or raises), so this is
        ``weighted_throughput`` itself; kept so callers can record ``proven_exact`` (benchmarks/replay_bench.py)."""
        return self.weighted_throughput


@dataclass(frozen=True, slots=True)
class _Options:
    """One job's allowed caps, with its exact power above idle (W) and weighted kept throughput."""

    caps: list[int]
    power_w: FloatArray
    value: FloatArray
    kept: list[float]


def _cap_grid(model: PowerModel, step_w: int) -> list[int]:
    lo, hi = math.ceil(model.min_cap_w), math.floor(model.max_cap_w)
    if lo > hi:
        raise ValueError(f"the model's cap range [{model.min_cap_w}, {model.max_cap_w}] W holds no whole watt")
    caps = list(range(lo, hi + 1, step_w))
    if caps[-1] != hi:
        caps.append(hi)  # always offer "uncapped", whatever the step
    return caps


def _options(job: OptJob, model: PowerModel, caps: list[int], capped_share: float) -> _Options:
    """The caps that keep the job within its tier, priced by the model itself (so replay and optimum agree)."""
    # The tier is irrelevant to power and throughput; the model only takes a Job.
    proxy = Job(job_id=job.job_id, tier=Tier.FLEX_50, gpus=job.gpus, workload=job.workload, state=JobState.RUNNING)
    top = caps[-1]
    kept_caps, power, value, kept = [], [], [], []
    for cap in caps:
        cap_arg = None if cap == top else float(cap)  # the top of the range means uncapped
        k = 1.0 - capped_share * (1.0 - model.throughput(proxy, cap_arg, JobState.RUNNING))
        if k < job.min_kept - _KEPT_TOL:
            continue
        kept_caps.append(cap)
        power.append(model.job_kw(proxy, cap_arg, JobState.RUNNING) * 1000.0)
        value.append(job.weight * k)
        kept.append(k)
    return _Options(kept_caps, np.asarray(power, dtype=np.float64), np.asarray(value, dtype=np.float64), kept)


@dataclass(frozen=True, slots=True)
class _Dp:
    """A solved DP: its optimum and picks, and the tables (best value of jobs < j per cost) for bounding."""

    total: float
    picks: list[int]
    tables: list[FloatArray]
    unit_floors: list[int]  # each job's least cost in units, removed from its costs and the budget


def _knapsack(costs: list[IntArray], values: list[FloatArray], budget: int) -> tuple[float, list[int], list[FloatArray]] | None:
    """Multiple-choice knapsack: one option per job, Σ cost ≤ budget, Σ value maximal; None if infeasible.

    ``tables[j][r]`` is the best value of jobs 0..j-1 with cost ≤ r (non-decreasing in r, so no final max
    is needed). Only the tables are built forward; the choices are recovered by backtracking, where the
    winning option reproduces the table entry bit for bit (same float operations).
    """
    best: FloatArray = np.zeros(budget + 1, dtype=np.float64)
    tables: list[FloatArray] = [best]
    for cost, value in zip(costs, values, strict=True):
        new: FloatArray = np.full(budget + 1, -np.inf, dtype=np.float64)
        for c, v in zip(cost.tolist(), value.tolist(), strict=True):
            if c <= budget:
                seg = new[c:]
                np.maximum(seg, best[: budget + 1 - c] + v, out=seg)
        best = new
        tables.append(best)
    total = float(best[budget])
    if total == -np.inf:
        return None
    picks: list[int] = []
    r = budget
    for j in range(len(costs) - 1, -1, -1):
        cost, value, prev = costs[j], values[j], tables[j]
        ok = cost <= r
        cand = np.full(len(cost), -np.inf)
        cand[ok] = prev[r - cost[ok]] + value[ok]
        k = int(np.argmax(cand))
        picks.append(k)
        r -= int(cost[k])
    picks.reverse()
    return total, picks, tables


def _units(power_w: FloatArray, q: float, up: bool) -> FloatArray:
    """Power in units of q W, rounded the safe way for the DP at hand despite float error in p/q."""
    return np.ceil(power_w / q + _FLOAT_GUARD) if up else np.floor(power_w / q - _FLOAT_GUARD)


def _budget_units(budget_w: float, q: float, up: bool) -> int:
    return math.floor(budget_w / q - _FLOAT_GUARD) if up else math.floor(budget_w / q + _FLOAT_GUARD)


def _solve(options: list[_Options], budget_w: float, q: float, up: bool) -> _Dp | None:
    """The DP with every job's power rounded up (conservative) or down (a relaxation), least costs removed."""
    units = [_units(o.power_w, q, up) for o in options]
    floors = [int(u.min()) for u in units]
    costs = [(u - f).astype(np.int64) for u, f in zip(units, floors, strict=True)]
    budget = _budget_units(budget_w, q, up) - sum(floors)
    if budget < 0:
        return None
    budget = min(budget, sum(int(c.max()) for c in costs))  # beyond everyone uncapped the table is flat
    solved = _knapsack(costs, [o.value for o in options], budget)
    return None if solved is None else _Dp(solved[0], solved[1], solved[2], floors)


def _best_option(o: _Options) -> int:
    """The option of highest value, the cheapest among equals (uncapped, on the measured curves)."""
    ties = np.flatnonzero(o.value == o.value.max())
    return int(ties[np.argmin(o.power_w[ties])])


def _power_w(options: list[_Options], picks: list[int]) -> float:
    return sum(float(o.power_w[k]) for o, k in zip(options, picks, strict=True))


def _value(options: list[_Options], picks: list[int]) -> float:
    return sum(float(o.value[k]) for o, k in zip(options, picks, strict=True))


class _TooLoose(ArithmeticError):
    """The branch and bound would keep more partial assignments than ``_MAX_STATES``: refine the DP."""


def _branch_and_bound(options: list[_Options], budget_w: float, q: float, relaxed: _Dp, incumbent: float) -> list[int] | None:
    """The truly feasible assignment of highest value above ``incumbent``, or None if there is none.

    Jobs are fixed from the last to the first with their exact powers; a partial assignment survives only
    if its value plus the relaxation's table for the jobs still open (their best value within the exact
    budget left, rounded in their favour) beats the incumbent. The tables are an admissible bound, and
    tight to within the n·q W of rounding, so only assignments within a hair of the optimum are expanded;
    each level is one vectorised step over all survivors × that job's options.
    """
    n = len(options)
    left = np.array([budget_w])  # exact watts left for the jobs not yet fixed
    acc = np.zeros(1)  # value of the jobs fixed so far
    path = np.zeros((1, 0), dtype=np.int64)  # their picks, last job first
    for j in range(n - 1, -1, -1):
        o, table = options[j], relaxed.tables[j]
        rest_left = left[:, None] - o.power_w[None, :]
        idx = np.floor(rest_left / q + _FLOAT_GUARD) - sum(relaxed.unit_floors[:j])
        ok = (rest_left >= 0) & (idx >= 0)
        bound = np.full(rest_left.shape, -np.inf)
        bound[ok] = (acc[:, None] + o.value[None, :])[ok] + table[np.minimum(idx[ok], len(table) - 1).astype(np.int64)]
        survive = np.nonzero(ok & (bound > incumbent))
        if survive[0].size == 0:
            return None
        if survive[0].size > _MAX_STATES:
            raise _TooLoose(f"the bound at q = {q} W leaves {survive[0].size} partial assignments open")
        left = rest_left[survive]
        acc = acc[survive[0]] + o.value[survive[1]]
        path = np.column_stack((path[survive[0]], survive[1]))
    best = int(np.argmax(acc))
    return [int(k) for k in path[best][::-1]]


def _exact(options: list[_Options], budget_w: float, q: float) -> list[int]:
    """The optimal picks, proven: requires the deepest caps to be feasible (the caller checks).

    Everyone at their best value needs no DP. Otherwise the relaxation (power rounded down) is solved; if its
    picks are truly feasible they are optimal. If not, some better assignment lies within n·q W over the
    budget: the conservative DP (power rounded up) gives a feasible incumbent, optimal for a target at most
    n·q W lower, and a branch and bound over exact powers, pruned by the relaxation's tables, either finds
    something better or proves there is nothing. Should the bound be too loose for the search (many
    near-identical jobs), the whole is redone at a quarter of the resolution, where the bound is tighter.
    """
    best = [_best_option(o) for o in options]
    if _power_w(options, best) <= budget_w:
        return best
    span_w = min(budget_w - sum(float(o.power_w.min()) for o in options),
                 sum(float(o.power_w.max() - o.power_w.min()) for o in options))
    while True:
        try:
            return _exact_at(options, budget_w, q)
        except _TooLoose:
            if span_w / (q / 4) > _MAX_CELLS:
                raise
            q /= 4


def _exact_at(options: list[_Options], budget_w: float, q: float) -> list[int]:
    relaxed = _solve(options, budget_w, q, up=False)
    if relaxed is None:  # a relaxation of a feasible problem: only float trouble could get here
        raise ArithmeticError("the relaxed DP found no assignment although the deepest caps fit")
    if _power_w(options, relaxed.picks) <= budget_w:
        return relaxed.picks
    conservative = _solve(options, budget_w, q, up=True)
    # None only if every feasible assignment lies within n·q W of the target, the deepest caps among them.
    picks = conservative.picks if conservative is not None else [int(np.argmin(o.power_w)) for o in options]
    better = _branch_and_bound(options, budget_w, q, relaxed, _value(options, picks))
    return picks if better is None else better


def best_caps(
    jobs: Sequence[OptJob],
    model: PowerModel,
    target_kw: float,
    capped_share: float,
    step_w: int = 1,
    *,
    total_gpus: int | None = None,
    nodes: int | None = None,
    resolution_w: float = DEFAULT_RESOLUTION_W,
) -> Optimum:
    """The caps (whole watts, in ``step_w`` steps) that maximise Σ w_j·kept_j / Σ w_j under the target.

    ``kept_j = 1 − capped_share·(1 − T_j(c_j))`` must reach the job's ``min_kept``; while capped the
    site draws ``model.idle_floor_kw(total_gpus, nodes) + Σ model.job_kw(job_j, c_j)``, which must not
    exceed ``target_kw``. ``total_gpus`` defaults to the jobs' GPUs (a fully packed site); ``nodes`` is
    needed only when the model charges a per-node base draw. Raises ValueError when even the deepest
    caps each tier allows miss the target, saying by how much. See the module docstring for why the
    result is exact whatever ``resolution_w`` (which only trades DP size against search width).
    ArithmeticError if the search cannot be narrowed enough before the DP table passes ~1M entries (never
    seen on these curves).
    """
    if not jobs:
        raise ValueError("no jobs to cap")
    if len({j.job_id for j in jobs}) != len(jobs):
        raise ValueError("job ids must be unique")
    if not 0.0 < capped_share <= 1.0:
        raise ValueError(f"capped_share must be in (0, 1], got {capped_share}")
    if step_w < 1:
        raise ValueError(f"step_w must be >= 1 W, got {step_w}")
    if not (math.isfinite(resolution_w) and resolution_w > 0):
        raise ValueError(f"resolution_w must be > 0, got {resolution_w}")
    if not math.isfinite(target_kw):
        raise ValueError(f"target_kw must be finite, got {target_kw}")
    weight_sum = sum(j.weight for j in jobs)
    if weight_sum <= 0:
        raise ValueError("at least one job needs a positive weight")
    job_gpus = sum(j.gpus for j in jobs)
    gpus = job_gpus if total_gpus is None else total_gpus
    if gpus < job_gpus:
        raise ValueError(f"total_gpus {gpus} is fewer than the jobs' {job_gpus}")
    if nodes is None and model.node_base_w != 0:
        raise ValueError("the model charges a per-node base draw: say how many nodes the site has")
    floor_kw = model.idle_floor_kw(gpus, nodes or 0)

    caps = _cap_grid(model, step_w)
    options = [_options(j, model, caps, capped_share) for j in jobs]
    for job, opt in zip(jobs, options, strict=True):
        if not opt.caps:  # cannot happen with T(uncapped) = 1, but a custom curve could end below 1
            raise ValueError(f"job {job.job_id}: no cap keeps {job.min_kept:.3f} of its throughput")

    budget_w = (target_kw - floor_kw) * 1000.0
    deepest_kw = floor_kw + sum(float(o.power_w.min()) for o in options) / 1000.0
    if deepest_kw > target_kw:
        deep = ", ".join(f"{j.job_id}@{o.caps[int(np.argmin(o.power_w))]}W" for j, o in zip(jobs, options, strict=True))
        raise ValueError(
            f"target {target_kw:.3f} kW is out of reach: the deepest caps the tiers allow ({deep}) still draw "
            f"{deepest_kw:.3f} kW, {deepest_kw - target_kw:.3f} kW over (idle floor {floor_kw:.3f} kW)"
        )
    picks = _exact(options, budget_w, resolution_w)
    return Optimum(
        weighted_throughput=_value(options, picks) / weight_sum,
        caps_w={j.job_id: o.caps[k] for j, o, k in zip(jobs, options, picks, strict=True)},
        site_kw=floor_kw + _power_w(options, picks) / 1000.0,
        kept={j.job_id: o.kept[k] for j, o, k in zip(jobs, options, picks, strict=True)},
    )
