"""The simulated cluster: every lever and its undo, idempotency, refusals, failure injection and
lazy time, checked against the power model it shares with the planner."""

from __future__ import annotations

import asyncio
import itertools
import math
import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.clock import ManualClock, ScaledClock
from gateway.domain import Action, ActionKind, JobState, Tier
from gateway.exceptions import AdapterTimeout, AdapterUnavailable, CommandFailed
from gateway.power import PowerModel, default_curves
from simulators._placement import NodePool, place
from simulators._simcore import KEEP_COMPLETED_S, SimCore
from simulators.cluster import Arrivals, SimJobSpec, SimulatedCluster

T0 = datetime(2025, 5, 3, 23, 0, tzinfo=UTC)
MODEL = PowerModel()
W = "pt_mpt_7b_fast"
CURVE = default_curves().get(W)
_keys = itertools.count()


def spec(job_id: str = "j-1", **kw: object) -> SimJobSpec:
    base: dict[str, object] = {"tier": Tier.FLEX_50, "gpus": 8, "workload": W, "work_s": 3600.0}
    base.update(kw)
    return SimJobSpec(job_id=job_id, **base)  # type: ignore[arg-type]


def act(kind: ActionKind, job_id: str = "j-1", *, key: str | None = None, nodes: tuple[str, ...] = (),
        watts: float | None = None, replicas: int | None = None) -> Action:
    return Action(key=key or f"k{next(_keys)}", kind=kind, at=T0, job_id=job_id, nodes=nodes, watts=watts,
                  replicas=replicas)


def build(*specs: SimJobSpec, nodes: int = 2, **kw: object) -> tuple[ManualClock, SimulatedCluster]:
    clock = ManualClock(T0)
    return clock, SimulatedCluster(clock, MODEL, nodes, 8, specs, **kw)  # type: ignore[arg-type]


def job_kw(gpus: int, cap: float | None) -> float:
    return gpus * (CURVE.power_at(cap) - MODEL.gpu_idle_w) / 1000


# --------------------------------------------------------------- placement, snapshot, power


async def test_placement_whole_nodes_shared_small_jobs_and_pending() -> None:
    _, sim = build(spec("big", gpus=12), spec("s1", gpus=4), spec("s2", gpus=4), spec("wait", gpus=8), nodes=3)
    assert sim.job("big").nodes == ("node-001", "node-002")  # 12 GPUs take two whole nodes
    assert sim.job("s1").nodes == sim.job("s2").nodes == ("node-003",)  # small jobs share a node
    assert sim.job("wait").state is JobState.PENDING and sim.job("wait").nodes == ()
    snap = await sim.snapshot()
    assert [n.state for n in snap.nodes] == ["allocated", "allocated", "allocated"]
    assert snap.total_gpus == 24 and snap.at == T0


async def test_site_power_is_idle_floor_plus_each_job_above_idle() -> None:
    _, sim = build(spec("a"), spec("b", gpus=4, workload="infer_llama_8b"), nodes=3)
    expected = 24 * MODEL.gpu_idle_w / 1000 + job_kw(8, None) + 4 * (368.375 - 60) / 1000
    assert await sim.read_kw() == pytest.approx(expected)
    assert sim.power_at_full() == pytest.approx(expected)
    snap = await sim.snapshot()
    assert snap.site_kw == pytest.approx(expected) == pytest.approx(MODEL.site_kw(snap))


async def test_noise_is_seeded_and_bounded() -> None:
    readings = []
    for _ in range(2):
        _, sim = build(spec(), noise_kw=0.5, seed=3)
        readings.append([await sim.read_kw() for _ in range(20)])
    assert readings[0] == readings[1]
    clean = sim.modelled_kw()
    assert any(abs(r - clean) > 1e-6 for r in readings[0])
    assert all(abs(r - clean) < 5 * 0.5 for r in readings[0])


