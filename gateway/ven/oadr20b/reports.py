"""TELEMETRY_USAGE reporting of the site's power to the VTN, around openleadr's report machinery.

The VEN offers one report at registration: ``TELEMETRY_USAGE`` with one data point, the site's real
power in kW (``powerReal``, unit ``W``, SI scale ``k``), sampled from the gateway's telemetry
callable. The VTN decides whether and how often it wants it (at registration, or later with an
``oadrCreateReport``); openleadr then runs a job per granularity that samples and queues the report.

Guards around openleadr 0.5.36:

* a telemetry callable that raises, returns ``None`` or a non-finite number skips that sample
  (openleadr would crash the job on ``None``) instead of sending garbage;
* openleadr's report-queue worker unpacks the VTN's answer wrongly, so a ``cancel_report`` inside
  ``oadrUpdatedReport`` is ignored; ``drain_report_queue`` is the corrected worker;
* ids are fixed (not random per start) so a restarted gateway offers the same report to the VTN.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from openleadr import enums, objects, utils

from gateway.config.models import VenConfig

__all__ = ["TELEMETRY_R_ID", "TELEMETRY_SPECIFIER_ID", "TelemetrySampler", "drain_report_queue", "register_telemetry_report",
           "site_power_measurement"]

logger = logging.getLogger("dcflex.ven")

TELEMETRY_SPECIFIER_ID = "dcflex-telemetry-usage"
TELEMETRY_R_ID = "site-power-kw"
_MAX_SAMPLING_PERIOD = timedelta(hours=1)


class TelemetrySampler:
    """Reads the site's kW from the gateway's callable once per report cycle, and never raises.

    ``sample()`` is called by the VEN just before openleadr builds a report; openleadr's callback
    (``__call__``) then returns that one value, so the check and the report see the same number.
    """

    def __init__(self, read_kw: Callable[[], float | None]) -> None:
        self._read_kw = read_kw
        self._latest: float | None = None

    def sample(self) -> float | None:
        try:
            value = self._read_kw()
        except Exception:  # a broken meter must not stop the VEN; the next cycle tries again
            logger.exception("telemetry callable failed; skipping this TELEMETRY_USAGE sample")
            value = None
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)
                                  or not math.isfinite(value)):
            logger.warning("telemetry callable returned %r; skipping this TELEMETRY_USAGE sample", value)
            value = None
        self._latest = None if value is None else float(value)
        return self._latest

    def __call__(self) -> float | list[Any]:
        """openleadr's report callback: the value ``sample()`` just read (no reading: no interval)."""
        return self._latest if self._latest is not None else []


def site_power_measurement() -> Any:
    """The site's real power in kW, as both reports (measured and projected) describe it."""
    return objects.Measurement(
        name="powerReal", description="RealPower", unit="W", acceptable_units=["W"], scale="k",
        power_attributes=objects.PowerAttributes(hertz=60, voltage=480, ac=True),
    )


def register_telemetry_report(client: Any, sampler: TelemetrySampler, config: VenConfig) -> None:
    """Offer TELEMETRY_USAGE (site kW) on ``client`` (an ``OpenADRClient``), before it registers.

    The VTN may ask for any granularity from ``config.report_granularity_s`` (the fastest the
    gateway samples) up to an hour.
    """
    granularity = timedelta(seconds=config.report_granularity_s)
    measurement = site_power_measurement()
    client.add_report(
        callback=sampler,
        resource_id=config.ven_name,
        measurement=measurement,
        data_collection_mode="incremental",
        report_specifier_id=TELEMETRY_SPECIFIER_ID,
        r_id=TELEMETRY_R_ID,
        report_name=enums.REPORT_NAME.TELEMETRY_USAGE,
        reading_type=enums.READING_TYPE.DIRECT_READ,
        report_type=enums.REPORT_TYPE.READING,
        report_duration=_MAX_SAMPLING_PERIOD,
        sampling_rate=objects.SamplingRate(min_period=granularity,
                                           max_period=max(granularity, _MAX_SAMPLING_PERIOD), on_change=False),
        unit="W",
        scale="k",
    )


async def drain_report_queue(client: Any) -> None:
    """Send queued reports to the VTN forever (openleadr's ``_report_queue_worker``, corrected).

    openleadr's version tests ``'cancel_report' in (type, payload)`` — a tuple — so a VTN cancelling
    a report in its ``oadrUpdatedReport`` is never honoured. This one reads the payload.
    """
    while True:
        report = await client.pending_reports.get()
        message = client._create_message("oadrUpdateReport", ven_id=client.ven_id,
                                          request_id=utils.generate_id(), reports=[report])
        try:
            result = await client._perform_request("EiReport", message)
        except Exception:
            logger.exception("could not send a report to the VTN")
            continue
        payload = result[1] if isinstance(result, tuple) and len(result) == 2 else None
        cancel = payload.get("cancel_report") if isinstance(payload, dict) else None
        if isinstance(cancel, dict):
            logger.info("the VTN cancelled report request %s in its oadrUpdatedReport", cancel.get("report_request_id"))
            try:
                await client.cancel_report(cancel)
            except Exception:
                logger.exception("could not cancel report request %s", cancel.get("report_request_id"))
