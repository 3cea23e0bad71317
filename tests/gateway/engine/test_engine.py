"""The engine end to end on the simulated cluster: lifecycle, re-plans, cancellation, restart, errors."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta

import pytest

from gateway.domain import ActionKind, EventState, JobState, Tier
from gateway.exceptions import CommandFailed
from gateway.ports import Recall
from tests.gateway.engine.conftest import Rig, event

CRITICAL = {"crit-1", "crit-2"}


async def _all_restored(rig: Rig) -> None:
    snap = await rig.cluster.snapshot()
    for job in snap.jobs:
        assert job.power_cap_w is None, f"{job.job_id} still capped at {job.power_cap_w} W"
        assert job.state in (JobState.RUNNING, JobState.COMPLETED, JobState.RESTARTING), f"{job.job_id} is {job.state}"
    assert not [n.name for n in snap.nodes if n.drained_by_gateway], "nodes still drained by the gateway"


def _state(rig: Rig, event_id: str) -> EventState:
    rec = rig.engine.journal.event(event_id)
    assert rec is not None
    return rec.state


async def test_event_is_planned_held_and_fully_restored(rig: Rig) -> None:
    start = rig.clock.now() + timedelta(minutes=10)
    ev = event(start=start, value=20.0)
    decision = await rig.engine.on_event(ev)
    assert decision.opt_in, decision.reason
    assert _state(rig, "ev-1") is EventState.NOTICED
    directive = rig.engine.journal.event("ev-1").directive  # type: ignore[union-attr]
    assert directive is not None and directive.strictest_kw is not None
    target = directive.strictest_kw
    assert abs(target - 0.8 * directive.baseline_kw) < 1e-6

    await rig.run_until(directive.target_by + timedelta(minutes=2))
    assert _state(rig, "ev-1") in (EventState.RAMPING, EventState.HOLDING)
    kw = await rig.cluster.read_kw()
    assert kw <= target + 3.0, f"site at {kw:.1f} kW, target {target:.1f} kW"
    touched = {c.job_id for c in rig.cluster.commands}
    assert touched and not touched & CRITICAL
    assert rig.sink.of("target_reached"), "the engine never recorded reaching the target"

    await rig.run_until(directive.end + timedelta(minutes=40))
    assert _state(rig, "ev-1") is EventState.COMPLETED
    assert rig.engine.journal.outstanding("ev-1") == []
    await _all_restored(rig)
    states = [t[2] for t in rig.engine.journal.transitions("ev-1")]
    for s in ("planned", "noticed", "ramping", "holding", "restoring", "completed"):
        assert s in states, f"{s} missing from {states}"


async def test_restore_is_staggered_under_the_ramp_rate(rig: Rig) -> None:
    start = rig.clock.now() + timedelta(minutes=5)
    await rig.engine.on_event(event(start=start, value=30.0, minutes=30))
    await rig.run_until(start + timedelta(minutes=80))
    undo_kinds = {ActionKind.UNCAP, ActionKind.RESUME, ActionKind.RESTART}
    undos = [r.action for r in rig.engine.journal.actions("ev-1") if r.action.kind in undo_kinds and r.state == "done"]
    assert len(undos) >= 2
    rate = rig.engine.settings.site.ramp_rate_kw_per_min
    biggest = max(a.delta_kw for a in undos)
    for a in undos:
        window = sum(b.delta_kw for b in undos if a.at <= b.at < a.at + timedelta(minutes=1))
        assert window <= rate + biggest + 1e-6, f"{window:.1f} kW restored within a minute of {a.at}"


async def test_duplicate_delivery_is_answered_alike_and_not_replanned(rig: Rig) -> None:
    ev = event(start=rig.clock.now() + timedelta(minutes=10))
    first = await rig.engine.on_event(ev)
    second = await rig.engine.on_event(ev)
    assert first == second
    assert rig.engine.journal.deliveries("ev-1") == 2
    assert len(rig.sink.of("plan")) == 1


async def test_modification_replans_to_the_new_target(rig: Rig) -> None:
    start = rig.clock.now() + timedelta(minutes=5)
    await rig.engine.on_event(event(start=start, value=15.0))
    await rig.run_until(start + timedelta(minutes=20))
    plans_before = len(rig.sink.of("plan"))
    decision = await rig.engine.on_event(event(start=start, value=30.0, modification=1))
    assert decision.opt_in
    await rig.run_for(20 * 60)
    rec = rig.engine.journal.event("ev-1")
    assert rec is not None and rec.modification == 1
    assert len(rig.sink.of("plan")) > plans_before
    target = rec.directive.strictest_kw  # type: ignore[union-attr]
    assert target is not None
    kw = await rig.cluster.read_kw()
    assert kw <= target + 3.0, f"after the modification the site is at {kw:.1f} kW, target {target:.1f}"


async def test_cancel_mid_event_restores_everything(rig: Rig) -> None:
    start = rig.clock.now() + timedelta(minutes=5)
    await rig.engine.on_event(event(start=start))
    await rig.run_until(start + timedelta(minutes=20))
    assert rig.cluster.commands
    await rig.engine.on_cancel("ev-1", "cancelled by VTN")
    await rig.run_for(30 * 60)
    assert _state(rig, "ev-1") is EventState.CANCELLED
    await _all_restored(rig)


async def test_cancel_before_start_sends_nothing(rig: Rig) -> None:
    await rig.engine.on_event(event(start=rig.clock.now() + timedelta(minutes=30)))
    await rig.engine.on_cancel("ev-1", "implied cancellation")
    await rig.run_for(3 * 3600, step=120)
    assert _state(rig, "ev-1") is EventState.CANCELLED
    assert rig.cluster.commands == ()


async def test_unknown_signal_is_opted_out_and_journaled(rig: Rig) -> None:
    decision = await rig.engine.on_event(event(start=rig.clock.now() + timedelta(minutes=5), signal="FOO_BAR"))
    assert not decision.opt_in and "FOO_BAR" in decision.reason
    assert _state(rig, "ev-1") is EventState.OPTED_OUT
    await rig.run_for(2 * 3600, step=120)
    assert rig.cluster.commands == ()


async def test_restart_mid_event_resends_nothing_and_restores_at_the_end(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    start = rig.clock.now() + timedelta(minutes=5)
    await rig.engine.on_event(event(start=start, value=25.0))
    await rig.run_until(start + timedelta(minutes=25))
    sent_before = len(rig.cluster.commands)
    assert sent_before > 0
    capped = {j.job_id: j.power_cap_w for j in (await rig.cluster.snapshot()).jobs if j.power_cap_w is not None}
    assert capped
    recalled: list[Recall] = []
    monkeypatch.setattr(rig.cluster, "recall", recalled.append)
    await rig.restart()
    # a scheduler that cannot read caps back (Slurm) learns them from the journal, with every command in force
    assert [dict(r.caps) for r in recalled] == [capped]
    in_force = recalled[0].in_force
    assert {a.job_id for a in in_force if a.kind is ActionKind.CAP} == set(capped)
    assert all(a.kind.sheds for a in in_force)
    assert any(k == "resumed" for k, _ in rig.sink.records)
    await rig.run_until(start + timedelta(minutes=120))
    assert _state(rig, "ev-1") is EventState.COMPLETED
    await _all_restored(rig)
    keys = Counter(c.key for c in rig.cluster.commands)
    assert all(n == 1 for n in keys.values()), f"commands sent twice: {[k for k, n in keys.items() if n > 1]}"
    assert {r.action.key for r in rig.engine.journal.actions("ev-1") if r.attempts > 1} == set()


async def test_failed_command_is_alerted_and_the_event_goes_on(rig: Rig) -> None:
    rig.cluster.fail_next(ActionKind.CAP, exc=CommandFailed("sim refused", adapter="simulated", exit_code=1))
    start = rig.clock.now() + timedelta(minutes=5)
    await rig.engine.on_event(event(start=start))
    await rig.run_until(start + timedelta(minutes=100))
    alerts = [a for a in rig.sink.of("alert") if a["code"] == "command_failed"]
    assert alerts and "sim refused" in alerts[0]["message"]
    assert _state(rig, "ev-1") is EventState.COMPLETED
    await _all_restored(rig)


async def test_failed_undo_is_retried_until_the_job_is_restored(rig: Rig) -> None:
    start = rig.clock.now() + timedelta(minutes=5)
    await rig.engine.on_event(event(start=start, minutes=30))
    await rig.run_until(start + timedelta(minutes=25))
    rig.cluster.fail_next(ActionKind.UNCAP, exc=CommandFailed("node unreachable", adapter="simulated", exit_code=1))
    rig.cluster.fail_next(ActionKind.RESUME, exc=CommandFailed("node unreachable", adapter="simulated", exit_code=1))
    await rig.run_until(start + timedelta(minutes=120))
    assert any(a["code"] == "command_failed" for a in rig.sink.of("alert"))
    assert _state(rig, "ev-1") is EventState.COMPLETED
    await _all_restored(rig)


async def test_hung_command_times_out_with_a_clear_alert(rig: Rig) -> None:
    start = rig.clock.now() + timedelta(minutes=5)
    await rig.engine.on_event(event(start=start))
    for _ in range(2):  # the first attempt and its retry both hang
        rig.cluster.hang_next(ActionKind.CAP, 3600.0)
    await rig.run_until(start + timedelta(minutes=1))
    await asyncio.sleep(1.5)  # wall time: the guard's timeout is 0.5 s per attempt
    await rig.run_for(120)
    alerts = [a for a in rig.sink.of("alert") if a["code"] == "command_failed"]
    assert alerts and "timed out" in alerts[0]["message"], rig.sink.of("alert")
    await rig.run_until(start + timedelta(minutes=120))
    await _all_restored(rig)


async def test_overlapping_events_merge_and_the_stricter_target_wins(rig: Rig) -> None:
    t = rig.clock.now()
    await rig.engine.on_event(event("ev-a", start=t + timedelta(minutes=5), minutes=60, value=15.0))
    await rig.engine.on_event(event("ev-b", start=t + timedelta(minutes=35), minutes=60, value=30.0))
    await rig.run_until(t + timedelta(minutes=60))
    b = rig.engine.journal.event("ev-b")
    assert b is not None and b.directive is not None and b.directive.strictest_kw is not None
    kw = await rig.cluster.read_kw()
    assert kw <= b.directive.strictest_kw + 3.0
    await rig.run_until(t + timedelta(minutes=80))  # ev-a has ended, ev-b still holds
    assert _state(rig, "ev-a") is EventState.COMPLETED
    kw = await rig.cluster.read_kw()
    assert kw <= b.directive.strictest_kw + 3.0, f"{kw:.1f} kW after ev-a ended while ev-b holds"
    await rig.run_until(t + timedelta(minutes=160))
    assert _state(rig, "ev-b") is EventState.COMPLETED
    await _all_restored(rig)


async def test_dry_run_shows_commands_and_changes_nothing(rig: Rig) -> None:
    await rig.stop()
    rig.engine.journal.close()
    assert rig.make_engine is not None
    rig.engine = rig.make_engine(dry_run=True)  # type: ignore[call-arg]
    await rig.start()
    start = rig.clock.now() + timedelta(minutes=5)
    await rig.engine.on_event(event(start=start))
    await rig.run_until(start + timedelta(minutes=100))
    assert rig.cluster.commands == ()
    dry = [a for a in rig.sink.of("action") if a["outcome"] == "dry-run"]
    assert dry and all(a["commands"] and a["commands"][0].startswith("sim: ") for a in dry)
    assert _state(rig, "ev-1") is EventState.COMPLETED


async def test_caps_set_before_the_event_are_put_back_not_removed(rig: Rig) -> None:
    from gateway.domain import Action

    flexible = [j.job_id for j in (await rig.cluster.snapshot()).jobs if j.job_id not in CRITICAL]
    for job_id in flexible:  # an administrator's own limits, set before any event
        await rig.cluster.apply(Action(key=f"admin/cap/{job_id}", kind=ActionKind.CAP, at=rig.clock.now(),
                                       job_id=job_id, watts=330.0))
    start = rig.clock.now() + timedelta(minutes=5)
    await rig.engine.on_event(event(start=start, value=30.0, minutes=30))
    await rig.run_until(start + timedelta(minutes=20))
    touched = {c.job_id for c in rig.cluster.commands if not c.key.startswith("admin/")}
    assert touched, "the event changed nothing"
    await rig.run_until(start + timedelta(minutes=90))
    assert _state(rig, "ev-1") is EventState.COMPLETED
    for job_id in flexible:
        job = rig.cluster.job(job_id)
        if job.state is not JobState.COMPLETED:
            assert job.power_cap_w == 330.0, f"{job_id} left at {job.power_cap_w} W, not its earlier 330 W"


async def test_a_job_starting_mid_event_triggers_a_replan(rig: Rig) -> None:
    from simulators.cluster import SimJobSpec

    start = rig.clock.now() + timedelta(minutes=5)
    await rig.engine.on_event(event(start=start, value=20.0, minutes=60))
    await rig.run_until(start + timedelta(minutes=25))
    target = rig.engine.effective_target(rig.clock.now())
    assert target is not None
    rig.cluster.submit(SimJobSpec("late-1", Tier.FLEX_50, 8, "pt_mpt_7b_fast", work_s=80_000, elapsed_s=40_000))
    await rig.run_for(5 * 60)
    assert rig.cluster.job("late-1").state in (JobState.RUNNING, JobState.SUSPENDED)
    replans = [e for e in rig.engine.journal.log_entries("ev-1") if e[2] in ("over_target", "drift")]
    assert replans, "the new job did not trigger a re-plan"
    kw = await rig.cluster.read_kw()
    assert kw <= target + 2.0, f"{kw:.1f} kW against a {target:.1f} kW target after the new job"


async def test_commands_stranded_by_a_finished_event_are_undone_at_start_up(rig: Rig) -> None:
    start = rig.clock.now() + timedelta(minutes=5)
    await rig.engine.on_event(event(start=start, value=25.0))
    await rig.run_until(start + timedelta(minutes=25))
    assert rig.engine.journal.outstanding("ev-1")
    await rig.stop()
    # the worst moment: the journal says the event is over, but its commands were never undone
    rig.engine.journal.set_state("ev-1", EventState.COMPLETED, rig.clock.now(), "simulated crash")
    rig.engine.journal.close()
    assert rig.make_engine is not None
    rig.engine = rig.make_engine()
    await rig.start()
    assert any(a["code"] == "stranded_commands" for a in rig.sink.of("alert"))
    await rig.run_for(30 * 60)
    assert _state(rig, "ev-1") is EventState.COMPLETED
    await _all_restored(rig)
