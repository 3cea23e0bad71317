"""The gateway's HTTP API (aiohttp, loopback by default): status, health, and the job channel's endpoints."""

from gateway.api.server import ApiServer, build_app

__all__ = ["ApiServer", "build_app"]
