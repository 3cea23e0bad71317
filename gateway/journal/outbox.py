"""The outbox: messages for an external system (the MQTT broker, the time-series DB) that it has not
yet confirmed, kept in the journal's SQLite file so a broker or database outage loses nothing.

Each channel (``mqtt``, ``tsdb``, ...) is a FIFO: ``put`` appends, ``pending`` reads the oldest, and
``done`` removes what the external system confirmed. A sender that fails leaves its messages in
place and tries again later, so they go out in the order they were produced, each once confirmed.

The outbox has its own connection to the journal file (WAL mode lets both write), opened with
``check_same_thread=False`` and guarded by a lock: a sink may call it from a worker thread
(``asyncio.to_thread``) to keep large batches off the event loop. ``:memory:`` gives a private,
non-durable outbox (tests that need no restart).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

from gateway.exceptions import JournalError

__all__ = ["Outbox"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    channel TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_channel ON outbox(channel, id);
"""


class Outbox:
    """A durable FIFO per channel (see the module docstring)."""

    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        self._lock = threading.Lock()
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise JournalError(f"cannot open the outbox at {self.path}: {exc} (check the path and its permissions)") from exc

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _write(self, sql: str, rows: Iterable[tuple[object, ...]]) -> None:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany(sql, rows)
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise JournalError(f"outbox write failed at {self.path}: {exc}") from exc

    def put(self, channel: str, bodies: Sequence[str]) -> None:
        """Append ``bodies`` to ``channel``, in order, in one transaction."""
        if bodies:
            self._write("INSERT INTO outbox(channel, body) VALUES (?, ?)", ((channel, b) for b in bodies))

    def pending(self, channel: str, limit: int = 1000) -> list[tuple[int, str]]:
        """The oldest ``limit`` messages of ``channel`` as ``(id, body)``, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, body FROM outbox WHERE channel=? ORDER BY id LIMIT ?", (channel, limit)
            ).fetchall()
        return [(int(i), str(b)) for i, b in rows]

    def done(self, ids: Sequence[int]) -> None:
        """Remove messages the external system confirmed."""
        if ids:
            self._write("DELETE FROM outbox WHERE id=?", ((i,) for i in ids))

    def count(self, channel: str | None = None) -> int:
        """Messages waiting (in ``channel``, or in all channels)."""
        with self._lock:
            if channel is None:
                row = self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()
            else:
                row = self._db.execute("SELECT COUNT(*) FROM outbox WHERE channel=?", (channel,)).fetchone()
        return int(row[0])
