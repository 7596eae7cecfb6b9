"""Planning a run: validate the mapping against the source, freeze the window (incremental,
full reload or backfill; lag applied), estimate rows, choose the chunk count and compute
key-range boundaries (quantile, range or offset). Nothing is written here except the
target table when it does not exist yet (created once, before any chunk can race for it)."""

from __future__ import annotations

import math
import re
import time
import uuid
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError

from shared import checkpoint
from shared.checkpoint import load_function
from shared.config.mapping import CheckpointStrategy, ChunkStrategy, DeletesMode, MappingSpec
from shared.config.settings import Settings
from shared.dialects import adapter_for
from shared.dialects.base import INTERNAL_COLUMNS, DialectAdapter
from shared.dialects.types import SourceColumn, TypeKind
from shared.engines import READ_ONLY, get_engine, mask_url
from shared.errors import ConfigError, SourceUnavailableError, describe_db_error
from shared.metadata import store
from shared.run.modes import RunMode
from shared.run.plan import RunPlan
from shared.run.values import Value, stride_bounds
from shared.run.window import ChunkRange, ranges_from_bounds
from shared.scd import late_indexes
from shared.scd.hashes import mark_new_target, upgrade_row_hashes
from shared.scd.key_index import upgrade_key_index
from shared.scd.target import Scd2Options, ScdTarget
from shared.timeutil import utcnow

VALIDITY_KINDS = {
    TypeKind.DATE: "date",
    TypeKind.TIMESTAMP: "timestamp",
    TypeKind.TIMESTAMPTZ: "timestamptz",
}


@dataclass(frozen=True)
class Plan:
    """A planned run (stored with it) and what planning found: the row estimate, the chunk
    ranges, the note that explains them and the stored checkpoint it was planned from (typed
    JSON, as read: launching refuses the run if it changed meanwhile)."""

    run: RunPlan
    estimated_rows: int
    ranges: list[ChunkRange]
    note: str
    stored_checkpoint: dict[str, Any] | None = None
    counted_rows: int | None = None  # the bounded count that confirmed a low estimate
    # dry run only: the statements that would create the target ([] if it exists), and
    # those the end of its first run would build its late indexes with (late_indexes.py)
    target_ddl: list[str] = field(default_factory=list)
    target_ddl_after_first_run: list[str] = field(default_factory=list)


class PlanningHooks(Protocol):
    """What the planner tells whoever supervises it (``coordinator/planning_guard.py``):
    each step as it starts, and the source connection its statements run on."""

    def step(self, name: str) -> None: ...

    def source(self, adapter: DialectAdapter, conn: Connection) -> AbstractContextManager[None]: ...


class _Unsupervised:
    def step(self, name: str) -> None:
        pass

    def source(self, adapter: DialectAdapter, conn: Connection) -> AbstractContextManager[None]:
        return nullcontext()


UNSUPERVISED = _Unsupervised()


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
    twice = sorted({c for c in columns if columns.count(c) > 1})
    if twice:
        raise ConfigError(
            f"mapping '{mapref}': the source query returns the column '{twice[0]}' more than "
            f"once; give each column its own name in the query (e.g. `{twice[0]} AS "
            f"{twice[0]}_2`)"
        )
    internal = sorted(c for c in columns if c.lower() in INTERNAL_COLUMNS)
    if internal:
        raise ConfigError(
            f"mapping '{mapref}': the source returns a column '{internal[0]}', a name chordload "
            f"uses for its own columns ({', '.join(sorted(INTERNAL_COLUMNS))}); alias it in "
            f"the query (e.g. `{internal[0]} AS {internal[0]}_`)"
        )
    for role, name in spec.scd.audit_names().items():
        if name in available:
            raise ConfigError(
                f"mapping '{mapref}': the source returns a column '{name}', which is also the "
                f"SCD{spec.scd.type} audit column for {role}; rename the audit column "
                f"(scd.audit_columns.{role}: another name) or alias the source column"
            )
    problems = []
    for field, column in named:
        if column not in available:
            near = [c for c in columns if c.lower() == column.lower()]
            hint = f" (did you mean '{near[0]}'? names are case-sensitive)" if near else ""
            problems.append(f"{field} '{column}' is not a column of the source query{hint}")
    if problems:
        raise ConfigError(
            f"mapping '{mapref}': {'; '.join(problems)}; the query returns: {', '.join(columns)}"
        )
    # Checked after the names exist: with `keys: [idd]` the typo is the key, not the split
    # column `id` that the config names correctly.
    if spec.chunking.column and spec.chunking.column not in spec.keys:
        raise ConfigError(
            f"mapping '{mapref}': chunking.column '{spec.chunking.column}' is not a business "
            f"key; the split column must be one of keys {spec.keys} so that no two chunks "
            f"touch one key"
        )


