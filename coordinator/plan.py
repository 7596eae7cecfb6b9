"""Planning a run: validate the mapping against the source, freeze the window (incremental,
full reload or backfill; lag applied), estimate rows, choose the chunk count and compute
key-range boundaries (quantile, range or offset). Nothing is written here except the
target table when it does not exist yet (created once, before any chunk can race for it)."""
from __future__ import annotations

import math
import uuid
from dataclasses import dataclass

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

from shared.engines import READ_ONLY, get_engine, mask_url
from shared.dialects import adapter_for
from shared.dialects.base import DialectAdapter
from shared.dialects.types import SourceColumn, TypeKind
from shared.errors import ConfigError, SourceUnavailableError, describe_db_error
from shared.config.mapping import CheckpointStrategy, ChunkStrategy, DeletesMode, MappingSpec
from shared.metadata import store
from shared.checkpoint import PythonFilter, load_function
from shared.config.settings import Settings
from shared.run.values import Value, coerce_like, decode_value, minus_lag, stride_bounds
from shared.run.window import ChunkRange, Window, ranges_from_bounds


VALIDITY_KINDS = {TypeKind.DATE: "date", TypeKind.TIMESTAMP: "timestamp",
                  TypeKind.TIMESTAMPTZ: "timestamptz"}


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
    mode: str = "incremental"  # incremental | full | backfill
    checkpoint_from: Value = None  # the stored checkpoint when the run was planned
    python_filter: PythonFilter | None = None
    validity_kind: str | None = None

    @property
    def load_kind(self) -> str:
        if self.mode == "backfill":
            return "backfill"
        if self.mode == "full" or self.spec.checkpoint_strategy is CheckpointStrategy.NONE:
            return "full"
        return "initial" if self.checkpoint_from is None else "incremental"

    def run_document(self) -> dict:
        """What workers and finalize need beyond the spec (process_log.mapping["run"])."""
        return {"mode": self.mode, "window": self.window.to_document(),
                "python": self.python_filter.to_document() if self.python_filter else None,
                "validity_kind": self.validity_kind}


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


def check_columns(mapref: str, spec: MappingSpec, columns: list[str]) -> None:
    """Every column the mapping names must be returned by the source query, spelled exactly."""
    available = set(columns)
    named = [("keys", k) for k in spec.keys]
    field = "checkpoint.columns" if spec.checkpoint.columns else "checkpoint.column"
    named += [(field, c) for c in spec.checkpoint_columns]
    if spec.chunking.column:  # the default split column is the first key, checked above
        named.append(("chunking.column", spec.chunking.column))
    if spec.scd.valid_from:
        named.append(("scd.valid_from", spec.scd.valid_from))
    named += [("scd.tracked", c) for c in spec.scd.tracked or ()]
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
    if spec.scd.valid_from:
        kind = next(c.type.kind for c in columns if c.name == spec.scd.valid_from)
        if kind not in VALIDITY_KINDS:
            raise ConfigError(f"mapping '{mapref}': scd.valid_from '{spec.scd.valid_from}' is a "
                              f"{kind.value} column; it must be a date or timestamp")
    return adapter, columns


def chunk_count(spec: MappingSpec, estimated_rows: int, override: int | None) -> tuple[int, str]:
    if override is not None:
        return max(1, override), f"{override} chunks requested with --chunks"
    if estimated_rows < spec.chunking.min_rows_for_parallel:
        return 1, (f"1 chunk: ~{estimated_rows} rows is below min_rows_for_parallel "
                   f"({spec.chunking.min_rows_for_parallel})")
    chunking = spec.chunking
    wanted = math.ceil(estimated_rows / chunking.rows_per_chunk)
    # Chunks run in rounds of `parallelism`; 3 chunks on 2 slots leave one slot idle for the
    # whole last third, 4 smaller ones do not.
    slots = chunking.parallelism
    rounded = math.ceil(wanted / slots) * slots if wanted > 1 else wanted
    n = max(1, min(rounded, chunking.max_chunks))
    if n == 1:
        return 1, f"1 chunk for ~{estimated_rows} rows"
    note = f"{n} chunks of ~{math.ceil(estimated_rows / n)} rows for ~{estimated_rows} rows"
    if rounded > n:
        note += " (capped by max_chunks)"
    elif rounded > wanted:
        note += f" (rounded up to a multiple of parallelism {slots})"
    return n, note


