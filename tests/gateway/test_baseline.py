"""Baselines (``gateway.power.baseline``) over the journal's per-minute power log, and the impact of
an event on each job (``gateway.engine.impact``)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from gateway.domain import Job, JobState, Tier
from gateway.engine.impact import job_impacts
from gateway.journal import Journal
from gateway.power import PowerModel
from gateway.power.baseline import x_of_y_days

START = datetime(2026, 8, 20, 16, 0, tzinfo=UTC)  # an event from 16:00 to 18:00
END = START + timedelta(hours=2)


def fill_days(journal: Journal, levels: dict[int, float], every_s: int = 60) -> None:
    """Record ``levels[days back]`` kW over 15:00–19:00 of each such day (plus a bump in the window)."""
    for back, kw in levels.items():
        t = START - timedelta(days=back, hours=1)
        while t < END - timedelta(days=back) + timedelta(hours=1):
            bump = 10.0 if START - timedelta(days=back) <= t < START - timedelta(days=back) + timedelta(hours=1) else 0.0
            journal.power.record(t, kw + bump, None)
            t += timedelta(seconds=every_s)


def test_powerlog_folds_samples_into_minutes_and_prunes(tmp_path: Path) -> None:
    with Journal(tmp_path / "j.sqlite3") as j:
        for s, kw in ((0, 100.0), (20, 110.0), (40, 120.0), (60, 200.0)):
            j.power.record(START + timedelta(seconds=s), kw, 90.0 if s < 60 else None)
        rows = j.power.minutes(START, START + timedelta(minutes=2))
        assert rows == [(START, pytest.approx(110.0), 90.0), (START + timedelta(minutes=1), 200.0, None)]
        j.power.prune(START + timedelta(minutes=1))
        assert [r[0] for r in j.power.minutes(START - timedelta(days=1), END)] == [START + timedelta(minutes=1)]
    with Journal(tmp_path / "j.sqlite3") as j:
        assert len(j.power.minutes(START, END)) == 1  # kept across a reopen


def test_x_of_y_takes_the_highest_days_and_skips_event_days_and_gaps(tmp_path: Path) -> None:
    with Journal(tmp_path / "j.sqlite3") as j:
        fill_days(j, {1: 500.0, 2: 900.0, 3: 700.0, 4: 650.0, 5: 800.0}, every_s=60)
        fill_days(j, {6: 950.0}, every_s=300)  # too sparse: one reading in five minutes
        got = x_of_y_days(j.power.minutes, START, END, x=2, y=4, skip={(START - timedelta(days=2)).date()})
        assert got is not None
        # day 2 (an event day) and day 6 (too little data) are left out; of days 1, 3, 4, 5 the two highest
        assert got.kw == pytest.approx((805.0 + 705.0) / 2)
        assert "2026-08-15" in got.basis and "2026-08-17" in got.basis and "2026-08-18" not in got.basis
        assert got.at(0) == pytest.approx(760.0) and got.at(90) == pytest.approx(750.0)  # the profile by minute
        assert x_of_y_days(j.power.minutes, START, END, x=6, y=10, skip=set[date]()) is None  # 5 usable days


def test_impact_integrates_caps_pauses_and_restarts_over_the_window() -> None:
    model = PowerModel()
    curve = model.curves.get("pt_mpt_7b_fast")
    jobs = {
        "c": Job(job_id="c", tier=Tier.FLEX_25, gpus=8, workload="pt_mpt_7b_fast", state=JobState.RUNNING),
        "p": Job(job_id="p", tier=Tier.FLEX_50, gpus=4, workload="pt_mpt_7b_fast", state=JobState.RUNNING),
        "s": Job(job_id="s", tier=Tier.PREEMPTIBLE, gpus=2, workload="pt_mpt_7b_fast", state=JobState.RUNNING,
                 restart_s=600.0),
    }
    half = START + timedelta(hours=1)
    done = [
        (START, {"job_id": "c", "kind": "cap", "watts": 250.0}),
        (START, {"job_id": "p", "kind": "pause"}),
        (START, {"job_id": "s", "kind": "checkpoint_stop"}),
        (half, {"job_id": "p", "kind": "resume"}),
        (END, {"job_id": "c", "kind": "uncap", "watts": None}),
        (END, {"job_id": "s", "kind": "restart"}),
        (END, {"job_id": "ghost", "kind": "pause"}),  # never seen: left out, not guessed
    ]
    got = {i.job_id: i for i in job_impacts(done, jobs, model, START, END)}
    assert set(got) == {"c", "p", "s"}
    kept = curve.throughput_at(250.0) / curve.throughput_at(None)
    assert got["c"].throughput_kept == pytest.approx(kept)
    assert got["c"].lost_gpu_hours == pytest.approx(8 * 2 * (1 - kept))
    assert got["p"].throughput_kept == pytest.approx(0.5) and got["p"].lost_gpu_hours == pytest.approx(4 * 1.0)
    assert got["s"].throughput_kept == 0.0 and got["s"].lost_gpu_hours == pytest.approx(2 * (2.0 + 600 / 3600))
    assert got["c"].facts()["tier"] == "flex-25"
