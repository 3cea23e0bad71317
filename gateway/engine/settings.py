"""The engine's settings, taken from the configuration sections it needs."""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.config import DcflexConfig, PolicyConfig, SiteConfig
from gateway.config.models import NoticesConfig


@dataclass(frozen=True, slots=True)
class EngineSettings:
    """``sample_interval_s``: how often site power is read (also the drift-check cadence floor);
    ``max_concurrency``: commands in flight at once; ``restore_retry_s``: wait before retrying a
    failed undo (undos are retried until they succeed: no job stays paused past its event);
    ``relax``: give commands back while the site sits well below target (the replay simulator turns it
    off for its baselines, which model simpler systems that never do)."""

    site: SiteConfig
    policy: PolicyConfig
    dry_run: bool = False
    sample_interval_s: float = 60.0
    max_concurrency: int = 16
    restore_retry_s: float = 60.0
    max_shed_attempts: int = 2
    notices: NoticesConfig = field(default_factory=NoticesConfig)
    relax: bool = True

    @classmethod
    def from_config(cls, cfg: DcflexConfig, **overrides: object) -> EngineSettings:
        base = cls(site=cfg.site, policy=cfg.policy, dry_run=cfg.scheduler.dry_run, notices=cfg.notices)
        if not overrides:
            return base
        from dataclasses import replace

        return replace(base, **overrides)  # type: ignore[arg-type]
