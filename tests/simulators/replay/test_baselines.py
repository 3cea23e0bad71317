"""The replay's baseline strategies: what each sheds, that each is undone, and that the engine runs them.

Numbers from the 'average' A100 curve: an 8-GPU job uncapped draws 8 × (367.57 − 60) W = 2.46 kW above idle.
"""

from __future__ import annotations

import dataclasses
import random
from datetime import timedelta
from pathlib import Path

import pytest

from adapters.guarded import GuardedScheduler
from gateway.clock import ManualClock
from gateway.domain import ActionKind, EventState, Job, JobState, Plan, Tier
from gateway.engine import Engine, EngineSettings
from gateway.exceptions import PlanningError
from gateway.journal import Journal
from gateway.planner import plan
from gateway.ports import Planner
from gateway.power import PowerModel
from simulators.cluster import SimulatedCluster
from simulators.replay.baselines import BASELINES, STRATEGIES, pause_all_plan, priority_plan, uniform_cap_plan
from tests.gateway.engine.conftest import T0, Collect, Rig, config, event, small_mix
from tests.gateway.planner import MODEL, NOW, directive, policy, snapshot

DRAW = 8 * (367.56943791478085 - 60.0) / 1000  # one 8-GPU 'average' job, kW above idle
SHEDS = (ActionKind.CAP, ActionKind.PAUSE, ActionKind.CHECKPOINT_STOP)
each = pytest.mark.parametrize("name", sorted(BASELINES))


def job(job_id: str, tier: Tier, gpus: int = 8, **kw: object) -> Job:
    base: dict[str, object] = {"job_id": job_id, "tier": tier, "gpus": gpus, "workload": "average"}
    return Job(**(base | kw))  # type: ignore[arg-type]


def mix() -> tuple[Job, ...]:
    """Every tier, several workloads, a prior cap, jobs not running, and Ray jobs that cannot be paused or capped."""
    return (
        job("crit-1", Tier.CRITICAL, 16),
        job("crit-2", Tier.CRITICAL, 8, workload="infer_llama_8b"),
        job("f10", Tier.FLEX_10, 16, workload="ft_llama_8b_dolly", nodes=("n1", "n2")),
        job("f25", Tier.FLEX_25, 8, workload="pt_mpt_13b_sm", power_cap_w=300.0, requeueable=False),
        job("f50", Tier.FLEX_50, 16, workload="pt_mpt_13b_lg", checkpointable=False, nodes=("n3", "n4")),
        job("pre-1", Tier.PREEMPTIBLE, 16, workload="pt_mpt_7b_fast", nodes=("n5", "n6")),
        job("pre-2", Tier.PREEMPTIBLE, 8, workload="ft_llama_8b_p3", requeueable=False),
        job("ray-stop", Tier.FLEX_50, 8, pausable=False, cappable=False),
        job("ray-stuck", Tier.FLEX_25, 8, pausable=False, cappable=False, requeueable=False),
        job("paused", Tier.PREEMPTIBLE, 8, state=JobState.SUSPENDED),
        job("queued", Tier.FLEX_50, 8, state=JobState.PENDING),
    )


SITE = MODEL.site_kw(snapshot(*mix()))
UNTOUCHABLE = {"crit-1", "crit-2", "paused", "queued"}


def run(name: str, target: float | None = None, *jobs: Job, **kw: object) -> Plan:
    strategy: Planner = BASELINES[name]
    return strategy(directive(target), snapshot(*(jobs or mix())), policy(tolerance_kw=0.01, **kw), NOW)


def shed_of(p: Plan) -> list[tuple[ActionKind, str]]:
    return [(a.kind, a.job_id) for a in p.shed if a.kind in SHEDS]


def test_the_strategies_are_registered_by_name() -> None:
    assert BASELINES == {"priority": priority_plan, "uniform-cap": uniform_cap_plan, "pause-all": pause_all_plan}
    assert list(STRATEGIES) == ["dcflex", "priority", "uniform-cap", "pause-all"] and STRATEGIES["dcflex"] is plan


@each
@pytest.mark.parametrize("target", [0.0, SITE - 10.0])
def test_critical_and_idle_jobs_are_never_touched(name: str, target: float) -> None:
    p = run(name, target)
    assert p.shed and p.job_loss
    touched = {a.job_id for a in (*p.shed, *p.restore)} | {jid for jid, _ in p.job_loss}
    assert not touched & UNTOUCHABLE
    assert "ray-stuck" not in touched  # can be neither paused, stopped nor capped


