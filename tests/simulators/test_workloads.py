"""Job mixes: the demo's 512-GPU site, and the Phoenix mix calibrated against the measured event."""

from __future__ import annotations

import csv
import random
from collections import Counter
from datetime import UTC, datetime
from importlib import resources

import pytest

from gateway.clock import ManualClock
from gateway.domain import Action, ActionKind, JobState, Tier
from gateway.power import PowerModel, default_curves
from simulators.cluster import SimulatedCluster
from simulators.workloads import (
    DEMO_GPUS_PER_NODE,
    DEMO_NODES,
    PHOENIX_EVENT_H,
    PHOENIX_EVENT_KW,
    PHOENIX_GPUS_PER_NODE,
    PHOENIX_JOBS,
    PHOENIX_NODES,
    PHOENIX_PRE_EVENT_KW,
    PHOENIX_WINDOW_H,
    WORKLOADS,
    demo_arrivals,
    demo_mix,
    mix_for,
    phoenix_mix,
)

T0 = datetime(2025, 5, 3, 21, 40, tzinfo=UTC)
MODEL = PowerModel()
CURVES = default_curves()


def demo_cluster(seed: int) -> SimulatedCluster:
    return SimulatedCluster(ManualClock(T0), MODEL, DEMO_NODES, DEMO_GPUS_PER_NODE, demo_mix(seed), seed=seed)


def phoenix_cluster() -> SimulatedCluster:
    return SimulatedCluster(ManualClock(T0), MODEL, PHOENIX_NODES, PHOENIX_GPUS_PER_NODE, phoenix_mix())


async def cap_all(sim: SimulatedCluster, kept: dict[str, float]) -> dict[str, float]:
    """Cap each job at the lowest cap that keeps ``kept[job]`` of its throughput; returns the caps."""
    caps = {}
    for job in (await sim.snapshot()).jobs:
        caps[job.job_id] = CURVES.get(job.workload).cap_for_throughput(kept[job.job_id])
        await sim.apply(Action(key=f"cap-{job.job_id}", kind=ActionKind.CAP, at=T0, job_id=job.job_id,
                               watts=caps[job.job_id]))
    return caps


# ------------------------------------------------------------------------------- demo mix


@pytest.mark.parametrize("seed", [0, 1, 7, 42, 2025])
async def test_demo_mix_covers_every_tier_and_fits_512_gpus(seed: int) -> None:
    specs = demo_mix(seed)
    assert {s.tier for s in specs} == set(Tier)
    gpus = sum(s.gpus for s in specs)
    assert 0.85 * 512 <= gpus <= 0.92 * 512, gpus
    snap = await demo_cluster(seed).snapshot()
    assert all(j.state is JobState.RUNNING for j in snap.jobs)  # every job placed, none left pending
    assert snap.total_gpus == 512 and len(snap.nodes) == 64


@pytest.mark.parametrize("seed", [0, 1, 7, 42, 2025])
def test_demo_mix_is_varied_like_a_real_site(seed: int) -> None:
    specs = demo_mix(seed)
    sizes = Counter(s.gpus for s in specs)
    assert sum(sizes[g] for g in (8, 16, 32, 64)) >= 0.7 * len(specs), sizes
    assert all(30 <= s.checkpoint_s <= 300 for s in specs)
    assert all(s.workload in WORKLOADS for s in specs) and len({s.workload for s in specs}) >= 4
    assert any(not s.requeueable for s in specs)
    assert all(s.requeueable for s in specs if s.tier is Tier.PREEMPTIBLE)  # stopping them must not kill them
    ending = [s for s in specs if s.work_s < 3600]
    assert 1 <= len(ending) < len(specs) / 2  # some finish during a one-hour event, most run on
    assert sum(s.work_s >= 3 * 3600 for s in specs) > len(specs) / 2
    assert len({s.job_id for s in specs}) == len(specs)


def test_demo_mix_is_deterministic_by_seed() -> None:
    assert demo_mix(7) == demo_mix(7)
    assert demo_mix(7) != demo_mix(8)


async def test_demo_site_power_is_plausible_and_some_jobs_end_within_the_hour() -> None:
    clock = ManualClock(T0)
    sim = SimulatedCluster(clock, MODEL, DEMO_NODES, DEMO_GPUS_PER_NODE, demo_mix(7), seed=7)
    start_kw = await sim.read_kw()
    # 512 GPUs between idle (60 W) and the hungriest curve (388 W)
    assert 512 * 0.06 < start_kw < 512 * 0.388, start_kw
    await clock.advance(3600)
    snap = await sim.snapshot()
    done = [j for j in snap.jobs if j.state is JobState.COMPLETED]
    assert done and snap.site_kw is not None and snap.site_kw < start_kw


def test_demo_arrivals_make_node_sized_jobs() -> None:
    arrivals = demo_arrivals(3.0)
    specs = [arrivals.make(random.Random(1), f"a-{i}") for i in range(20)]
    assert arrivals.rate_per_hour == 3.0 and {s.gpus for s in specs} <= {8, 16}
    assert all(s.work_s >= 3 * 3600 for s in specs)


