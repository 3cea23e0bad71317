"""The exact best caps: equal to brute force where that is possible, feasible, monotone in the target, and
in the range the Phoenix field paper reports (≈0.952 for a 25 % cut with half the window capped)."""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable

import numpy as np
import pytest

from gateway.power import PowerModel
from simulators.replay import optimum
from simulators.replay.optimum import Optimum, OptJob, best_caps
from simulators.workloads import PHOENIX_GPUS_PER_NODE, PHOENIX_JOBS, PHOENIX_NODES

PHOENIX_GPUS = PHOENIX_NODES * PHOENIX_GPUS_PER_NODE
# The CSV's weights are the tier's min throughput over their sum (0.9/3.9, ...): proportional to it.
PHOENIX = [OptJob(f"p-{i}", pj.gpus, pj.workload, pj.flexibility, pj.flexibility) for i, pj in enumerate(PHOENIX_JOBS, 1)]
TINY = [
    OptJob("ft", 32, "ft_llama_8b_p3", 0.75, 0.75),
    OptJob("inf", 48, "infer_llama_8b_48g", 0.9, 0.9),
    OptJob("pt", 48, "pt_mpt_7b_fast", 0.5, 0.5),
]
# A model unlike the default on every term the site power has, so nodes and overhead are exercised.
SITE_MODEL = PowerModel(gpu_idle_w=55.0, node_base_w=450.0, overhead=1.25)


def _job_kw(model: PowerModel, job: OptJob, cap: int) -> float:
    """The spec, written out independently of the module: draw above idle, × GPUs × overhead, in kW."""
    w = model.curves.get(job.workload).power_at(None if cap >= model.max_cap_w else cap)
    return max(0.0, w - model.gpu_idle_w) * job.gpus * model.overhead / 1000.0


def _throughput(model: PowerModel, job: OptJob, cap: int) -> float:
    return model.curves.get(job.workload).throughput_at(None if cap >= model.max_cap_w else cap)


def _caps(model: PowerModel, step: int) -> list[int]:
    caps = list(range(int(model.min_cap_w), int(model.max_cap_w) + 1, step))
    return caps if caps[-1] == model.max_cap_w else [*caps, int(model.max_cap_w)]


def _site_kw(model: PowerModel, jobs: list[OptJob], caps: dict[str, int], total_gpus: int, nodes: int) -> float:
    return model.idle_floor_kw(total_gpus, nodes) + sum(_job_kw(model, j, caps[j.job_id]) for j in jobs)


def _uncapped_kw(model: PowerModel, jobs: list[OptJob], total_gpus: int, nodes: int) -> float:
    return _site_kw(model, jobs, {j.job_id: int(model.max_cap_w) for j in jobs}, total_gpus, nodes)


def _brute_force(model: PowerModel, jobs: list[OptJob], target_kw: float, share: float, step: int,
                 total_gpus: int, nodes: int) -> float | None:
    """Every combination of caps, vectorised: the best weighted throughput, None if nothing fits."""
    caps = _caps(model, step)
    kw = [np.array([_job_kw(model, j, c) for c in caps]) for j in jobs]
    kept = [np.array([1 - share * (1 - _throughput(model, j, c)) for c in caps]) for j in jobs]
    grids = np.meshgrid(*[np.arange(len(caps))] * len(jobs), indexing="ij")
    site = np.full(grids[0].shape, model.idle_floor_kw(total_gpus, nodes))
    value = np.zeros(grids[0].shape)
    ok = np.ones(grids[0].shape, dtype=bool)
    for i, (j, g) in enumerate(zip(jobs, grids, strict=True)):
        site += kw[i][g]
        value += j.weight * kept[i][g]
        ok &= kept[i][g] >= j.min_kept - 1e-12
    ok &= site <= target_kw
    if not ok.any():
        return None
    return float(value[ok].max()) / sum(j.weight for j in jobs)


