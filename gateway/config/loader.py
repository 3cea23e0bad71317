"""Loading a configuration file: TOML → ``DcflexConfig``, every problem reported with its key path."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from gateway.config.models import DcflexConfig
from gateway.exceptions import ConfigError


class _FileFirstEnvWins(DcflexConfig):
    """Environment variables override the file, so secrets never need to be written in it."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (env_settings, init_settings)


def _describe(err: dict[str, Any]) -> tuple[str, str]:
    path = ".".join(str(p) for p in err.get("loc", ())) or "(top level)"
    kind = err.get("type", "")
    if kind == "extra_forbidden":
        return path, "unknown key (check its spelling and section; see configs/ for every allowed key)"
    msg = str(err.get("msg", "invalid value"))
    ctx = err.get("ctx") or {}
    if "expected" in ctx:
        msg = f"{msg} (allowed: {ctx['expected']})"
    if "input" in err and kind != "missing" and not isinstance(err["input"], dict):
        msg = f"{msg}; got {err['input']!r}"
    return path, msg


def load_config_text(text: str, source: str = "<string>") -> DcflexConfig:
    """Parse and validate TOML text; raises ``ConfigError`` listing every problem."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, [("(syntax)", f"not valid TOML: {exc}")]) from exc
    try:
        return _FileFirstEnvWins(**data)
    except ValidationError as exc:
        raise ConfigError(source, [_describe(dict(e)) for e in exc.errors()]) from exc


def load_config(path: Path | str) -> DcflexConfig:
    """Read and validate a TOML configuration file."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ConfigError(str(p), [("(file)", f"cannot read the file: {exc.strerror or exc}")]) from exc
    return load_config_text(text, str(p))