async def test_snapshot_job_fields() -> None:
    _, sim = build(spec(elapsed_s=4000, checkpoint_interval_s=1800, checkpoint_s=90, restart_s=200, value_per_mwh=80.0))
    j = (await sim.snapshot()).job("j-1")
    assert j is not None
    assert (j.state, j.elapsed_s, j.remaining_s, j.lost_s) == (JobState.RUNNING, 4000, 3600, 0)
    assert j.since_checkpoint_s == pytest.approx(4000 % 1800)
    assert (j.checkpoint_s, j.restart_s, j.value_per_mwh, j.scheduler) == (90, 200, 80.0, "simulated")


# --------------------------------------------------------------------------------- levers


async def test_cap_then_uncap_power_throughput_and_lost_work() -> None:
    clock, sim = build(spec(work_s=36_000))
    before = sim.modelled_kw()
    await sim.apply(act(ActionKind.CAP, watts=250))
    assert sim.job("j-1").power_cap_w == 250
    assert before - sim.modelled_kw() == pytest.approx(job_kw(8, None) - job_kw(8, 250))
    await clock.advance(600)
    thr = CURVE.throughput_at(250)
    j = sim.job("j-1")
    assert j.lost_s == pytest.approx(600 * (1 - thr))
    assert j.remaining_s == pytest.approx((36_000 - 600 * thr) / thr)  # at the capped speed
    await sim.apply(act(ActionKind.UNCAP))
    assert sim.job("j-1").power_cap_w is None and sim.modelled_kw() == pytest.approx(before)
    await clock.advance(600)
    assert sim.job("j-1").lost_s == pytest.approx(600 * (1 - thr))  # no more loss once uncapped


async def test_cap_is_clamped_to_the_model_limits() -> None:
    _, sim = build(spec())
    await sim.apply(act(ActionKind.CAP, watts=20))
    assert sim.job("j-1").power_cap_w == MODEL.min_cap_w
    await sim.apply(act(ActionKind.CAP, watts=900))
    assert sim.job("j-1").power_cap_w == MODEL.max_cap_w
    assert [c.watts for c in sim.commands] == [MODEL.min_cap_w, MODEL.max_cap_w]


async def test_pause_then_resume() -> None:
    clock, sim = build(spec(work_s=7200))
    full = sim.modelled_kw()
    await sim.apply(act(ActionKind.PAUSE))
    assert sim.job("j-1").state is JobState.SUSPENDED
    assert full - sim.modelled_kw() == pytest.approx(job_kw(8, None))  # GPUs at idle draw
    await clock.advance(300)
    j = sim.job("j-1")
    assert [j.lost_s, j.remaining_s, j.elapsed_s] == pytest.approx([300, 7200, 300])
    await sim.apply(act(ActionKind.RESUME))
    assert sim.job("j-1").state is JobState.RUNNING and sim.modelled_kw() == pytest.approx(full)
    await clock.advance(300)
    assert sim.job("j-1").remaining_s == pytest.approx(6900)


async def test_checkpoint_stop_then_restart_takes_their_time() -> None:
    clock, sim = build(spec(work_s=36_000, elapsed_s=1000, checkpoint_interval_s=1800, checkpoint_s=120, restart_s=200))
    full = sim.modelled_kw()
    await sim.apply(act(ActionKind.CHECKPOINT_STOP))
    j = sim.job("j-1")
    assert j.state is JobState.CHECKPOINTING and j.since_checkpoint_s == pytest.approx(1000)
    assert sim.modelled_kw() == pytest.approx(full)  # writing a checkpoint still draws power
    await clock.advance(119)
    assert sim.job("j-1").state is JobState.CHECKPOINTING
    await clock.advance(1)
    j = sim.job("j-1")
    assert (j.state, j.since_checkpoint_s, j.nodes) == (JobState.STOPPED, 0, ())
    assert full - sim.modelled_kw() == pytest.approx(job_kw(8, None))
    assert (await sim.snapshot()).nodes[0].state == "idle"
    await clock.advance(1000)
    await sim.apply(act(ActionKind.RESTART))
    j = sim.job("j-1")
    assert (j.state, j.nodes) == (JobState.RESTARTING, ("node-001",))
    await clock.advance(200)
    j = sim.job("j-1")
    assert j.state is JobState.RUNNING
    assert j.lost_s == pytest.approx(120 + 1000 + 200)  # no work was thrown away: it checkpointed
    assert j.remaining_s == pytest.approx(36_000)


