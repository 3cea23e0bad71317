"""Water-filling of power caps: many jobs capped a little rather than a few capped deeply.

Numbers are checked by hand against the 'average' A100 curve (per GPU; idle is 60 W):

    cap W     400      350      300      262      250      200      100
    draw W    367.569  330.962  289.330  254.179  243.079  195.682  99.801
    kept      1.0      0.95543  0.91013  0.85927  0.84322  0.72759  0.21263

kW shed per unit of throughput lost, per GPU: 400→350 0.821, 350→300 0.919, 300→250 0.691,
250→200 0.410, 200→100 0.186. 350 W lies under the chord 400→300 (0.869), so a job's concave path
from uncapped is 400→300→250→200→100 W.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from gateway.domain import ActionKind, ClusterSnapshot, Directive, Job, JobState, Tier
from gateway.planner import PlannerPolicy, plan
from gateway.planner.levers import cap_path, curve_table
from gateway.power import PowerCurve
from tests.gateway.planner import MODEL, NOW, directive, policy, snapshot
from tests.gateway.planner.test_properties import SETTINGS, allowance, cases, window_s, with_target

FULL_W = 367.56943791478085
W = {300: 289.33040092053545, 262: 254.17947675790518, 250: 243.07918491707457}
KEPT = {262: 0.8592739057709227, 250: 0.8432153046483096}


def long_flex50(job_id: str) -> Job:
    # 100 h run: half of it covers the 70-min window many times over, so the allowance is 1 (down to 100 W)
    return Job(job_id=job_id, tier=Tier.FLEX_50, gpus=8, workload="average", elapsed_s=50 * 3600.0,
               remaining_s=50 * 3600.0)


def test_two_identical_jobs_are_capped_moderately_not_one_deeply() -> None:
    # The site draws 2 × 8 × 367.569 W above 2 × 8 × 60 W idle: 5.8811 kW; the target asks for 1.9 kW.
    # Step 1 takes both jobs 400→300 W: 2 × 8 × 78.239 W = 1.2518 kW (0.6481 kW still needed).
    # Step 2 (300→250 W, 46.251 W/GPU, 0.370 kW a job) fits once: j1 → 250 W; 0.2782 kW still needed.
    # j2 goes from 300 W only as deep as that: ≤ 289.330 - 278.17/8 = 254.56 W per GPU → 262 W
    # (254.18 W; 263 W draws 255.10 W). The old greedy put one job at 131 W (keeps 37 %) instead.
    site = 2 * 8 * 60 / 1000 + 2 * 8 * (FULL_W - 60) / 1000
    p = plan(directive(site - 1.9), snapshot(long_flex50("j1"), long_flex50("j2")), policy(tolerance_kw=0.01), NOW)

    caps = {a.job_id: a.watts for a in p.shed}
    assert caps == {"j1": 250.0, "j2": 262.0}
    assert all(a.kind is ActionKind.CAP for a in p.shed)
    deltas = {a.job_id: a.delta_kw for a in p.shed}
    assert deltas["j1"] == pytest.approx(-8 * (FULL_W - W[250]) / 1000)  # -0.9959 kW
    assert deltas["j2"] == pytest.approx(-8 * (FULL_W - W[262]) / 1000)  # -0.9071 kW
    assert p.shortfall is None and site - 1.9 - 0.01 < p.expected_kw <= site - 1.9
    assert dict(p.job_loss) == pytest.approx({"j1": 1 - KEPT[250], "j2": 1 - KEPT[262]})
    # j2 sheds more per unit lost from its cap now (806 W vs 794 W per GPU-unit), so it goes first,
    # and comes back last; both get their uncapped state back
    assert [a.job_id for a in p.shed] == ["j2", "j1"]
    assert [(a.job_id, a.kind, a.watts) for a in p.restore] == [("j1", ActionKind.UNCAP, None),
                                                               ("j2", ActionKind.UNCAP, None)]
    # GPU-weighted loss: 8 × (0.1568 + 0.1407) = 2.38 GPU-events; one job alone at the cap that sheds
    # 1.9 kW (draw ≤ 367.57 - 237.5 = 130.07 W per GPU → 131 W) would lose 8 × (1 - 0.3717) = 5.03
    curve = MODEL.curves.get("average")
    single = max(w for w in range(100, 401) if curve.power_at(w) <= FULL_W - 1900 / 8)
    assert single == 131
    assert sum(8 * loss for _, loss in p.job_loss) < 0.5 * 8 * (1 - curve.throughput_at(single))


def test_a_bigger_need_takes_the_next_step_on_both_before_going_deeper() -> None:
    # need 2 × 8 × (367.569 - 243.079) W = 1.992 kW: both at 250 W exactly, neither deeper
    need = 2 * 8 * (FULL_W - W[250]) / 1000
    site = 2 * 8 * 60 / 1000 + 2 * 8 * (FULL_W - 60) / 1000
    p = plan(directive(site - need + 1e-9), snapshot(long_flex50("j1"), long_flex50("j2")),
             policy(tolerance_kw=0.01), NOW)
    assert sorted((a.job_id, a.watts) for a in p.shed) == [("j1", 250.0), ("j2", 250.0)]


def test_the_cheapest_curve_gives_first() -> None:
    # inference sheds 35.5 W per GPU for 2.4 % (1.48 per unit) going 400→350 W; the 13b pre-training run
    # sheds 44.6 W for 7.9 % (0.57): a small need is met by the inference job alone
    infer = Job(job_id="inf", tier=Tier.FLEX_25, gpus=8, workload="infer_llama_8b")
    train = Job(job_id="pt", tier=Tier.FLEX_25, gpus=8, workload="pt_mpt_13b_lg")
    site = MODEL.site_kw(snapshot(infer, train))
    p = plan(directive(site - 0.2), snapshot(infer, train), policy(tolerance_kw=0.01), NOW)
    assert [a.job_id for a in p.shed] == ["inf"]
    assert 350.0 <= p.shed[0].watts < 400.0


def test_cap_path_follows_the_concave_hull_of_the_curve() -> None:
    tab = curve_table(MODEL, "average", 100.0, 400.0)
    path = cap_path(tab, MODEL, None, 0)
    assert [tab.lo + s.idx for s in path] == [300, 250, 200, 100]  # 350 W is under the chord
    effs = [s.eff for s in path]
    assert effs == sorted(effs, reverse=True)
    assert effs[0] == pytest.approx((FULL_W - W[300]) / 1000 / (1 - 0.9101261426591974))
    assert path[-1].save == pytest.approx((FULL_W - 99.80077809529163) / 1000)
    # the allowance cuts the path: down to 270 W at most (a 300→270 step on the 300→250 segment)
    cut = cap_path(tab, MODEL, None, 170)
    assert [tab.lo + s.idx for s in cut] == [300, 270]
    assert cut[1].eff == pytest.approx(path[1].eff)
    # a cap set before the event is the starting point; memoised per (cap, allowed index)
    pre = cap_path(tab, MODEL, 333.5, 0)
    assert [tab.lo + s.idx for s in pre] == [300, 250, 200, 100]
    assert pre[0].save == pytest.approx((MODEL.curves.get("average").power_at(333.5) - W[300]) / 1000)
    assert cap_path(tab, MODEL, 333.5, 0) is pre


def test_cap_path_skips_what_loses_more_for_no_more_power() -> None:
    # a made-up curve whose 300 W point keeps less than 200 W: 300 W is never worth it
    odd = PowerCurve(workload="odd", caps_w=(100.0, 200.0, 300.0, 400.0), power_w=(100.0, 200.0, 300.0, 400.0),
                     throughput=(0.2, 0.9, 0.5, 1.0))
    lib = dataclasses.replace(MODEL.curves, curves={**MODEL.curves.curves, "odd": odd})
    model = dataclasses.replace(MODEL, curves=lib)
    tab = curve_table(model, "odd", 100.0, 400.0)
    path = cap_path(tab, model, None, 0)
    assert [tab.lo + s.idx for s in path] == [200, 100]
    assert all(s.eff > 0 for s in path)


def test_a_paused_job_gets_no_cap_as_well() -> None:
    # the target is out of reach of caps: both jobs end paused, neither is also capped
    p = plan(directive(0.0), snapshot(long_flex50("j1"), long_flex50("j2")), policy(tolerance_kw=0.01), NOW)
    assert sorted((a.job_id, a.kind) for a in p.shed) == [("j1", ActionKind.PAUSE), ("j2", ActionKind.PAUSE)]


def test_a_cap_set_before_the_event_is_a_starting_point_and_comes_back() -> None:
    # j1 already runs at 350 W: its next step, 350→300 W, sheds 8 × 41.63 W = 0.333 kW at 0.919 per
    # unit lost, better than j2's 400→300 W (0.869): j1 goes to 300 W first, then j2 gives the rest of
    # the 0.5 kW: 0.167 kW, ≤ 367.57 - 20.87 = 346.70 W per GPU → 371 W (346.19 W)
    pre = dataclasses.replace(long_flex50("j1"), power_cap_w=350.0)
    site = MODEL.site_kw(snapshot(pre, long_flex50("j2")))
    p = plan(directive(site - 0.5), snapshot(pre, long_flex50("j2")), policy(tolerance_kw=0.01), NOW)
    assert [(a.job_id, a.watts) for a in p.shed] == [("j1", 300.0), ("j2", 371.0)]
    assert [(a.job_id, a.kind, a.watts, a.reason) for a in p.restore] == [
        ("j2", ActionKind.UNCAP, None, "lift the event's cap"),
        ("j1", ActionKind.UNCAP, 350.0, "back to the 350 W cap set before the event"),
    ]


# --- the water-filling property, checked against the raw curves, independently of the planner ---

def _eff(curve: PowerCurve, hi: float | None, lo: float) -> float:
    """kW shed per unit of throughput lost going from cap ``hi`` (None: uncapped) down to ``lo``."""
    d_kw = curve.power_at(hi) - curve.power_at(lo)
    d_thr = curve.throughput_at(hi) - curve.throughput_at(lo)
    return math.inf if d_thr <= 0 else d_kw / d_thr


def _last_watt(job: Job, cap: float) -> float:
    """The ratio of the last watt a plan's cap took off ``job`` (from its cap before the event)."""
    start = job.power_cap_w
    hi = cap + 1 if start is None or start >= cap + 1 else start
    return _eff(MODEL.curves.get(job.workload), hi, cap)


