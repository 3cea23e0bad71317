"""SQLite journal: events, their transitions, every delivery, and every command with its outcome.

Commands are keyed by the action's idempotency key. A command is written as ``sending`` before it
goes out and ``done`` or ``failed`` after; after a crash, ``sending`` means "may have happened",
which is safe because every adapter's ``apply`` is idempotent. ``owner`` is the event a command
belongs to; when overlapping events merge, a finishing event hands its commands to the one still
running instead of undoing them.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from gateway.domain import Action, Directive, EventState
from gateway.exceptions import JournalError
from gateway.journal.codec import action_from_dict, action_to_dict, directive_from_dict, directive_to_dict
from gateway.journal.powerlog import SCHEMA as POWER_SCHEMA
from gateway.journal.powerlog import PowerLog

_SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL,
    modification INTEGER NOT NULL,
    received_at TEXT NOT NULL,
    payload TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    event_id TEXT PRIMARY KEY,
    modification INTEGER NOT NULL,
    state TEXT NOT NULL,
    opt_in INTEGER NOT NULL,
    reason TEXT NOT NULL,
    directive TEXT,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS transitions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL,
    at TEXT NOT NULL,
    from_state TEXT,
    to_state TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS actions (
    key TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    kind TEXT NOT NULL,
    job_id TEXT NOT NULL,
    undo_of TEXT,
    body TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT NOT NULL DEFAULT '',
    updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS actions_owner ON actions(owner);
-- the commands in force (a shed not undone): asked at every notice step, among a year's commands
CREATE INDEX IF NOT EXISTS actions_open ON actions(state, kind) WHERE undo_of IS NULL;
CREATE TABLE IF NOT EXISTS prior_caps (
    owner TEXT NOT NULL,
    job_id TEXT NOT NULL,
    watts REAL NOT NULL,
    PRIMARY KEY (owner, job_id)
);
CREATE TABLE IF NOT EXISTS log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    event_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    body TEXT NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class EventRecord:
    event_id: str
    modification: int
    state: EventState
    opt_in: bool
    reason: str
    directive: Directive | None


@dataclass(frozen=True, slots=True)
class ActionRecord:
    action: Action
    owner: str
    state: str
    attempts: int
    error: str
    undo_of: str | None


class Journal:
    """The journal on one SQLite file (``:memory:`` for tests that need no restart)."""

    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            self._db.executescript(POWER_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise JournalError(
                f"cannot open the journal at {self.path}: {exc} (check the path and its permissions)"
            ) from exc
        self.power = PowerLog(self._db, self.path)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        try:
            self._db.execute("BEGIN IMMEDIATE")
            yield self._db
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._db.execute("ROLLBACK")
            raise JournalError(f"journal write failed at {self.path}: {exc}") from exc

    # deliveries -----------------------------------------------------------------------------
    def record_delivery(self, event_id: str, modification: int, at: datetime, payload: dict[str, Any]) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO deliveries(event_id, modification, received_at, payload) VALUES (?,?,?,?)",
                (event_id, modification, at.isoformat(), json.dumps(payload, default=str)),
            )

    def deliveries(self, event_id: str) -> int:
        row = self._db.execute("SELECT COUNT(*) FROM deliveries WHERE event_id=?", (event_id,)).fetchone()
        return int(row[0])

    # events ---------------------------------------------------------------------------------
    def event(self, event_id: str) -> EventRecord | None:
        row = self._db.execute(
            "SELECT event_id, modification, state, opt_in, reason, directive FROM events WHERE event_id=?",
            (event_id,),
        ).fetchone()
        return _event_row(row) if row else None

    def events(self, *, active_only: bool = False) -> list[EventRecord]:
        rows = self._db.execute(
            "SELECT event_id, modification, state, opt_in, reason, directive FROM events ORDER BY rowid"
        ).fetchall()
        records = [_event_row(r) for r in rows]
        return [r for r in records if not r.state.terminal] if active_only else records

    def save_event(
        self,
        event_id: str,
        modification: int,
        state: EventState,
        *,
        opt_in: bool,
        reason: str,
        directive: Directive | None,
        at: datetime,
        detail: str = "",
    ) -> None:
        """Insert or replace the event and record the transition, in one transaction."""
        prev = self.event(event_id)
        with self._tx() as db:
            db.execute(
                "INSERT INTO events(event_id, modification, state, opt_in, reason, directive, updated_at)"
                " VALUES (?,?,?,?,?,?,?) ON CONFLICT(event_id) DO UPDATE SET modification=excluded.modification,"
                " state=excluded.state, opt_in=excluded.opt_in, reason=excluded.reason,"
                " directive=excluded.directive, updated_at=excluded.updated_at",
                (
                    event_id,
                    modification,
                    state.value,
                    int(opt_in),
                    reason,
                    json.dumps(directive_to_dict(directive)) if directive else None,
                    at.isoformat(),
                ),
            )
            db.execute(
                "INSERT INTO transitions(event_id, at, from_state, to_state, detail) VALUES (?,?,?,?,?)",
                (event_id, at.isoformat(), prev.state.value if prev else None, state.value, detail),
            )

    def set_state(self, event_id: str, state: EventState, at: datetime, detail: str = "") -> None:
        prev = self.event(event_id)
        if prev is None:
            raise JournalError(f"no event {event_id} in the journal at {self.path}")
        if prev.state is state:
            return
        with self._tx() as db:
            db.execute("UPDATE events SET state=?, updated_at=? WHERE event_id=?", (state.value, at.isoformat(), event_id))
            db.execute(
                "INSERT INTO transitions(event_id, at, from_state, to_state, detail) VALUES (?,?,?,?,?)",
                (event_id, at.isoformat(), prev.state.value, state.value, detail),
            )

    def transitions(self, event_id: str) -> list[tuple[str, str | None, str, str]]:
        rows = self._db.execute(
            "SELECT at, from_state, to_state, detail FROM transitions WHERE event_id=? ORDER BY id", (event_id,)
        ).fetchall()
        return [(r[0], r[1], r[2], r[3]) for r in rows]

    # actions --------------------------------------------------------------------------------
    def action(self, key: str) -> ActionRecord | None:
        row = self._db.execute(
            "SELECT body, owner, state, attempts, error, undo_of FROM actions WHERE key=?", (key,)
        ).fetchone()
        return _action_row(row) if row else None

    def mark_action(
        self, action: Action, owner: str, state: str, at: datetime, *, error: str = "", undo_of: str | None = None
    ) -> None:
        """Record a command's state; ``sending`` counts an attempt."""
        bump = 1 if state == "sending" else 0
        with self._tx() as db:
            db.execute(
                "INSERT INTO actions(key, owner, kind, job_id, undo_of, body, state, attempts, error, updated_at)"
                " VALUES (?,?,?,?,?,?,?,?,?,?) ON CONFLICT(key) DO UPDATE SET state=excluded.state,"
                " attempts=actions.attempts+?, error=excluded.error, updated_at=excluded.updated_at",
                (
                    action.key,
                    owner,
                    action.kind.value,
                    action.job_id,
                    undo_of,
                    json.dumps(action_to_dict(action)),
                    state,
                    bump,
                    error,
                    at.isoformat(),
                    bump,
                ),
            )

    def actions(self, owner: str | None = None) -> list[ActionRecord]:
        if owner is None:
            rows = self._db.execute(
                "SELECT body, owner, state, attempts, error, undo_of FROM actions ORDER BY rowid"
            ).fetchall()
        else:
            rows = self._db.execute(
                "SELECT body, owner, state, attempts, error, undo_of FROM actions WHERE owner=? ORDER BY rowid",
                (owner,),
            ).fetchall()
        return [_action_row(r) for r in rows]

    def outstanding(self, owner: str) -> list[ActionRecord]:
        """Shed commands of ``owner`` that may have taken effect and are not yet undone.

        ``sending`` counts: the command may have reached the scheduler before a crash, and undoing
        something that did not happen is harmless (adapters are idempotent by state). ``dry-run``
        counts too, so a dry run also shows the restore it would make.
        """
        return [
            r
            for r in self.actions(owner)
            if r.action.kind.sheds and r.state in ("done", "sending", "dry-run")
        ]

    def mark_undone(self, keys: Iterable[str], at: datetime) -> None:
        """Mark shed commands as reversed once their undo is done."""
        with self._tx() as db:
            db.executemany(
                "UPDATE actions SET state='undone', updated_at=? WHERE key=?", [(at.isoformat(), k) for k in keys]
            )

    def transfer(self, from_owner: str, to_owner: str) -> int:
        """Hand ``from_owner``'s commands to ``to_owner`` (merged overlapping events)."""
        with self._tx() as db:
            cur = db.execute("UPDATE actions SET owner=? WHERE owner=?", (to_owner, from_owner))
            db.execute("UPDATE OR IGNORE prior_caps SET owner=? WHERE owner=?", (to_owner, from_owner))
            return cur.rowcount

    def remember_prior_caps(self, owner: str, caps: dict[str, float]) -> None:
        """Keep each job's power cap from before ``owner`` first touched it (first write wins), so
        the restore puts back a limit someone else set instead of removing it."""
        if caps:
            with self._tx() as db:
                db.executemany(
                    "INSERT OR IGNORE INTO prior_caps(owner, job_id, watts) VALUES (?,?,?)",
                    [(owner, job, w) for job, w in caps.items()],
                )

    def jobs_with_open_commands(self) -> set[str]:
        """Jobs any event has changed and not yet put back (their current cap is the gateway's own)."""
        rows = self._db.execute(
            "SELECT DISTINCT job_id FROM actions WHERE state IN ('done','sending','dry-run') AND undo_of IS NULL"
            " AND kind IN ('cap','pause','checkpoint_stop')"
        ).fetchall()
        return {str(r[0]) for r in rows}

    def caps_in_force(self) -> dict[str, float]:
        """Each job's power cap the gateway sent (or may have: ``sending``) and has not lifted, by job
        id: the most recent one, when a re-plan capped a job again."""
        rows = self._db.execute(
            "SELECT job_id, body FROM actions WHERE kind='cap' AND undo_of IS NULL AND state IN ('done','sending')"
            " ORDER BY updated_at, rowid"
        ).fetchall()
        caps: dict[str, float] = {}
        for job_id, body in rows:
            watts = action_from_dict(json.loads(body)).watts
            if watts is not None:
                caps[str(job_id)] = watts
        return caps

    def in_force(self) -> list[Action]:
        """Every shed command the gateway sent (or may have: ``sending``) and has not undone, oldest first."""
        rows = self._db.execute(
            "SELECT body FROM actions WHERE undo_of IS NULL AND state IN ('done','sending') ORDER BY rowid"
        ).fetchall()
        return [a for a in (action_from_dict(json.loads(r[0])) for r in rows) if a.kind.sheds]

    def command_facts(self, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
        """What the scheduler reported about each of ``keys`` (``command_facts`` log entries), by key."""
        wanted = set(keys)
        out: dict[str, dict[str, Any]] = {}
        if not wanted:
            return out
        for _, _, _, body in self.log_entries(None, ("command_facts",)):
            key = body.get("key")
            if key in wanted and isinstance(body.get("facts"), dict):
                out[str(key)] = body["facts"]
        return out

    def prior_caps(self, owner: str) -> dict[str, float]:
        rows = self._db.execute("SELECT job_id, watts FROM prior_caps WHERE owner=?", (owner,)).fetchall()
        return {str(r[0]): float(r[1]) for r in rows}

    # log ------------------------------------------------------------------------------------
    def log(self, event_id: str, kind: str, at: datetime, body: dict[str, Any]) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO log(at, event_id, kind, body) VALUES (?,?,?,?)",
                (at.isoformat(), event_id, kind, json.dumps(body, default=str)),
            )

    def log_entries(self, event_id: str | None = None, kinds: Sequence[str] = ()) -> list[tuple[str, str, str, dict[str, Any]]]:
        """(at, event id, kind, body) in order: of one event (``""``: records of no event), or all;
        only the given ``kinds`` when some are given."""
        q = "SELECT at, event_id, kind, body FROM log"
        where: list[str] = []
        args: list[object] = []
        if event_id is not None:
            where.append("event_id=?")
            args.append(event_id)
        if kinds:
            where.append(f"kind IN ({','.join('?' * len(kinds))})")
            args += list(kinds)
        if where:
            q += " WHERE " + " AND ".join(where)
        rows = self._db.execute(q + " ORDER BY id", args).fetchall()
        return [(r[0], r[1], r[2], json.loads(r[3])) for r in rows]


def _event_row(row: tuple[Any, ...]) -> EventRecord:
    return EventRecord(
        event_id=row[0],
        modification=int(row[1]),
        state=EventState(row[2]),
        opt_in=bool(row[3]),
        reason=row[4],
        directive=directive_from_dict(json.loads(row[5])) if row[5] else None,
    )


def _action_row(row: tuple[Any, ...]) -> ActionRecord:
    return ActionRecord(
        action=action_from_dict(json.loads(row[0])),
        owner=row[1],
        state=row[2],
        attempts=int(row[3]),
        error=row[4],
        undo_of=row[5],
    )