async def test_stop_without_checkpoint_loses_work_since_the_last_one() -> None:
    clock, sim = build(spec(work_s=36_000, checkpoint_interval_s=1800, checkpointable=False))
    await clock.advance(2000)  # a periodic checkpoint at 1800 s, then 200 s of work
    assert sim.job("j-1").since_checkpoint_s == pytest.approx(200)
    await sim.apply(act(ActionKind.CHECKPOINT_STOP))
    j = sim.job("j-1")
    assert (j.state, j.since_checkpoint_s) == (JobState.STOPPED, 0)
    assert j.lost_s == pytest.approx(200) and j.remaining_s == pytest.approx(36_000 - 1800)
    report = {r.job_id: r for r in sim.job_throughput_report()}["j-1"]
    assert report.throughput_kept == pytest.approx(1800 / 2000)


async def test_restart_during_checkpoint_restarts_right_after_it() -> None:
    clock, sim = build(spec(checkpoint_s=100, restart_s=50))
    await sim.apply(act(ActionKind.CHECKPOINT_STOP))
    await sim.apply(act(ActionKind.RESTART))
    assert sim.job("j-1").state is JobState.CHECKPOINTING
    await clock.advance(100)
    assert sim.job("j-1").state is JobState.RESTARTING
    await clock.advance(50)
    assert sim.job("j-1").state is JobState.RUNNING
    assert sim.job("j-1").lost_s == pytest.approx(150)


async def test_hold_keeps_freed_nodes_from_being_refilled_until_release() -> None:
    clock, sim = build(spec("stop", checkpoint_s=60), spec("queued"), nodes=1)
    assert sim.job("queued").state is JobState.PENDING
    await sim.apply(act(ActionKind.CHECKPOINT_STOP, "stop"))
    await sim.apply(act(ActionKind.HOLD_NODES, "", nodes=("node-001",)))
    assert (await sim.snapshot()).nodes[0].state == "draining"
    await clock.advance(600)
    assert sim.job("queued").state is JobState.PENDING and (await sim.snapshot()).nodes[0].state == "drained"
    await sim.apply(act(ActionKind.RELEASE_NODES, "", nodes=("node-001",)))
    await clock.advance(30)  # the next scheduler pass places the queued job
    assert sim.job("queued").nodes == ("node-001",)
    await sim.apply(act(ActionKind.RESTART, "stop"))
    assert sim.job("stop").state is JobState.PENDING  # its node is taken: waits for capacity


async def test_without_a_hold_the_scheduler_refills_freed_nodes() -> None:
    clock, sim = build(spec("stop", checkpointable=False), spec("queued"), nodes=1, sched_interval_s=30)
    await sim.apply(act(ActionKind.CHECKPOINT_STOP, "stop"))
    assert sim.job("queued").state is JobState.PENDING  # not before the next scheduler pass
    await clock.advance(30)
    assert sim.job("queued").state is JobState.RUNNING


async def test_restart_goes_back_to_its_own_held_nodes() -> None:
    clock, sim = build(spec("stop", gpus=16, checkpoint_s=10, restart_s=10), nodes=3)
    await sim.apply(act(ActionKind.CHECKPOINT_STOP, "stop"))
    await sim.apply(act(ActionKind.HOLD_NODES, "", nodes=("node-001", "node-002")))
    await clock.advance(10)
    await sim.apply(act(ActionKind.RESTART, "stop"))  # restored before the release: the hold is for it
    assert sim.job("stop").nodes == ("node-001", "node-002")


async def test_release_never_touches_nodes_drained_by_others() -> None:
    _, sim = build(spec(), nodes=3, drained_by_other=["node-003"])
    both = ("node-002", "node-003")
    assert sim.describe(act(ActionKind.RELEASE_NODES, "", nodes=both)) == [
        "sim: undrain nodes node-002 (dcflex hold)", "sim: leave node node-003 alone: drained by someone else"]
    await sim.apply(act(ActionKind.HOLD_NODES, "", nodes=both))
    await sim.apply(act(ActionKind.RELEASE_NODES, "", nodes=both))
    await sim.apply(act(ActionKind.RELEASE_NODES, "", nodes=("node-003",)))
    node3 = (await sim.snapshot()).nodes[2]
    assert node3.drained_by_other and not node3.drained_by_gateway and node3.state == "drained"
    assert [(c.kind, c.nodes) for c in sim.commands] == [
        (ActionKind.HOLD_NODES, ("node-002",)), (ActionKind.RELEASE_NODES, ("node-002",))]


