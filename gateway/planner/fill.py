"""Target mode's first phase: power caps by water-filling, the least throughput lost for the kW needed.

The DVFS curves are concave in the large: the first watts off a GPU's cap are cheap (400→300 W sheds
~80 W for ~9 % of the throughput), the last ones dear (200→100 W: ~95 W for ~50 %). So instead of
capping a few jobs as deep as their tiers allow, every flexible job walks down its own cap path
(``levers.cap_path``: concave steps between the curve's breakpoints, ending at the deepest cap its
allowance permits) and the next step taken, across all jobs, is always the one with the most kW shed
per unit of GPU-weighted throughput lost, until the need is met; the last step stops at the whole-watt
cap that just meets it.

Jobs in one scan bucket (same curve, same cap now, same allowed cap) have the same path, and a step's
ratio does not depend on a job's size, so the heap holds one entry per bucket, not per job: a bucket's
step is taken by all its jobs at once (its kW is the step's per-GPU kW times the bucket's GPUs), the
bucket's next step is pushed only when that one is taken, and the loop stops as soon as the need is
met. Only the bucket the need runs out in is split job by job (largest jobs first — fewer commands —
then job id). The heap is ``O(b log b)`` over ``b`` buckets (a few thousand at most, whatever the
cluster's size); the chosen jobs are only sorted within their buckets: the result is a list of
``CapRun`` (jobs capped alike), which the action builder turns into commands without a per-job
object in between.

The order of the choices (hence of the shed commands and, reversed, of the restores) is by each job's
kW shed per unit lost from its cap now to its final cap, best first; ties by curve, cap now, allowed
cap and final cap, then job id. Every tie is broken by content, never by the snapshot's order.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from heapq import heapify, heappop, heappush
from operator import itemgetter
from typing import Any, cast

from gateway.domain import Tier
from gateway.planner.levers import Cand, CapRun, CurveTable, Step, cap_path
from gateway.power import PowerModel

BucketKey = tuple[CurveTable, int, float | None]
_Rank = tuple[float, str, float, int, int, int]


def water_fill(buckets: dict[BucketKey, list[Cand]], gpus: dict[BucketKey, int], model: PowerModel,
               need_kw: float, job_weights: Mapping[Tier, float] | None = None) -> tuple[list[CapRun], float]:
    """Caps that shed ``need_kw`` with the least throughput lost, in shedding order, and what is missing.

    ``buckets`` and ``gpus`` are the scan's candidates and their GPU totals; the lists in ``buckets``
    are sorted in place. When the caps cannot shed it all, every job ends at its deepest allowed cap
    and the missing kW is returned (the pauses and stops of the second phase take it from there).

    With ``job_weights`` (per tier) the loss counted is weight × throughput per job, not per GPU: a step's
    ratio is then its per-GPU ratio times the job's GPUs over its weight, so each bucket is first split by
    that factor (jobs of one size and weight stay together) and the heap compares the scaled ratios.
    """
    if job_weights is not None:
        buckets, gpus = _by_factor(buckets, job_weights)
    paths: dict[BucketKey, tuple[Step, ...]] = {}
    shared: dict[tuple[object, ...], tuple[Step, ...]] = {}
    heap = []
    for key in gpus:
        tab, i, cap = key[0], key[1], key[2]
        f: float = key[3] if len(key) > 3 else 1.0
        base = key[:3]
        path = shared.get(base)
        if path is None:
            path = shared[base] = cap_path(tab, model, cap, i)
        paths[key] = path
        heap.append((-path[0].eff * f, tab.name, math.inf if cap is None else cap, i, -f, 0, key))
    heapify(heap)  # entries differ before ``key``, which is never compared
    remaining = need_kw
    taken: dict[BucketKey, int] = {}  # steps every job of the bucket has taken
    last: tuple[BucketKey, int] | None = None  # the bucket and step the need runs out in
    while heap:
        _, name, ck, i, nf, k, key = heappop(heap)
        path = paths[key]
        before = path[k - 1].save if k else 0.0
        kw = (path[k].save - before) * gpus[key]
        if kw >= remaining:
            last = (key, k)
            taken.pop(key, None)  # ``_split`` places every job of this bucket
            break
        remaining -= kw
        taken[key] = k + 1
        if k + 1 < len(path):
            heappush(heap, (path[k + 1].eff * nf, name, ck, i, nf, k + 1, key))

    runs: list[tuple[_Rank, CapRun]] = []
    for key, n in taken.items():
        cands = buckets[key]
        cands.sort(key=_job_id)
        runs.append(_run(key, paths[key][n - 1], cands))
    if last is not None:
        remaining = _split(last, paths[last[0]], buckets[last[0]], model, remaining, runs)
    runs.sort(key=_rank)
    return [r for _, r in runs], remaining


def _split(last: tuple[BucketKey, int], path: tuple[Step, ...], cands: list[Cand], model: PowerModel,
           remaining: float, runs: list[tuple[_Rank, CapRun]]) -> float:
    """Step ``k`` of the last bucket, job by job (largest first: fewer commands), until the need is met;
    the job that meets it gets the whole-watt cap that just does. Returns the need left (at most 0)."""
    key, k = last
    tab, i, cap = key[0], key[1], key[2]
    cur = tab.running_kw(model, cap)
    cands.sort(key=_job_id)
    cands.sort(key=_gpus_of, reverse=True)  # stable: job id stays the tie-break
    before = path[k - 1].save if k else 0.0
    per_gpu = path[k].save - before
    r = remaining
    n = 0
    for cand in cands:
        g = cand[3]
        if g * per_gpu >= r or n == len(cands) - 1:  # the last job takes the rest, whatever float error says
            idx = tab.cap_index_for_kw(path[k].idx, cur - before - r / g)
            save = cur - tab.kw[idx]
            lost = tab.running_thr(model, cap) - tab.thr[idx]
            rank = (-(save / lost if lost > 0.0 else math.inf), tab.name, math.inf if cap is None else cap, i, idx, 1)
            runs.append((rank, CapRun([cand], tab.lo + idx, save, tab.thr[idx], cap)))
            r -= g * (save - before)
            break
        r -= g * per_gpu
        n += 1
    if n:
        runs.append(_run(key, path[k], cands[:n]))
    if k and n + 1 < len(cands):
        runs.append(_run(key, path[k - 1], cands[n + 1:]))
    return min(r, 0.0)  # the bucket's step covered the need: any positive rest is float noise


def _run(key: BucketKey, step: Step, cands: list[Cand]) -> tuple[_Rank, CapRun]:
    tab, i, cap = key[0], key[1], key[2]
    rank = (-step.avg, tab.name, math.inf if cap is None else cap, i, step.idx, 0)
    return rank, CapRun(cands, tab.lo + step.idx, step.save, tab.thr[step.idx], cap)


def _by_factor(buckets: dict[BucketKey, list[Cand]], weights: Mapping[Tier, float]
               ) -> tuple[dict[BucketKey, list[Cand]], dict[BucketKey, int]]:
    """Each bucket split by GPUs / weight (a weight of 0: the job's throughput is worth nothing, shed first);
    the keys gain the factor as a fourth item."""
    out: dict[tuple[Any, ...], list[Cand]] = {}
    gpus: dict[tuple[Any, ...], int] = {}
    for key, cands in buckets.items():
        for cand in cands:
            w = weights.get(cand[4], 1.0)
            sub = (*key, cand[3] / w if w > 0 else _WORTHLESS)
            lst = out.get(sub)
            if lst is None:
                out[sub] = [cand]
                gpus[sub] = cand[3]
            else:
                lst.append(cand)
                gpus[sub] += cand[3]
    return cast(dict[BucketKey, list[Cand]], out), cast(dict[BucketKey, int], gpus)


_WORTHLESS = 1e12
_rank = itemgetter(0)
_job_id = itemgetter(0)
_gpus_of = itemgetter(3)
