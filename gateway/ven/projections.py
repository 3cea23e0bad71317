"""The advance notices as an OpenADR 2.0b report: projected drops of the site's load, for the VTN.

The VEN offers a second report at registration, ``TELEMETRY_USAGE`` with reading type ``Projected``
(report type ``demand``, one data point ``projected-drop-kw``, kW), collected in openleadr's ``full``
mode: each time the VTN's requested granularity comes round, the VEN sends every drop announced and
still ahead (or passed within the last hour) as one interval at the drop's time, its value the kW that
will drop — 0 for a notice withdrawn since (the VTN sees the cancellation), and one 0 kW interval at
the report's time when nothing is announced (a report without intervals is malformed). OpenADR report intervals
carry a time and a value only, so the notice id is not in them: a drop is the interval at its time,
and the same drop's id, reason and updates are on MQTT and the webhook (``notices``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from openleadr import enums, objects

from gateway.config.models import VenConfig
from gateway.ven.reports import site_power_measurement

__all__ = ["PROJECTED_R_ID", "PROJECTED_SPECIFIER_ID", "ProjectionSource", "projection_resource",
           "register_projection_report"]

PROJECTED_SPECIFIER_ID = "dcflex-projected-drops"
PROJECTED_R_ID = "projected-drop-kw"
ProjectionSource = Callable[[], Sequence[tuple[datetime, float]]]


class _Projections:
    """openleadr's ``full``-mode callback: the drops now, whatever window it asks about (a projection
    is about the future; the window is the past)."""

    def __init__(self, source: ProjectionSource) -> None:
        self._source = source

    def __call__(self, date_from: datetime, date_to: datetime, sampling_interval: timedelta) -> list[tuple[datetime, float]]:
        try:
            got = [(at, float(kw)) for at, kw in self._source()]
        except Exception:  # a broken source must not stop the VEN's report worker
            logging.getLogger("dcflex.ven").exception("projected drops unavailable; sending none this cycle")
            got = []
        # a report without intervals is malformed (openleadr's VTN fails on it): "no drop" is 0 kW now
        return got or [(date_to, 0.0)]


def projection_resource(config: VenConfig) -> str:
    """The report's resource id: the VEN's name with ``/projected``, so a VTN that keys reports by resource
    tells the projection from the same VEN's measured TELEMETRY_USAGE."""
    return f"{config.ven_name}/projected"


def register_projection_report(client: Any, source: ProjectionSource, config: VenConfig) -> None:
    """Offer the projected-drops report on ``client`` (an ``OpenADRClient``), before it registers."""
    granularity = timedelta(seconds=config.report_granularity_s)
    client.add_report(
        callback=_Projections(source),
        resource_id=projection_resource(config),
        measurement=site_power_measurement(),
        data_collection_mode="full",
        report_specifier_id=PROJECTED_SPECIFIER_ID,
        r_id=PROJECTED_R_ID,
        report_name=enums.REPORT_NAME.TELEMETRY_USAGE,
        reading_type=enums.READING_TYPE.PROJECTED,
        report_type=enums.REPORT_TYPE.DEMAND,
        report_duration=timedelta(hours=24),
        sampling_rate=objects.SamplingRate(min_period=granularity, max_period=max(granularity, timedelta(hours=1)),
                                           on_change=False),
        unit="W",
        scale="k",
    )