# ------------------------------------------------------------- idempotency and refusals


async def test_idempotent_by_key_and_by_state() -> None:
    clock, sim = build(spec())
    cap = act(ActionKind.CAP, watts=200, key="cap-once")
    await sim.apply(cap)
    await clock.advance(10)
    await sim.apply(act(ActionKind.CAP, watts=300, key="cap-once"))  # same key: not sent again
    await sim.apply(act(ActionKind.CAP, watts=200))  # same cap: nothing to do
    await sim.apply(act(ActionKind.RESUME))  # already running
    await sim.apply(act(ActionKind.PAUSE, key="p"))
    await sim.apply(act(ActionKind.PAUSE))
    assert sim.job("j-1").power_cap_w == 200
    assert [(c.key, c.kind, c.job_id, c.nodes, c.watts, c.at) for c in sim.commands] == [
        ("cap-once", ActionKind.CAP, "j-1", ("node-001",), 200, T0),
        ("p", ActionKind.PAUSE, "j-1", ("node-001",), None, T0 + timedelta(seconds=10)),
    ]
    assert {r.job_id: r.touched for r in sim.job_throughput_report()} == {"j-1": 2}


@pytest.mark.parametrize(
    ("setup", "kind", "job", "words"),
    [
        ("complete", ActionKind.PAUSE, "j-1", ["j-1", "completed"]),
        (None, ActionKind.PAUSE, "nope", ["nope", "no such job"]),
        (None, ActionKind.RESTART, "j-1", ["j-1", "running"]),
        (None, ActionKind.CHECKPOINT_STOP, "fixed", ["fixed", "not requeueable"]),
        ("stop", ActionKind.RESUME, "j-1", ["j-1", "stopped"]),
        ("stop", ActionKind.CAP, "j-1", ["j-1", "stopped"]),
        ("stop", ActionKind.PAUSE, "j-1", ["j-1", "stopped"]),
        ("pause", ActionKind.RESTART, "j-1", ["j-1", "suspended"]),
    ],
)
async def test_refusals_name_job_and_state(setup: str | None, kind: ActionKind, job: str, words: list[str]) -> None:
    clock, sim = build(spec(work_s=100, checkpointable=False), spec("fixed", requeueable=False))
    if setup == "complete":
        await clock.advance(100)
    elif setup == "stop":
        await sim.apply(act(ActionKind.CHECKPOINT_STOP))
    elif setup == "pause":
        await sim.apply(act(ActionKind.PAUSE))
    before = len(sim.commands)
    bad = act(kind, job, watts=200 if kind is ActionKind.CAP else None, key="bad")
    with pytest.raises(CommandFailed) as err:
        await sim.apply(bad)
    assert all(w in str(err.value) for w in words), str(err.value)
    assert err.value.adapter == "simulated" and err.value.command == tuple(sim.describe(bad))
    assert len(sim.commands) == before


async def test_unknown_nodes_are_refused() -> None:
    _, sim = build(spec())
    with pytest.raises(CommandFailed, match="node-999"):
        await sim.apply(act(ActionKind.HOLD_NODES, "", nodes=("node-001", "node-999")))
    assert not (await sim.snapshot()).nodes[0].drained_by_gateway  # nothing half-done


async def test_uncap_of_a_finished_job_is_a_harmless_no_op() -> None:
    clock, sim = build(spec(work_s=100))
    await sim.apply(act(ActionKind.CAP, watts=300))
    await clock.advance(1000)
    assert sim.job("j-1").state is JobState.COMPLETED
    await sim.apply(act(ActionKind.UNCAP))
    assert [c.kind for c in sim.commands] == [ActionKind.CAP]


# ---------------------------------------------------------------------- failure injection