def test_priority_takes_lowest_priority_first_and_stops_once_the_need_is_met() -> None:
    jobs = [job("f10", Tier.FLEX_10), job("f25", Tier.FLEX_25), job("f50", Tier.FLEX_50), job("pre", Tier.PREEMPTIBLE),
            job("pre-big", Tier.PREEMPTIBLE, 16), job("crit", Tier.CRITICAL)]
    jobs = [dataclasses.replace(j, requeueable=False) for j in jobs]
    site = MODEL.site_kw(snapshot(*jobs))
    # 2 + 1 jobs' worth is not enough, so the flex-50 job is the last taken; within preemptible the larger first
    p = run("priority", site - 3 * DRAW - 0.5, *jobs)
    assert shed_of(p) == [(ActionKind.PAUSE, "pre-big"), (ActionKind.PAUSE, "pre"), (ActionKind.PAUSE, "f50")]
    assert p.shortfall is None
    assert p.expected_kw == pytest.approx(site - 4 * DRAW)
    assert p.shed[2].reason == ("priority baseline: pause for 70 min (flex-50, lowest priority first); its tier "
                                "allows losing 50% of this event")
    # out of reach: every flexible job, in priority order, and the gap reported
    every = run("priority", 0.0, *jobs)
    assert [jid for _, jid in shed_of(every)] == ["pre-big", "pre", "f50", "f25", "f10"]
    assert every.shortfall is not None and every.shortfall.kw == pytest.approx(every.expected_kw)
    # a meter reading higher than the model: more to shed, one more job
    metered = BASELINES["priority"](directive(site - 3 * DRAW - 0.5), snapshot(*jobs, site_kw=site + DRAW),
                                    policy(tolerance_kw=0.01), NOW)
    assert [jid for _, jid in shed_of(metered)] == ["pre-big", "pre", "f50", "f25"]


def test_priority_requeues_what_can_checkpoint_and_pauses_the_rest() -> None:
    p = run("priority", 0.0)
    assert shed_of(p) == [
        (ActionKind.CHECKPOINT_STOP, "pre-1"),  # requeueable and checkpointable: Slurm REQUEUE
        (ActionKind.PAUSE, "pre-2"),  # not requeueable: SUSPEND
        (ActionKind.PAUSE, "f50"),  # cannot checkpoint: SUSPEND
        (ActionKind.CHECKPOINT_STOP, "ray-stop"),  # flex-50 like f50, smaller; cannot be paused
        (ActionKind.PAUSE, "f25"),
        (ActionKind.CHECKPOINT_STOP, "f10"),
    ]
    assert [(a.key, a.nodes) for a in p.shed[:2]] == [("ev-1/checkpoint_stop/pre-1", ()),
                                                      ("ev-1/hold_nodes/pre-1", ("n5", "n6"))]
    assert p.shed[1].at == p.shed[0].at and p.shed[1].delta_kw == 0.0
    assert [a.key for a in p.restore[:4]] == ["ev-1/release_nodes/f10", "ev-1/restart/f10",
                                              "ev-1/restart/ray-stop", "ev-1/release_nodes/pre-1"]
    # stops not allowed by the site: pauses, and a job that can only be stopped is left alone
    no_stops = run("priority", 0.0, allow_checkpoint_stop=False)
    assert {k for k, _ in shed_of(no_stops)} == {ActionKind.PAUSE}
    assert [jid for _, jid in shed_of(no_stops)] == ["pre-1", "pre-2", "f50", "f25", "f10"]
    assert no_stops.shortfall is not None and "2 flexible job(s) can be neither paused nor stopped" in no_stops.shortfall.reason


def _capped_site(jobs: tuple[Job, ...], watts: int) -> float:
    """The model's site power with ``watts`` on every flexible cappable running job not capped deeper already."""
    out = []
    for j in jobs:
        if j.tier is not Tier.CRITICAL and j.cappable and j.state is JobState.RUNNING and (
                j.power_cap_w is None or j.power_cap_w > watts):
            j = dataclasses.replace(j, power_cap_w=float(watts))
        out.append(j)
    return MODEL.site_kw(snapshot(*out))


@pytest.mark.parametrize("shed_kw", [1.0, 4.0, 9.0])
def test_uniform_cap_is_the_highest_single_cap_that_meets_the_target(shed_kw: float) -> None:
    jobs = (*mix(), job("f50-low", Tier.FLEX_50, 8, power_cap_w=150.0))
    site = MODEL.site_kw(snapshot(*jobs))
    target = site - shed_kw
    p = run("uniform-cap", target, *jobs)
    caps = {a.watts for a in p.shed}
    assert len(caps) == 1 and {a.kind for a in p.shed} == {ActionKind.CAP}
    watts = int(caps.pop())  # type: ignore[arg-type]
    # not the Ray jobs, nor one capped deeper already (f50-low; f25 too while the cap is above its 300 W)
    assert {a.job_id for a in p.shed} == {"f10", "f50", "pre-1", "pre-2"} | ({"f25"} if watts < 300 else set())
    assert _capped_site(jobs, watts) <= target < _capped_site(jobs, watts + 1)
    assert p.expected_kw == pytest.approx(_capped_site(jobs, watts))
    assert p.shortfall is None
    assert {a.key for a in p.shed} == {f"ev-1/cap/{a.job_id}/{watts}" for a in p.shed}
    uncap = {a.job_id: a.watts for a in p.restore}
    assert uncap == {"f10": None, "f50": None, "pre-1": None, "pre-2": None} | ({"f25": 300.0} if watts < 300 else {})


