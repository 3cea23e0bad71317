"""A scenario's job stream: the jobs present at the start and every later submission, fixed by the seed.

The stream is built once and handed unchanged to every strategy's run, so the planner and the baselines
see identical jobs arriving at identical times; only what each strategy does to them differs.

Trace CSV (``[jobs] trace = "file.csv"``), one row per job, header required:

=========================  ========================================================================
column                     meaning
=========================  ========================================================================
job_id                     unique id
submit_min                 minutes after the scenario start when it is submitted; 0 or less: it is
                           already running when the scenario starts
gpus                       GPUs it needs
tier                       critical, flex-10, flex-25, flex-50 or preemptible
workload                   a DVFS curve name (``gateway/data/dvfs_sweep.csv``); unknown: the average
work_h                     hours of work left at full speed
name                       optional, the job's name
elapsed_h                  optional, hours it already ran (counts towards its tier's allowance)
checkpoint_interval_min    optional, its own periodic checkpoints (empty: never)
checkpoint_s, restart_s    optional, what a checkpoint and a restart take (default 60 / 120)
checkpointable             optional, true/false (default true)
requeueable                optional, true/false (default true)
value_per_mwh              optional, what its work is worth (economic mode)
weight                     optional, its weight in the weighted throughput (default: its tier's)
=========================  ========================================================================
"""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass, field
from pathlib import Path

from gateway.domain import Tier
from gateway.exceptions import ScenarioError
from simulators._simcore import Arrivals, SimJobSpec, place
from simulators.replay.scenario import GeneratorSpec, LoadedScenario
from simulators.workloads import WORKLOADS

_REQUIRED = ("job_id", "submit_min", "gpus", "tier", "workload", "work_h")
_OPTIONAL = ("name", "elapsed_h", "checkpoint_interval_min", "checkpoint_s", "restart_s", "checkpointable",
             "requeueable", "value_per_mwh", "weight")
_BOOL = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


@dataclass(frozen=True, slots=True)
class JobStream:
    """Jobs at the start, later submissions as (seconds after the start, spec) from a trace, Poisson arrivals
    from a generator, and per-job weights."""

    initial: tuple[SimJobSpec, ...]
    later: tuple[tuple[float, SimJobSpec], ...]
    weights: dict[str, float] = field(default_factory=dict)
    arrivals: Arrivals | None = None

    def __len__(self) -> int:
        return len(self.initial) + len(self.later)

    def weight(self, job_id: str, tier: Tier, tier_weights: dict[Tier, float]) -> float:
        return self.weights.get(job_id, tier_weights.get(tier, 1.0))


def job_stream(scn: LoadedScenario) -> JobStream:
    """The scenario's stream: from its trace, or generated from its seed."""
    jobs = scn.spec.jobs
    if jobs.trace is not None:
        return read_trace(scn.base_dir / jobs.trace, scn.spec.site.gpus)
    assert jobs.generator is not None
    return generate(jobs.generator, scn.spec.site.nodes, scn.spec.site.gpus_per_node,
                    scn.spec.scenario.hours * 3600.0, scn.spec.scenario.seed)


def read_trace(path: Path, site_gpus: int) -> JobStream:
    """Parse a trace CSV; every bad cell is reported with its row and column, all at once."""
    problems: list[tuple[str, str]] = []
    initial: list[SimJobSpec] = []
    later: list[tuple[float, SimJobSpec]] = []
    weights: dict[str, float] = {}
    seen: set[str] = set()
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in reader.fieldnames or []]
        missing = [c for c in _REQUIRED if c not in header]
        unknown = [c for c in header if c not in _REQUIRED and c not in _OPTIONAL]
        if missing:
            problems.append(("(header)", f"missing column(s): {', '.join(missing)} (required: {', '.join(_REQUIRED)})"))
        if unknown:
            problems.append(("(header)", f"unknown column(s): {', '.join(unknown)}"))
        if problems:
            raise ScenarioError(str(path), problems)
        for n, raw in enumerate(reader, start=2):
            row = {(k or "").strip(): (v or "").strip() for k, v in raw.items()}
            where = f"row {n}"
            try:
                spec, submit_s, weight = _row(row, site_gpus)
            except ValueError as exc:
                problems.append((where, str(exc)))
                continue
            if spec.job_id in seen:
                problems.append((f"{where}.job_id", f"duplicate job id {spec.job_id!r}"))
                continue
            seen.add(spec.job_id)
            if weight is not None:
                weights[spec.job_id] = weight
            if submit_s <= 0:
                initial.append(spec)
            else:
                later.append((submit_s, spec))
    if not initial and not later and not problems:
        problems.append(("(rows)", "the trace has no jobs"))
    if problems:
        raise ScenarioError(str(path), problems)
    later.sort(key=lambda p: (p[0], p[1].job_id))
    return JobStream(tuple(initial), tuple(later), weights)


