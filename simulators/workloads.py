"""Job mixes for the simulated cluster: the demo's 512-GPU site and the Phoenix 2025 field demo.

Every mix is a list of ``SimJobSpec`` built from a seed, so a demo, a test and a replay that pass
the same seed see the same jobs. Workloads are the names of the embedded DVFS curves
(``gateway.power.default_curves()``), so each job's power and throughput under a cap are measured
ones.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from gateway.domain import Tier
from simulators._simcore import Arrivals, SimJobSpec, place

# The measured curves of the Phoenix DVFS sweep (gateway/data/dvfs_sweep.csv).
WORKLOADS: tuple[str, ...] = (
    "ft_llama_8b_dolly", "ft_llama_8b_p3", "infer_llama_8b", "infer_llama_8b_32g", "infer_llama_8b_48g",
    "pt_mpt_13b_lg", "pt_mpt_13b_sm", "pt_mpt_7b_fast",
)
DEMO_NODES = 64
DEMO_GPUS_PER_NODE = 8

# Figures computed from shared/data/emerald-phoenix-2025/SRP_total_power.csv (see that folder's
# README): mean cluster power before the SRP event (14:40–16:00 local) and while it held (16:30–19:30).
PHOENIX_PRE_EVENT_KW = 93.3
PHOENIX_EVENT_KW = 63.9
PHOENIX_NODES = 32
PHOENIX_GPUS_PER_NODE = 8
# The measurements cover 14:40–21:19 local (SRP_total_power.csv): the window over which the jobs'
# "Performance" below is taken to be averaged, around a 3-hour event.
PHOENIX_WINDOW_H = (21 * 60 + 19 - (14 * 60 + 40)) / 60
PHOENIX_EVENT_H = 3.0


@dataclass(frozen=True, slots=True)
class PhoenixJob:
    """One row of SRP_performance_by_flex.csv, with its GPU count from dvfs_sweep.csv."""

    name: str
    performance: float  # throughput kept over the experiment, as measured
    flexibility: float  # the bucket's minimum throughput: 0.9, 0.75 or 0.5
    gpus: int  # total GPU power / power per GPU in dvfs_sweep.csv

    @property
    def workload(self) -> str:
        return self.name.split("-")[0]

    @property
    def tier(self) -> Tier:
        return {0.9: Tier.FLEX_10, 0.75: Tier.FLEX_25, 0.5: Tier.FLEX_50}[self.flexibility]


# Source: shared/data/emerald-phoenix-2025/SRP_performance_by_flex.csv (Apache-2.0; from the public
# artifacts of arXiv 2507.00909, ai-emerald/emerald-ai-demo-may-2025, sheet "Performance Data" of
# Fig2_data.xlsx), in file order; the weighted performance of the six is 0.908.
PHOENIX_JOBS: tuple[PhoenixJob, ...] = (
    PhoenixJob("ft_llama_8b_p3-c6rr6ijz", 0.939635, 0.75, 32),
    PhoenixJob("infer_llama_8b_32g-ssac4bap", 0.973165, 0.5, 32),
    PhoenixJob("infer_llama_8b_48g-hgfu2h87", 1.0, 0.9, 48),
    PhoenixJob("infer_llama_8b_48g-xhganfr6", 0.992455, 0.75, 48),
    PhoenixJob("pt_mpt_13b_sm-gnn16mkt", 0.666923, 0.5, 48),
    PhoenixJob("pt_mpt_7b_fast-qryepi9o", 0.743277, 0.5, 48),
)


def _costs(workload: str) -> tuple[float, float]:
    """Typical (checkpoint_s, restart_s): inference drains fast, pre-training writes big states."""
    if workload.startswith("infer"):
        return 30.0, 90.0
    if workload.startswith("ft"):
        return 90.0, 150.0
    return 180.0, 240.0


def phoenix_mix() -> list[SimJobSpec]:
    """The six jobs of the Phoenix SRP experiment on 256 GPUs (32 nodes x 8), fully packed.

    Each runs for the whole 6.65-hour measurement window and beyond, one hour in already.
    """
    specs = []
    for i, pj in enumerate(PHOENIX_JOBS, start=1):
        ck, rs = _costs(pj.workload)
        specs.append(SimJobSpec(
            job_id=f"p-{i}", name=pj.name, tier=pj.tier, gpus=pj.gpus, workload=pj.workload,
            work_s=12 * 3600.0, elapsed_s=3600.0, checkpoint_s=ck, restart_s=rs,
        ))
    return specs


_TIER_WEIGHTS = {Tier.CRITICAL: 2, Tier.FLEX_10: 2, Tier.FLEX_25: 2, Tier.FLEX_50: 2, Tier.PREEMPTIBLE: 2}
_SIZES = (1, 2, 4, 8, 16, 32, 64)
_SIZE_WEIGHTS = (1, 1, 2, 8, 8, 6, 3)


def random_job(rng: random.Random, job_id: str, tier: Tier | None = None, gpus: int | None = None,
               ending_soon: bool | None = None) -> SimJobSpec:
    """One plausible job. ``ending_soon`` jobs have 10–50 minutes of work left; others 3–48 hours."""
    if tier is None:
        tier = rng.choices(list(_TIER_WEIGHTS), weights=list(_TIER_WEIGHTS.values()))[0]
    if gpus is None:
        gpus = rng.choices(_SIZES, weights=_SIZE_WEIGHTS)[0]
    if ending_soon is None:
        ending_soon = rng.random() < 0.2
    workload = rng.choice(WORKLOADS)
    work = rng.uniform(600, 3000) if ending_soon else rng.uniform(3, 48) * 3600
    infer = workload.startswith("infer")
    requeueable = tier is Tier.PREEMPTIBLE or rng.random() > (0.3 if tier is Tier.CRITICAL else 0.15)
    return SimJobSpec(
        job_id=job_id, name=f"{workload}-{rng.getrandbits(24):06x}", tier=tier, gpus=gpus, workload=workload,
        work_s=round(work), elapsed_s=round(rng.uniform(0.5, 24) * 3600),
        checkpoint_interval_s=rng.choice((900.0, 1800.0, 3600.0)),
        checkpoint_s=float(rng.randrange(30, 90, 10) if infer else rng.randrange(60, 301, 10)),
        restart_s=float(rng.randrange(60, 301, 10)),
        checkpointable=infer or rng.random() > 0.1,
        requeueable=requeueable,
        value_per_mwh=None if rng.random() < 0.4 else float(rng.randrange(40, 401, 10)),
    )


def demo_mix(seed: int, nodes: int = DEMO_NODES, gpus_per_node: int = DEMO_GPUS_PER_NODE,
             fill: float = 0.9) -> list[SimJobSpec]:
    """The demo's jobs: every tier, mostly 8–64-GPU jobs, about ``fill`` of the GPUs busy.

    About one job in five ends within the hour, so a one-hour event sees jobs finish on their
    own; the rest run for hours. The jobs fit the cluster in order (the cluster places them so).
    """
    rng = random.Random(seed)
    free = {f"n{i:05d}": gpus_per_node for i in range(nodes)}  # sorts like the cluster's names
    allowed = set(free)
    target = fill * nodes * gpus_per_node
    tiers = list(Tier)
    rng.shuffle(tiers)
    specs: list[SimJobSpec] = []
    used = 0
    for _ in range(500):
        if used >= target - 0.5:
            break
        job_id = f"j-{len(specs) + 1:02d}"
        spec = random_job(rng, job_id, tier=tiers[len(specs)] if len(specs) < len(tiers) else None)
        if used + spec.gpus > target + gpus_per_node or place(free, gpus_per_node, spec.gpus, allowed, []) is None:
            continue
        specs.append(spec)
        used += spec.gpus
    return specs


def demo_arrivals(rate_per_hour: float = 2.0) -> Arrivals:
    """New jobs for the demo while it runs: 8 or 16 GPUs, any tier, hours of work."""

    def make(rng: random.Random, job_id: str) -> SimJobSpec:
        return random_job(rng, job_id, gpus=rng.choice((8, 16)), ending_soon=False)

    return Arrivals(rate_per_hour=rate_per_hour, make=make)


def mix_for(name: str, seed: int, nodes: int = DEMO_NODES, gpus_per_node: int = DEMO_GPUS_PER_NODE) -> list[SimJobSpec]:
    """The mix a configuration names (``scheduler.simulated.workload_mix``): "demo" or "phoenix".

    The Phoenix mix is fixed at 256 GPUs and needs at least 32 nodes of 8 GPUs.
    """
    if name == "demo":
        return demo_mix(seed, nodes, gpus_per_node)
    if name == "phoenix":
        if nodes * gpus_per_node < PHOENIX_NODES * PHOENIX_GPUS_PER_NODE or gpus_per_node != PHOENIX_GPUS_PER_NODE:
            raise ValueError(f"the phoenix mix needs {PHOENIX_NODES} nodes of {PHOENIX_GPUS_PER_NODE} GPUs or more")
        return phoenix_mix()
    raise ValueError(f"unknown workload mix {name!r} (known: demo, phoenix)")
