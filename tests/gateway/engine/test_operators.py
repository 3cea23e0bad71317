"""What operators get from the engine: lifecycle and power facts, each job's impact, and overrides
(opt out, pause, resume) — the engine on the simulated cluster, on a manual clock."""

from __future__ import annotations

from datetime import timedelta

import pytest

from gateway.domain import EventState, Tier
from gateway.exceptions import OverrideRefused
from tests.gateway.engine.conftest import Rig, event
from tests.gateway.engine.test_engine import CRITICAL, _all_restored, _state


async def test_records_carry_targets_achieved_power_shed_and_each_jobs_impact(rig: Rig) -> None:
    start = rig.clock.now() + timedelta(minutes=5)
    await rig.engine.on_event(event(start=start, value=20.0))
    directive = rig.engine.journal.event("ev-1").directive  # type: ignore[union-attr]
    assert directive is not None
    await rig.run_until(directive.end + timedelta(minutes=40))
    assert _state(rig, "ev-1") is EventState.COMPLETED

    states = {s["state"]: s for s in rig.sink.of("state") if s["event_id"] == "ev-1"}
    assert states["holding"]["target_kw"] == pytest.approx(directive.strictest_kw)
    assert states["holding"]["modification"] == 0
    achieved = states["completed"]["achieved_kw"]  # the mean over the whole hold
    assert achieved is not None and achieved <= directive.strictest_kw + 3.0  # type: ignore[operator]

    during = [p for p in rig.sink.of("power") if p["baseline_kw"] is not None]
    assert during and all(p["shed_kw"] == pytest.approx(p["baseline_kw"] - p["kw"], abs=1e-3) for p in during)
    assert all(p["baseline_kw"] == pytest.approx(directive.baseline_kw) for p in during)
    assert rig.engine.journal.power.minutes(start, directive.end), "site power is kept by minute in the journal"

    impacts = {i["job_id"]: i for i in rig.sink.of("impact")}
    touched = {c.job_id for c in rig.cluster.commands}
    assert set(impacts) == touched and not set(impacts) & CRITICAL
    for i in impacts.values():
        assert 0.0 <= i["throughput_kept"] < 1.0 and i["lost_gpu_hours"] > 0.0
        allowed = Tier(i["tier"]).max_loss
        assert 1.0 - i["throughput_kept"] <= allowed + 0.05 or i["tier"] == "preemptible", i  # within the tier
    actions = rig.sink.of("action")
    assert actions and all(a["scheduler"] == rig.cluster.name for a in actions)


async def test_operator_opt_out_mid_event_restores_tells_the_vtn_and_stays_out(rig: Rig) -> None:
    told: list[tuple[str, int, str]] = []

    class Vtn:
        async def opt_out(self, event_id: str, revision: int, reason: str) -> None:
            told.append((event_id, revision, reason))

    rig.engine.connect_vtn(Vtn())
    start = rig.clock.now() + timedelta(minutes=5)
    await rig.engine.on_event(event(start=start))
    await rig.run_until(start + timedelta(minutes=20))
    assert rig.cluster.commands
    answer = await rig.engine.opt_out("ev-1", "cooling maintenance")
    assert "opted out of ev-1" in answer and "VTN was told" in answer
    assert told == [("ev-1", 0, "operator opt-out: cooling maintenance")]
    await rig.run_for(30 * 60)
    assert _state(rig, "ev-1") is EventState.OPTED_OUT
    await _all_restored(rig)

    sent = len(rig.cluster.commands)
    later = await rig.engine.on_event(event(start=start, modification=1, value=30.0))  # the VTN modifies it
    assert not later.opt_in and later.reason.startswith("operator opt-out")
    await rig.run_for(30 * 60)
    assert len(rig.cluster.commands) == sent

    with pytest.raises(OverrideRefused, match="ev-1 is opted_out: there is nothing to opt out of"):
        await rig.engine.opt_out("ev-1", "again")
    with pytest.raises(OverrideRefused, match="no event 'nope' is known"):
        await rig.engine.opt_out("nope", "")


async def test_opt_out_before_the_start_sends_nothing(rig: Rig) -> None:
    await rig.engine.on_event(event(start=rig.clock.now() + timedelta(minutes=30)))
    assert "before it started" in await rig.engine.opt_out("ev-1", "")
    await rig.run_for(2 * 3600, step=120)
    assert _state(rig, "ev-1") is EventState.OPTED_OUT and rig.cluster.commands == ()


async def test_pause_holds_new_commands_but_never_undos_and_survives_a_restart(rig: Rig) -> None:
    start = rig.clock.now() + timedelta(minutes=5)
    await rig.engine.on_event(event(start=start, minutes=60))
    assert "paused" in await rig.engine.pause_actions("checking the cooling loop")
    assert "already paused" in await rig.engine.pause_actions("twice")
    await rig.run_until(start + timedelta(minutes=10))
    assert rig.cluster.commands == (), "a paused gateway sent commands"
    await rig.restart()
    assert rig.engine.paused == "checking the cooling loop"
    await rig.run_for(5 * 60)
    assert rig.cluster.commands == ()
    assert "resumed" in await rig.engine.resume_actions("loop checked")
    assert rig.engine.paused is None and "not paused" in await rig.engine.resume_actions("twice")
    await rig.run_for(5 * 60)
    assert rig.cluster.commands, "planned commands were not sent after resume"

    assert "paused" in await rig.engine.pause_actions("hold again")  # paused when the event ends:
    directive = rig.engine.journal.event("ev-1").directive  # type: ignore[union-attr]
    assert directive is not None
    await rig.run_until(directive.end + timedelta(minutes=40))
    assert _state(rig, "ev-1") is EventState.COMPLETED  # the undos still ran
    await _all_restored(rig)
    codes = [a["code"] for a in rig.sink.of("alert")]
    assert codes.count("actions_paused") == 2 and "actions_resumed" in codes
