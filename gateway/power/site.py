"""The power model a site's configuration describes (its curves file, idle and base draw, caps)."""

from __future__ import annotations

from gateway.config import SiteConfig
from gateway.power.curves import default_curves, load_curves_file
from gateway.power.model import PowerModel


def site_power_model(site: SiteConfig) -> PowerModel:
    """``[site]`` → ``PowerModel``; the embedded Phoenix A100 curves unless ``curves_file`` is set."""
    return PowerModel(
        curves=load_curves_file(site.curves_file) if site.curves_file else default_curves(),
        gpu_idle_w=site.gpu_idle_w,
        node_base_w=site.node_base_w,
        overhead=site.overhead,
        min_cap_w=site.min_cap_w,
        max_cap_w=site.max_cap_w,
    )
