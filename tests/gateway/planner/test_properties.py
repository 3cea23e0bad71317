"""Property tests: random clusters (tiers, workloads, states, caps) and random directives.

The invariants are the planner's contract: critical jobs untouched, tiers never exceeded, feasible
targets met, shortfalls equal to the gap, the ramp rate held minute by minute, one undo per shed,
and equal plans for equal inputs, whatever the order of the snapshot's jobs.
"""

from __future__ import annotations

import dataclasses
import random
from collections import Counter
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from gateway.domain import Action, ActionKind, ClusterSnapshot, Directive, Job, JobState, Plan, Segment, Tier
from gateway.planner import PlannerPolicy, plan
from gateway.power import default_curves
from tests.gateway.planner import MODEL, NOW

WORKLOADS = [*sorted(default_curves().curves), "not-a-known-workload"]
SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def jobs(draw: st.DrawFn) -> tuple[Job, ...]:
    n = draw(st.integers(min_value=0, max_value=30))
    ids = draw(st.permutations([f"job-{i:03d}" for i in range(n)]))
    out = []
    for jid in ids:
        out.append(Job(
            job_id=jid,
            tier=draw(st.sampled_from(list(Tier))),
            gpus=draw(st.sampled_from([0, 1, 2, 4, 8, 8, 16, 64])),
            nodes=tuple(f"{jid}-n{k}" for k in range(draw(st.integers(0, 2)))),
            state=draw(st.sampled_from([JobState.RUNNING] * 6 + [JobState.SUSPENDED, JobState.PENDING,
                                                                   JobState.CHECKPOINTING])),
            workload=draw(st.sampled_from(WORKLOADS)),
            power_cap_w=draw(st.one_of(st.none(), st.sampled_from([150.0, 250.0, 300.0, 333.5]))),
            checkpointable=draw(st.booleans()),
            requeueable=draw(st.booleans()),
            checkpoint_s=draw(st.sampled_from([0.0, 60.0, 600.0])),
            restart_s=draw(st.sampled_from([30.0, 120.0])),
            since_checkpoint_s=draw(st.sampled_from([0.0, 900.0])),
            elapsed_s=draw(st.floats(0, 3 * 86400)),
            remaining_s=draw(st.one_of(st.none(), st.floats(0, 3 * 86400))),
            lost_s=draw(st.floats(0, 4 * 3600)),
            value_per_mwh=draw(st.one_of(st.none(), st.floats(0, 300))),
            pausable=draw(st.sampled_from([True, True, True, False])),  # a Ray job cannot be suspended ...
            cappable=draw(st.sampled_from([True, True, True, False])),  # ... nor capped by the adapter
        ))
    return tuple(out)


@st.composite
def cases(draw: st.DrawFn) -> tuple[ClusterSnapshot, Directive, PlannerPolicy, float]:
    """A snapshot, a directive template (target filled in by each test), a policy and the current load."""
    js = draw(jobs())
    snap = ClusterSnapshot(at=NOW, jobs=js)
    if draw(st.booleans()):  # a meter that reads a little more than the model
        snap = dataclasses.replace(snap, site_kw=MODEL.site_kw(snap) + draw(st.floats(0, 20)))
    lead = timedelta(minutes=draw(st.integers(-20, 30)))
    ramp = timedelta(minutes=draw(st.integers(0, 30)))
    hold = timedelta(minutes=draw(st.integers(20, 6 * 60)))
    ramp_start = NOW + lead
    target_by = ramp_start + ramp
    end = max(target_by + hold, NOW + timedelta(minutes=20))
    directive = Directive(
        event_id="ev", modification=1, segments=(Segment(start=target_by, end=end, target_kw=0.0),), baseline_kw=100.0,
        ramp_start=ramp_start, target_by=target_by, end=end, recovery_end=end + timedelta(minutes=30),
    )
    policy = PlannerPolicy(
        model=MODEL,
        ramp_rate_kw_per_min=draw(st.sampled_from([5.0, 50.0, 200.0])),
        tolerance_kw=draw(st.sampled_from([0.1, 1.0, 5.0])),
        allow_checkpoint_stop=draw(st.booleans()),
    )
    current = snap.site_kw if snap.site_kw is not None else MODEL.site_kw(snap)
    return snap, directive, policy, current


def with_target(d: Directive, target_kw: float) -> Directive:
    return dataclasses.replace(d, segments=tuple(dataclasses.replace(s, target_kw=target_kw) for s in d.segments))