def _boundaries(adapter: DialectAdapter, conn: Connection, mapref: str, spec: MappingSpec,
                where: str, params: dict, parts: int, estimate: int) -> list[Value]:
    if parts <= 1:
        return []
    query, strategy = spec.source.query, spec.chunking.strategy
    if strategy is ChunkStrategy.RANGE:
        low, high = adapter.min_max(conn, query, where, params, spec.split_column)
        try:
            return stride_bounds(low, high, parts)
        except TypeError:
            raise ConfigError(
                f"mapping '{mapref}': chunking.strategy range needs a numeric, date or timestamp "
                f"split column; '{spec.split_column}' holds {type(low).__name__} values (use "
                f"strategy quantile or offset)") from None
    if strategy is ChunkStrategy.OFFSET:
        total = estimate if spec.chunking.exact_count else adapter.estimate_rows(
            conn, query, where, params, True)  # OFFSET positions need the real count
        return adapter.offset_boundaries(conn, query, where, params, spec.split_columns, parts,
                                         total)
    return adapter.split_boundaries(conn, query, where, params, spec.split_column, parts)


def _typed(mapref: str, option: str, text: str, example: Value) -> Value:
    """A --from/--to value read as the checkpoint's type (the source's high-water mark, or
    the stored checkpoint)."""
    try:
        return coerce_like(text, example)
    except ValueError as err:
        kind = type(example).__name__ if example is not None else "value"
        raise ConfigError(f"mapping '{mapref}': {option} '{text}' is not a {kind} like the "
                          f"checkpoint's values ({err})") from None


def _lagged(mapref: str, value: Value, lag: float) -> Value:
    try:
        return minus_lag(value, lag)
    except TypeError as err:
        raise ConfigError(f"mapping '{mapref}': checkpoint.lag: {err}") from None


def _cp_arg(columns: list[str]) -> str | tuple[str, ...] | None:
    if not columns:
        return None
    return columns[0] if len(columns) == 1 else tuple(columns)