async def test_fail_next_raises_once_and_leaves_the_action_undone() -> None:
    _, sim = build(spec(), spec("j-2"))
    sim.fail_next(ActionKind.CAP, job_id="j-2", exc=AdapterUnavailable)
    sim.fail_next(ActionKind.PAUSE, exc=AdapterTimeout("slow", adapter="simulated", timeout_s=3))
    cap = act(ActionKind.CAP, "j-1", watts=200, key="c1")
    await sim.apply(cap)  # another job: unaffected
    cap2 = act(ActionKind.CAP, "j-2", watts=200, key="c2")
    with pytest.raises(AdapterUnavailable, match="injected failure of cap j-2"):
        await sim.apply(cap2)
    assert sim.job("j-2").power_cap_w is None
    await sim.apply(cap2)  # the retry with the same key goes through
    with pytest.raises(AdapterTimeout, match="3 s"):
        await sim.apply(act(ActionKind.PAUSE, "j-1"))
    assert [c.key for c in sim.commands] == ["c1", "c2"] and sim.job("j-1").state is JobState.RUNNING


async def test_hang_next_waits_on_the_clock() -> None:
    clock, sim = build(spec())
    sim.hang_next(ActionKind.PAUSE, 30)
    task = asyncio.create_task(sim.apply(act(ActionKind.PAUSE, key="slow")))
    for _ in range(5):
        await asyncio.sleep(0)
    assert not task.done() and not sim.commands
    await clock.advance(30)
    await task
    assert [(rec.key, rec.at) for rec in sim.commands] == [("slow", T0 + timedelta(seconds=30))]


async def test_a_hung_apply_cancelled_by_a_timeout_changes_nothing() -> None:
    _, sim = build(spec())
    sim.hang_next(ActionKind.CAP, 3600)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await sim.apply(act(ActionKind.CAP, watts=150, key="late"))
    assert sim.job("j-1").power_cap_w is None and sim.commands == ()
    await sim.apply(act(ActionKind.CAP, watts=150, key="late"))  # the hang was used up
    assert sim.job("j-1").power_cap_w == 150


# ------------------------------------------------------------------------------- time


async def test_a_capped_job_finishes_mid_way_and_frees_its_node() -> None:
    clock, sim = build(spec(work_s=1000, elapsed_s=500))
    await sim.apply(act(ActionKind.CAP, watts=200))
    thr = CURVE.throughput_at(200)
    await clock.advance(1000 / thr - 1)
    assert sim.job("j-1").state is JobState.RUNNING
    await clock.advance(2)
    j = sim.job("j-1")
    assert (j.state, j.nodes, j.remaining_s, j.power_cap_w) == (JobState.COMPLETED, (), 0, None)
    assert j.elapsed_s == pytest.approx(500 + 1000 / thr) and j.lost_s == pytest.approx(1000 / thr - 1000)
    assert sim.modelled_kw() == pytest.approx(16 * MODEL.gpu_idle_w / 1000)
    kept = sim.job_throughput_report()[0]
    assert kept.throughput_kept == pytest.approx(1500 / (500 + 1000 / thr))
    assert kept.lost_gpu_hours == pytest.approx(j.lost_s * 8 / 3600)


async def test_many_small_steps_equal_one_big_step() -> None:
    results = []
    for steps in (1, 37):
        jobs = spec("a", work_s=2000), spec("b", gpus=4, checkpointable=False), spec("c", gpus=8, work_s=36_000)
        clock, sim = build(*jobs, nodes=2)
        await sim.apply(act(ActionKind.CAP, "a", watts=220))
        await sim.apply(act(ActionKind.CHECKPOINT_STOP, "b"))
        for _ in range(steps):
            await clock.advance(4000 / steps)
        snap = await sim.snapshot()
        results.append([(j.job_id, j.state, round(j.lost_s, 3), j.nodes) for j in snap.jobs])  # timedelta: µs
    assert results[0] == results[1]
    assert results[0][2][1] is JobState.RUNNING  # "c" got the node "b" left at the next pass


