"""Example-based planner tests with numbers checked by hand against the 'average' A100 curve.

The 'average' curve (mean of the Phoenix workloads): caps 200/250/300 W draw 195.68/243.08/289.33 W
per GPU and keep 0.7276/0.8432/0.9101 of the throughput; uncapped it draws 367.57 W. Idle is 60 W.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from gateway.domain import ActionKind, Job, JobState, Tier
from gateway.exceptions import PlanningError
from gateway.planner import PlannerPolicy, plan
from tests.gateway.planner import MODEL, NOW, directive, policy, snapshot

FULL_W, IDLE_W = 367.56943791478085, 60.0
# one 8-GPU job uncapped: 8 × (367.57 - 60) W above idle, plus 8 × 60 W idle floor
SITE_KW = 8 * IDLE_W / 1000 + 8 * (FULL_W - IDLE_W) / 1000  # 2.9406


def flex25(**kw: object) -> Job:
    return Job(job_id="j1", tier=Tier.FLEX_25, gpus=8, workload="average", **kw)  # type: ignore[arg-type]


def test_flex25_job_is_capped_to_its_allowance_and_shortfall_is_the_gap() -> None:
    # elapsed 0, remaining unknown → run = D, allowance 25 %: lowest whole-watt cap keeping ≥ 75 %
    # is 210 W (interpolated 209.7 W), which keeps 0.7507 and draws 205.16 W per GPU.
    p = plan(directive(1.0), snapshot(flex25()), policy(tolerance_kw=0.01), NOW)

    assert [a.key for a in p.shed] == ["ev-1/cap/j1/210"]
    cap = p.shed[0]
    assert cap.kind is ActionKind.CAP and cap.watts == 210.0 and cap.job_id == "j1" and cap.tier == "flex-25"
    assert cap.delta_kw == pytest.approx(-8 * (FULL_W - 205.16138538656529) / 1000)  # -1.2993 kW
    assert cap.at == NOW  # ramp starts now
    assert cap.reason == "cap 210 W keeps 75% (flex-25 allows down to 75%)"
    assert [j for j, _ in p.job_loss] == ["j1"] and p.job_loss[0][1] == pytest.approx(1 - 0.7507183704946893)
    assert p.expected_kw == pytest.approx(SITE_KW - 1.2992644202257244)  # 1.6413
    assert p.shortfall is not None
    assert p.shortfall.kw == pytest.approx(p.expected_kw - 1.0)  # 0.6413
    assert p.shortfall.reason.startswith("1 kW of 2 kW needed is out of reach")
    assert "flex tiers allow no deeper caps on the 1 capped job(s)" in p.shortfall.reason
    assert [(a.key, a.kind, a.delta_kw, a.at) for a in p.restore] == [
        ("ev-1/uncap/j1", ActionKind.UNCAP, -cap.delta_kw, NOW + timedelta(minutes=70))
    ]
    assert p.target_kw == 1.0 and p.baseline_kw == 1000.0 and p.created_at == NOW


def test_last_cap_is_only_as_deep_as_the_target_needs() -> None:
    # need 2.9406 - 2.0 = 0.9406 kW → ≤ 367.57 - 117.57 = 249.99 W per GPU: 257 W draws 249.55 W
    # (258 W would draw 250.48 W and shed only 0.9367 kW); it keeps 0.8526.
    p = plan(directive(2.0), snapshot(flex25()), policy(tolerance_kw=0.01), NOW)
    assert [a.key for a in p.shed] == ["ev-1/cap/j1/257"]
    assert p.shed[0].delta_kw == pytest.approx(-8 * (FULL_W - 249.55420) / 1000, abs=1e-4)
    assert p.shed[0].reason == "cap 257 W keeps 85% (flex-25 allows down to 75%)"
    assert p.shortfall is None
    assert 2.0 - 0.01 < p.expected_kw <= 2.0


def test_within_tolerance_nothing_is_done() -> None:
    p = plan(directive(SITE_KW - 1.0), snapshot(flex25()), policy(tolerance_kw=5.0), NOW)
    assert p.shed == () and p.restore == () and p.shortfall is None
    assert p.expected_kw == pytest.approx(SITE_KW)
    assert p.notes and p.notes[0].startswith("no shed needed")


def test_critical_jobs_are_never_touched_and_named_in_the_shortfall() -> None:
    crit = Job(job_id="c1", tier=Tier.CRITICAL, gpus=64, workload="average")
    p = plan(directive(0.0), snapshot(crit), policy(tolerance_kw=0.01), NOW)
    assert p.shed == () and p.restore == () and p.job_loss == ()
    assert p.shortfall is not None and p.shortfall.kw == pytest.approx(8 * SITE_KW)
    assert p.shortfall.reason == (
        "24 kW of 24 kW needed is out of reach: 1 critical job(s) (20 kW) are never touched; "
        "4 kW is idle GPU and node draw that no lever removes"
    )


def test_spent_allowance_means_no_action() -> None:
    job = flex25(elapsed_s=3600.0, remaining_s=3600.0, lost_s=1800.0)  # 25 % of 2 h already lost
    p = plan(directive(0.0), snapshot(job), policy(tolerance_kw=0.01), NOW)
    assert p.shed == ()
    assert p.shortfall is not None and "1 flex job(s) have no allowance left" in p.shortfall.reason


def test_long_run_flex_job_is_capped_then_paused_when_still_short() -> None:
    # run of 100 h: 25 % of it covers the whole 70-min window → a = 1: deepest cap first, then a pause
    job = flex25(elapsed_s=50 * 3600.0, remaining_s=50 * 3600.0)
    p = plan(directive(0.0), snapshot(job), policy(tolerance_kw=0.01), NOW)
    assert [a.kind for a in p.shed] == [ActionKind.PAUSE]
    assert p.shed[0].delta_kw == pytest.approx(-8 * (FULL_W - IDLE_W) / 1000)
    assert p.job_loss == (("j1", 1.0),)
    assert [a.key for a in p.restore] == ["ev-1/resume/j1"]
    # a target the deepest cap meets stays a cap: 100 W draws 99.80 W per GPU, shedding 2.142 kW
    p2 = plan(directive(SITE_KW - 2.14), snapshot(job), policy(tolerance_kw=0.01), NOW)
    assert [a.key for a in p2.shed] == ["ev-1/cap/j1/100"]
    assert p2.shed[0].reason == "cap 100 W keeps 21% (flex-25 allows down to 0%)"


def preemptible(**kw: object) -> Job:
    base: dict[str, object] = {"job_id": "p1", "tier": Tier.PREEMPTIBLE, "gpus": 16, "workload": "average",
                               "nodes": ("n1", "n2")}
    return Job(**(base | kw))  # type: ignore[arg-type]


def test_short_event_pauses_a_preemptible_job() -> None:
    # a 20-min window is shorter than 10 × (60 s checkpoint + 120 s restart): pausing is cheaper
    d = directive(0.0, ramp_min=5.0, hold_min=15.0)
    p = plan(d, snapshot(preemptible()), policy(tolerance_kw=0.01), NOW)
    # the 100 W cap comes first (phase 1) and is replaced by the pause (phase 2)
    assert [a.kind for a in p.shed] == [ActionKind.PAUSE]
    assert p.shed[0].reason == "pause for 20 min (preemptible allows losing the whole event)"


def test_long_event_checkpoints_and_stops_a_preemptible_job_and_holds_its_nodes() -> None:
    d = directive(0.0, ramp_min=10.0, hold_min=110.0)  # 2 h ≥ 10 × 180 s
    p = plan(d, snapshot(preemptible()), policy(tolerance_kw=0.01, ramp_rate_kw_per_min=1000.0), NOW)
    assert [(a.key, a.kind) for a in p.shed] == [
        ("ev-1/checkpoint_stop/p1", ActionKind.CHECKPOINT_STOP),
        ("ev-1/hold_nodes/p1", ActionKind.HOLD_NODES),
    ]
    assert p.shed[1].nodes == ("n1", "n2") and p.shed[1].at == p.shed[0].at and p.shed[1].delta_kw == 0.0
    assert [(a.key, a.kind) for a in p.restore] == [
        ("ev-1/release_nodes/p1", ActionKind.RELEASE_NODES),
        ("ev-1/restart/p1", ActionKind.RESTART),
    ]
    assert p.restore[1].delta_kw == pytest.approx(-p.shed[0].delta_kw)
    assert p.job_loss[0][0] == "p1" and p.job_loss[0][1] == pytest.approx(1 + 180 / 7200)  # + checkpoint, restart
    # not requeueable, or stops not allowed by the site: a pause instead
    for job, pol in ((preemptible(requeueable=False), policy(tolerance_kw=0.01)),
                     (preemptible(), policy(tolerance_kw=0.01, allow_checkpoint_stop=False))):
        assert [a.kind for a in plan(d, snapshot(job), pol, NOW).shed] == [ActionKind.PAUSE]
    # a job that cannot checkpoint loses its work since the last one: a stop pays only for long events
    lossy = preemptible(checkpointable=False, since_checkpoint_s=3600.0)
    assert [a.kind for a in plan(d, snapshot(lossy), policy(tolerance_kw=0.01), NOW).shed] == [ActionKind.PAUSE]


def test_caps_come_before_pauses_and_restore_brings_paused_jobs_back_first() -> None:
    capped = flex25()
    paused = preemptible()
    d = directive(0.0, ramp_min=5.0, hold_min=15.0)
    p = plan(d, snapshot(paused, capped), policy(tolerance_kw=0.01), NOW)
    assert [a.kind for a in p.shed] == [ActionKind.CAP, ActionKind.PAUSE]
    assert [a.kind for a in p.restore] == [ActionKind.RESUME, ActionKind.UNCAP]
    assert [j for j, _ in p.job_loss] == ["j1", "p1"]


def test_an_existing_cap_is_the_starting_point_and_is_restored() -> None:
    job = flex25(power_cap_w=300.0)  # draws 289.33 W per GPU already
    p = plan(directive(0.0), snapshot(job), policy(tolerance_kw=0.01), NOW)
    assert p.shed[0].watts == 210.0
    assert p.shed[0].delta_kw == pytest.approx(-8 * (289.33040092053545 - 205.16138538656529) / 1000)
    assert p.restore[0].kind is ActionKind.UNCAP and p.restore[0].watts == 300.0
    assert p.restore[0].reason == "back to the 300 W cap set before the event"


def test_measured_site_load_is_used_when_present() -> None:
    # the meter says 10 kW (other load on site): the single cap cannot close the gap to 8 kW
    p = plan(directive(8.0), snapshot(flex25(), site_kw=10.0), policy(tolerance_kw=0.01), NOW)
    assert p.expected_kw == pytest.approx(10.0 - 1.2992644202257244)
    assert p.shortfall is not None and "kW of the metered load is not from the jobs" in p.shortfall.reason


def test_economic_mode_sheds_jobs_worth_less_than_the_price() -> None:
    cheap = Job(job_id="a", tier=Tier.FLEX_25, gpus=8, workload="average", value_per_mwh=50.0)
    dear = Job(job_id="b", tier=Tier.FLEX_25, gpus=8, workload="average", value_per_mwh=500.0)
    unvalued = Job(job_id="c", tier=Tier.FLEX_25, gpus=8, workload="average")
    crit = Job(job_id="d", tier=Tier.CRITICAL, gpus=8, workload="average", value_per_mwh=1.0)
    p = plan(directive(price=120.0), snapshot(dear, unvalued, crit, cheap), policy(), NOW)
    assert [a.key for a in p.shed] == ["ev-1/cap/a/210"]
    assert p.shed[0].reason.endswith("; worth 50/MWh < price 120/MWh")
    assert p.target_kw is None and p.shortfall is None
    assert p.expected_kw == pytest.approx(4 * SITE_KW - 1.2992644202257244)
    assert any(n.startswith("economic mode: price 120/MWh; 1 job(s)") for n in p.notes)


def test_ramp_spacing_and_late_target_note() -> None:
    # 12 jobs, each cap sheds 1.3 kW; at 2 kW/min one fits per minute (the second would exceed it)
    jobs = [Job(job_id=f"j{i:02d}", tier=Tier.FLEX_25, gpus=8, workload="average") for i in range(12)]
    d = directive(0.0, ramp_min=5.0)
    p = plan(d, snapshot(*jobs), policy(tolerance_kw=0.01, ramp_rate_kw_per_min=2.0), NOW)
    assert [a.job_id for a in p.shed] == [f"j{i:02d}" for i in range(12)]  # equal ratio and size: job id
    assert [(a.at - NOW).total_seconds() for a in p.shed] == [60.0 * i for i in range(12)]
    assert any(n.startswith("target reached at 2025-05-20T17:11:00+00:00, 6 min after") for n in p.notes)
    assert [(a.at - d.end).total_seconds() for a in p.restore] == [60.0 * i for i in range(12)]


def test_an_action_larger_than_a_minute_gets_its_own_and_the_next_waits() -> None:
    big = Job(job_id="big", tier=Tier.PREEMPTIBLE, gpus=64, workload="average")  # pause: 19.7 kW
    small = Job(job_id="small", tier=Tier.FLEX_25, gpus=8, workload="average")  # cap: 1.3 kW
    p = plan(directive(0.0, ramp_min=5.0, hold_min=15.0), snapshot(big, small),
             policy(tolerance_kw=0.01, ramp_rate_kw_per_min=10.0), NOW)
    assert [(a.job_id, (a.at - NOW).total_seconds()) for a in p.shed] == [("small", 0.0), ("big", 60.0)]
    # restore: the resume first; it uses 1.97 min of budget, so the uncap no longer fits the
    # second minute and waits for the third
    assert [(a.job_id, (a.at - p.restore[0].at).total_seconds()) for a in p.restore] == [("big", 0.0), ("small", 120.0)]


def test_commands_the_ramp_cannot_start_before_the_end_are_left_out() -> None:
    jobs = [Job(job_id=f"j{i}", tier=Tier.FLEX_25, gpus=8, workload="average") for i in range(5)]
    d = directive(0.0, ramp_min=1.0, hold_min=2.0)  # 3 min window, one 1.3 kW cap per minute
    p = plan(d, snapshot(*jobs), policy(tolerance_kw=0.01, ramp_rate_kw_per_min=2.0), NOW)
    assert len(p.shed) == 3 and len(p.restore) == 3 and len(p.job_loss) == 3
    assert any("2 command(s) (3 kW) left out" in n for n in p.notes)
    assert p.shortfall is not None and "could not start before the event ends" in p.shortfall.reason


def test_late_planning_starts_now_and_an_ended_event_plans_nothing() -> None:
    d = directive(1.0, lead_min=-5.0)
    p = plan(d, snapshot(flex25()), policy(tolerance_kw=0.01), NOW)
    assert p.shed[0].at == NOW
    over = plan(d, snapshot(flex25()), policy(), d.end + timedelta(seconds=1))
    assert over.shed == () and over.restore == () and over.target_kw is None
    assert over.expected_kw == pytest.approx(MODEL.site_kw(snapshot(flex25())))
    assert over.notes[0].startswith("nothing to shed")


def test_only_running_jobs_are_candidates() -> None:
    jobs = [flex25(), Job(job_id="s", tier=Tier.FLEX_50, gpus=8, workload="average", state=JobState.SUSPENDED),
            Job(job_id="q", tier=Tier.FLEX_50, gpus=8, workload="average", state=JobState.PENDING)]
    p = plan(directive(0.0), snapshot(*jobs), policy(tolerance_kw=0.01), NOW)
    assert {a.job_id for a in p.shed} == {"j1"}
    assert p.shortfall is not None and "1 job(s) already paused or in transition are left as they are" in p.shortfall.reason


def test_bad_inputs_raise_planning_error() -> None:
    with pytest.raises(PlanningError, match="timezone-aware"):
        plan(directive(1.0), snapshot(flex25()), policy(), NOW.replace(tzinfo=None))
    with pytest.raises(PlanningError, match="appears more than once"):
        plan(directive(0.0), snapshot(flex25(), flex25()), policy(tolerance_kw=0.01), NOW)
    for bad in ({"ramp_rate_kw_per_min": 0.0}, {"tolerance_kw": -1.0}, {"min_cap_w": 300.0, "max_cap_w": 200.0}):
        with pytest.raises(PlanningError):
            PlannerPolicy(model=MODEL, **bad)  # type: ignore[arg-type]


def test_policy_cap_range_limits_caps() -> None:
    # caps may not go below 250 W: the flex-25 job's 210 W becomes 250 W (keeps 84 %)
    p = plan(directive(0.0), snapshot(flex25()), policy(tolerance_kw=0.01, min_cap_w=250.0), NOW)
    assert p.shed[0].watts == 250.0
    assert p.shed[0].reason == "cap 250 W keeps 84% (flex-25 allows down to 75%)"


def ray_job(job_id: str, tier: Tier, **kw: object) -> Job:
    """A Ray training job: the adapter can neither suspend it nor cap its GPUs, only checkpoint and stop it."""
    return Job(job_id=job_id, tier=tier, gpus=8, workload="average", pausable=False, cappable=False,
               checkpoint_s=60.0, restart_s=120.0, **kw)  # type: ignore[arg-type]


def test_a_job_that_cannot_be_paused_or_capped_is_stopped_when_its_tier_allows_it() -> None:
    # a 70-minute window; flex-50 over a long run allows far more than the window plus 180 s of
    # checkpoint and restart, so it is stopped; the flex-10 job's allowance (10 % of 70 min + 10 h)
    # cannot cover it, and there is no gentler lever for it: it is left alone, and the gap says so.
    long_run = {"elapsed_s": 36_000.0, "remaining_s": 36_000.0}
    jobs = (ray_job("r50", Tier.FLEX_50, **long_run), ray_job("r10", Tier.FLEX_10, elapsed_s=600.0, remaining_s=3600.0))
    p = plan(directive(1.0), snapshot(*jobs), policy(tolerance_kw=0.01), NOW)
    assert [(a.kind, a.job_id) for a in p.shed] == [(ActionKind.CHECKPOINT_STOP, "r50")]
    assert [(a.kind, a.job_id) for a in p.restore] == [(ActionKind.RESTART, "r50")]
    assert p.shortfall is not None and "1 flex job(s) have no allowance left for this event" in p.shortfall.reason

    no_stops = plan(directive(1.0), snapshot(*jobs), policy(tolerance_kw=0.01, allow_checkpoint_stop=False), NOW)
    assert no_stops.shed == ()  # never paused or capped instead: the scheduler could not do it


def test_finished_jobs_a_scheduler_still_lists_add_no_idle_draw() -> None:
    # Ray lists no nodes and keeps ended jobs for a while: their GPUs are free, not idle draw to shed
    running = [ray_job(f"r{i}", Tier.PREEMPTIBLE, requeueable=True) for i in range(4)]
    ended = [Job(job_id=f"done{i}", tier=Tier.FLEX_25, gpus=8, workload="average", state=JobState.COMPLETED)
             for i in range(50)]
    alone = plan(directive(3 * SITE_KW), snapshot(*running), policy(tolerance_kw=0.01), NOW)
    listed = plan(directive(3 * SITE_KW), snapshot(*running, *ended), policy(tolerance_kw=0.01), NOW)
    assert listed.expected_kw == pytest.approx(alone.expected_kw)
    assert [a.key for a in listed.shed] == [a.key for a in alone.shed] and 0 < len(alone.shed) < len(running)
    assert listed.shortfall is None