def _connect_error(mapref: str, role: str, url: str, exc: Exception) -> SourceUnavailableError:
    return SourceUnavailableError(
        f"mapping '{mapref}': cannot reach the {role} database "
        f"{mask_url(url)}: {describe_db_error(exc)}"
    )


def _source_connection(adapter: DialectAdapter, mapref: str, url: str) -> Connection:
    """A read-only source connection; failing to connect is 'cannot reach', while an error
    once connected is the query's (SQLite reports both as OperationalError)."""
    try:
        return adapter.engine.connect().execution_options(**READ_ONLY)
    except DBAPIError as exc:
        raise _connect_error(mapref, "source", url, exc) from None


def read_source_columns(
    settings: Settings, mapref: str, spec: MappingSpec, hooks: PlanningHooks = UNSUPERVISED
) -> tuple[DialectAdapter, list[SourceColumn]]:
    url = settings.connection_url(spec.source.connection)
    engine = get_engine(url)
    adapter = adapter_for(engine)
    try:
        with _source_connection(adapter, mapref, url) as conn, hooks.source(adapter, conn):
            columns = adapter.source_columns(conn, spec.source.query)
    except DBAPIError as exc:
        if exc.connection_invalidated:
            raise _connect_error(mapref, "source", url, exc) from None
        raise ConfigError(
            f"mapping '{mapref}': the source query fails: {describe_db_error(exc)}"
        ) from None
    check_columns(mapref, spec, [c.name for c in columns])
    if spec.scd.valid_from:
        kind = next(c.type.kind for c in columns if c.name == spec.scd.valid_from)
        if kind not in VALIDITY_KINDS:
            raise ConfigError(
                f"mapping '{mapref}': scd.valid_from '{spec.scd.valid_from}' is a "
                f"{kind.value} column; it must be a date or timestamp"
            )
    return adapter, columns


_NUMBER_TEXT = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*")


def refuse_numbers_as_text(
    mapref: str, spec: MappingSpec, columns: list[SourceColumn], high_water: Value
) -> None:
    """A KEY checkpoint column of text whose maximum is a number: text compares character by
    character, so '39' sorts before '9', and once '9' is the stored checkpoint a later row
    '39' is below it and never loads, silently. Refused when the run is planned."""
    kinds = {c.name: c.type.kind for c in columns}
    values = high_water if isinstance(high_water, tuple) else (high_water,)
    for name, value in zip(spec.checkpoint_columns, values, strict=False):
        numbers = isinstance(value, str) and _NUMBER_TEXT.fullmatch(value)
        if kinds.get(name) is TypeKind.TEXT and numbers:
            raise ConfigError(
                f"mapping '{mapref}': checkpoint column '{name}' is text holding numbers "
                f"(its maximum is {value!r}): compared as text, '39' sorts before '9', so "
                f"rows after the stored checkpoint would be skipped; cast it in the query "
                f"(CAST({name} AS bigint) AS {name}) or checkpoint on a column that grows"
            )


