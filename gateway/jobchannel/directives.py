"""What each job is asked to do, kept on the gateway side until the job asks.

A Ray (or Slurm) adapter that wants a job to checkpoint cannot reach into the job: it records a
directive here and the job's helper (``gateway.jobside``) polls ``GET /v1/jobs/{id}/directive``
and sees it within its poll interval. The job answers over the existing checkpoint-ack endpoint;
meanwhile it may report how long its checkpoint will take (``POST /v1/jobs/{id}/eta``), which is
kept here too so the adapter can tell a slow job from a silent one.

Sequence numbers: the helper acts on a directive only when its ``seq`` is greater than the last
one it acknowledged, so a seq must never go backwards for a job, even after the entry is forgotten
(a day without news) or the gateway restarts with an empty store. Seqs are therefore seeded from
the clock in milliseconds (``max(previous + 1, now_ms)``): still a plain increasing integer per
job, exact in JSON (well below 2**53), and larger than anything a previous gateway process issued
as long as the clock does not run backwards.

Memory is bounded: entries not written for ``ttl_s`` (a day by default) are dropped, and at most
``max_jobs`` entries are kept (the least recently written go first). Reads do not refresh an entry,
so a job polling forever keeps nothing alive. Everything runs on the event loop thread; no locks.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from gateway.clock import Clock

__all__ = ["Directive", "JobDirectives"]

DAY_S = 86_400.0


@dataclass(frozen=True, slots=True)
class Directive:
    """One request to a job. ``deadline`` is when the gateway stops waiting for the acknowledgement
    (issued_at + the job's grace time); ``stop_after`` tells the job it will be stopped once it has
    acknowledged, so it need not keep training past the checkpoint."""

    job_id: str
    seq: int
    kind: str
    event_id: str
    issued_at: datetime
    deadline: datetime
    stop_after: bool = True

    def to_json(self) -> dict[str, object]:
        """The wire shape of ``GET /v1/jobs/{id}/directive``."""
        return {
            "job_id": self.job_id,
            "seq": self.seq,
            "kind": self.kind,
            "event_id": self.event_id,
            "deadline": self.deadline.isoformat(),
            "stop_after": self.stop_after,
        }


@dataclass(slots=True)
class _Entry:
    touched: datetime
    last_seq: int = 0
    directive: Directive | None = None
    eta: tuple[datetime, float] | None = field(default=None)
    end: tuple[datetime, float] | None = field(default=None)  # reported with no checkpoint asked: the job's end


class JobDirectives:
    """Per-job directives and checkpoint ETAs, bounded in time and count."""

    def __init__(self, clock: Clock, *, ttl_s: float = DAY_S, max_jobs: int = 100_000) -> None:
        if ttl_s <= 0 or max_jobs <= 0:
            raise ValueError("JobDirectives needs a positive ttl_s and max_jobs")
        self._clock = clock
        self._ttl = timedelta(seconds=ttl_s)
        self._max = max_jobs
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def request_checkpoint(self, job_id: str, *, event_id: str, grace_s: float, stop_after: bool = True) -> Directive:
        """Ask ``job_id`` to checkpoint within ``grace_s`` seconds; replaces any earlier directive."""
        if not math.isfinite(grace_s) or grace_s < 0:
            raise ValueError(f"grace_s must be a finite number >= 0, not {grace_s!r}")
        now = self._clock.now()
        entry = self._touch(job_id, now)
        seq = max(entry.last_seq + 1, int(now.timestamp() * 1000))
        entry.last_seq = seq
        entry.directive = Directive(
            job_id=job_id, seq=seq, kind="checkpoint", event_id=event_id, issued_at=now,
            deadline=now + timedelta(seconds=grace_s), stop_after=stop_after,
        )
        return entry.directive

    def get(self, job_id: str) -> Directive | None:
        entry = self._entries.get(job_id)
        return entry.directive if entry is not None else None

    def clear(self, job_id: str, *, event_id: str | None = None) -> bool:
        """Withdraw ``job_id``'s directive (done, acknowledged or cancelled); with ``event_id``, only
        if the directive is for that event (so a late acknowledgement of an old event cannot withdraw
        a newer request). The seq counter is kept. Returns whether a directive was withdrawn."""
        entry = self._entries.get(job_id)
        if entry is None or entry.directive is None:
            return False
        if event_id and entry.directive.event_id and entry.directive.event_id != event_id:
            return False
        entry.directive = None
        return True

    def report_eta(self, job_id: str, seconds_left: float, at: datetime) -> None:
        """Record the job's own estimate: while a checkpoint is asked of it, of the seconds until the
        checkpoint is written; otherwise, of the seconds until the job ends (advance notice uses it)."""
        if not math.isfinite(seconds_left) or seconds_left < 0:
            raise ValueError(f"seconds_left must be a finite number >= 0, not {seconds_left!r}")
        entry = self._touch(job_id, self._clock.now())
        entry.eta = (at, float(seconds_left))
        if entry.directive is None:
            entry.end = entry.eta

    def ends(self) -> dict[str, tuple[datetime, float]]:
        """Every job's latest estimate of its end: ``{job id: (reported at, seconds left then)}``."""
        return {jid: e.end for jid, e in self._entries.items() if e.end is not None}

    def eta(self, job_id: str) -> tuple[datetime, float] | None:
        """``(reported at, seconds left then)`` of the latest report, whatever it was about, or None."""
        entry = self._entries.get(job_id)
        return entry.eta if entry is not None else None

    def _touch(self, job_id: str, now: datetime) -> _Entry:
        entry = self._entries.get(job_id)
        if entry is None:
            entry = self._entries[job_id] = _Entry(touched=now)
        else:
            entry.touched = now
            self._entries.move_to_end(job_id)
        self._prune(now)
        return entry

    def _prune(self, now: datetime) -> None:
        """Drop stale and surplus entries, oldest write first (the dict is kept in write order)."""
        while self._entries:
            job_id, oldest = next(iter(self._entries.items()))
            if len(self._entries) > self._max or now - oldest.touched > self._ttl:
                del self._entries[job_id]
            else:
                break