def _check_feasible(opt: Optimum, model: PowerModel, jobs: list[OptJob], target_kw: float, share: float,
                    total_gpus: int, nodes: int) -> None:
    """What the result claims is what its caps give, and it honours the target and every tier."""
    assert opt.site_kw == pytest.approx(_site_kw(model, jobs, opt.caps_w, total_gpus, nodes), abs=1e-9)
    assert opt.site_kw <= target_kw + 1e-9
    for j in jobs:
        assert model.min_cap_w <= opt.caps_w[j.job_id] <= model.max_cap_w
        assert opt.kept[j.job_id] == pytest.approx(1 - share * (1 - _throughput(model, j, opt.caps_w[j.job_id])), abs=1e-12)
        assert opt.kept[j.job_id] >= j.min_kept - 1e-12
    weighted = sum(j.weight * opt.kept[j.job_id] for j in jobs) / sum(j.weight for j in jobs)
    assert opt.weighted_throughput == pytest.approx(weighted, abs=1e-12)
    assert opt.upper_bound == opt.weighted_throughput  # proven optimal, not merely bounded


# (a) + (b): equal to brute force over every combination, across targets from just above the deepest caps
# to no cut at all. At the default resolution the relaxed DP's pick is nearly always feasible on so sparse a
# grid; a coarse one (16 W) leaves most of the work to the conservative DP and the branch and bound.
@pytest.mark.parametrize("resolution_w", [0.5, 16.0])
@pytest.mark.parametrize(
    ("model", "nodes", "share", "step"),
    [(PowerModel(), 0, 0.5, 10), (PowerModel(), 0, 1.0, 25), (SITE_MODEL, 16, 0.3, 10), (SITE_MODEL, 16, 0.7, 25)],
    ids=["default-0.5-10W", "default-1.0-25W", "site-0.3-10W", "site-0.7-25W"],
)
def test_equals_brute_force_on_a_tiny_instance(model: PowerModel, nodes: int, share: float, step: int,
                                               resolution_w: float) -> None:
    total = 128
    full = _uncapped_kw(model, TINY, total, nodes)
    solved = 0
    for frac in np.linspace(0.45, 1.0, 16):
        target = float(frac * full)
        expected = _brute_force(model, TINY, target, share, step, total, nodes)
        if expected is None:
            with pytest.raises(ValueError, match="out of reach"):
                best_caps(TINY, model, target, share, step, total_gpus=total, nodes=nodes, resolution_w=resolution_w)
            continue
        opt = best_caps(TINY, model, target, share, step, total_gpus=total, nodes=nodes, resolution_w=resolution_w)
        assert opt.weighted_throughput == pytest.approx(expected, abs=1e-12), (frac, opt)
        _check_feasible(opt, model, TINY, target, share, total, nodes)
        assert all((c - model.min_cap_w) % step == 0 or c == model.max_cap_w for c in opt.caps_w.values())
        solved += 1
    assert solved >= 8


def test_resolution_changes_speed_not_the_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    """Coarse tables leave more to the branch and bound; when even that is too wide it refines: same optimum."""
    # 57 %: a target where the relaxed DP's pick overshoots, so the branch and bound has work to do
    target = 0.57 * _uncapped_kw(PowerModel(), PHOENIX, PHOENIX_GPUS, PHOENIX_NODES)
    answers = [best_caps(PHOENIX, PowerModel(), target, 0.5, resolution_w=q).weighted_throughput for q in (0.5, 2.0, 8.0)]
    monkeypatch.setattr(optimum, "_MAX_STATES", 4)  # force the refine-and-retry path (8 → 2 → 0.5 → 0.125 W)
    answers.append(best_caps(PHOENIX, PowerModel(), target, 0.5, resolution_w=8.0).weighted_throughput)
    assert max(answers) - min(answers) < 1e-12
    monkeypatch.setattr(optimum, "_MAX_STATES", 0)  # no search is narrow enough, no finer table allowed:
    monkeypatch.setattr(optimum, "_MAX_CELLS", 0)  # it refuses rather than guesses
    with pytest.raises(ArithmeticError, match="partial assignments"):
        best_caps(PHOENIX, PowerModel(), target, 0.5, resolution_w=8.0)