def chunk_count(spec: MappingSpec, estimated_rows: int, override: int | None) -> tuple[int, str]:
    if override is not None:
        cap = spec.chunking.max_chunks
        if override > cap:
            return cap, (f"{cap} chunks: --chunks {override} capped by chunking.max_chunks ({cap})")
        return max(1, override), f"{override} chunks requested with --chunks"
    if estimated_rows < spec.chunking.min_rows_for_parallel:
        return 1, (
            f"1 chunk: ~{estimated_rows} rows is below min_rows_for_parallel "
            f"({spec.chunking.min_rows_for_parallel})"
        )
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


def confirm_estimate(
    adapter: DialectAdapter,
    conn: Connection,
    spec: MappingSpec,
    where: str,
    params: dict[str, Any],
    estimate: int,
) -> tuple[int | None, str]:
    """A planner estimate below ``min_rows_for_parallel`` can be stale (statistics from
    before a bulk load or update): count the window's rows, stopping one past the threshold,
    so a large window still gets parallel chunks and a small one costs a small scan. Returns
    the count (None when not needed) and a note for the plan."""
    threshold = spec.chunking.min_rows_for_parallel
    if spec.chunking.exact_count or adapter.estimates_by_counting or estimate >= threshold:
        return None, ""
    counted = adapter.count_up_to(conn, spec.source.query, where, params, threshold + 1)
    if counted > threshold:
        return counted, (
            f"the planner estimated ~{estimate:,} rows but a count stopped at more than "
            f"{threshold:,} (min_rows_for_parallel): its statistics are stale"
        )
    return counted, f"~{estimate:,} rows estimated, {counted:,} counted"


def _boundaries(
    adapter: DialectAdapter,
    conn: Connection,
    mapref: str,
    spec: MappingSpec,
    where: str,
    params: dict[str, Any],
    parts: int,
    estimate: int,
) -> list[Value]:
    return planned_boundaries(adapter, conn, mapref, spec, where, params, parts, estimate)[0]


def planned_boundaries(
    adapter: DialectAdapter,
    conn: Connection,
    mapref: str,
    spec: MappingSpec,
    where: str,
    params: dict[str, Any],
    parts: int,
    estimate: int,
) -> tuple[list[Value], str]:
    """The chunk boundaries and how they were found, with the time it took (for the plan
    note: planning a large window must not cost a sort of the whole window)."""
    started = time.perf_counter()
    bounds, method = _find_boundaries(adapter, conn, mapref, spec, where, params, parts, estimate)
    return bounds, f"{method} in {time.perf_counter() - started:.2f} s"


def _find_boundaries(
    adapter: DialectAdapter,
    conn: Connection,
    mapref: str,
    spec: MappingSpec,
    where: str,
    params: dict[str, Any],
    parts: int,
    estimate: int,
) -> tuple[list[Value], str]:
    if parts <= 1:
        return [], "no boundaries"
    query, strategy = spec.source.query, spec.chunking.strategy
    if strategy is ChunkStrategy.RANGE:
        low, high = adapter.min_max(conn, query, where, params, spec.split_column)
        try:
            return stride_bounds(low, high, parts), "boundaries by min/max stride"
        except TypeError:
            raise ConfigError(
                f"mapping '{mapref}': chunking.strategy range needs a numeric, date or timestamp "
                f"split column; '{spec.split_column}' holds {type(low).__name__} values (use "
                f"strategy quantile or offset)"
            ) from None
    if strategy is ChunkStrategy.OFFSET:
        total = (
            estimate
            if spec.chunking.exact_count
            else adapter.estimate_rows(conn, query, where, params, True)
        )  # OFFSET positions need the real count
        bounds = adapter.offset_boundaries(
            conn, query, where, params, spec.split_columns, parts, total
        )
        return bounds, "boundaries by offset probes"
    sampled = adapter.sampled_boundaries(
        conn, query, where, params, spec.split_column, parts, estimate
    )
    if sampled is not None:
        return sampled[0], f"boundaries from {sampled[1]}"
    bounds = adapter.split_boundaries(conn, query, where, params, spec.split_column, parts)
    return bounds, "boundaries by exact quantiles of the window"


