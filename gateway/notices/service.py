"""The engine's side of advance notice: forecast, announce, watch, count.

Every reading of site power (``on_reading``) refreshes the forecast of drops (the events' sheds the
gateway planned, running jobs' expected ends from a snapshot at most ``snapshot_interval_s`` old),
sends what the book says is due as ``notice`` records (the MQTT ``…/notices`` topic, the webhook and
the time-series DB all take them from there), and checks the reading for a drop nobody announced: an
``unannounced_drop`` alert at once. Every observed drop is journaled (``drop_observed``) with whether
it was announced at least the shortest lead time ahead; ``coverage`` is the share of dropped kW that
was, over a day or one event, from the journal (so it survives a restart).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from gateway.config.models import NoticesConfig
from gateway.domain import ClusterSnapshot, Directive, Plan
from gateway.journal import Journal
from gateway.notices.book import NoticeBook, NoticeOut
from gateway.notices.forecast import Drop, event_drop, job_drops
from gateway.notices.watch import DropWatch, ObservedDrop
from gateway.power import PowerModel

__all__ = ["Announced", "NoticeService"]

log = logging.getLogger("dcflex.notices")

Emit = Callable[[str, str, Mapping[str, object]], Awaitable[None]]
Etas = Callable[[], Mapping[str, tuple[datetime, float]]]


@dataclass(frozen=True, slots=True)
class Announced:
    """One drop announced in advance: its notice id, when the drop comes, when it was first announced."""

    notice_id: str
    drop_at: datetime
    first_sent: datetime


class NoticeService:
    def __init__(self, cfg: NoticesConfig, model: PowerModel, journal: Journal, emit: Emit, *,
                 sample_interval_s: float) -> None:
        self.cfg = cfg
        self.model = model
        self.journal = journal
        self.emit = emit
        self.book = NoticeBook(cfg)
        lead_s = min(cfg.lead_times_min) * 60.0
        self.watch = DropWatch(window_s=max(300.0, 3 * sample_interval_s), lead_s=lead_s,
                               grace_s=max(120.0, 2 * sample_interval_s))
        # twice the longest lead: a drop announced and then moved a little later is updated, not withdrawn
        self.horizon_s = 2.0 * max(cfg.lead_times_min) * 60.0 + max(60.0, 2 * sample_interval_s)
        self.events: dict[str, Drop] = {}
        self.etas: Etas = dict
        self._jobs: list[Drop] = []
        self._jobs_at: datetime | None = None
        self.sent: dict[str, tuple[datetime, datetime, datetime]] = {}  # drop id → (earliest, latest, first sent)
        self._projected: dict[str, tuple[datetime, float]] = {}  # notice id → (drop at, kW; 0 once withdrawn)
        self._now: datetime | None = None

    # ---------------------------------------------------------------------------- inputs

    def wants_snapshot(self, now: datetime) -> bool:
        return self.cfg.enabled and (self._jobs_at is None
                                     or (now - self._jobs_at).total_seconds() >= self.cfg.snapshot_interval_s)

    def on_snapshot(self, snapshot: ClusterSnapshot, now: datetime, busy: Iterable[str]) -> None:
        """Jobs' expected ends from a fresh snapshot; ``busy``: jobs the gateway has commands on (their
        load goes with the event's shed, already announced)."""
        self._jobs = job_drops(snapshot, self.model, now, self.horizon_s, self.etas(), skip=busy)
        self._jobs_at = now

    async def on_plan(self, directive: Directive, plan: Plan, now: datetime, site_kw: float | None) -> None:
        """An event's shed, announced at plan time whatever the lead (an update when re-planned)."""
        if not self.cfg.enabled:
            return
        drop = event_drop(directive, plan)
        known = self.events.get(drop.drop_id)
        self.events[drop.drop_id] = drop
        if known is not None and abs(known.kw - drop.kw) < 1e-6 and known.at == drop.at:
            return
        await self._send(self.book.announce(drop, now, site_kw))

    def event_over(self, event_id: str) -> None:
        """The event will shed nothing more (ended, cancelled, opted out): a notice still ahead is withdrawn
        at the next reading."""
        self.events.pop(f"event:{event_id}", None)

    async def on_reading(self, now: datetime, kw: float, commanded_at: datetime | None = None) -> ObservedDrop | None:
        """Send what is due, and check the reading for a drop; the drop, if one completed. ``commanded_at``:
        when the gateway's own commands last returned (a fall soon after is its shed)."""
        if not self.cfg.enabled:
            return None
        self._now = now
        drops = [*self.events.values(), *self._jobs]
        await self._send(self.book.step(now, drops, kw))
        threshold = self.book.threshold_kw(kw)
        announced = [(i, e, u, f, i.startswith("event:")) for i, (e, u, f) in self.sent.items()]
        seen = self.watch.observe(now, kw, threshold, announced, commanded_at)
        if seen is None:
            return None
        event_id = next((d.event_id for d in self.events.values() if d.drop_id == seen.notice_id), "")
        facts: dict[str, object] = {"kw": round(seen.kw, 3), "from_kw": round(seen.from_kw, 3),
                                    "notice_id": seen.notice_id or None, "lead_s": round(seen.lead_s, 1),
                                    "covered": seen.covered}
        self.journal.log(event_id, "drop_observed", now, facts)
        await self.emit("drop", event_id, facts)
        if not seen.notice_id:
            await self.emit("alert", event_id, {
                "severity": "warning", "code": "unannounced_drop",
                "message": f"site load fell by {seen.kw:.0f} kW (from {seen.from_kw:.0f} kW) with no notice to the grid: "
                           "a job crashed or ended early, or a node failed; check the cluster",
                **facts})
        return seen

    # --------------------------------------------------------------------------- outputs

    async def _send(self, notes: list[NoticeOut]) -> None:
        for n in notes:
            d = n.drop
            self._projected[n.notice_id] = (d.at, 0.0 if n.action == "cancel" else d.kw)
            if n.action == "cancel":
                self.sent.pop(n.notice_id, None)
            else:
                first = self.sent.get(n.notice_id, (d.at, d.until, n.created_at))[2]
                self.sent[n.notice_id] = (d.at, d.until, first)
            log.info("notice %s (%s): %.0f kW at %s, %s", n.notice_id, n.action, d.kw, d.at.isoformat(), d.reason)
            await self.emit("notice", d.event_id, n.facts())

    def projected(self) -> dict[str, tuple[datetime, float]]:
        """Every drop announced and ahead, or passed within the hour, by notice id: (time, kW), withdrawn
        ones at 0 kW. What the VEN's Projected report carries to the VTN (``gateway.ven.oadr20b.projections``)."""
        if self._now is not None:
            old = self._now - timedelta(hours=1)
            for notice_id in [i for i, (at, _) in self._projected.items() if at < old]:
                del self._projected[notice_id]
        return dict(self._projected)

    def announced(self) -> list[Announced]:
        """Every drop announced and not withdrawn, by notice id (what ``GET /status`` lists)."""
        return [Announced(notice_id, at, first) for notice_id, (at, _, first) in sorted(self.sent.items())]

    def coverage(self, now: datetime, event_id: str | None = None) -> dict[str, object]:
        """Share of the dropped kW announced at least the shortest lead time ahead: over the last day, or
        over one event's drops."""
        since = now - timedelta(days=1)
        total = covered = 0.0
        count = 0
        for at, _, _, body in self.journal.log_entries(event_id, ("drop_observed",)):
            if event_id is None and datetime.fromisoformat(at) < since:
                continue
            kw = float(body.get("kw") or 0.0)
            total += kw
            count += 1
            if body.get("covered"):
                covered += kw
        return {"drops": count, "dropped_kw": round(total, 3), "announced_kw": round(covered, 3),
                "coverage": round(covered / total, 4) if total > 0 else None}
