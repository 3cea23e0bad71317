"""The SQLite journal: what survives a reopen, and what counts as outstanding."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.domain import Action, ActionKind, Directive, EventState, Segment
from gateway.exceptions import JournalError
from gateway.journal import Journal

T0 = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)


def directive() -> Directive:
    return Directive(
        event_id="e1", modification=2, segments=(Segment(T0, T0 + timedelta(hours=1), target_kw=80.0),),
        baseline_kw=100.0, ramp_start=T0, target_by=T0 + timedelta(minutes=15), end=T0 + timedelta(hours=1),
        recovery_end=T0 + timedelta(hours=1, minutes=30), reason="test",
    )


def cap(job: str, watts: float = 250.0) -> Action:
    return Action(key=f"e1/cap/{job}/{int(watts)}", kind=ActionKind.CAP, at=T0, job_id=job, watts=watts, delta_kw=-3.0)


def test_event_directive_and_transitions_survive_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    with Journal(path) as j:
        j.save_event("e1", 2, EventState.PLANNED, opt_in=True, reason="ok", directive=directive(), at=T0)
        j.set_state("e1", EventState.RAMPING, T0, "ramp")
        j.record_delivery("e1", 2, T0, {"raw": True})
    with Journal(path) as j:
        rec = j.event("e1")
        assert rec is not None and rec.state is EventState.RAMPING and rec.directive == directive()
        assert [t[2] for t in j.transitions("e1")] == ["planned", "ramping"]
        assert j.deliveries("e1") == 1
        assert [r.event_id for r in j.events(active_only=True)] == ["e1"]


def test_outstanding_counts_sending_and_done_until_undone(tmp_path: Path) -> None:
    with Journal(tmp_path / "j.sqlite3") as j:
        j.mark_action(cap("a"), "e1", "sending", T0)
        j.mark_action(cap("b"), "e1", "sending", T0)
        j.mark_action(cap("b"), "e1", "done", T0)
        j.mark_action(cap("c"), "e1", "failed", T0, error="refused")
        assert sorted(r.action.job_id for r in j.outstanding("e1")) == ["a", "b"]
        j.mark_undone(["e1/cap/b/250"], T0)
        assert [r.action.job_id for r in j.outstanding("e1")] == ["a"]
        rec = j.action("e1/cap/b/250")
        assert rec is not None and rec.attempts == 1 and rec.state == "undone"
        assert j.transfer("e1", "e2") == 3
        assert [r.action.job_id for r in j.outstanding("e2")] == ["a"]


def test_caps_in_force_are_the_latest_sent_and_not_lifted(tmp_path: Path) -> None:
    with Journal(tmp_path / "j.sqlite3") as j:
        j.mark_action(cap("a", 300.0), "e1", "done", T0)
        j.mark_action(cap("a", 250.0), "e1", "done", T0 + timedelta(minutes=5))  # a re-plan capped deeper
        j.mark_action(cap("b"), "e1", "sending", T0)  # may have reached the node before a crash
        j.mark_action(cap("c"), "e1", "failed", T0, error="refused")
        j.mark_action(cap("d"), "e1", "done", T0)
        j.mark_undone(["e1/cap/d/250"], T0 + timedelta(minutes=9))
        assert j.caps_in_force() == {"a": 250.0, "b": 250.0}
    with Journal(tmp_path / "j.sqlite3") as j:
        assert j.caps_in_force() == {"a": 250.0, "b": 250.0}  # what a restarted gateway hands its scheduler


def test_unwritable_journal_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(JournalError, match="cannot open the journal"):
        Journal(blocker / "j.sqlite3")


def test_wal_mode_is_on(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    Journal(path).close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
