"""Suite-wide pytest hooks: the session header names what the suite ran against."""

from __future__ import annotations

import importlib.metadata
import platform

from tests.services import ROOT

VERSIONS = ROOT / "var" / "services" / "versions"
PACKAGES = ("openleadr", "lxml", "cryptography", "signxml", "aiohttp", "pydantic", "aiomqtt", "influxdb-client")


def _package(name: str) -> str:
    try:
        return f"{name} {importlib.metadata.version(name)}"
    except importlib.metadata.PackageNotFoundError:
        return f"{name} (not installed)"


def pytest_report_header() -> list[str]:
    """Why: when a fresh machine fails, the CI log must say which service and library versions it had.

    The services' versions are what ``scripts/services.sh up`` read from the binaries it started (Mosquitto,
    VictoriaMetrics, Slurm) and from the running Ray head; the rest are the installed packages the VEN depends on.
    """
    if VERSIONS.exists():
        services = ", ".join(line.strip() for line in VERSIONS.read_text().splitlines() if line.strip())
    else:
        services = f"none recorded ({VERSIONS} is missing: start them with `scripts/services.sh up`)"
    try:
        from lxml import etree

        libxml2 = "libxml2 " + ".".join(map(str, etree.LIBXML_VERSION))
    except ImportError:  # pragma: no cover - lxml comes with openleadr
        libxml2 = "libxml2 (lxml missing)"
    packages = ", ".join([*(_package(name) for name in PACKAGES), libxml2])
    return [f"dcflex services: {services}", f"dcflex packages: Python {platform.python_version()}, {packages}"]