def run_mode(
    mapref: str,
    spec: MappingSpec,
    full: bool,
    window_from: str | None,
    window_to: str | None,
) -> RunMode:
    backfill = window_from is not None or window_to is not None
    if full and backfill:
        raise ConfigError(
            f"mapping '{mapref}': --full reloads everything and --from/--to "
            f"load one window; give one or the other"
        )
    if backfill:
        return RunMode.BACKFILL
    if full or spec.checkpoint_strategy is CheckpointStrategy.NONE:
        return RunMode.FULL
    return RunMode.INCREMENTAL


def plan_run(
    settings: Settings,
    mapref: str,
    spec: MappingSpec,
    metadata: Engine,
    *,
    chunks_override: int | None = None,
    full: bool = False,
    window_from: str | None = None,
    window_to: str | None = None,
    run_id: str | None = None,
    hooks: PlanningHooks = UNSUPERVISED,
    dry_run: bool = False,
) -> Plan:
    """Plan one run of ``spec``. ``full``: ignore the stored checkpoint (a full reload that
    still sets the new checkpoint). ``window_from``/``window_to``: a backfill of that window
    (text, read as the checkpoint's type), which never moves the stored checkpoint.
    ``hooks`` hear each planning step as it starts (shown while the run is PLANNING) and
    the source connection in use (so a supervisor can cancel its statement).
    ``dry_run``: write nothing, not even the target: ``Plan.target_ddl`` says what would be
    created."""
    strategy = spec.checkpoint_strategy
    mode = run_mode(mapref, spec, full, window_from, window_to)
    checkpoint.check_mode(mapref, spec, mode, window_to is not None, window_from is not None)
    check_target_name(settings, mapref, spec)
    hooks.step("reading the source query's columns")
    adapter, source_columns = read_source_columns(settings, mapref, spec, hooks)
    columns = [c.name for c in source_columns]
    spec = with_target_audit_names(settings, mapref, spec, columns)
    validity_kind = None
    if spec.scd.valid_from:
        validity_kind = next(
            VALIDITY_KINDS[c.type.kind] for c in source_columns if c.name == spec.scd.valid_from
        )
    check_checkpoint_function(mapref, spec)
    stored_row = store.get_checkpoint(metadata, mapref)
    stored_encoded = stored_row.value if stored_row else None
    stored = checkpoint.stored_value(spec, stored_encoded)
    url = settings.connection_url(spec.source.connection)
    query = spec.source.query
    try:
        with _source_connection(adapter, mapref, url) as conn, hooks.source(adapter, conn):

            def high_water() -> Value:
                hooks.step("reading the high-water mark (max of the checkpoint column)")
                try:
                    found = adapter.max_row(conn, query, spec.checkpoint_columns)
                except ConfigError as err:  # e.g. a maximum of 'infinity'
                    raise ConfigError(f"mapping '{mapref}': {err}") from None
                refuse_numbers_as_text(mapref, spec, source_columns, found)
                return found

            planned = checkpoint.plan_window(
                mapref,
                spec,
                mode,
                stored,
                high_water,
                window_from,
                window_to,
            )
            where, params = planned.window.predicate(adapter)
            hooks.step("counting rows" if spec.chunking.exact_count else "estimating rows")
            estimate = adapter.estimate_rows(conn, query, where, params, spec.chunking.exact_count)
            counted, confirm_note = None, ""
            if (
                strategy is not CheckpointStrategy.PYTHON
                and chunks_override is None
                and not spec.chunking.exact_count
                and not adapter.estimates_by_counting
                and estimate < spec.chunking.min_rows_for_parallel
            ):
                hooks.step(
                    f"counting rows, up to {spec.chunking.min_rows_for_parallel + 1:,} "
                    f"(the estimate ~{estimate:,} is below min_rows_for_parallel)"
                )
                counted, confirm_note = confirm_estimate(
                    adapter, conn, spec, where, params, estimate
                )
            rows = estimate if counted is None else counted
            if strategy is CheckpointStrategy.PYTHON:
                parts = 1
                note = (
                    "1 chunk: checkpoint strategy PYTHON computes each row's checkpoint "
                    "value in the worker, and such values cannot be split into key ranges "
                    "or ordered across parallel chunks"
                )
                if chunks_override is not None:
                    note += f" (--chunks {chunks_override} ignored)"
            else:
                parts, note = chunk_count(spec, rows, chunks_override)
                if confirm_note:
                    note = f"{confirm_note}; {note}"
            if parts > 1:
                hooks.step(f"computing the boundaries of {parts} chunks")
            bounds, bounds_note = planned_boundaries(
                adapter, conn, mapref, spec, where, params, parts, rows
            )
    except DBAPIError as exc:  # e.g. max() or ORDER BY on a type that has none
        if exc.connection_invalidated:
            raise _connect_error(mapref, "source", url, exc) from None
        raise ConfigError(
            f"mapping '{mapref}': the source query fails while planning (window "
            f"on {', '.join(spec.checkpoint_columns) or '-'}, chunks on "
            f"{', '.join(spec.split_columns)}): {describe_db_error(exc)}"
        ) from None
    target_ddl: tuple[list[str], list[str]] = ([], [])
    target_notes: list[str] = []
    if dry_run:
        target_ddl = planned_target_ddl(settings, mapref, spec, source_columns)
    else:
        hooks.step("checking the target table")
        target_notes = ensure_target(settings, mapref, spec, source_columns)
    ranges = ranges_from_bounds(bounds)
    if parts > 1:
        if spec.chunking.strategy is not ChunkStrategy.QUANTILE:
            note += f" ({spec.chunking.strategy.value} split on {', '.join(spec.split_columns)})"
        if len(ranges) < parts:
            note += f"; {len(ranges)} distinct key ranges"
        note += f"; {bounds_note}"
    if planned.notes:
        note += "; " + "; ".join(planned.notes)
    if target_notes:
        note += "; " + "; ".join(target_notes)
    run = RunPlan(
        run_id or new_run_id(),
        mapref,
        spec,
        columns,
        planned.window,
        utcnow(),
        mode,
        planned.python_filter,
        validity_kind,
        stored,
        settings.celery.queue,
        tuple(c.type.kind for c in source_columns),
    )
    return Plan(run, estimate, ranges, note, stored_encoded, counted, *target_ddl)


