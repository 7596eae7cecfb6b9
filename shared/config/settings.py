"""Loading and validating ``chordload.yaml``.

The file is found at ``--config PATH``, else ``$CHORDLOAD_CONFIG``, else ``./chordload.yaml``.
``${VAR}`` (and ``${VAR:-default}``) in values are replaced from the environment (after
parsing: a value's characters never change the file's structure, and a ``${VAR}`` in a YAML
comment is ignored), and the variables in ``ENV_OVERRIDES`` override keys of the file: that
table is the one list of chordload's environment knobs, and every default is stated once, on
its field below. Without a file, the environment alone is a config when it names at least
the broker and the metadata database. Every problem is reported with its path in the file
(``mappings.x.keys``) so the user knows what to fix.

Settings are passed explicitly to whatever needs them (the CLI loads them once per command,
the worker's Celery app is built from them); there is no process-wide settings object.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from shared.config.mapping import MappingSpec, NotifySpec
from shared.errors import ConfigError

DEFAULT_CONFIG_FILE = "chordload.yaml"
CONFIG_ENV = "CHORDLOAD_CONFIG"
# environment variable -> the key of the config it overrides
ENV_OVERRIDES: dict[str, tuple[str, ...]] = {
    "CHORDLOAD_BROKER_URL": ("broker",),
    "CHORDLOAD_RESULT_BACKEND": ("result_backend",),
    "CHORDLOAD_METADATA_URL": ("metadata",),
    "CHORDLOAD_QUEUE": ("celery", "queue"),
    "CHORDLOAD_VISIBILITY_TIMEOUT_S": ("celery", "visibility_timeout_s"),
    "CHORDLOAD_DISPATCH_INTERVAL_S": ("schedule", "dispatch_interval_s"),
    "CHORDLOAD_RECONCILE_INTERVAL_S": ("schedule", "reconcile_interval_s"),
    "CHORDLOAD_SCHEDULE_GRACE_S": ("schedule", "grace_s"),
    "CHORDLOAD_PROGRESS_INTERVAL_S": ("progress_interval_s",),
    "CHORDLOAD_PLANNING_TIMEOUT_S": ("planning", "timeout_s"),
    "CHORDLOAD_LOG_JSON": ("log_json",),
}
ENV_ONLY_REQUIRED = ("CHORDLOAD_BROKER_URL", "CHORDLOAD_METADATA_URL")
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_PLACEHOLDER = re.compile(r"__chordload_var_(\d+)__")


def database_url(url: str) -> str:
    """A SQLAlchemy URL of a known dialect+driver (nothing is connected; the message never
    repeats the URL, which may hold a password)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ValueError(
            "not a valid database URL (expected the SQLAlchemy form "
            "dialect+driver://user:password@host:port/database)"
        ) from None
    try:
        parsed.get_dialect()
    except NoSuchModuleError:
        raise ValueError(
            f"unknown database dialect/driver '{parsed.drivername}' "
            "(e.g. postgresql+psycopg2, sqlite)"
        ) from None
    return url


DatabaseUrl = Annotated[str, AfterValidator(database_url)]
METADATA_BACKENDS = ("postgresql", "sqlite")


def _metadata_url(url: str) -> str:
    """The metadata database is PostgreSQL, or SQLite for one machine: its partial unique
    indexes (one active run per mapping) and UPDATE ... RETURNING need one of the two."""
    from sqlalchemy.engine import make_url

    backend = make_url(url).get_backend_name()
    if backend not in METADATA_BACKENDS:
        raise ValueError(
            f"the metadata database must be PostgreSQL (or SQLite on one machine), "
            f"not {backend}; warehouses on {backend} go under 'connections'"
        )
    return url


MetadataUrl = Annotated[str, AfterValidator(database_url), AfterValidator(_metadata_url)]


class CelerySpec(BaseModel):
    """Celery knobs users may need to tune; everything else is fixed in shared/broker.py."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    queue: str = Field(default="chordload", min_length=1)
    visibility_timeout_s: int = Field(default=4 * 3600, ge=1)
    heartbeat_grace_s: int = Field(default=300, ge=0)
    # reconcile resends a run's PENDING chunks when nothing moved for this long and neither
    # the queue nor any worker holds their messages (lost, e.g. by a Redis restart)
    lost_message_grace_s: int = Field(default=120, ge=1)
    broker_transport_options: dict[str, Any] = Field(default_factory=dict)
    result_backend_transport_options: dict[str, Any] = Field(default_factory=dict)


class ScheduleSpec(BaseModel):
    """Beat: how often it sends ``dispatch_due`` and ``reconcile``, and how late a cron slot
    may still be launched (an older slot, missed while beat or every worker was down, is
    skipped; the next one is not)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    dispatch_interval_s: float = Field(default=5.0, ge=0.5)
    reconcile_interval_s: float = Field(default=30.0, ge=1.0)
    grace_s: float = Field(default=3600.0, ge=1.0)