# (c)
def test_loosening_the_target_never_lowers_the_optimum() -> None:
    model = PowerModel()
    full = _uncapped_kw(model, PHOENIX, PHOENIX_GPUS, PHOENIX_NODES)
    values = [best_caps(PHOENIX, model, frac * full, 0.5).weighted_throughput for frac in (0.4, 0.55, 0.7, 0.85, 1.0)]
    assert values == sorted(values)
    assert values[-1] == 1.0  # no cut: nobody capped
    tiny = [best_caps(TINY, model, t, 0.5, 5).weighted_throughput for t in np.linspace(20.0, 60.0, 41)]
    assert all(b >= a for a, b in itertools.pairwise(tiny))


# (d)
def test_an_impossible_target_names_the_gap() -> None:
    model = PowerModel()
    share = 0.5
    # The deepest caps the tiers allow, found independently: each job's lowest cap that keeps min_kept.
    deepest = {j.job_id: min(c for c in _caps(model, 1) if 1 - share * (1 - _throughput(model, j, c)) >= j.min_kept - 1e-12)
               for j in PHOENIX}
    deepest_kw = _site_kw(model, PHOENIX, deepest, PHOENIX_GPUS, PHOENIX_NODES)
    target = deepest_kw - 2.5
    with pytest.raises(ValueError, match="out of reach") as err:
        best_caps(PHOENIX, model, target, share)
    gap = re.search(r"([0-9.]+) kW over", str(err.value))
    assert gap is not None and float(gap.group(1)) == pytest.approx(2.5, abs=1e-3)
    assert f"{deepest_kw:.3f} kW" in str(err.value)
    assert "p-3@" in str(err.value)  # says which caps it tried
    # just at the deepest caps it is feasible, and those are the answer
    at_floor = best_caps(PHOENIX, model, deepest_kw + 1e-6, share)
    assert at_floor.caps_w == deepest


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="capped_share"):
        best_caps(TINY, PowerModel(), 50.0, 0.0)
    with pytest.raises(ValueError, match="step_w"):
        best_caps(TINY, PowerModel(), 50.0, 0.5, 0)
    with pytest.raises(ValueError, match="nodes"):
        best_caps(TINY, SITE_MODEL, 50.0, 0.5)
    with pytest.raises(ValueError, match="total_gpus"):
        best_caps(TINY, PowerModel(), 50.0, 0.5, total_gpus=64)
    with pytest.raises(ValueError, match="unique"):
        best_caps([TINY[0], TINY[0]], PowerModel(), 50.0, 0.5)
    with pytest.raises(ValueError, match="min_kept"):
        OptJob("x", 8, "infer_llama_8b", 1.0, 1.5)


# (e)
@pytest.mark.parametrize(("share", "lo", "hi"), [(0.5, 0.93, 0.97), (185 / 400, 0.93, 0.975)])
def test_phoenix_six_at_a_quarter_cut(share: float, lo: float, hi: float, record_property: Callable[[str, object], None]) -> None:
    model = PowerModel()
    target = 0.75 * _uncapped_kw(model, PHOENIX, PHOENIX_GPUS, PHOENIX_NODES)
    opt = best_caps(PHOENIX, model, target, share, total_gpus=PHOENIX_GPUS, nodes=PHOENIX_NODES)
    print(f"phoenix share={share:.4f} target={target:.3f} kW: {opt.weighted_throughput:.6f} at {opt.site_kw:.3f} kW, "
          f"caps {opt.caps_w}")
    record_property(f"phoenix_optimum_{share:.4f}", opt.weighted_throughput)
    assert lo <= opt.weighted_throughput <= hi
    _check_feasible(opt, model, PHOENIX, target, share, PHOENIX_GPUS, PHOENIX_NODES)
    assert opt.site_kw > target - 0.05  # a 25 % cut leaves no room: the optimum spends the budget