def source_high_water(settings: Settings, mapref: str, spec: MappingSpec) -> Value:
    """The source's current maximum of the KEY checkpoint column(s) (a row for several), or
    None (no such columns, or no rows)."""
    columns = spec.checkpoint_columns
    if not columns:
        return None
    url = settings.connection_url(spec.source.connection)
    adapter = adapter_for(get_engine(url))
    try:
        with _source_connection(adapter, mapref, url) as conn:
            return adapter.max_row(conn, spec.source.query, columns)
    except DBAPIError as exc:
        if exc.connection_invalidated:
            raise _connect_error(mapref, "source", url, exc) from None
        raise ConfigError(
            f"mapping '{mapref}': reading the maximum of checkpoint column(s) "
            f"{', '.join(columns)} from the source fails: {describe_db_error(exc)}"
        ) from None


def validate_mapping(settings: Settings, mapref: str) -> list[SourceColumn]:
    """Check a mapping against its source (columns exist, query runs); returns its columns."""
    spec = settings.mapping(mapref)
    check_target_name(settings, mapref, spec)
    check_checkpoint_function(mapref, spec)
    _adapter, columns = read_source_columns(settings, mapref, spec)
    return columns


def check_checkpoint_function(mapref: str, spec: MappingSpec) -> None:
    """A PYTHON checkpoint's function must import here: refused now what workers could not
    import (validate, plan and run)."""
    if spec.checkpoint_strategy is CheckpointStrategy.PYTHON:
        assert spec.checkpoint.function is not None
        try:
            load_function(spec.checkpoint.function)
        except ConfigError as err:
            raise ConfigError(f"mapping '{mapref}': {err}") from None


