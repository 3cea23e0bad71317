"""The advance notices as an OpenADR 2.0b report: projected drops of the site's load, for the VTN.

The VEN offers a ``TELEMETRY_USAGE`` report with reading type ``Projected`` (report type ``demand``, kW,
collected in openleadr's ``full`` mode). Its data points:

- ``projected-drop-kw`` (resource ``<ven_name>/projected``): every drop announced and still ahead (or
  passed within the hour), one interval at the drop's time with the kW that will drop — 0 for a notice
  withdrawn since — and one 0 kW interval at the report's time when nothing is announced (a report
  without intervals is malformed);
- one per notice, ``drop:<notice id>`` (resource ``<ven_name>/projected/<notice id>``): that drop alone.
  OpenADR report intervals carry a time and a value, no id, so the notice id travels as the data point:
  when a new notice goes out, the VEN adds its data point and registers the report again
  (``oadrRegisterReport``), and the VTN may then ask for it (a request the new one covers is dropped,
  so values are not sent twice). A withdrawn notice's data point reports
  0 kW at its time; the same id, size and time are on MQTT and the webhook.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from openleadr import enums, objects

from gateway.config.models import VenConfig
from gateway.ven.oadr20b.outbound import safe_token
from gateway.ven.oadr20b.reports import site_power_measurement

__all__ = ["PROJECTED_R_ID", "PROJECTED_SPECIFIER_ID", "ProjectedReport", "ProjectionSource", "notice_r_id",
           "projection_resource", "prune_requests"]

log = logging.getLogger("dcflex.ven")

PROJECTED_SPECIFIER_ID = "dcflex-projected-drops"
PROJECTED_R_ID = "projected-drop-kw"
ProjectionSource = Callable[[], Mapping[str, tuple[datetime, float]]]
"""Every notice id announced (and not yet an hour past) → (drop time, kW; 0 once withdrawn)."""


def projection_resource(config: VenConfig, notice_id: str = "") -> str:
    """The resource id of a data point: the VEN's name with ``/projected`` (and ``/<notice id>``), so a VTN
    that keys reports by resource tells projections from the same VEN's measured TELEMETRY_USAGE. A notice id
    made from a foreign one (an event's id) is used only when plain and short, else as a digest (``safe_token``)."""
    return f"{config.ven_name}/projected" + (f"/{safe_token(notice_id)}" if notice_id else "")


def notice_r_id(notice_id: str) -> str:
    """The data point of one notice: ``drop:`` and the notice id, or its digest when the id is not plain."""
    return f"drop:{safe_token(notice_id)}"


class _Values:
    """openleadr's ``full``-mode callback for one data point: the drops now, whatever window it asks about
    (a projection is about the future; the window is the past)."""

    def __init__(self, source: ProjectionSource, notice_id: str | None) -> None:
        self._source = source
        self._notice_id = notice_id

    def __call__(self, date_from: datetime, date_to: datetime, sampling_interval: timedelta) -> list[tuple[datetime, float]]:
        try:
            drops = self._source()
            if self._notice_id is None:
                got = sorted((at, float(kw)) for at, kw in drops.values())
            else:
                one = drops.get(self._notice_id)
                got = [(one[0], float(one[1]))] if one is not None else []
        except Exception:  # a broken source must not stop the VEN's report worker
            log.exception("projected drops unavailable; sending none this cycle")
            got = []
        return got or [(date_to, 0.0)]


class ProjectedReport:
    """The Projected report of one VEN (see the module docstring): offered before registration
    (``offer``), grown by a data point per new notice and registered again (``sync``, each poll)."""

    def __init__(self, source: ProjectionSource, config: VenConfig) -> None:
        self.source = source
        self.config = config
        self.known: set[str] = set()

    def offer(self, client: Any) -> None:
        self._add(client, PROJECTED_R_ID, projection_resource(self.config), None)

    async def sync(self, client: Any) -> bool:
        """Add the data points of notices not offered yet and register the report again; True if it did."""
        prune_requests(client)
        try:
            fresh = sorted(set(self.source()) - self.known)
        except Exception:
            log.exception("projected drops unavailable; the report is not re-registered this time")
            return False
        if not fresh:
            return False
        for notice_id in fresh:
            self._add(client, notice_r_id(notice_id), projection_resource(self.config, notice_id), notice_id)
            self.known.add(notice_id)
        report = next(r for r in client.reports if r.report_specifier_id == PROJECTED_SPECIFIER_ID)
        await client.register_reports([report])
        log.info("Projected report registered again with the data point(s) of %s", ", ".join(fresh))
        return True

    def _add(self, client: Any, r_id: str, resource_id: str, notice_id: str | None) -> None:
        granularity = timedelta(seconds=self.config.report_granularity_s)
        client.add_report(
            callback=_Values(self.source, notice_id),
            resource_id=resource_id,
            measurement=site_power_measurement(),
            data_collection_mode="full",
            report_specifier_id=PROJECTED_SPECIFIER_ID,
            r_id=r_id,
            report_name=enums.REPORT_NAME.TELEMETRY_USAGE,
            reading_type=enums.READING_TYPE.PROJECTED,
            report_type=enums.REPORT_TYPE.DEMAND,
            report_duration=timedelta(hours=24),
            sampling_rate=objects.SamplingRate(min_period=granularity,
                                               max_period=max(granularity, timedelta(hours=1)), on_change=False),
            unit="W",
            scale="k",
        )


def prune_requests(client: Any) -> int:
    """Drop the VTN's requests for this report that a newer one covers (asked again after a re-registration:
    each would otherwise keep sending the same values), keeping the newest; how many were dropped."""
    mine = [r for r in client.report_requests if r.get("report_specifier_id") == PROJECTED_SPECIFIER_ID]
    dropped = 0
    for i, old in enumerate(mine):
        if any(set(old.get("r_ids") or ()) <= set(new.get("r_ids") or ()) for new in mine[i + 1:]):
            if old.get("job") is not None:
                old["job"].remove()
            client.report_requests.remove(old)
            dropped += 1
    return dropped