def test_uniform_cap_out_of_reach_is_the_lowest_cap_and_a_shortfall() -> None:
    p = run("uniform-cap", 0.0, min_cap_w=150.0)
    assert {a.watts for a in p.shed} == {150.0} and len(p.shed) == 5
    assert p.expected_kw == pytest.approx(_capped_site(mix(), 150))
    assert p.shortfall is not None and p.shortfall.kw == pytest.approx(p.expected_kw)
    assert "every flexible job is capped at 150 W, the lowest allowed" in p.shortfall.reason
    assert "2 flexible job(s) cannot be capped" in p.shortfall.reason
    assert "2 critical job(s)" in p.shortfall.reason


def test_pause_all_pauses_every_flexible_job_whatever_the_target() -> None:
    p = run("pause-all", SITE - 1.0)  # one job's worth would do
    assert sorted(shed_of(p), key=lambda t: t[1]) == [
        (ActionKind.PAUSE, "f10"), (ActionKind.PAUSE, "f25"), (ActionKind.PAUSE, "f50"), (ActionKind.PAUSE, "pre-1"),
        (ActionKind.PAUSE, "pre-2"), (ActionKind.CHECKPOINT_STOP, "ray-stop"),  # it cannot be paused, but stopped
    ]
    assert p.shortfall is None and p.expected_kw < SITE - 10.0
    assert all(loss >= 1.0 for _, loss in p.job_loss)
    assert any("whatever the target" in n for n in p.notes)


@each
@pytest.mark.parametrize("target", [0.0, SITE - 3.0])
def test_the_restore_undoes_every_shed_action(name: str, target: float) -> None:
    p = run(name, target)
    d = directive(target)
    assert p.shed
    assert len(p.restore) == len(p.shed)
    assert sorted((a.kind.undo, a.job_id, a.nodes) for a in p.shed) == sorted((a.kind, a.job_id, a.nodes) for a in p.restore)
    assert {a.key for a in p.restore} == {f"ev-1/{a.kind.undo.value}/{a.job_id}" for a in p.shed}
    for a in p.shed:
        tail = f"/{a.watts:.0f}" if a.kind is ActionKind.CAP else ""
        assert a.key == f"ev-1/{a.kind.value}/{a.job_id}{tail}"
        assert NOW <= a.at < d.end
    assert all(a.at >= d.end for a in p.restore)
    assert sum(a.delta_kw for a in p.restore) == pytest.approx(-sum(a.delta_kw for a in p.shed))


@each
@pytest.mark.parametrize("target", [0.0, SITE - 3.0, None])
def test_plans_do_not_depend_on_the_order_of_the_jobs(name: str, target: float | None) -> None:
    jobs = [*mix(), *(job(f"twin-{i}", Tier.FLEX_25) for i in range(4))]  # equal draws: ties broken by job id
    jobs = [dataclasses.replace(j, value_per_mwh=float(i % 3) * 60.0) for i, j in enumerate(jobs)]
    d = directive(target) if target is not None else directive(price=100.0)
    strategy = BASELINES[name]
    first = strategy(d, snapshot(*jobs), policy(tolerance_kw=0.01), NOW)
    assert first.shed
    rng = random.Random(7)
    for _ in range(5):
        rng.shuffle(jobs)
        assert strategy(d, snapshot(*jobs), policy(tolerance_kw=0.01), NOW) == first


@each
def test_an_unreachable_target_gives_a_shortfall(name: str) -> None:
    p = run(name, 1.0)
    assert p.shortfall is not None
    assert p.shortfall.kw == pytest.approx(p.expected_kw - 1.0)
    assert p.shortfall.reason.startswith(f"{p.shortfall.kw:.0f} kW of {SITE - 1.0:.0f} kW needed is out of reach: ")
    assert "2 critical job(s)" in p.shortfall.reason and "1 job(s) already paused" in p.shortfall.reason