async def test_elapsed_is_progress_plus_lost() -> None:
    clock, sim = build(spec(work_s=50_000, checkpoint_s=100, restart_s=100))
    for kind, watts in ((ActionKind.CAP, 180.0), (ActionKind.PAUSE, None), (ActionKind.RESUME, None),
                        (ActionKind.CHECKPOINT_STOP, None), (ActionKind.RESTART, None)):
        await sim.apply(act(kind, watts=watts))
        await clock.advance(250)
    j, r = sim.job("j-1"), sim.job_throughput_report()[0]
    assert r.throughput_kept * j.elapsed_s == pytest.approx(j.elapsed_s - j.lost_s)
    assert j.elapsed_s == pytest.approx(1250)


async def test_seeded_arrivals_land_on_free_undrained_nodes_only() -> None:
    def make(rng: object, job_id: str) -> SimJobSpec:
        return spec(job_id, work_s=10 * 3600)

    states = []
    for _ in range(2):
        clock, sim = build(spec("j-1", work_s=10 * 3600), nodes=4, seed=5, arrivals=Arrivals(4.0, make))
        await sim.apply(act(ActionKind.HOLD_NODES, "", nodes=("node-002", "node-003")))
        await clock.advance(3 * 3600)
        snap = await sim.snapshot()
        states.append([(j.job_id, j.state, j.nodes) for j in snap.jobs])
    assert states[0] == states[1]
    arrived = [s for s in states[0] if s[0].startswith("a-")]
    assert len(arrived) >= 2
    assert [s[2] for s in arrived if s[1] is JobState.RUNNING] == [("node-004",)]


async def test_scaled_clock_advances_lazily_too() -> None:
    clock = ScaledClock(T0, speed=100_000)
    sim = SimulatedCluster(clock, MODEL, 1, 8, [spec(work_s=1000)])
    assert sim.job("j-1").state is JobState.RUNNING
    await asyncio.sleep(0.02)  # at least 2000 s of virtual time
    assert sim.job("j-1").state is JobState.COMPLETED


def test_describe_says_what_would_be_done() -> None:
    _, sim = build(spec())
    assert sim.describe(act(ActionKind.CAP, "j-17", watts=250)) == ["sim: cap job j-17 to 250 W"]
    assert sim.describe(act(ActionKind.PAUSE, "j-17")) == ["sim: suspend job j-17"]
    assert sim.describe(act(ActionKind.HOLD_NODES, "", nodes=("node-001", "node-002"))) == [
        "sim: drain nodes node-001,node-002 (dcflex hold)"]
    for kind in ActionKind:
        a = act(kind, "j-1", nodes=("node-001",), watts=300, replicas=1)
        assert sim.describe(a) and all(line.startswith("sim: ") for line in sim.describe(a))
    assert sim.commands == ()


async def test_scaling_is_refused_it_runs_no_services() -> None:
    _, sim = build(spec())
    with pytest.raises(CommandFailed, match="runs no replicated services"):
        await sim.apply(act(ActionKind.SCALE_DOWN, "j-1", replicas=1))
    assert sim.commands == ()


def test_bad_construction_is_refused() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        build(spec(), spec())
    with pytest.raises(ValueError, match="more than the cluster has"):
        build(spec(gpus=100))
    with pytest.raises(ValueError, match="unknown nodes"):
        build(spec(), drained_by_other=["node-042"])
    with pytest.raises(ValueError, match="work_s"):
        spec(work_s=0)


# ------------------------------------------------------------------------- job trace


async def test_a_trace_submits_each_job_at_its_time_in_time_then_id_order() -> None:
    trace = [(95.0, spec("late")), (10.0, spec("t-b")), (10.0, spec("t-a"))]  # unsorted on purpose
    clock, sim = build(spec("j-1", work_s=36_000), nodes=2, trace=trace)
    with pytest.raises(KeyError):
        sim.job("t-a")  # not submitted yet
    await clock.advance(10)
    assert sim.job("t-a").state is sim.job("t-b").state is JobState.PENDING  # queued, not placed before a pass
    await clock.advance(20)  # the pass at 30 s: one free node, and t-a comes first at the same time
    assert (sim.job("t-a").state, sim.job("t-a").nodes) == (JobState.RUNNING, ("node-002",))
    assert sim.job("t-b").state is JobState.PENDING
    await clock.advance(64)
    with pytest.raises(KeyError):
        sim.job("late")
    await clock.advance(1)
    assert sim.job("late").state is JobState.PENDING
    assert [j.job_id for j in (await sim.snapshot()).jobs] == ["j-1", "t-a", "t-b", "late"]


