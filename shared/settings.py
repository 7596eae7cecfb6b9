"""Loading and validating ``chordload.yaml``.

The file is found at ``--config PATH``, else ``$CHORDLOAD_CONFIG``, else ``./chordload.yaml``.
``${VAR}`` (and ``${VAR:-default}``) are replaced from the environment before parsing, and
``CHORDLOAD_BROKER_URL`` / ``CHORDLOAD_RESULT_BACKEND`` / ``CHORDLOAD_METADATA_URL`` override
the file. Every problem is reported with its path in the file (``mappings.x.keys``) so the
user knows what to fix.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from shared.errors import ConfigError
from shared.mapping import MappingSpec

DEFAULT_CONFIG_FILE = "chordload.yaml"
ENV_OVERRIDES = {
    "broker": "CHORDLOAD_BROKER_URL",
    "result_backend": "CHORDLOAD_RESULT_BACKEND",
    "metadata": "CHORDLOAD_METADATA_URL",
}
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class CelerySpec(BaseModel):
    """Celery knobs users may need to tune; everything else is fixed in workers/app.py."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    queue: str = "chordload"
    visibility_timeout_s: int = Field(default=4 * 3600, ge=60)
    broker_transport_options: dict[str, Any] = Field(default_factory=dict)
    result_backend_transport_options: dict[str, Any] = Field(default_factory=dict)


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    metadata: str = Field(min_length=1)
    broker: str = "redis://127.0.0.1:6379/0"
    result_backend: str = "redis://127.0.0.1:6379/1"
    connections: dict[str, str] = Field(default_factory=dict)
    mappings: dict[str, MappingSpec] = Field(default_factory=dict)
    celery: CelerySpec = CelerySpec()

    @model_validator(mode="after")
    def _connections_exist(self) -> "Settings":
        for name, mapping in self.mappings.items():
            for role in ("source", "target"):
                conn = getattr(mapping, role).connection
                if conn not in self.connections:
                    known = ", ".join(sorted(self.connections)) or "none defined"
                    raise ValueError(
                        f"mapping '{name}': {role}.connection '{conn}' is not defined under "
                        f"'connections' (known: {known})")
        return self

    def mapping(self, mapref: str) -> MappingSpec:
        try:
            return self.mappings[mapref]
        except KeyError:
            known = ", ".join(sorted(self.mappings)) or "none"
            raise ConfigError(f"unknown mapping '{mapref}' (mappings in the config: {known})") from None

    def connection_url(self, name: str) -> str:
        try:
            return self.connections[name]
        except KeyError:
            raise ConfigError(f"connection '{name}' is not defined under 'connections' in this "
                              "process's config; workers resolve connection names from their "
                              "own config/env") from None


def substitute_env(text: str, source: str) -> str:
    """Replace ``${VAR}`` / ``${VAR:-default}``; an unset variable without default is an error."""

    def repl(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        value = os.environ.get(name)
        if value is None:
            if default is None:
                raise ConfigError(f"{source}: environment variable ${{{name}}} is not set "
                                  f"(set it, or write ${{{name}:-default}})")
            return default
        return value

    return _VAR.sub(repl, text)


def format_validation_error(err: ValidationError, source: str) -> str:
    lines = [f"{source} is invalid:"]
    for item in err.errors():
        where = ".".join(str(p) for p in item["loc"]) or "(top level)"
        msg = item["msg"]
        if item["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling against the config reference in README.md)"
        elif item["type"] == "missing":
            msg = "required key is missing"
        msg = msg.removeprefix("Value error, ")
        lines.append(f"  - {where}: {msg}")
    return "\n".join(lines)


def settings_from_dict(raw: dict[str, Any], source: str = "config") -> Settings:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of keys at the top level")
    raw = dict(raw)
    for key, env in ENV_OVERRIDES.items():
        if os.environ.get(env):
            raw[key] = os.environ[env]
    try:
        return Settings.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source)) from None


def resolve_config_path(path: str | os.PathLike[str] | None = None) -> Path:
    if path:
        return Path(path)
    if os.environ.get("CHORDLOAD_CONFIG"):
        return Path(os.environ["CHORDLOAD_CONFIG"])
    return Path(DEFAULT_CONFIG_FILE)


def load_settings(path: str | os.PathLike[str] | None = None) -> Settings:
    config_path = resolve_config_path(path)
    if not config_path.is_file():
        raise ConfigError(f"config file {config_path} not found (pass --config PATH or set "
                          "CHORDLOAD_CONFIG)")
    text = substitute_env(config_path.read_text(), str(config_path))
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{config_path} is not valid YAML: {err}") from None
    return settings_from_dict(raw, str(config_path))


_current: Settings | None = None


def use_settings(settings: Settings | None) -> None:
    """Make ``settings`` the process-wide settings (the demo and tests set them explicitly)."""
    global _current
    _current = settings


def current_settings() -> Settings:
    """The process-wide settings, loaded from the config file on first use."""
    global _current
    if _current is None:
        _current = load_settings()
    return _current
