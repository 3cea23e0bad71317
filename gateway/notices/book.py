"""When to announce a drop, re-announce it, or take it back: a pure state machine over forecasts.

For each drop large enough to need notice (``threshold_kw``, or ``threshold_pct`` of the site's load), a
notice goes out when the drop comes within each lead time (60 and 15 minutes before, by default; lead
times already passed when the drop is first seen get one notice, at once), an ``update`` when its size
moves by ``update_kw`` or its time by ``update_min``, and a ``cancel`` when it leaves the forecast
before its time (the job was extended past the horizon or ended early, the event was cancelled). A
drop whose time has come leaves the book quietly. ``announce`` sends a notice at once whatever the lead
(a demand-response event, at plan time).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from gateway.config.models import NoticesConfig
from gateway.notices.forecast import Drop

__all__ = ["NoticeBook", "NoticeOut"]


@dataclass(frozen=True, slots=True)
class NoticeOut:
    """One message about one drop, the same on every channel (MQTT, webhook, the VTN)."""

    notice_id: str
    action: str               # "notice", "update" or "cancel"
    created_at: datetime
    drop: Drop
    lead_s: float             # how long before the drop it was sent
    seq: int                  # 1, 2, ... per notice id

    def facts(self) -> dict[str, object]:
        d = self.drop
        return {"notice_id": self.notice_id, "action": self.action, "drop_at": d.at.isoformat(),
                "drop_until": d.until.isoformat(), "drop_kw": round(d.kw, 3), "exact": d.exact, "reason": d.reason,
                "source": d.source, "lead_s": round(self.lead_s, 1), "seq": self.seq,
                "modified": self.action != "notice" or self.seq > 1, "event_id": d.event_id or None}


@dataclass(slots=True)
class _Known:
    last: Drop
    seq: int
    leads_done: set[float] = field(default_factory=set)
    first_at: datetime | None = None   # when it was first announced


class NoticeBook:
    """Which drops were announced, and what to send next (see the module docstring)."""

    def __init__(self, cfg: NoticesConfig) -> None:
        self.cfg = cfg
        self.leads_s = tuple(m * 60.0 for m in cfg.lead_times_min)
        self.known: dict[str, _Known] = {}

    def threshold_kw(self, site_kw: float | None) -> float:
        got = [self.cfg.threshold_kw] if self.cfg.threshold_kw is not None else []
        if self.cfg.threshold_pct is not None and site_kw is not None:
            got.append(self.cfg.threshold_pct / 100.0 * site_kw)
        return min(got) if got else float("inf")

    def announced(self, drop_id: str) -> datetime | None:
        """When the drop was first announced (None: never)."""
        k = self.known.get(drop_id)
        return k.first_at if k is not None else None

    def announce(self, drop: Drop, now: datetime, site_kw: float | None) -> list[NoticeOut]:
        """A notice now, whatever the lead (an update if already announced); nothing under the threshold."""
        if drop.kw < self.threshold_kw(site_kw):
            return self._cancel_if_known(drop.drop_id, now)
        k = self.known.get(drop.drop_id)
        lead = (drop.at - now).total_seconds()
        if k is None:
            k = self.known[drop.drop_id] = _Known(drop, 0, first_at=now)
            action = "notice"
        else:
            action = "update"
        k.leads_done |= {L for L in self.leads_s if lead <= L}
        k.last = drop
        k.seq += 1
        return [NoticeOut(drop.drop_id, action, now, drop, lead, k.seq)]

    def step(self, now: datetime, drops: Iterable[Drop], site_kw: float | None, *, keep: Iterable[str] = ()) -> list[NoticeOut]:
        """The messages due at ``now`` for this forecast. ``keep``: drop ids absent from ``drops`` that are
        still in force (announced by ``announce``, e.g. an event's)."""
        out: list[NoticeOut] = []
        threshold = self.threshold_kw(site_kw)
        seen = set(keep)
        upd_kw = self.cfg.update_kw if self.cfg.update_kw is not None else threshold / 2.0
        upd_s = self.cfg.update_min * 60.0
        for d in drops:
            seen.add(d.drop_id)
            lead = (d.at - now).total_seconds()
            k = self.known.get(d.drop_id)
            if d.kw < threshold:
                out += self._cancel_if_known(d.drop_id, now)
                continue
            due = {L for L in self.leads_s if lead <= L}
            if k is None:
                if due:
                    self.known[d.drop_id] = _Known(d, 1, set(due), now)
                    out.append(NoticeOut(d.drop_id, "notice", now, d, lead, 1))
                continue
            moved = abs(d.kw - k.last.kw) > upd_kw or abs((d.at - k.last.at).total_seconds()) > upd_s
            if due - k.leads_done:
                k.leads_done |= due
                k.last, k.seq = d, k.seq + 1
                out.append(NoticeOut(d.drop_id, "update" if moved else "notice", now, d, lead, k.seq))
            elif moved:
                k.last, k.seq = d, k.seq + 1
                out.append(NoticeOut(d.drop_id, "update", now, d, lead, k.seq))
        for drop_id in [i for i in self.known if i not in seen]:
            k = self.known[drop_id]
            if k.last.at > now:
                out += self._cancel_if_known(drop_id, now)
            else:
                self.known.pop(drop_id)  # its time came: done
        return out

    def _cancel_if_known(self, drop_id: str, now: datetime) -> list[NoticeOut]:
        k = self.known.pop(drop_id, None)
        if k is None:
            return []
        return [NoticeOut(drop_id, "cancel", now, k.last, (k.last.at - now).total_seconds(), k.seq + 1)]