async def test_a_trace_leaves_the_poisson_arrivals_as_they_were() -> None:
    drawn: list[list[tuple[str, float]]] = []
    for trace in ((), [(float(60 * i), spec(f"t-{i}", gpus=4, work_s=600)) for i in range(30)]):
        seen: list[tuple[str, float]] = []
        drawn.append(seen)

        def make(rng: random.Random, job_id: str, seen: list[tuple[str, float]] = seen) -> SimJobSpec:
            seen.append((job_id, rng.random()))
            return spec(job_id, gpus=4, work_s=900)

        clock, sim = build(nodes=3, seed=9, arrivals=Arrivals(6.0, make), trace=trace)
        await clock.advance(4 * 3600)
        ids = {r.job_id for r in sim.job_throughput_report()}
        assert {f"t-{i}" for i in range(len(trace))} <= ids
    assert len(drawn[0]) >= 10 and drawn[0] == drawn[1]  # same seed: same arrivals, same draws, trace or not


def test_a_bad_trace_is_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="finite and >= 0"):
        build(trace=[(-1.0, spec("t"))])
    with pytest.raises(ValueError, match="finite and >= 0"):
        build(trace=[(math.nan, spec("t"))])
    with pytest.raises(ValueError, match="repeats a job id"):
        build(trace=[(1.0, spec("t")), (2.0, spec("t"))])
    with pytest.raises(ValueError, match="duplicate job id j-1"):
        build(spec("j-1"), trace=[(5.0, spec("j-1"))])
    with pytest.raises(ValueError, match="more than the cluster has"):
        build(trace=[(5.0, spec("t", gpus=17))])


async def test_a_submission_may_not_take_an_id_the_trace_will_use() -> None:
    clock, sim = build(trace=[(600.0, spec("t-1"))])
    with pytest.raises(ValueError, match="duplicate job id t-1"):
        sim.submit(spec("t-1"))
    await clock.advance(600)
    assert sim.job("t-1").state is JobState.PENDING


# ------------------------------------------------------------ snapshots, lazy accounts, scale


async def test_snapshots_drop_jobs_completed_over_an_hour_ago_the_report_keeps_them() -> None:
    clock, sim = build(spec("short", work_s=600), spec("long", work_s=36_000))
    await clock.advance(600 + KEEP_COMPLETED_S)  # ended exactly an hour ago: still listed, as completed
    assert [(j.job_id, j.state) for j in (await sim.snapshot()).jobs] == [
        ("short", JobState.COMPLETED), ("long", JobState.RUNNING)]
    await clock.advance(1)
    assert [j.job_id for j in (await sim.snapshot()).jobs] == ["long"]
    assert sim.job("short").state is JobState.COMPLETED  # still known by id
    report = {r.job_id: r for r in sim.job_throughput_report()}
    assert report.keys() == {"short", "long"} and report["short"].state is JobState.COMPLETED


async def test_a_job_left_unread_is_accounted_in_full_when_it_changes() -> None:
    clock, sim = build(spec(work_s=36_000, elapsed_s=0, checkpoint_interval_s=None))
    await clock.advance(1000)  # nobody reads the job
    await sim.apply(act(ActionKind.CAP, watts=250))
    await clock.advance(600)
    thr = CURVE.throughput_at(250)
    j = sim.job("j-1")
    assert (j.elapsed_s, j.lost_s, j.since_checkpoint_s) == pytest.approx((1600, 600 * (1 - thr), 1000 + 600 * thr))
    assert j.remaining_s == pytest.approx((36_000 - 1000 - 600 * thr) / thr)