def _next_watt(job: Job, cap: float | None, allow: float) -> float | None:
    """The ratio of the next whole watt ``job`` could still give within its allowance, if any."""
    curve = MODEL.curves.get(job.workload)
    nxt = 399 if cap is None else math.ceil(cap) - 1
    if nxt < 100 or curve.throughput_at(nxt) < 1.0 - allow + 1e-7 or curve.power_at(nxt) >= curve.power_at(cap):
        return None
    return _eff(curve, cap, nxt)


@SETTINGS
@given(cases(), st.floats(0.05, 1.0))
def test_no_untaken_watt_is_cheaper_than_a_taken_one(
    case: tuple[ClusterSnapshot, Directive, PlannerPolicy, float], share: float
) -> None:
    """Water-filling's optimality condition, per whole watt on the measured curves: no job could give
    one more watt at a better kW-per-throughput ratio than the worst last watt taken from a capped job.

    One job may break it: the one whose cap was cut to just meet the target, when that cap falls on a
    stretch of its curve that is not concave (its path takes that stretch as one straight step, and
    only part of it is taken). So every pair out of order must involve one and the same job.
    """
    snap, d, pol, current = case
    fast = dataclasses.replace(pol, ramp_rate_kw_per_min=1e9)  # nothing cut by the ramp
    reach = current - plan(d, snap, fast, NOW).expected_kw
    target = current - share * reach
    assume(share * reach > fast.tolerance_kw and target >= 0.0)
    p = plan(with_target(d, target), snap, fast, NOW)
    assert p.shortfall is None
    w = window_s(d)
    by_id = {j.job_id: j for j in snap.jobs}
    caps = {a.job_id: float(a.watts or 0) for a in p.shed if a.kind is ActionKind.CAP}
    others = {a.job_id for a in p.shed if a.kind is not ActionKind.CAP}
    last = {jid: _last_watt(by_id[jid], cap) for jid, cap in caps.items()}
    nexts = {}
    for j in snap.jobs:
        if (j.state is JobState.RUNNING and j.tier is not Tier.CRITICAL and j.gpus > 0 and j.cappable
                and j.job_id not in others):
            e = _next_watt(j, caps.get(j.job_id, j.power_cap_w), allowance(j, w))
            if e is not None:
                nexts[j.job_id] = e
    out_of_order = [{a, b} for a, ea in last.items() for b, eb in nexts.items() if eb > ea * (1 + 1e-6) + 1e-9]
    if out_of_order:
        assert set.intersection(*out_of_order), out_of_order
    assert caps or others  # a target below the load always gets some action
