"""The engine's ``SiteFeed``: what the VEN reports to the VTN, read from the engine's own state."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from gateway.notices.service import NoticeService
from gateway.power.history import PowerHistory

__all__ = ["EngineFeed"]


class EngineFeed:
    """The site's latest reading (the engine's power history) and, when advance notices are on, the drops
    they announced (``NoticeService.projected``)."""

    def __init__(self, history: PowerHistory, notices: NoticeService, *, announces_drops: bool) -> None:
        self._history = history
        self._notices = notices
        self.announces_drops = announces_drops

    def site_kw(self) -> float | None:
        latest = self._history.latest
        return latest[1] if latest else None

    def announced_drops(self) -> Mapping[str, tuple[datetime, float]]:
        return self._notices.projected()
