"""Planning a run: validate the mapping against the source, freeze the window, estimate rows,
choose the chunk count and compute key-range boundaries. Nothing is written here except the
target table when it does not exist yet (created once, before any chunk can race for it)."""
from __future__ import annotations

import math
import uuid
from dataclasses import dataclass

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

from shared.db import READ_ONLY, get_engine, mask_url
from shared.dialects import adapter_for
from shared.dialects.base import DialectAdapter
from shared.dialects.types import SourceColumn
from shared.errors import ConfigError, SourceUnavailableError, describe_db_error
from shared.mapping import MappingSpec
from shared.metadata import store
from shared.settings import Settings
from shared.values import ScalarValue, decode_value
from shared.window import ChunkRange, Window, ranges_from_bounds


@dataclass(frozen=True)
class Plan:
    run_id: str
    mapref: str
    spec: MappingSpec
    columns: list[str]
    window: Window
    estimated_rows: int
    ranges: list[ChunkRange]
    note: str

    @property
    def load_kind(self) -> str:
        if self.spec.checkpoint_column is None:
            return "full"
        return "initial" if self.window.lower is None else "incremental"


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


def check_columns(mapref: str, spec: MappingSpec, columns: list[str]) -> None:
    """Every column the mapping names must be returned by the source query, spelled exactly."""
    available = set(columns)
    named = [("keys", k) for k in spec.keys]
    if spec.checkpoint_column:
        named.append(("checkpoint.column", spec.checkpoint_column))
    if spec.chunking.column:  # the default split column is the first key, checked above
        named.append(("chunking.column", spec.chunking.column))
    for role, name in spec.scd.audit_names().items():
        if name in available:
            raise ConfigError(
                f"mapping '{mapref}': the source returns a column '{name}', which is also the "
                f"SCD{spec.scd.type} audit column for {role}; rename the audit column "
                f"(scd.audit_columns.{role}: dw_{name}) or alias the source column")
    problems = []
    for field, column in named:
        if column not in available:
            near = [c for c in columns if c.lower() == column.lower()]
            hint = f" (did you mean '{near[0]}'? names are case-sensitive)" if near else ""
            problems.append(f"{field} '{column}' is not a column of the source query{hint}")
    if problems:
        raise ConfigError(f"mapping '{mapref}': {'; '.join(problems)}; the query returns: "
                          f"{', '.join(columns)}")


def _connect_error(mapref: str, role: str, url: str, exc: Exception) -> SourceUnavailableError:
    return SourceUnavailableError(f"mapping '{mapref}': cannot reach the {role} database "
                                  f"{mask_url(url)}: {describe_db_error(exc)}")


def _source_connection(adapter: DialectAdapter, mapref: str, url: str) -> Connection:
    """A read-only source connection; failing to connect is 'cannot reach', while an error
    once connected is the query's (SQLite reports both as OperationalError)."""
    try:
        return adapter.engine.connect().execution_options(**READ_ONLY)
    except DBAPIError as exc:
        raise _connect_error(mapref, "source", url, exc) from None


def read_source_columns(settings: Settings, mapref: str) -> tuple[DialectAdapter, list[SourceColumn]]:
    spec = settings.mapping(mapref)
    url = settings.connection_url(spec.source.connection)
    engine = get_engine(url)
    adapter = adapter_for(engine)
    try:
        with _source_connection(adapter, mapref, url) as conn:
            columns = adapter.source_columns(conn, spec.source.query)
    except DBAPIError as exc:
        if exc.connection_invalidated:
            raise _connect_error(mapref, "source", url, exc) from None
        raise ConfigError(f"mapping '{mapref}': the source query fails: "
                          f"{describe_db_error(exc)}") from None
    check_columns(mapref, spec, [c.name for c in columns])
    return adapter, columns