def allowance(job: Job, window_s: float, kept_now: float | None = None) -> float:
    """The tier contract, written out again independently of the planner: a capped job's remaining time counts
    at full speed."""
    if kept_now is None:
        kept_now = MODEL.curves.get(job.workload).throughput_at(job.power_cap_w)
    run = job.elapsed_s + (job.remaining_s * kept_now if job.remaining_s is not None else window_s)
    return min(1.0, max(0.0, job.tier.max_loss * run - job.lost_s) / window_s)


def window_s(d: Directive) -> float:
    return (d.end - max(NOW, d.ramp_start)).total_seconds()


def check_ramp(actions: tuple[Action, ...], rate: float) -> None:
    """Sum |delta| of actions starting in any 60 s window <= rate + the largest single action."""
    if not actions:
        return
    biggest = max(abs(a.delta_kw) for a in actions)
    for a in actions:
        inside = sum(abs(b.delta_kw) for b in actions if a.at <= b.at < a.at + timedelta(seconds=60))
        assert inside <= rate + biggest + 1e-6, (a.at, inside, rate, biggest)


def check_contract(p: Plan, snap: ClusterSnapshot, d: Directive, policy: PlannerPolicy, current: float) -> None:
    by_id = {j.job_id: j for j in snap.jobs}
    all_actions = p.shed + p.restore
    # never a critical job, only running ones shed
    for a in all_actions:
        assert by_id[a.job_id].tier is not Tier.CRITICAL
        assert a.tier == by_id[a.job_id].tier.value
    for a in p.shed:
        assert by_id[a.job_id].state is JobState.RUNNING
        assert (a.delta_kw < 0) if a.kind is not ActionKind.HOLD_NODES else a.delta_kw == 0
    # every tier is a hard contract (a preemptible job may be stopped outright: restart cost on top)
    w = window_s(d)
    kinds = {a.job_id: a.kind for a in p.shed if a.kind is not ActionKind.HOLD_NODES}
    assert [j for j, _ in p.job_loss] == list(kinds)  # in shedding order
    for jid, loss in p.job_loss:
        job = by_id[jid]
        assert job.pausable or kinds[jid] is not ActionKind.PAUSE, f"{jid} cannot be paused"
        assert job.cappable or kinds[jid] is not ActionKind.CAP, f"{jid} cannot be capped"
        if kinds[jid] is ActionKind.CHECKPOINT_STOP:
            assert job.requeueable and policy.allow_checkpoint_stop and loss > 1.0
            # outright (past its allowance) only when preemptible; a job that cannot be paused is
            # stopped instead, but only when its tier's allowance covers the stop
            assert job.tier is Tier.PREEMPTIBLE or (not job.pausable and loss * w <= left_s(job, w) + 1e-6)
        else:
            assert loss <= allowance(job, w) + 1e-9
    # timing: sheds within the window, restores from the end, each under the ramp rate
    start = max(NOW, d.ramp_start)
    assert all(start <= a.at < d.end for a in p.shed)
    assert all(a.at >= d.end for a in p.restore)
    assert [a.at for a in p.shed] == sorted(a.at for a in p.shed)
    check_ramp(p.shed, policy.ramp_rate_kw_per_min)
    check_ramp(p.restore, policy.ramp_rate_kw_per_min)
    # exactly one undo per shed action, with the opposite power change
    undo = {a.key: a for a in p.restore}
    assert len(undo) == len(p.restore) == len(p.shed)
    for a in p.shed:
        u = undo[f"{d.event_id}/{a.kind.undo.value}/{a.job_id}"]
        assert u.kind is a.kind.undo and u.job_id == a.job_id and u.delta_kw == pytest.approx(-a.delta_kw)
        assert a.key == f"{d.event_id}/{a.kind.value}/{a.job_id}" + (f"/{int(a.watts or 0)}" if a.kind is ActionKind.CAP else "")
    assert len({a.key for a in all_actions}) == len(all_actions)
    assert p.expected_kw == pytest.approx(max(0.0, current + sum(a.delta_kw for a in p.shed)), abs=1e-6)


@SETTINGS
@given(cases())
def test_feasible_targets_are_met_and_the_contract_holds(case: tuple[ClusterSnapshot, Directive, PlannerPolicy, float]) -> None:
    snap, d, policy, current = case
    fast = dataclasses.replace(policy, ramp_rate_kw_per_min=1e9)  # no ramp cut-off: the full reach
    deepest = plan(d, snap, fast, NOW)
    check_contract(deepest, snap, d, fast, current)
    achievable = current - deepest.expected_kw
    target = current - 0.8 * achievable
    assume(0.8 * achievable > fast.tolerance_kw and target >= 0.0)
    p = plan(with_target(d, target), snap, fast, NOW)
    check_contract(p, snap, d, fast, current)
    assert p.shortfall is None
    assert p.expected_kw <= target + fast.tolerance_kw
    assert p.target_kw == target
    # at the real ramp rate the contract still holds, whether or not the ramp cuts the plan short
    check_contract(plan(with_target(d, target), snap, policy, NOW), snap, d, policy, current)