def check_target_name(settings: Settings, mapref: str, spec: MappingSpec) -> None:
    """A target table or schema name longer than the target database takes: refused before
    anything is written (PostgreSQL would create the table under a shortened name that no
    later run finds; MariaDB refuses it only once the run is under way)."""
    target = get_engine(settings.connection_url(spec.target.connection))
    adapter = adapter_for(target)
    for role, name in (("schema", spec.target.schema_name), ("table", spec.target.table_name)):
        if name and (why := adapter.identifier_too_long(name)):
            raise ConfigError(f"mapping '{mapref}': target.table's {role} name {why}; shorten it")


def _target_options(spec: MappingSpec, source_columns: list[SourceColumn]) -> dict[str, Any]:
    """SCD2 validity columns typed like the valid_from source column; is_deleted for
    deletes: new_record."""
    options: dict[str, Any] = {}
    if spec.scd.type == 2 and spec.scd.valid_from:
        options["valid_from_type"] = next(
            c.type for c in source_columns if c.name == spec.scd.valid_from
        )
    if spec.scd.type == 2 and spec.scd.deletes is DeletesMode.NEW_RECORD:
        options["is_deleted"] = True
    return options


def _hashed_target(
    adapter: DialectAdapter, spec: MappingSpec, source_columns: list[SourceColumn]
) -> ScdTarget:
    """The target as the row-hash upgrade sees it (no run yet: only what is hashed)."""
    tracked = tuple(spec.scd.tracked) if spec.scd.type == 2 and spec.scd.tracked else None
    return ScdTarget(
        adapter,
        adapter.table_ref(spec.target),
        tuple(c.name for c in source_columns),
        tuple(spec.keys),
        spec.scd.audit_columns,
        spec.scd.type,
        run_id="",
        options=Scd2Options(tracked=tracked),
    )


def with_target_audit_names(
    settings: Settings, mapref: str, spec: MappingSpec, business: list[str]
) -> MappingSpec:
    """``spec`` with the audit column names its target already uses (a target created with
    chordload's earlier, unprefixed defaults keeps them); a new target gets the defaults.
    The run's stored plan carries the resolved names to every worker."""
    url = settings.connection_url(spec.target.connection)
    adapter = adapter_for(get_engine(url))
    try:
        connection = adapter.engine.connect()
    except DBAPIError as exc:
        raise _connect_error(mapref, "target", url, exc) from None
    with connection as conn:
        if not adapter.target_exists(conn, spec.target):
            return spec
        existing = adapter.target_column_names(conn, spec.target)
    audit = spec.scd.audit_columns.with_target_names(existing, business)
    if audit is spec.scd.audit_columns:
        return spec
    return spec.model_copy(update={"scd": spec.scd.model_copy(update={"audit_columns": audit})})


def planned_target_ddl(
    settings: Settings, mapref: str, spec: MappingSpec, source_columns: list[SourceColumn]
) -> tuple[list[str], list[str]]:
    """The statements a run would create the target with, and those the end of its first
    run would build the target's late indexes with (``shared/scd/late_indexes.py``); both
    [] when it exists (then it is checked as a run would, without touching it)."""
    url = settings.connection_url(spec.target.connection)
    adapter = adapter_for(get_engine(url))
    try:
        connection = adapter.engine.connect()
    except DBAPIError as exc:
        raise _connect_error(mapref, "target", url, exc) from None
    try:
        with connection as conn:
            if adapter.target_exists(conn, spec.target):
                adapter.check_target(
                    conn,
                    spec.target,
                    [c.name for c in source_columns],
                    spec.scd.type,
                    list(spec.scd.audit_names().values()),
                )
                adapter.check_column_types(conn, spec.target, source_columns)
                return [], []
            late = late_indexes.planned(_hashed_target(adapter, spec, source_columns), spec.target)
            created = adapter.target_ddl(
                conn,
                spec.target,
                source_columns,
                spec.keys,
                spec.scd.type,
                spec.scd.audit_columns,
                **_target_options(spec, source_columns),
            )
            return created, [statement for index in late for statement in index.statements]
    except ConfigError as err:
        raise ConfigError(f"mapping '{mapref}': {err}") from None


