"""Loading a configuration file: TOML → ``DcflexConfig``, every problem reported with its key path."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel, SecretStr, ValidationError
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


def _secret_names(model: type[BaseModel]) -> frozenset[str]:
    """Names of every ``SecretStr`` field in the configuration tree: their values are never echoed."""
    names: set[str] = set()
    for name, field in model.model_fields.items():
        for t in (field.annotation, *get_args(field.annotation)):
            if t is SecretStr:
                names.add(name)
            elif isinstance(t, type) and issubclass(t, BaseModel):
                names |= _secret_names(t)
    return frozenset(names)


_SECRETS = _secret_names(DcflexConfig)


def _key_path(loc: tuple[Any, ...]) -> str:
    """``("tiers", "rules", 0, "tier")`` → ``tiers.rules[0].tier``."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "(top level)"


def _env_source(loc: tuple[Any, ...]) -> str | None:
    """The environment variable a value came from, when one is set for this key path."""
    if not loc:
        return None
    wanted = ("DCFLEX_" + "__".join(str(p) for p in loc)).upper()
    return next((k for k in os.environ if k.upper() == wanted), None)


def describe_problem(err: dict[str, Any]) -> tuple[str, str]:
    loc = tuple(err.get("loc", ()))
    path = _key_path(loc)
    kind = err.get("type", "")
    env = _env_source(loc)
    where = f" (set by environment variable {env})" if env else ""
    if kind == "extra_forbidden":
        origin = f" from environment variable {env}" if env else ""
        return path, f"unknown key{origin} (check its spelling and section; see configs/ for every allowed key)"
    msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
    ctx = err.get("ctx") or {}
    expected = str(ctx.get("expected", ""))
    if expected and expected not in msg:  # Literal and enum messages already list the allowed values
        msg = f"{msg} (allowed: {expected})"
    secret = bool(loc) and str(loc[-1]) in _SECRETS
    if "input" in err and kind != "missing" and not isinstance(err["input"], dict) and not secret:
        msg = f"{msg}; got {err['input']!r}"
    return path, msg + where


def load_config_text(text: str, source: str = "<string>") -> DcflexConfig:
    """Parse and validate TOML text; raises ``ConfigError`` listing every problem."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, [("(syntax)", f"not valid TOML: {exc}")]) from exc
    try:
        loaded = _FileFirstEnvWins(**data)
    except ValidationError as exc:
        raise ConfigError(source, [describe_problem(dict(e)) for e in exc.errors()]) from exc
    # Hand back the public class (equal to a DcflexConfig built directly, same repr); the sections are
    # already validated, so no second validation (and no second read of the environment) is needed.
    return DcflexConfig.model_construct(
        _fields_set=loaded.model_fields_set, **{name: getattr(loaded, name) for name in DcflexConfig.model_fields}
    )


def load_config(path: Path | str) -> DcflexConfig:
    """Read and validate a TOML configuration file."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ConfigError(str(p), [("(file)", f"cannot read the file: {exc.strerror or exc}")]) from exc
    return load_config_text(text, str(p))
