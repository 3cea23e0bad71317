"""Configuration: TOML files validated by pydantic, secrets from ``DCFLEX_…`` environment variables."""

from gateway.config.loader import load_config, load_config_text
from gateway.config.models import (
    ApiConfig,
    DcflexConfig,
    JournalConfig,
    PolicyConfig,
    SchedulerConfig,
    SimulatedSchedulerConfig,
    SinksConfig,
    SiteConfig,
    TierRule,
    TiersConfig,
    VenConfig,
)

__all__ = [
    "ApiConfig",
    "DcflexConfig",
    "JournalConfig",
    "PolicyConfig",
    "SchedulerConfig",
    "SimulatedSchedulerConfig",
    "SinksConfig",
    "SiteConfig",
    "TierRule",
    "TiersConfig",
    "VenConfig",
    "load_config",
    "load_config_text",
]