@SETTINGS
@given(cases())
def test_infeasible_targets_report_the_gap(case: tuple[ClusterSnapshot, Directive, PlannerPolicy, float]) -> None:
    snap, d, policy, current = case
    deepest = plan(d, snap, policy, NOW)
    target = max(0.0, deepest.expected_kw - policy.tolerance_kw - 1.0)
    assume(deepest.expected_kw - target > policy.tolerance_kw)
    p = plan(with_target(d, target), snap, policy, NOW)
    check_contract(p, snap, d, policy, current)
    assert p.shortfall is not None
    assert p.shortfall.kw == pytest.approx(p.expected_kw - target)
    assert "needed is out of reach" in p.shortfall.reason


@SETTINGS
@given(cases(), st.floats(0, 300))
def test_economic_mode_sheds_only_jobs_worth_less_than_the_price(
    case: tuple[ClusterSnapshot, Directive, PlannerPolicy, float], price: float
) -> None:
    snap, d, policy, current = case
    d = dataclasses.replace(d, segments=tuple(dataclasses.replace(s, target_kw=None, price_per_mwh=price)
                                              for s in d.segments))
    fast = dataclasses.replace(policy, ramp_rate_kw_per_min=1e9)
    p = plan(d, snap, fast, NOW)
    assert p.target_kw is None and p.shortfall is None
    check_contract(p, snap, d, fast, current)
    by_id = {j.job_id: j for j in snap.jobs}
    for a in p.shed:
        v = by_id[a.job_id].value_per_mwh
        assert v is not None and v < price
    shed_ids = {a.job_id for a in p.shed}
    for j in snap.jobs:  # every running flexible job worth less is shed, unless its tier leaves no lever
        eligible = (j.state is JobState.RUNNING and j.tier is not Tier.CRITICAL and j.gpus > 0
                    and j.value_per_mwh is not None and j.value_per_mwh < price)
        assert (j.job_id in shed_ids) == (eligible and has_lever(j, window_s(d), policy.allow_checkpoint_stop))


def left_s(job: Job, window: float) -> float:
    """Seconds of work the job's tier still lets it lose (``allowance`` before it is clipped to the window)."""
    rem = job.remaining_s
    return job.tier.max_loss * (job.elapsed_s + (window if rem is None else rem)) - job.lost_s


def stop_allowed(job: Job, window: float, allow_stop: bool) -> bool:
    """A job that cannot be paused may be stopped instead: resumable, allowed by the site, and (unless
    preemptible) its allowance covering the event plus checkpoint, restart and any unsaved work."""
    overhead = job.checkpoint_s + job.restart_s + (0.0 if job.checkpointable else job.since_checkpoint_s)
    return allow_stop and job.requeueable and (job.tier is Tier.PREEMPTIBLE or left_s(job, window) >= window + overhead)


def has_lever(job: Job, window: float, allow_stop: bool = True) -> bool:
    """Whether a pause (or, for a job that cannot be paused, a stop) fits the allowance, or any whole-watt
    cap (100..400 W) within it draws less than now."""
    curve = MODEL.curves.get(job.workload)
    a = allowance(job, window, curve.throughput_at(job.power_cap_w))
    if a >= 1.0 and (job.pausable or stop_allowed(job, window, allow_stop)):
        return True
    if not job.cappable:
        return False
    now_w = curve.power_at(job.power_cap_w)
    return any(curve.throughput_at(w) >= 1 - a - 1e-9 and curve.power_at(w) < now_w - 1e-3 for w in range(100, 401))


@SETTINGS
@given(cases(), st.floats(0, 1), st.randoms(use_true_random=False))
def test_plans_are_deterministic_whatever_the_job_order(
    case: tuple[ClusterSnapshot, Directive, PlannerPolicy, float], share: float, rnd: random.Random
) -> None:
    snap, d, policy, current = case
    d = with_target(d, max(0.0, current * (1 - share)))
    shuffled = list(snap.jobs)
    rnd.shuffle(shuffled)
    first = plan(d, snap, policy, NOW)
    assert plan(d, snap, policy, NOW) == first
    assert plan(d, dataclasses.replace(snap, jobs=tuple(shuffled)), policy, NOW) == first
    assert Counter(a.kind for a in first.shed if a.kind.sheds) == Counter(a.kind.undo for a in first.restore)