def plan_run(settings: Settings, mapref: str, metadata_engine, *,
             chunks_override: int | None = None, full: bool = False,
             window_from: str | None = None, window_to: str | None = None) -> Plan:
    """Plan one run. ``full``: ignore the stored checkpoint (a full reload that still sets
    the new checkpoint). ``window_from``/``window_to``: a backfill of that window (text,
    read as the checkpoint's type), which never moves the stored checkpoint."""
    spec = settings.mapping(mapref)
    strategy = spec.checkpoint_strategy
    backfill = window_from is not None or window_to is not None
    if full and backfill:
        raise ConfigError(f"mapping '{mapref}': --full reloads everything and --from/--to "
                          f"load one window; give one or the other")
    if backfill and strategy is CheckpointStrategy.NONE:
        raise ConfigError(f"mapping '{mapref}' has no checkpoint (strategy NONE): a backfill "
                          f"with --from/--to needs checkpoint strategy KEY or PYTHON")
    if window_to is not None and window_from is None:
        raise ConfigError(f"mapping '{mapref}': --to needs --from")
    adapter, source_columns = read_source_columns(settings, mapref)
    columns = [c.name for c in source_columns]
    validity_kind = None
    if spec.scd.valid_from:
        validity_kind = next(VALIDITY_KINDS[c.type.kind] for c in source_columns
                             if c.name == spec.scd.valid_from)
    if strategy is CheckpointStrategy.PYTHON:
        load_function(spec.checkpoint.function)  # refuse now what workers could not import
    stored = store.get_checkpoint(metadata_engine, mapref)
    stored_value = decode_value(stored.value) if (
        stored is not None and strategy is not CheckpointStrategy.NONE) else None
    mode = "backfill" if backfill else (
        "full" if full or strategy is CheckpointStrategy.NONE else "incremental")
    cp_columns = spec.checkpoint_columns
    lag = spec.checkpoint.lag
    notes: list[str] = []
    python_filter = None
    url = settings.connection_url(spec.source.connection)
    try:
        with _source_connection(adapter, mapref, url) as conn:
            window = Window()
            if strategy is CheckpointStrategy.KEY:
                hwm = adapter.max_row(conn, spec.source.query, cp_columns)
                if lag and hwm is not None:
                    _lagged(mapref, hwm, lag)  # refuse a lag the column's values cannot take
                if mode == "incremental" and stored_value is not None and \
                        isinstance(stored_value, tuple) != (len(cp_columns) > 1):
                    raise ConfigError(
                        f"mapping '{mapref}': the stored checkpoint {stored_value!r} does not "
                        f"fit checkpoint columns {cp_columns} (did the config change?); run "
                        f"once with --full to reload and store a new checkpoint")
                if mode == "incremental":
                    lower = stored_value
                    if lower is not None and lag:
                        lower = _lagged(mapref, lower, lag)
                        notes.append(f"lag {lag}: window from {lower} (checkpoint "
                                     f"{stored_value})")
                    window = Window(_cp_arg(cp_columns), lower, hwm)
                elif mode == "full":
                    window = Window(_cp_arg(cp_columns), None, hwm, include_nulls=True)
                    notes.append("full reload: the stored checkpoint is ignored")
                else:
                    example = hwm if hwm is not None else stored_value
                    lower = _typed(mapref, "--from", window_from, example)
                    upper = (_typed(mapref, "--to", window_to, example) if window_to is not None
                             else hwm)
                    window = Window(_cp_arg(cp_columns), lower, upper, include_nulls=False)
                    notes.append(f"backfill {lower} .. {upper}: the stored checkpoint does "
                                 f"not move")
            elif strategy is CheckpointStrategy.PYTHON:
                path = spec.checkpoint.function
                if mode == "incremental":
                    lower = _lagged(mapref, stored_value, lag) if stored_value is not None else None
                    python_filter = PythonFilter(path, lower)
                elif mode == "full":
                    python_filter = PythonFilter(path)
                    notes.append("full reload: the stored checkpoint is ignored")
                else:
                    python_filter = PythonFilter(
                        path, _typed(mapref, "--from", window_from, stored_value), True,
                        _typed(mapref, "--to", window_to, stored_value)
                        if window_to is not None else None)
                    notes.append(f"backfill {python_filter.lower} .. "
                                 f"{python_filter.upper or '-'}: the stored checkpoint does "
                                 f"not move")
            where, params = window.predicate(adapter)
            estimate = adapter.estimate_rows(conn, spec.source.query, where, params,
                                             spec.chunking.exact_count)
            if strategy is CheckpointStrategy.PYTHON:
                parts = 1
                note = ("1 chunk: checkpoint strategy PYTHON computes each row's checkpoint "
                        "value in the worker, and such values cannot be split into key ranges "
                        "or ordered across parallel chunks")
                if chunks_override is not None:
                    note += f" (--chunks {chunks_override} ignored)"
            else:
                parts, note = chunk_count(spec, estimate, chunks_override)
            bounds = _boundaries(adapter, conn, mapref, spec, where, params, parts, estimate)
    except DBAPIError as exc:  # e.g. max() or ORDER BY on a type that has none
        if exc.connection_invalidated:
            raise _connect_error(mapref, "source", url, exc) from None
        raise ConfigError(f"mapping '{mapref}': the source query fails while planning (window "
                          f"on {', '.join(cp_columns) or '-'}, chunks on "
                          f"{', '.join(spec.split_columns)}): {describe_db_error(exc)}") from None
    ensure_target(settings, mapref, spec, source_columns)
    ranges = ranges_from_bounds(bounds)
    if parts > 1:
        if spec.chunking.strategy is not ChunkStrategy.QUANTILE:
            note += (f" ({spec.chunking.strategy.value} split on "
                     f"{', '.join(spec.split_columns)})")
        if len(ranges) < parts:
            note += f"; {len(ranges)} distinct key ranges"
    if notes:
        note += "; " + "; ".join(notes)
    return Plan(new_run_id(), mapref, spec, columns, window, estimate, ranges, note, mode,
                stored_value, python_filter, validity_kind)


def _target_options(spec: MappingSpec, source_columns: list[SourceColumn]) -> dict:
    """SCD2 validity columns typed like the valid_from source column; is_deleted for
    deletes: new_record."""
    options: dict = {}
    if spec.scd.type == 2 and spec.scd.valid_from:
        options["valid_from_type"] = next(c.type for c in source_columns
                                          if c.name == spec.scd.valid_from)
    if spec.scd.type == 2 and spec.scd.deletes is DeletesMode.NEW_RECORD:
        options["is_deleted"] = True
    return options


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
                                      spec.scd.audit_columns, **_target_options(spec, source_columns))
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
