"""Where integration tests find the real services ``scripts/services.sh up`` started."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAVED_ENV = ROOT / "var" / "services" / "env"
HINT = "start the test services with `scripts/services.sh up`"


def service_env(key: str) -> str:
    """One setting from the environment, else from the file ``services.sh up`` wrote; a test that needs a
    service and cannot find it fails (never skips) saying how to start it."""
    if key in os.environ:
        return os.environ[key]
    if SAVED_ENV.exists():
        for line in SAVED_ENV.read_text().splitlines():
            name, eq, value = line.partition("=")
            if eq and name == key:
                return value
    pytest.fail(f"{key} is neither in the environment nor in {SAVED_ENV}: {HINT}")
