"""The outbox: a durable FIFO per channel, shared with the journal's file."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.exceptions import JournalError
from gateway.journal import Journal, Outbox


def test_fifo_per_channel_survives_a_reopen_beside_the_journal(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    with Journal(path), Outbox(path) as box:
        box.put("mqtt", ["a1", "a2", "a3"])
        box.put("tsdb", ["p1"])
        box.put("mqtt", [])
        first = box.pending("mqtt", limit=2)
        assert [b for _, b in first] == ["a1", "a2"]
        box.done([i for i, _ in first])
    with Outbox(path) as box:
        assert [b for _, b in box.pending("mqtt")] == ["a3"]
        assert box.count("tsdb") == 1 and box.count() == 2
        box.put("mqtt", ["a4"])
        assert [b for _, b in box.pending("mqtt")] == ["a3", "a4"]  # order kept across the reopen


async def test_usable_from_worker_threads_in_order(tmp_path: Path) -> None:
    with Outbox(tmp_path / "j.sqlite3") as box:
        for k in range(20):
            await asyncio.to_thread(box.put, "tsdb", [f"{k}-{n}" for n in range(50)])
        bodies = [b for _, b in box.pending("tsdb", limit=10_000)]
        assert bodies == [f"{k}-{n}" for k in range(20) for n in range(50)]


def test_unusable_path_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(JournalError, match=r"cannot open the outbox at .*file/j\.sqlite3"):
        Outbox(blocker / "j.sqlite3")
