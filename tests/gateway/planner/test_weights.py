"""The weighted-jobs objective: caps keep the most Σ weight × throughput per job, not per GPU."""

from __future__ import annotations

import pytest

from gateway.domain import Job, Tier
from gateway.exceptions import PlanningError
from gateway.planner import plan
from tests.gateway.planner import MODEL, NOW, directive, policy, snapshot


def jobs() -> tuple[Job, ...]:
    # same curve and tier allowance; one big, one small: per GPU they are alike, per job the big one is cheap
    return (Job(job_id="big", tier=Tier.FLEX_50, gpus=64, workload="average", elapsed_s=36_000, remaining_s=36_000),
            Job(job_id="small", tier=Tier.FLEX_50, gpus=8, workload="average", elapsed_s=36_000, remaining_s=36_000))


def cap_of(p: object, job_id: str) -> float | None:
    return next((a.watts for a in p.shed if a.job_id == job_id), None)  # type: ignore[attr-defined]


def weighted_kept(p: object, weights: dict[str, float]) -> float:
    loss = dict(p.job_loss)  # type: ignore[attr-defined]
    return sum(w * (1 - loss.get(j, 0.0)) for j, w in weights.items()) / sum(weights.values())


def test_per_gpu_the_jobs_are_capped_alike_and_per_job_the_big_one_goes_deeper() -> None:
    snap = snapshot(*jobs())
    need = MODEL.site_kw(snap) - 6.0
    gpu = plan(directive(need), snap, policy(tolerance_kw=0.01), NOW)
    per_job = plan(directive(need), snap, policy(tolerance_kw=0.01, job_weights={Tier.FLEX_50: 1.0}), NOW)
    assert gpu.expected_kw == pytest.approx(per_job.expected_kw, abs=0.05)  # the same kW either way
    assert cap_of(per_job, "small") is None or cap_of(per_job, "small") > cap_of(per_job, "big")  # type: ignore[operator]
    w = {"big": 1.0, "small": 1.0}
    assert weighted_kept(per_job, w) > weighted_kept(gpu, w) + 0.01


def test_a_heavier_tier_is_spared_when_sizes_are_equal() -> None:
    a = Job(job_id="a", tier=Tier.FLEX_50, gpus=32, workload="average", elapsed_s=36_000, remaining_s=36_000)
    b = Job(job_id="b", tier=Tier.FLEX_25, gpus=32, workload="average", elapsed_s=36_000, remaining_s=36_000)
    snap = snapshot(a, b)
    p = plan(directive(MODEL.site_kw(snap) - 4.0), snap,
             policy(tolerance_kw=0.01, job_weights={Tier.FLEX_50: 0.1, Tier.FLEX_25: 1.0}), NOW)
    assert cap_of(p, "a") is not None
    assert cap_of(p, "b") is None or cap_of(p, "b") > cap_of(p, "a")  # type: ignore[operator]


def test_weights_must_be_finite_and_not_negative() -> None:
    with pytest.raises(PlanningError, match="job weights"):
        policy(job_weights={Tier.FLEX_50: -1.0})


def test_headroom_aims_below_the_target_but_a_shortfall_is_measured_against_it() -> None:
    snap = snapshot(*jobs())
    target = MODEL.site_kw(snap) - 6.0
    plain = plan(directive(target), snap, policy(tolerance_kw=0.01), NOW)
    roomy = plan(directive(target), snap, policy(tolerance_kw=0.01, headroom_kw=2.0), NOW)
    assert plain.expected_kw == pytest.approx(target, abs=0.05)
    assert roomy.expected_kw == pytest.approx(target - 2.0, abs=0.05)
    assert roomy.target_kw == target and roomy.shortfall is None
    at_target = plan(directive(MODEL.site_kw(snap) - 1.0), snapshot(*jobs(), site_kw=MODEL.site_kw(snap) - 1.0),
                     policy(tolerance_kw=0.01, headroom_kw=2.0), NOW)
    assert at_target.shed  # at the target but not below it by the headroom: still sheds
    with pytest.raises(PlanningError, match="headroom_kw"):
        policy(headroom_kw=-1.0)
