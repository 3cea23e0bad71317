"""Measured site power by minute, kept in the journal so baselines and reports outlive a restart.

Each sample is folded into its minute (sum and count, plus the target in force), so the table grows
by at most 1,440 rows a day whatever the sampling rate. It feeds the "X of Y days" baseline (the same
hours on earlier days) and ``dcflex report`` (what was delivered, minute by minute).
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta

from gateway.exceptions import JournalError

SCHEMA = """
CREATE TABLE IF NOT EXISTS power_minutes (
    minute INTEGER PRIMARY KEY,
    kw_sum REAL NOT NULL,
    n INTEGER NOT NULL,
    target_kw REAL
);
"""


class PowerLog:
    """Per-minute mean site power on the journal's connection (see the module docstring)."""

    def __init__(self, db: sqlite3.Connection, path: str) -> None:
        self._db = db
        self._path = path

    def record(self, at: datetime, kw: float, target_kw: float | None) -> None:
        minute = int(at.timestamp() // 60)
        try:
            self._db.execute(
                "INSERT INTO power_minutes(minute, kw_sum, n, target_kw) VALUES (?,?,1,?) ON CONFLICT(minute) DO UPDATE"
                " SET kw_sum=kw_sum+excluded.kw_sum, n=n+1, target_kw=COALESCE(excluded.target_kw, target_kw)",
                (minute, kw, target_kw),
            )
        except sqlite3.Error as exc:
            raise JournalError(f"journal write failed at {self._path}: {exc}") from exc

    def minutes(self, start: datetime, end: datetime) -> list[tuple[datetime, float, float | None]]:
        """(minute start, mean kW, target kW in force) for every recorded minute in [start, end)."""
        lo, hi = int(start.timestamp() // 60), int(end.timestamp() // 60)
        if end.timestamp() % 60:
            hi += 1
        rows = self._db.execute(
            "SELECT minute, kw_sum / n, target_kw FROM power_minutes WHERE minute >= ? AND minute < ? ORDER BY minute",
            (lo, hi),
        ).fetchall()
        return [(datetime.fromtimestamp(m * 60, UTC), float(kw), None if t is None else float(t)) for m, kw, t in rows]

    def prune(self, before: datetime) -> None:
        """Forget minutes older than ``before`` (the X-of-Y baseline needs only the last Y days)."""
        self._db.execute("DELETE FROM power_minutes WHERE minute < ?", (int(before.timestamp() // 60),))


def day_window(day: datetime, start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """The clock times of [start, end) moved to ``day``'s date (same UTC offset)."""
    shift = timedelta(days=(start.date() - day.date()).days)
    return start - shift, end - shift