@each
def test_nothing_is_done_at_target_or_after_the_end(name: str) -> None:
    at = run(name, SITE - 0.005)
    assert at.shed == () and at.restore == () and at.shortfall is None and at.notes[0].startswith("no shed needed")
    d = directive(0.0)
    over = BASELINES[name](d, snapshot(*mix()), policy(), d.end)
    assert over.shed == () and over.target_kw is None and over.expected_kw == pytest.approx(SITE)
    with pytest.raises(PlanningError, match="timezone-aware"):
        BASELINES[name](d, snapshot(*mix()), policy(), NOW.replace(tzinfo=None))
    with pytest.raises(PlanningError, match="appears more than once"):
        run(name, 0.0, job("a", Tier.FLEX_50), job("a", Tier.FLEX_25))


def test_economic_mode_sheds_jobs_worth_less_than_the_price() -> None:
    jobs = (job("cheap", Tier.FLEX_10, value_per_mwh=50.0, requeueable=False),
            job("cheap-pre", Tier.PREEMPTIBLE, 16, value_per_mwh=90.0),
            job("dear", Tier.FLEX_50, value_per_mwh=500.0), job("unvalued", Tier.PREEMPTIBLE),
            job("crit", Tier.CRITICAL, value_per_mwh=1.0))
    d = directive(price=120.0)
    pol = policy(min_cap_w=120.0)
    prio = priority_plan(d, snapshot(*jobs), pol, NOW)
    assert shed_of(prio) == [(ActionKind.CHECKPOINT_STOP, "cheap-pre"), (ActionKind.PAUSE, "cheap")]
    assert prio.shed[-1].reason.endswith("; worth 50/MWh < price 120/MWh")
    uni = uniform_cap_plan(d, snapshot(*jobs), pol, NOW)
    assert [(a.job_id, a.watts) for a in uni.shed] == [("cheap-pre", 120.0), ("cheap", 120.0)]
    every = pause_all_plan(d, snapshot(*jobs), pol, NOW)
    assert sorted(jid for _, jid in shed_of(every)) == ["cheap", "cheap-pre", "dear", "unvalued"]
    for p in (prio, uni, every):
        assert p.target_kw is None and p.shortfall is None
        assert p.expected_kw == pytest.approx(MODEL.site_kw(snapshot(*jobs)) + sum(a.delta_kw for a in p.shed))


async def test_the_engine_runs_a_baseline_in_place_of_the_planner(tmp_path: Path) -> None:
    clock = ManualClock(T0)
    model = PowerModel()
    cluster = SimulatedCluster(clock, model, 16, 8, small_mix(), seed=1)
    sink = Collect()
    settings = EngineSettings.from_config(config(), sample_interval_s=30.0, restore_retry_s=60.0)
    engine = Engine(scheduler=GuardedScheduler(cluster, timeout_s=0.5, retries=1, backoff_s=0.01), meter=cluster,
                    journal=Journal(tmp_path / "journal.sqlite3"), clock=clock, settings=settings, model=model,
                    sinks=[sink], planner=priority_plan)
    rig = Rig(clock=clock, cluster=cluster, journal_path=tmp_path / "journal.sqlite3", sink=sink, engine=engine)
    await rig.start()
    try:
        await rig.run_for(600)  # power history for the baseline
        start = clock.now() + timedelta(minutes=5)
        assert (await engine.on_event(event(start=start, value=20.0, minutes=30))).opt_in
        await rig.run_until(start + timedelta(minutes=10))
        sent = {(c.kind, c.job_id) for c in cluster.commands}
        # the lowest-priority jobs whole, none capped (dcflex's own planner caps this mix)
        assert {(ActionKind.CHECKPOINT_STOP, "pre-1"), (ActionKind.HOLD_NODES, "pre-1"), (ActionKind.PAUSE, "pre-2")} <= sent
        assert not {jid for _, jid in sent} & {"crit-1", "crit-2"}
        assert ActionKind.CAP not in {k for k, _ in sent}
        reasons = [r.action.reason for r in engine.journal.actions("ev-1") if r.action.kind in SHEDS]
        assert reasons and all(r.startswith("priority baseline: ") for r in reasons)

        await rig.run_until(start + timedelta(minutes=30 + 40))
        rec = engine.journal.event("ev-1")
        assert rec is not None and rec.state is EventState.COMPLETED
        assert engine.journal.outstanding("ev-1") == []
        undone = {(c.kind, c.job_id) for c in cluster.commands} - sent
        assert {(k.undo, jid) for k, jid in sent if k.sheds} <= undone
        snap = await cluster.snapshot()
        assert all(j.state in (JobState.RUNNING, JobState.RESTARTING, JobState.COMPLETED) for j in snap.jobs)
        assert not [n.name for n in snap.nodes if n.drained_by_gateway]
    finally:
        await rig.stop()
        engine.journal.close()
