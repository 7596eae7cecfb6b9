"""``chordload validate``: everything a run needs, checked before a run needs it.

Each mapping: its source query runs and returns the columns the mapping names; its target
database exists and is reachable, and its target table either exists with the columns a load
needs or will be created. Then what every run needs: the metadata database (reachable, at
the head revision), the broker, and a worker that consumes the queue (only a warning: workers
may well start later). Nothing is written anywhere: a SQLite file that does not exist is
reported, not created.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from sqlalchemy import inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from coordinator.plan import validate_mapping
from coordinator.presence import no_worker_message, start_worker_command, survey
from shared.broker import require_broker
from shared.config.settings import Settings
from shared.dialects import adapter_for
from shared.dialects.types import SourceColumn
from shared.engines import get_engine, mask_url
from shared.errors import ChordloadError, ConfigError, SourceUnavailableError, describe_db_error
from shared.metadata.schema import current_revision, head_revision

METADATA = "metadata database"


class Verdict(str, Enum):
    OK = "ok"
    WARNING = "WARNING"
    INVALID = "INVALID"


@dataclass(frozen=True)
class Check:
    subject: str  # a mapping name, or "metadata database" / "broker" / "workers"
    verdict: Verdict
    text: str

    def line(self) -> str:
        sep = " " if self.verdict is Verdict.OK and self.text.startswith("(") else ": "
        return f"{self.subject}: {self.verdict.value}{sep}{self.text}"


def _missing_sqlite_file(url: str) -> str | None:
    """The path of a SQLite database file that does not exist (connecting would create it)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    path = Path(parsed.database)
    return None if path.exists() else str(path)


def _check_sqlite_files(settings: Settings, mapref: str) -> None:
    spec = settings.mapping(mapref)
    for role, connection in (
        ("source", spec.source.connection),
        ("target", spec.target.connection),
    ):
        missing = _missing_sqlite_file(settings.connection_url(connection))
        if missing:
            raise ConfigError(
                f"mapping '{mapref}': the {role} database file {missing} (connection "
                f"'{connection}') does not exist; fix the path in connections.{connection}"
            )


def check_target(settings: Settings, mapref: str, source_columns: list[SourceColumn]) -> str:
    """The target database is reachable and exists; returns what a run will do with the
    target table (load into it, or create it). ConfigError when the table lacks columns."""
    spec = settings.mapping(mapref)
    url = settings.connection_url(spec.target.connection)
    engine = get_engine(url)
    adapter = adapter_for(engine)
    try:
        conn = engine.connect()
    except DBAPIError as exc:
        raise SourceUnavailableError(
            f"mapping '{mapref}': cannot reach the target database {mask_url(url)} "
            f"(connection '{spec.target.connection}'): {describe_db_error(exc)}"
        ) from None
    with conn:
        schema = spec.target.schema_name
        if (
            schema
            and engine.dialect.name != "sqlite"
            and schema not in inspect(conn).get_schema_names()
        ):
            raise ConfigError(
                f"mapping '{mapref}': cannot create target table {spec.target.table}: schema "
                f"'{schema}' does not exist in {mask_url(url)}; create it or fix target.table"
            )
        if not adapter.target_exists(conn, spec.target):
            return f"target {spec.target.table} will be created by the first run"
        try:
            adapter.check_target(
                conn,
                spec.target,
                [c.name for c in source_columns],
                spec.scd.type,
                list(spec.scd.audit_names().values()),
            )
            adapter.check_column_types(conn, spec.target, source_columns)
        except ConfigError as err:
            raise ConfigError(f"mapping '{mapref}': {err}") from None
    return f"target {spec.target.table} exists and has the columns a load needs"


def check_mapping(settings: Settings, mapref: str) -> Check:
    try:
        _check_sqlite_files(settings, mapref)
        columns = validate_mapping(settings, mapref)
        target = check_target(settings, mapref, columns)
    except ChordloadError as err:
        return Check(mapref, Verdict.INVALID, str(err))
    names = [c.name for c in columns]
    return Check(mapref, Verdict.OK, f"({len(names)} columns: {', '.join(names)}); {target}")


def check_metadata(settings: Settings) -> Check:
    url = mask_url(settings.metadata)
    missing = _missing_sqlite_file(settings.metadata)
    if missing:
        return Check(
            METADATA,
            Verdict.INVALID,
            f"database file {missing} does not exist: run `chordload db upgrade` to create it",
        )
    try:
        current = current_revision(get_engine(settings.metadata))
    except DBAPIError as exc:
        return Check(
            METADATA,
            Verdict.INVALID,
            f"cannot reach {url}: {describe_db_error(exc)}; fix `metadata` in the config "
            f"(CHORDLOAD_METADATA_URL)",
        )
    head = head_revision()
    if current != head:
        return Check(
            METADATA,
            Verdict.INVALID,
            f"{url} is at revision {current or 'none'}, not {head}: run `chordload db upgrade`",
        )
    return Check(METADATA, Verdict.OK, f"{url} at revision {head} (the latest)")


def check_broker(settings: Settings) -> Check:
    try:
        require_broker(settings)
    except ChordloadError as err:
        return Check("broker", Verdict.INVALID, str(err).replace(" Nothing was launched.", ""))
    return Check("broker", Verdict.OK, mask_url(settings.broker))


def check_workers(settings: Settings, config: str | None) -> Check:
    try:
        found = survey(settings, tasks=False)
    except Exception as exc:  # noqa: BLE001 - the broker answered a moment ago
        return Check("workers", Verdict.WARNING, f"cannot ask the workers: {exc}")
    if not found.consumers:
        message = no_worker_message(found, start_worker_command(settings, config))
        return Check("workers", Verdict.WARNING, message.replace("the run waits", "runs wait"))
    return Check(
        "workers",
        Verdict.OK,
        f"{len(found.consumers)} consume queue '{found.queue}': {', '.join(found.consumers)}",
    )


def validate(settings: Settings, maprefs: list[str], config: str | None = None) -> list[Check]:
    """Every check, mappings first; the workers are asked only when all else is ok."""
    checks = [check_mapping(settings, m) for m in maprefs]
    checks.append(check_metadata(settings))
    broker = check_broker(settings)
    checks.append(broker)
    if all(c.verdict is Verdict.OK for c in checks):
        # asking the workers takes a second; with something INVALID that comes first
        checks.append(check_workers(settings, config))
    return checks
