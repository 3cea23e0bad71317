"""Advance notice to the grid before the site's load drops: what will drop (``forecast``), when to say
so (``book``), and drops that came unannounced (``watch``)."""

from gateway.notices.book import NoticeBook, NoticeOut
from gateway.notices.forecast import Drop, event_drop, job_drops
from gateway.notices.watch import DropWatch, ObservedDrop

__all__ = ["Drop", "DropWatch", "NoticeBook", "NoticeOut", "ObservedDrop", "event_drop", "job_drops"]