def _row(row: dict[str, str], site_gpus: int) -> tuple[SimJobSpec, float, float | None]:
    def num(col: str, default: float | None = None) -> float:
        v = row.get(col, "")
        if v == "":
            if default is None:
                raise ValueError(f"{col}: required, got an empty cell")
            return default
        try:
            return float(v)
        except ValueError:
            raise ValueError(f"{col}: not a number: {v!r}") from None

    def flag(col: str) -> bool:
        v = row.get(col, "").lower()
        if v == "":
            return True
        if v not in _BOOL:
            raise ValueError(f"{col}: not true/false: {row[col]!r}")
        return _BOOL[v]

    job_id = row.get("job_id", "")
    if not job_id:
        raise ValueError("job_id: required, got an empty cell")
    try:
        tier = Tier(row.get("tier", ""))
    except ValueError:
        raise ValueError(f"tier: {row.get('tier')!r} is not one of {', '.join(t.value for t in Tier)}") from None
    gpus = num("gpus")
    if gpus != int(gpus) or not 1 <= gpus <= site_gpus:
        raise ValueError(f"gpus: {row['gpus']!r} is not a whole number from 1 to the site's {site_gpus}")
    interval = row.get("checkpoint_interval_min", "")
    weight = num("weight", -1.0)
    if row.get("weight", "") != "" and weight < 0:
        raise ValueError(f"weight: must be >= 0, got {row['weight']!r}")
    value = row.get("value_per_mwh", "")
    try:
        spec = SimJobSpec(
            job_id=job_id, tier=tier, gpus=int(gpus), workload=row.get("workload") or "average",
            work_s=num("work_h") * 3600.0, name=row.get("name", ""), elapsed_s=num("elapsed_h", 0.0) * 3600.0,
            checkpoint_interval_s=float(interval) * 60.0 if interval else None,
            checkpoint_s=num("checkpoint_s", 60.0), restart_s=num("restart_s", 120.0),
            checkpointable=flag("checkpointable"), requeueable=flag("requeueable"),
            value_per_mwh=float(value) if value else None,
        )
    except ValueError as exc:
        raise ValueError(str(exc).removeprefix(f"job {job_id}: ")) from None
    return spec, num("submit_min") * 60.0, weight if weight >= 0 else None


def generate(gen: GeneratorSpec, nodes: int, gpus_per_node: int, horizon_s: float, seed: int) -> JobStream:
    """The cluster filled to ``gen.fill`` at the start (jobs part-way through their runs), then Poisson
    arrivals over the horizon, every draw from ``seed`` (the arrivals are drawn by the simulated cluster from
    its own seeded generator, so every strategy's cluster sees the same ones at the same times)."""
    rng = random.Random(seed * 1_000_033 + 5)
    sizes = [g for g in gen.sizes if g <= nodes * gpus_per_node]
    if not sizes:
        raise ScenarioError("jobs.generator", [("jobs.generator.sizes", "every job size is larger than the site")])
    free = {f"n{i:06d}": gpus_per_node for i in range(nodes)}
    allowed = set(free)
    target = gen.fill * nodes * gpus_per_node
    initial: list[SimJobSpec] = []
    used = misses = 0
    while used < target - 0.5 and misses < 200:
        spec = _make(gen, sizes, rng, f"j{len(initial) + 1:06d}", started=True)
        if used + spec.gpus > target + gpus_per_node or place(free, gpus_per_node, spec.gpus, allowed, []) is None:
            misses += 1
            continue
        initial.append(spec)
        used += spec.gpus
    arrivals = None
    if gen.arrivals_per_hour > 0:
        arrivals = Arrivals(rate_per_hour=gen.arrivals_per_hour,
                            make=lambda r, job_id: _make(gen, sizes, r, job_id, started=False))
    return JobStream(tuple(initial), (), arrivals=arrivals)


def _make(gen: GeneratorSpec, sizes: list[int], rng: random.Random, job_id: str, started: bool) -> SimJobSpec:
    """One job drawn from the generator's distributions (``started``: part-way through its run)."""
    tiers = [t for t, w in gen.tiers.items() if w > 0]
    tier = rng.choices(tiers, weights=[gen.tiers[t] for t in tiers])[0]
    gpus = rng.choices(sizes, weights=[gen.sizes[g] for g in sizes])[0]
    workload = rng.choice(list(gen.workloads or WORKLOADS))
    total = rng.uniform(*gen.duration_h) * 3600.0
    done = rng.uniform(0.0, total) if started else 0.0
    value = None
    if gen.value_per_mwh is not None and rng.random() < gen.valued:
        value = float(round(rng.uniform(*gen.value_per_mwh)))
    return SimJobSpec(
        job_id=job_id, tier=tier, gpus=gpus, workload=workload, name=f"{workload}-{job_id}",
        work_s=max(60.0, round(total - done)), elapsed_s=round(done),
        checkpoint_interval_s=rng.uniform(*gen.checkpoint_interval_min) * 60.0,
        checkpoint_s=round(rng.uniform(*gen.checkpoint_s)), restart_s=round(rng.uniform(*gen.restart_s)),
        checkpointable=rng.random() < gen.checkpointable,
        requeueable=tier is Tier.PREEMPTIBLE or rng.random() < gen.requeueable,
        value_per_mwh=value,
    )
