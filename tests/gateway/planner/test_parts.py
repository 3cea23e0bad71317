"""The planner's parts on their own: ramp spacing, the action builder, allowances and lever rules."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.domain import Action, ActionKind, Job, JobState, Tier
from gateway.planner.actions import make_action
from gateway.planner.levers import allowance, curve_table, full_lever, stop_overhead_s
from gateway.planner.ramp import Times, ramp_offsets
from gateway.power import PowerModel
from tests.gateway.planner import MODEL, NOW


def test_ramp_offsets_fill_each_minute_then_move_on() -> None:
    # 100 kW/min: 40 + 40 fit the first minute (the second starts 24 s in), 40 more would not
    assert ramp_offsets([40.0, 40.0, 40.0, 10.0], 100.0) == [0, 24, 60, 84]


def test_ramp_offsets_give_a_big_change_its_own_minute_and_make_the_next_wait() -> None:
    # 250 kW at 100 kW/min: its own minute (the next one), then 2.5 min pass before the next change
    assert ramp_offsets([10.0, 250.0, 10.0, 30.0], 100.0) == [0, 60, 60 + 150, 60 + 156]
    assert ramp_offsets([-300.0, 5.0], 100.0) == [0, 180]  # sign ignored; whole minutes need no carry


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0, 500), max_size=60), st.sampled_from([1.0, 50.0, 200.0]))
def test_ramp_offsets_hold_the_rate_in_every_minute(changes: list[float], rate: float) -> None:
    offs = ramp_offsets(changes, rate)
    assert offs == sorted(offs) and len(offs) == len(changes)
    biggest = max(changes, default=0.0)
    for t in offs:
        window = sum(kw for kw, o in zip(changes, offs, strict=True) if t <= o < t + 60)
        assert window <= rate + biggest + 1e-9


def test_times_share_one_datetime_per_second() -> None:
    times = Times(NOW)
    assert times(90) == NOW + timedelta(seconds=90)
    assert times(90) is times(90)


def test_make_action_equals_the_validated_constructor() -> None:
    args = {"key": "ev/cap/j/250", "kind": ActionKind.CAP, "at": NOW, "job_id": "j", "nodes": (),
            "watts": 250.0, "delta_kw": -1.5, "tier": "flex-25", "reason": "cap 250 W"}
    fast = make_action(**args)  # type: ignore[arg-type]
    assert fast == Action(**args)  # type: ignore[arg-type]
    assert hash(fast) == hash(Action(**args))  # type: ignore[arg-type]
    with pytest.raises(AttributeError):
        fast.key = "other"  # type: ignore[misc]


def job(**kw: object) -> Job:
    base: dict[str, object] = {"job_id": "j", "tier": Tier.FLEX_25, "gpus": 8, "workload": "average"}
    return Job(**(base | kw))  # type: ignore[arg-type]


def test_allowance_follows_the_tier_contract() -> None:
    assert allowance(job(), 3600.0) == 0.25  # run unknown: the event itself
    # 10 h run, 25 % = 2.5 h, 30 min lost already: 2 h left against a 1 h window → all of it
    assert allowance(job(elapsed_s=5 * 3600.0, remaining_s=5 * 3600.0, lost_s=1800.0), 3600.0) == 1.0
    # 2 h run: 30 min allowed, 20 min lost: 10 min of a 1 h window
    assert allowance(job(elapsed_s=3600.0, remaining_s=3600.0, lost_s=1200.0), 3600.0) == pytest.approx(1 / 6)
    assert allowance(job(lost_s=10 * 3600.0), 3600.0) == 0.0
    assert allowance(job(tier=Tier.CRITICAL, elapsed_s=1e6), 3600.0) == 0.0


def test_pause_or_stop_by_event_length_against_the_stop_overhead() -> None:
    pre = job(tier=Tier.PREEMPTIBLE)
    assert stop_overhead_s(pre) == 180.0
    assert full_lever(pre, 1799.0, True) is ActionKind.PAUSE
    assert full_lever(pre, 1800.0, True) is ActionKind.CHECKPOINT_STOP
    assert full_lever(pre, 7200.0, False) is ActionKind.PAUSE
    assert full_lever(job(tier=Tier.PREEMPTIBLE, requeueable=False), 7200.0, True) is ActionKind.PAUSE
    assert full_lever(job(tier=Tier.FLEX_50), 7200.0, True) is ActionKind.PAUSE  # only preemptible jobs stop
    assert stop_overhead_s(job(checkpointable=False, since_checkpoint_s=600.0)) == 780.0


def test_curve_table_reads_the_model_per_whole_watt_and_is_memoised() -> None:
    tab = curve_table(MODEL, "average", 100.0, 400.0)
    assert tab is curve_table(MODEL, "average", 100.0, 400.0)
    assert tab.lo == 100 and len(tab.kw) == 301
    probe = Job(job_id="x", tier=Tier.FLEX_10, gpus=1, workload="average")
    assert tab.kw[110] == MODEL.job_kw(probe, cap_w=210.0, state=JobState.RUNNING)
    assert tab.full_kw == MODEL.job_kw(probe) and tab.pause_kw == 0.0
    # another model (more overhead) gets its own table; caps are clamped to the model's range too
    other = PowerModel(overhead=1.5, min_cap_w=150.0)
    tab2 = curve_table(other, "average", 100.0, 400.0)
    assert tab2 is not tab and tab2.lo == 150
    assert tab2.full_kw == pytest.approx(1.5 * tab.full_kw)
    # unknown workloads use the default curve
    assert curve_table(MODEL, "mystery", 100.0, 400.0).name == "average"
