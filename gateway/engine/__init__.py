"""The engine: the one place that does I/O against the ports, driving each event's life."""

from gateway.engine.engine import Engine
from gateway.engine.settings import EngineSettings

__all__ = ["Engine", "EngineSettings"]