def chunk_count(spec: MappingSpec, estimated_rows: int, override: int | None) -> tuple[int, str]:
    if override is not None:
        return max(1, override), f"{override} chunks requested with --chunks"
    if estimated_rows < spec.chunking.min_rows_for_parallel:
        return 1, (f"1 chunk: ~{estimated_rows} rows is below min_rows_for_parallel "
                   f"({spec.chunking.min_rows_for_parallel})")
    wanted = math.ceil(estimated_rows / spec.chunking.rows_per_chunk)
    n = max(1, min(wanted, spec.chunking.max_chunks))
    capped = " (capped by max_chunks)" if wanted > n else ""
    return n, f"{n} chunks of ~{spec.chunking.rows_per_chunk} rows for ~{estimated_rows} rows{capped}"


def _boundaries(adapter: DialectAdapter, conn: Connection, spec: MappingSpec, where: str,
                params: dict, parts: int) -> list[ScalarValue]:
    if parts <= 1:
        return []
    return adapter.split_boundaries(conn, spec.source.query, where, params, spec.split_column,
                                    parts)


def plan_run(settings: Settings, mapref: str, metadata_engine, *,
             chunks_override: int | None = None) -> Plan:
    spec = settings.mapping(mapref)
    adapter, source_columns = read_source_columns(settings, mapref)
    columns = [c.name for c in source_columns]
    stored = store.get_checkpoint(metadata_engine, mapref)
    url = settings.connection_url(spec.source.connection)
    try:
        with _source_connection(adapter, mapref, url) as conn:
            hwm = None
            if spec.checkpoint_column:
                hwm = adapter.max_value(conn, spec.source.query, spec.checkpoint_column)
            lower = decode_value(stored.value) if (stored and spec.checkpoint_column) else None
            window = Window(spec.checkpoint_column, lower, hwm)
            where, params = window.predicate(adapter)
            estimate = adapter.estimate_rows(conn, spec.source.query, where, params,
                                             spec.chunking.exact_count)
            parts, note = chunk_count(spec, estimate, chunks_override)
            bounds = _boundaries(adapter, conn, spec, where, params, parts)
    except DBAPIError as exc:  # e.g. max() or ORDER BY on a type that has none
        if exc.connection_invalidated:
            raise _connect_error(mapref, "source", url, exc) from None
        raise ConfigError(f"mapping '{mapref}': the source query fails while planning (window "
                          f"on {spec.checkpoint_column or '-'}, chunks on {spec.split_column}): "
                          f"{describe_db_error(exc)}") from None
    ensure_target(settings, mapref, spec, source_columns)
    ranges = ranges_from_bounds(bounds)
    if parts > 1 and len(ranges) < parts:
        note += f"; {len(ranges)} distinct key ranges"
    return Plan(new_run_id(), mapref, spec, columns, window, estimate, ranges, note)


def ensure_target(settings: Settings, mapref: str, spec: MappingSpec,
                  source_columns: list[SourceColumn]) -> None:
    url = settings.connection_url(spec.target.connection)
    engine = get_engine(url)
    adapter = adapter_for(engine)
    try:
        connection = engine.connect()
    except DBAPIError as exc:
        raise _connect_error(mapref, "target", url, exc) from None
    try:
        with connection as conn, conn.begin():
            if adapter.target_exists(conn, spec.target):
                adapter.check_target(conn, spec.target, [c.name for c in source_columns],
                                     spec.scd.type, list(spec.scd.audit_names().values()))
            else:
                adapter.create_target(conn, spec.target, source_columns, spec.keys, spec.scd.type,
                                      spec.scd.audit_columns)
    except ConfigError as err:  # an existing target that does not fit: name the mapping
        raise ConfigError(f"mapping '{mapref}': {err}") from None
    except DBAPIError as exc:
        if exc.connection_invalidated:
            raise _connect_error(mapref, "target", url, exc) from None
        # Two coordinators may race to create it: if it exists now, the other one won.
        with engine.begin() as conn:
            if adapter.target_exists(conn, spec.target):
                adapter.check_target(conn, spec.target, [c.name for c in source_columns],
                                     spec.scd.type, list(spec.scd.audit_names().values()))
                return
        raise ConfigError(f"mapping '{mapref}': cannot create target table "
                          f"{spec.target.table}: {describe_db_error(exc)}") from None