async def test_reading_often_or_never_gives_the_same_accounts() -> None:
    finals = []
    for read_every in (7.0, None):
        jobs = [spec(f"j-{i}", gpus=g, work_s=w, checkpoint_s=40, restart_s=90, checkpointable=i != 2)
                for i, (g, w) in enumerate([(8, 5000), (4, 20_000), (4, 3000), (16, 9000), (8, 700)])]
        clock, sim = build(*jobs, nodes=4, sched_interval_s=10)
        script = [(100, act(ActionKind.CAP, "j-0", watts=200)), (400, act(ActionKind.PAUSE, "j-1")),
                  (900, act(ActionKind.CHECKPOINT_STOP, "j-2")), (950, act(ActionKind.CHECKPOINT_STOP, "j-3")),
                  (1200, act(ActionKind.RESTART, "j-2")), (1500, act(ActionKind.RESUME, "j-1")),
                  (2000, act(ActionKind.RESTART, "j-3")), (2500, act(ActionKind.UNCAP, "j-0"))]
        t = 0.0
        for at, action in [*script, (9000, None)]:
            while read_every and t + read_every < at:
                await clock.advance(read_every)
                t += read_every
                await sim.snapshot()
            await clock.advance(at - t)
            t = at
            if action is not None:
                await sim.apply(action)
        finals.append(((await sim.snapshot()).jobs, sim.modelled_kw()))
    (often, kw_often), (never, kw_never) = finals
    assert [(j.job_id, j.state, j.nodes) for j in often] == [(j.job_id, j.state, j.nodes) for j in never]
    for a, b in zip(often, never, strict=True):
        assert (a.elapsed_s, a.lost_s, a.remaining_s, a.since_checkpoint_s) == pytest.approx(
            (b.elapsed_s, b.lost_s, b.remaining_s, b.since_checkpoint_s), abs=1e-6)
    assert kw_often == kw_never


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_the_node_index_places_exactly_as_the_reference_rule(data: st.DataObject) -> None:
    gpn = data.draw(st.sampled_from([4, 8]))
    names = [f"n{i:03d}" for i in range(data.draw(st.integers(1, 10)))]
    free = {n: data.draw(st.integers(0, gpn)) for n in names}
    other = set(data.draw(st.lists(st.sampled_from(names), max_size=2)))
    held = set(data.draw(st.lists(st.sampled_from(names), max_size=4)))
    prefer = data.draw(st.lists(st.sampled_from(names), max_size=3, unique=True))
    gpus = data.draw(st.integers(1, 3 * gpn))
    pool = NodePool(names, gpn, other)
    for n, g in free.items():
        pool.set_free(n, g)
    pool.held.update(held)
    plain = {n for n in names if n not in held and n not in other}
    assert pool.fits_now()(gpus) == (place(dict(free), gpn, gpus, plain, []) is not None)
    expected_free = dict(free)
    expected = place(expected_free, gpn, gpus, plain | {n for n in prefer if n in held}, prefer)
    assert pool.place(gpus, prefer) == expected
    assert pool.free == expected_free


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(1, 24), min_size=1, max_size=40), st.lists(st.integers(1, 24), max_size=20),
       st.sets(st.integers(1, 6), max_size=3))
def test_a_scheduler_pass_places_as_trying_every_queued_job_in_turn(first: list[int], later: list[int],
                                                                    held: set[int]) -> None:
    """The pass skips sizes that cannot fit; the reference tries every job in queue order with ``place``."""
    core = SimCore(MODEL, 6, 8, seed=0, arrivals=None, drained_by_other=(), node_prefix="n", sched_interval_s=30)
    holds = {f"n{i:03d}" for i in held}
    core.held.update(holds)
    free = {n: 8 for n in core.node_names}
    queue: list[SimJobSpec] = []
    placed: dict[str, list[tuple[str, int]]] = {}

    def reference_pass() -> None:
        allowed = {n for n in core.node_names if n not in core.held}
        for s in list(queue):
            alloc = place(free, 8, s.gpus, allowed, [])
            if alloc is not None:
                queue.remove(s)
                placed[s.job_id] = alloc

    for batch, name in ((first, "a"), (later, "b")):
        for i, g in enumerate(batch):
            s = spec(f"{name}-{i:02d}", gpus=g)
            core.add(s)
            queue.append(s)
        core.schedule()
        reference_pass()
        core.release_nodes(holds)  # the second pass sees the held nodes too
    assert {jid: j.alloc for jid, j in core.jobs.items() if j.alloc} == placed
    assert [j.spec.job_id for j in core.queue] == [s.job_id for s in queue]
