"""Waiting for a job to say its checkpoint is safe, and remembering how each checkpoint went.

A job told to checkpoint (its signal, from its comment tag or tier rule) acknowledges in one of two
ways, whichever its environment allows:

- over HTTP, ``POST /v1/jobs/{id}/checkpoint-ack`` (what ``dcflex ack`` sends), which lands in the
  gateway's ``CheckpointAcks``;
- by creating a marker file at a configured path template (``scheduler.slurm.ack_marker_path``,
  e.g. ``/shared/dcflex-ack/{job_id}``) on a file system the gateway host also mounts; the file may
  hold the checkpoint's path on its first line.

The wait is bounded by the job's grace time. No acknowledgement in time is not an error: the stop
goes ahead (the event needs the power) and the record says the work since the job's last
checkpoint was probably lost, so operators can see what the event cost.

Freshness: an acknowledgement left from an earlier checkpoint must not count, so before the signal
the HTTP ack is forgotten and the marker removed; a marker that cannot be removed (another owner)
counts only once it is replaced or touched.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from gateway.clock import Clock
from gateway.jobchannel.acks import CheckpointAcks

__all__ = ["AckWaiter", "Armed", "CheckpointRecord", "Received"]

log = logging.getLogger("dcflex.adapters.slurm")

_MARKER_READ_MAX = 4096


@dataclass(frozen=True, slots=True)
class CheckpointRecord:
    """How one checkpoint-then-stop went. ``acknowledged`` False means work was probably lost."""

    job_id: str
    event_id: str
    signal: str | None          # None: the job has no checkpoint signal and was stopped without one
    started_at: datetime
    acknowledged: bool
    via: str = ""               # "http" or "marker" when acknowledged
    checkpoint_path: str = ""
    waited_s: float = 0.0
    note: str = ""

    def facts(self) -> dict[str, object]:
        """What the journal keeps of it (``gateway.ports.Facts``)."""
        return {"acknowledged": self.acknowledged, "checkpoint_path": self.checkpoint_path, "via": self.via,
                "waited_s": round(self.waited_s, 3), "note": self.note}


@dataclass(frozen=True, slots=True)
class Armed:
    """The state of the acknowledgement channels just before a job was signalled."""

    job_id: str
    since: datetime
    marker: Path | None
    marker_before: tuple[int, int] | None  # (inode, mtime ns) of a marker that could not be removed


@dataclass(frozen=True, slots=True)
class Received:
    via: str
    checkpoint_path: str = ""


class AckWaiter:
    """Arms and polls both acknowledgement channels on the gateway's clock."""

    def __init__(self, acks: CheckpointAcks | None, marker_template: str | None, clock: Clock, *,
                 poll_s: float = 0.25) -> None:
        self.acks = acks
        self.marker_template = marker_template
        self.clock = clock
        self.poll_s = poll_s

    def channels(self, job_id: str) -> str:
        """Where an acknowledgement for ``job_id`` may come from, for describe() and logs."""
        ways = []
        if self.acks is not None:
            ways.append(f"POST /v1/jobs/{job_id}/checkpoint-ack")
        if self.marker_template is not None:
            ways.append(f"marker {self.marker_template.format(job_id=job_id)}")
        return " or ".join(ways) or "none configured: waits the whole grace time"

    def arm(self, job_id: str) -> Armed:
        """Forget earlier acknowledgements of ``job_id`` and expect a new one; call just before signalling it."""
        if self.acks is not None:
            self.acks.expect(job_id)
        marker = Path(self.marker_template.format(job_id=job_id)) if self.marker_template else None
        before: tuple[int, int] | None = None
        if marker is not None:
            try:
                marker.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("job %s: cannot remove the stale checkpoint marker %s (%s); only a new one will count",
                            job_id, marker, exc)
                with contextlib.suppress(OSError):
                    st = marker.stat()
                    before = (st.st_ino, st.st_mtime_ns)
        return Armed(job_id, self.clock.now(), marker, before)

    def check(self, armed: Armed) -> Received | None:
        """The acknowledgement, if one has arrived since ``armed``."""
        if self.acks is not None:
            ack = self.acks.get(armed.job_id)
            if ack is not None:
                return Received("http", ack.checkpoint_path)
        if armed.marker is not None:
            try:
                st = armed.marker.stat()
            except OSError:
                return None
            if armed.marker_before is not None and (st.st_ino, st.st_mtime_ns) == armed.marker_before:
                return None
            return Received("marker", _first_line(armed.marker))
        return None

    async def wait(self, armed: Armed, grace_s: float) -> Received | None:
        """Poll until an acknowledgement arrives or ``grace_s`` has passed since ``armed.since``."""
        while True:
            got = self.check(armed)
            if got is not None:
                return got
            left = grace_s - (self.clock.now() - armed.since).total_seconds()
            if left <= 0:
                return None
            await self.clock.sleep(min(self.poll_s, left))


def _first_line(path: Path) -> str:
    """The checkpoint path a job may write into its marker (first line), or ""."""
    try:
        with open(path, "rb") as f:
            head = f.read(_MARKER_READ_MAX)
    except OSError:
        return ""
    line = head.split(b"\n", 1)[0].decode("utf-8", "replace").strip()
    return line if line.isprintable() else ""