class TargetSessionSpec(BaseModel):
    """Limits on the sessions chunk attempts write targets with. A worker frozen in the
    middle of a batch (SIGSTOP, a VM pause, a swap storm) keeps its transaction and its row
    locks until its session ends: the idle-in-transaction timeout ends it, so a newer attempt
    or run waits at most that long. The attempt's metadata sessions (its chunk_log row) carry
    the same idle-in-transaction limit. PostgreSQL: idle_in_transaction_session_timeout and
    statement_timeout; MariaDB: idle_transaction_timeout and max_statement_time; SQLite and
    MySQL have no such limits (a frozen writer there holds the target until it wakes)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    idle_in_transaction_timeout_s: int = Field(default=60, ge=1)
    statement_timeout_s: int = Field(default=3600, ge=0, description="0: no limit")


class PlanningSpec(BaseModel):
    """Planning (reading the high-water mark, estimating, counting, splitting) runs source
    queries that can be slow: ``timeout_s`` bounds it, and reconcile fails a run left PLANNING
    this long by a coordinator that died."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    timeout_s: float = Field(default=1800.0, gt=0)


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    metadata: MetadataUrl = Field(min_length=1)
    broker: str = "redis://127.0.0.1:6379/0"
    result_backend: str = "redis://127.0.0.1:6379/1"
    connections: dict[str, DatabaseUrl] = Field(default_factory=dict)
    mappings: dict[str, MappingSpec] = Field(default_factory=dict)
    celery: CelerySpec = CelerySpec()
    schedule: ScheduleSpec = ScheduleSpec()
    target_sessions: TargetSessionSpec = TargetSessionSpec()
    planning: PlanningSpec = PlanningSpec()
    notify: NotifySpec | None = None  # every mapping's webhook, unless it names its own
    log_json: bool = Field(default=False, description="workers and beat log JSON lines")
    progress_interval_s: float = Field(
        default=5.0,
        gt=0,
        description="how often `run --wait` and `watch` print a progress "
        "line when the output is not a terminal",
    )

    @model_validator(mode="after")
    def _connections_exist(self) -> Settings:
        for name, mapping in self.mappings.items():
            for role in ("source", "target"):
                conn = getattr(mapping, role).connection
                if conn not in self.connections:
                    known = ", ".join(sorted(self.connections)) or "none defined"
                    raise ValueError(
                        f"mapping '{name}': {role}.connection '{conn}' is not defined under "
                        f"'connections' (known: {known})"
                    )
        return self

    def mapping(self, mapref: str) -> MappingSpec:
        try:
            return self.mappings[mapref]
        except KeyError:
            known = ", ".join(sorted(self.mappings)) or "none"
            raise ConfigError(
                f"unknown mapping '{mapref}' (mappings in the config: {known})"
            ) from None

    @property
    def visibility_timeout_s(self) -> int:
        """The broker's visibility timeout (``celery.visibility_timeout_s``)."""
        return self.celery.visibility_timeout_s

    def connection_url(self, name: str) -> str:
        try:
            return self.connections[name]
        except KeyError:
            raise ConfigError(
                f"connection '{name}' is not defined under 'connections' in this "
                "process's config; workers resolve connection names from their "
                "own config/env"
            ) from None


def protect_env_refs(text: str) -> tuple[str, list[re.Match[str]]]:
    """Swap each ``${VAR}`` in the YAML text for a plain placeholder, so the file parses the
    same whatever the variables hold; ``substitute_env`` fills the parsed values."""
    refs: list[re.Match[str]] = []

    def repl(match: re.Match[str]) -> str:
        refs.append(match)
        return f"__chordload_var_{len(refs) - 1}__"

    return _VAR.sub(repl, text), refs