# ---------------------------------------------------------------------------- Phoenix mix


def test_phoenix_mix_matches_the_published_jobs() -> None:
    specs = phoenix_mix()
    assert [s.gpus for s in specs] == [32, 32, 48, 48, 48, 48] and sum(s.gpus for s in specs) == 256
    assert [s.tier for s in specs] == [Tier.FLEX_25, Tier.FLEX_50, Tier.FLEX_10, Tier.FLEX_25, Tier.FLEX_50, Tier.FLEX_50]
    assert [s.workload for s in specs] == ["ft_llama_8b_p3", "infer_llama_8b_32g", "infer_llama_8b_48g",
                                           "infer_llama_8b_48g", "pt_mpt_13b_sm", "pt_mpt_7b_fast"]
    assert all(s.workload in CURVES.curves for s in specs)
    weights = {0.9: 0.230769231, 0.75: 0.192307692, 0.5: 0.128205128}  # the file's bucket weights
    weighted = sum(pj.performance * weights[pj.flexibility] for pj in PHOENIX_JOBS)
    assert weighted == pytest.approx(0.907884615)  # the file's "Weighted Performance" row


def test_phoenix_gpu_counts_follow_from_the_dvfs_sweep() -> None:
    """GPUs = total GPU power / power per GPU, as the data README says (embedded copy of the sweep)."""
    text = resources.files("gateway").joinpath("data/dvfs_sweep.csv").read_text()
    gpus = {row["Workload"]: round(float(row["total GPU power"]) / float(row["power per GPU"]))
            for row in csv.DictReader(text.splitlines())}
    assert [s.gpus for s in phoenix_mix()] == [gpus[s.workload] for s in phoenix_mix()]


async def test_phoenix_uncapped_power_matches_the_measured_pre_event_mean() -> None:
    """Tolerance 10%: the model is the per-GPU sweep at full power; the meter saw 93.3 kW."""
    sim = phoenix_cluster()
    kw = await sim.read_kw()
    assert abs(kw - PHOENIX_PRE_EVENT_KW) <= 0.10 * PHOENIX_PRE_EVENT_KW, (
        f"modelled uncapped {kw:.1f} kW vs measured pre-event mean {PHOENIX_PRE_EVENT_KW} kW")
    assert sim.power_at_full() == pytest.approx(kw)


async def test_phoenix_capped_at_every_tier_floor_sits_just_below_the_measured_event() -> None:
    """Capping every job at the cap its tier allows (keeping exactly 1 - max_loss) is the deepest the
    tiers let the event go. The field demo used less than that allowance (its jobs kept a weighted
    0.908 of their throughput), so the model must land *below* the measured 63.9 kW hold, and not
    far below: documented tolerance, between 70% and 100% of it (the model gives about 48.7 kW, 76%).
    """
    sim = phoenix_cluster()
    caps = await cap_all(sim, {s.job_id: 1 - s.tier.max_loss for s in phoenix_mix()})
    kw = await sim.read_kw()
    msg = f"modelled at tier floors {kw:.1f} kW vs measured event mean {PHOENIX_EVENT_KW} kW; caps {caps}"
    assert 0.70 * PHOENIX_EVENT_KW <= kw <= PHOENIX_EVENT_KW, msg
    assert all(MODEL.min_cap_w <= c <= MODEL.max_cap_w for c in caps.values()), msg


async def test_phoenix_measured_performance_reproduces_the_event_power() -> None:
    """A tighter check of the curves: if each job's measured loss (over the 6.65-hour measurement
    window) all happened during the 3-hour event, its throughput during the event was
    1 - (1 - performance) x window / event. Capping each job there must reproduce the measured hold
    within 5% (the model gives about 64.3 kW). The window is an assumption: the data does not say
    over which span the performance was averaged.
    """
    sim = phoenix_cluster()
    scale = PHOENIX_WINDOW_H / PHOENIX_EVENT_H
    kept = {s.job_id: max(0.0, 1 - (1 - pj.performance) * scale) for s, pj in zip(phoenix_mix(), PHOENIX_JOBS, strict=True)}
    await cap_all(sim, kept)
    kw = await sim.read_kw()
    assert abs(kw - PHOENIX_EVENT_KW) <= 0.05 * PHOENIX_EVENT_KW, (
        f"modelled {kw:.1f} kW vs measured event mean {PHOENIX_EVENT_KW} kW (kept during event {kept})")


def test_mix_for_follows_the_configuration_names() -> None:
    assert mix_for("demo", 3) == demo_mix(3)
    assert mix_for("phoenix", 3, nodes=32) == phoenix_mix()
    with pytest.raises(ValueError, match="32 nodes"):
        mix_for("phoenix", 0, nodes=16)
    with pytest.raises(ValueError, match="unknown workload mix"):
        mix_for("bogus", 0)
