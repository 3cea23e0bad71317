"""The gateway's HTTP API (aiohttp, loopback by default)."""

from gateway.api.acks import CheckpointAcks
from gateway.api.directives import JobDirectives
from gateway.api.server import ApiServer, build_app

__all__ = ["ApiServer", "CheckpointAcks", "JobDirectives", "build_app"]