def substitute_env(
    value: Any, source: str, refs: list[re.Match[str]], path: tuple[Any, ...] = ()
) -> Any:
    """Replace ``${VAR}`` / ``${VAR:-default}`` placeholders in every string of the parsed
    file; an unset variable without default is an error naming where it is used."""
    if isinstance(value, dict):
        return {
            substitute_env(k, source, refs, path): substitute_env(v, source, refs, (*path, k))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [substitute_env(v, source, refs, (*path, i)) for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def repl(match: re.Match[str]) -> str:
        name, default = refs[int(match.group(1))].group(1, 2)
        env = os.environ.get(name)
        if env is None:
            if default is None:
                where = ".".join(str(p) for p in path) or "(top level)"
                raise ConfigError(
                    f"{source}: {where}: environment variable ${{{name}}} is not "
                    f"set (set it, or write ${{{name}:-default}})"
                )
            return default
        return env

    return _PLACEHOLDER.sub(repl, value)


def format_validation_error(err: ValidationError, source: str) -> str:
    lines = [f"{source} is invalid:"]
    for item in err.errors():
        where = ".".join(str(p) for p in item["loc"])
        msg = item["msg"]
        if item["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling against the config reference in README.md)"
        elif item["type"] == "missing":
            msg = "required key is missing"
        msg = msg.removeprefix("Value error, ")
        lines.append(f"  - {where}: {msg}" if where else f"  - {msg}")
    return "\n".join(lines)


def _set_environment_overrides(raw: dict[str, Any]) -> dict[str, Any]:
    """``raw`` with the keys that set environment variables override."""
    raw = dict(raw)
    for env, path in ENV_OVERRIDES.items():
        value = os.environ.get(env)
        if not value:
            continue
        node = raw
        for key in path[:-1]:
            child = node.get(key)
            node[key] = child = dict(child) if isinstance(child, dict) else {}
            node = child
        node[path[-1]] = value
    return raw


def overridden_keys() -> set[tuple[str, ...]]:
    return {path for env, path in ENV_OVERRIDES.items() if os.environ.get(env)}


def settings_from_dict(raw: dict[str, Any], source: str = "config") -> Settings:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of keys at the top level")
    try:
        return Settings.model_validate(_set_environment_overrides(raw))
    except ValidationError as err:
        message = format_validation_error(err, source)
        names = [
            env
            for env, path in ENV_OVERRIDES.items()
            if os.environ.get(env) and ".".join(path) in message
        ]
        if names:
            message += f"\n  (set from the environment: {', '.join(names)})"
        raise ConfigError(message) from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping: plain YAML keeps the
    last one silently, so a mapping defined twice under one name would lose the first."""


def _unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _value in node.value:
        key = loader.construct_object(key_node)
        try:
            first = seen.setdefault(key, key_node.start_mark.line)
        except TypeError:  # an unhashable key: YAML itself refuses it below
            continue
        if first != key_node.start_mark.line:
            raise yaml.constructor.ConstructorError(
                "while reading a mapping",
                node.start_mark,
                f"found the key {key!r} twice (first on line {first + 1}); give it once",
                key_node.start_mark,
            )
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _unique_mapping,
)


def resolve_config_path(path: str | os.PathLike[str] | None = None) -> Path:
    if path:
        return Path(path)
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV])
    return Path(DEFAULT_CONFIG_FILE)


def load_settings(path: str | os.PathLike[str] | None = None) -> Settings:
    """The settings of ``path``, else ``$CHORDLOAD_CONFIG``, else ``./chordload.yaml``; with
    none of those, the environment alone if it names the broker and the metadata database."""
    config_path = resolve_config_path(path)
    if not config_path.is_file():
        explicit = path or os.environ.get(CONFIG_ENV)
        if not explicit and all(os.environ.get(env) for env in ENV_ONLY_REQUIRED):
            return settings_from_dict({}, "environment")
        raise ConfigError(
            f"config file {config_path} not found: pass --config PATH or set {CONFIG_ENV} "
            f"(`chordload` and `celery -A workers` read the same file), or set "
            f"{' and '.join(ENV_ONLY_REQUIRED)} to run from the environment alone"
        )
    try:
        text, refs = protect_env_refs(config_path.read_text())
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read config file {config_path}: {err}") from None
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader) or {}  # a SafeLoader subclass
    except yaml.YAMLError as err:
        message = _PLACEHOLDER.sub(lambda m: refs[int(m.group(1))].group(0), str(err))
        raise ConfigError(f"{config_path} is not valid YAML: {message}") from None
    if isinstance(raw, dict):  # keys the environment overrides need no substitution
        raw = _without(raw, overridden_keys())
    return settings_from_dict(substitute_env(raw, str(config_path), refs), str(config_path))


def _without(raw: dict[str, Any], paths: set[tuple[str, ...]]) -> dict[str, Any]:
    out = {}
    for key, value in raw.items():
        if (key,) in paths:
            continue
        nested = {p[1:] for p in paths if len(p) > 1 and p[0] == key}
        out[key] = _without(value, nested) if nested and isinstance(value, dict) else value
    return out