def _late_indexes(conn: Connection, target: ScdTarget, spec: MappingSpec) -> list[str]:
    """Build the late indexes an earlier run's end did not (``shared/scd/late_indexes.py``),
    in a savepoint of the planner's transaction; a plan note saying what was built, or why
    not yet (a writer's lock held past the wait: the next plan tries again)."""
    if not late_indexes.missing(conn, target, spec.target):
        return []
    try:
        with conn.begin_nested():
            built = late_indexes.build(conn, target, spec.target)
    except DBAPIError as exc:
        return [
            f"{spec.target.table}'s indexes after its first load not built yet "
            f"({describe_db_error(exc)}); the next plan tries again"
        ]
    if not built:
        return []
    return [f"built {spec.target.table}'s indexes its first run's end did not: {', '.join(built)}"]


def ensure_target(
    settings: Settings, mapref: str, spec: MappingSpec, source_columns: list[SourceColumn]
) -> list[str]:
    """Create the target if it is missing, or check that it fits; bring its stored row
    hashes to the current definition (``shared/scd/hashes.py``) and its unique key index to
    one that treats NULL key parts as one key (``shared/scd/key_index.py``). Returns notes
    for the plan on what was upgraded."""
    url = settings.connection_url(spec.target.connection)
    engine = get_engine(url)
    adapter = adapter_for(engine)
    try:
        connection = engine.connect()
    except DBAPIError as exc:
        raise _connect_error(mapref, "target", url, exc) from None

    def fits(conn: Connection) -> bool:
        """Whether the target exists; if it does, it must have the columns the load needs."""
        if not adapter.target_exists(conn, spec.target):
            return False
        adapter.check_target(
            conn,
            spec.target,
            [c.name for c in source_columns],
            spec.scd.type,
            list(spec.scd.audit_names().values()),
        )
        adapter.check_column_types(conn, spec.target, source_columns)
        return True

    try:
        with connection as conn, conn.begin():
            hashed = _hashed_target(adapter, spec, source_columns)
            if fits(conn):
                notes = []
                rehashed = upgrade_row_hashes(conn, hashed, spec.target)
                if rehashed:
                    notes.append(
                        f"{rehashed} current rows of {spec.target.table} rehashed to the "
                        f"current row-hash definition (once)"
                    )
                index_note = upgrade_key_index(conn, hashed, spec.target, source_columns)
                return (
                    notes + ([index_note] if index_note else []) + _late_indexes(conn, hashed, spec)
                )
            adapter.create_target(
                conn,
                spec.target,
                source_columns,
                spec.keys,
                spec.scd.type,
                spec.scd.audit_columns,
                **_target_options(spec, source_columns),
            )
            mark_new_target(conn, hashed, spec.target)
            return []
    except ConfigError as err:  # an existing target that does not fit: name the mapping
        raise ConfigError(f"mapping '{mapref}': {err}") from None
    except DBAPIError as exc:
        if exc.connection_invalidated:
            raise _connect_error(mapref, "target", url, exc) from None
        # Two coordinators may race to create it: if it exists now, the other one won.
        with engine.begin() as conn:
            if fits(conn):
                return []
        raise ConfigError(
            f"mapping '{mapref}': cannot create target table "
            f"{spec.target.table}: {describe_db_error(exc)}"
        ) from None
