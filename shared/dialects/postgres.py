"""PostgreSQL: planner estimates from EXPLAIN, server-side cursors, COPY into a temp stage,
md5 of the row for change detection.

What here is about speed (docs/benchmarks.md has the numbers):

* the source is streamed from a psycopg2 server-side cursor directly: batches are the
  driver's own lists of tuples, without a SQLAlchemy Row per row and a copy back to tuples;
* between two PostgreSQL databases a chunk relays ``COPY ... TO STDOUT`` text straight into
  ``COPY stage FROM STDIN`` (shared/dialects/relay.py): no value becomes a Python object;
* the COPY text is built a column at a time: one look at a column's value types picks a
  formatter, so the common types are formatted by ``map`` over a C function instead of a
  Python call per value, and text columns are escaped only when one of their values needs it;
* the SCD apply probes the target's key index for each staged row. Left to itself the
  planner often chose a hash (or merge) join that reads the whole target for every batch,
  because a target that grows during the load has stale statistics and the temp stage has
  none: the per-batch cost then grew with the target and a 1M-row initial load became
  quadratic. With an index on the first key the apply's joins are nested loops over the
  stage, so a batch costs what its rows cost.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import re
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from decimal import Decimal
from enum import Enum
from typing import Any, NamedTuple, Protocol, cast

import psycopg2.extensions
from sqlalchemy import Connection, text

from shared.config.mapping import AuditColumns, TargetSpec
from shared.dialects.base import (
    PRIMARY_KEY,
    STAGE_TABLE,
    DialectAdapter,
    LateIndex,
    dbapi_connection,
)
from shared.dialects.exact import beyond_range, source_text
from shared.dialects.holds import (
    MomentKind,
    Rule,
    Rules,
    ValueCheck,
    always,
    both,
    fits_decimal,
    moment_text,
)
from shared.dialects.relay import CopyRelay, RelayedShape
from shared.dialects.types import ColumnType, SourceColumn, TypeKind
from shared.errors import ConfigError


class SupportsRead(Protocol):
    """A file psycopg2's ``COPY ... FROM STDIN`` reads bytes from."""

    def read(self, size: int = -1) -> bytes: ...


# what psycopg2 makes of a date or timestamp beyond Python's range (infinity)
_EDGES = {dt.date.max, dt.date.min, dt.datetime.max, dt.datetime.min}


def _at_edge(value: Any) -> bool:
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        value = value.replace(tzinfo=None)
    return isinstance(value, dt.date) and value in _EDGES


_OID_KINDS = {
    16: TypeKind.BOOLEAN,
    20: TypeKind.BIGINT,
    21: TypeKind.SMALLINT,
    23: TypeKind.INTEGER,
    26: TypeKind.BIGINT,
    700: TypeKind.FLOAT,
    701: TypeKind.FLOAT,
    1700: TypeKind.NUMERIC,
    25: TypeKind.TEXT,
    1043: TypeKind.TEXT,
    1042: TypeKind.TEXT,
    18: TypeKind.TEXT,
    19: TypeKind.TEXT,
    1082: TypeKind.DATE,
    1083: TypeKind.TIME,
    1114: TypeKind.TIMESTAMP,
    1184: TypeKind.TIMESTAMPTZ,
    17: TypeKind.BYTES,
    114: TypeKind.JSON,
    3802: TypeKind.JSON,
    2950: TypeKind.UUID,
}


_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
_NULL = "\\N"
_NONE_TYPE = type(None)
KEY_INDEX_TTL_S = 60
_KEY_INDEX_SQL = (
    "SELECT EXISTS (SELECT 1 FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
    "AND a.attnum = i.indkey[0] WHERE i.indrelid = to_regclass(:table) AND i.indisvalid "
    "AND a.attname = :key)"
)


def copy_text_value(value: Any) -> str:
    """One value in COPY's text format (NULL is \\N; backslash, tab and newlines escaped)."""
    if value is None:
        return "\\N"
    if (original := source_text(value)) is not None:  # infinity, a BC date: as read
        return original.translate(_ESCAPES)
    if value is True:
        return "t"
    if value is False:
        return "f"
    if isinstance(value, (int, float, Decimal, uuid.UUID)):
        return str(value)
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "\\\\x" + bytes(value).hex()
    if isinstance(value, (dict, list)):
        return json.dumps(value).translate(_ESCAPES)
    return str(value).translate(_ESCAPES)


# per exact type: the C function that gives its COPY text (the same as copy_text_value)
_FORMATTERS: dict[type, Callable[[Any], str]] = {
    int: int.__repr__,
    float: float.__repr__,
    Decimal: Decimal.__str__,
    uuid.UUID: uuid.UUID.__str__,
    dt.datetime: dt.datetime.isoformat,
    dt.date: dt.date.isoformat,
    dt.time: dt.time.isoformat,
}


def copy_text_column(values: Sequence[Any]) -> list[str]:
    """One column of a batch in COPY's text format, the same text ``copy_text_value`` gives
    value by value: one look at the column's value types picks one formatter for all of it."""
    kinds = set(map(type, values))
    has_null = _NONE_TYPE in kinds
    kinds.discard(_NONE_TYPE)
    if len(kinds) == 1 and (kind := next(iter(kinds))) in _FORMATTERS:
        fmt = _FORMATTERS[kind]
        if not has_null:
            return list(map(fmt, values))
        return [_NULL if v is None else fmt(v) for v in values]
    if kinds == {str}:
        present = [v for v in values if v is not None] if has_null else values
        blob = "".join(present)
        if "\\" in blob or "\t" in blob or "\n" in blob or "\r" in blob:
            return [_NULL if v is None else v.translate(_ESCAPES) for v in values]
        return [_NULL if v is None else v for v in values] if has_null else list(values)
    return [copy_text_value(v) for v in values]


def copy_text(rows: Sequence[tuple]) -> str:
    """A batch of rows as the body of ``COPY ... FROM STDIN`` (text format)."""
    if not rows:
        return ""
    columns = [copy_text_column(values) for values in zip(*rows)]
    return "\n".join(map("\t".join, zip(*columns))) + "\n"


# -- reading values exactly (the typed path: PostgreSQL to another database, PYTHON checkpoint) --
# psycopg2 turns some values into Python objects that do not give the value back: arrays into
# lists, intervals into timedeltas (months become 30 days), json numbers into floats, a time
# with time zone into a time with an offset object, ranges into Range objects; infinity into
# date.max, and a BC date or year 10000 fails the whole read. The stream's cursor reads those
# types as PostgreSQL's own text (under HASH_SESSION), and dates, timestamps and times beyond
# Python's range as shared/dialects/exact.py's stand-ins that carry the source's text.
_RANGE_OIDS = {3904, 3906, 3908, 3910, 3912, 3926}
_AS_TEXT_OIDS = tuple(
    sorted(
        {
            oid
            for oid, caster in psycopg2.extensions.string_types.items()
            if caster.name.upper().endswith("ARRAY")
        }
        | _RANGE_OIDS
        | {114, 3802, 199, 3807, 704, 1186, 1266, 2950, 2951}
    )
)
_AS_TEXT = psycopg2.extensions.new_type(_AS_TEXT_OIDS, "CHORDLOAD_AS_TEXT", lambda v, _cur: v)


def _read_moment(value: str, kind: str, tz: dt.tzinfo | None, parse: Any, *args: Any) -> Any:
    """PostgreSQL's text of a date, timestamp or time as ``parse`` reads it, or as the
    stand-in that keeps the text where Python's types end."""
    if value in ("infinity", "-infinity") or value.startswith("24:"):
        return beyond_range(kind, value, tz)  # psycopg2: date.max, time 00:00
    try:
        return parse(value, *args)
    except ValueError:  # a BC date, year 10000, time 24:00:00
        return beyond_range(kind, value, tz)


def _temporal_caster(oid: int, kind: str, default: Any, tz: dt.tzinfo | None) -> Any:
    def cast(value: str | None, cur: Any) -> Any:
        return None if value is None else _read_moment(value, kind, tz, default, cur)

    return psycopg2.extensions.new_type((oid,), f"CHORDLOAD_{kind.upper()}_{oid}", cast)


_EXACT_CASTERS = (
    _AS_TEXT,
    _temporal_caster(1082, "date", psycopg2.extensions.PYDATE, None),
    _temporal_caster(1114, "timestamp", psycopg2.extensions.PYDATETIME, None),
    _temporal_caster(1184, "timestamp", psycopg2.extensions.PYDATETIMETZ, dt.UTC),
    _temporal_caster(1083, "time", psycopg2.extensions.PYTIME, None),
)


def _moment_reader(kind: str, parse: Callable[[str], Any], tz: dt.tzinfo | None) -> Any:
    return lambda value: _read_moment(value, kind, tz, parse)


# PostgreSQL's text of a value (under HASH_SESSION) as the value the typed path reads
_TEXT_READERS: dict[TypeKind, Callable[[str], Any]] = {
    TypeKind.SMALLINT: int,
    TypeKind.INTEGER: int,
    TypeKind.BIGINT: int,
    TypeKind.NUMERIC: Decimal,
    TypeKind.FLOAT: float,
    TypeKind.BOOLEAN: lambda text: text == "t",
    TypeKind.DATE: _moment_reader("date", dt.date.fromisoformat, None),
    TypeKind.TIMESTAMP: _moment_reader("timestamp", dt.datetime.fromisoformat, None),
    TypeKind.TIMESTAMPTZ: _moment_reader("timestamp", dt.datetime.fromisoformat, dt.UTC),
    TypeKind.TIME: _moment_reader("time", dt.time.fromisoformat, None),
}


def read_exactly(cursor: Any) -> None:
    """Make ``cursor`` read values exactly (see above); every other type as psycopg2 does."""
    for caster in _EXACT_CASTERS:
        psycopg2.extensions.register_type(caster, cursor)


def _no_nul(shown: str) -> Any:
    def rule(value: str) -> str | None:
        if "\x00" not in value:
            return None
        return f"{shown} cannot hold the NUL character (U+0000) in {value[:40]!r}"

    return rule


def _nul_free(values: list[str]) -> bool:
    return "\x00" not in "".join(values)


def _time_of_day(shown: str) -> Any:
    def rule(value: dt.timedelta) -> str:
        return f"duration {value} is not a time of day; {shown} cannot hold it"

    return rule


def _signed_scale(scale: int) -> int:
    """A numeric's scale as psycopg2 reports it: the modifier's low 11 bits, which PostgreSQL
    15 reads as a signed number (``numeric(5, -2)`` is reported with scale 2046)."""
    return scale - 2048 if scale >= 1024 else scale


def _escapes_in_bytea(value: str) -> str | None:
    """Text for a ``bytea`` column (a SQLite ``BLOB`` column can hold text): its characters
    arrive as their UTF-8 bytes, but a backslash starts an escape (``\\x41`` is one byte)."""
    if "\\" not in value:
        return None
    return (
        f"text {value!r} for a PostgreSQL bytea: its backslashes would be read as escapes; "
        f"cast the column to a blob in the query"
    )


def _bytes_not_bytea(shown: str) -> Rule:
    """Bytes for a column that is not ``bytea`` (a SQLite text column can hold a blob): COPY
    would store their escaped hex text."""

    def rule(value: Any) -> str:
        return (
            f"bytes {bytes(value)[:32]!r} cannot be held by {shown}; cast the column to text "
            f"in the query"
        )

    return rule


_NUMERIC_TYPE = re.compile(r"numeric\((?P<precision>\d+),(?P<scale>-?\d+)\)")


def _not_boolean(value: int) -> str | None:
    """A number other than 0 and 1 for a boolean column: from a MariaDB ``TINYINT(1)`` (its
    ``BOOLEAN``), or a SQLite column (0 and 1 are SQLite's booleans)."""
    if value in (0, 1):
        return None
    return (
        f"{value} is not a boolean (0 or 1) and cannot be held by PostgreSQL boolean; cast "
        f"the column to a number in the query (e.g. `col + 0`) to keep it"
    )


class StoredType(NamedTuple):
    """A column's type as PostgreSQL stores it: type oid (built-in oids are the same on every
    server), modifier (-1: none; ``numeric(12,2)``'s precision and scale) and its name."""

    oid: int
    typmod: int
    name: str


_STORED_TYPE = "a.atttypid::int, a.atttypmod, format_type(a.atttypid, a.atttypmod)"


def _table_types(conn: Connection, table: str) -> dict[str, StoredType]:
    """The columns of the table ``table`` (a quoted reference) and their stored types."""
    found = conn.execute(
        text(
            f"SELECT a.attname, {_STORED_TYPE} FROM pg_attribute a WHERE "
            "a.attrelid = to_regclass(:table) AND a.attnum > 0 AND NOT a.attisdropped"
        ),
        {"table": table},
    )
    return {str(r[0]): StoredType(int(r[1]), int(r[2]), str(r[3])) for r in found.all()}


def _type_names(conn: Connection, table: str) -> dict[str, str]:
    """The columns of ``table`` and their types as PostgreSQL names them."""
    return {name: stored.name for name, stored in _table_types(conn, table).items()}


class _PgColumn(Protocol):
    """The attributes read from psycopg2's ``cursor.description`` items (its Column)."""

    name: str
    type_code: int
    internal_size: int | None
    precision: int | None
    scale: int | None
    table_oid: int | None
    table_column: int | None


# The row hash is md5 of the row's text, and a row's text depends on these session settings:
# pinned for every statement that hashes, whatever the worker's environment (PGTZ, PGDATESTYLE,
# a role's defaults) says, so the hash depends on the values alone.
HASH_SESSION = (
    "SET LOCAL TimeZone = 'UTC'; SET LOCAL DateStyle = 'ISO, YMD'; "
    "SET LOCAL IntervalStyle = 'postgres'; SET LOCAL extra_float_digits = 3; "
    "SET LOCAL bytea_output = 'hex'"
)


# A source query that is one table's columns and nothing else (no WHERE, join, function or
# subquery): its rows are the table's rows, so a TABLESAMPLE of the table samples the query.
_IDENT = r'(?:"[^"]+"|[A-Za-z_][A-Za-z0-9_$]*)'
_PLAIN_TABLE_QUERY = re.compile(
    rf"^\s*SELECT\s+(?!DISTINCT\b)(?P<columns>[A-Za-z0-9_$\s,.*\"]+?)\s+FROM\s+"
    rf"(?P<table>{_IDENT}(?:\.{_IDENT})?)\s*;?\s*$",
    re.IGNORECASE | re.DOTALL,
)
# Sampling is worth it only for windows this large: below it the exact sort takes well
# under a second (about 0.25 s for 200,000 rows on the benchmark machine).
SAMPLE_MIN_ROWS = 200_000
# Sample rows per chunk: SYSTEM sampling takes whole pages (tens of rows that are often
# neighbours in key order), so a chunk's share of the sample is about ROWS/70 pages. At
# 5,000 rows 22 chunks of a 10M-row window measured 0.86-1.37x the mean (0.23 s); 10,000
# halve the variance for about twice the (still small) cost.
SAMPLE_ROWS_PER_PART = 10_000
SAMPLE_MIN_TOTAL = 50_000
SAMPLE_MAX_TOTAL = 1_000_000
# A sample smaller than this many rows a chunk (a stale estimate) is not trusted.
SAMPLE_MIN_PER_PART = 500
# Where a page sample would take too many of the pages (many chunks for the window: 200
# chunks of 1M rows), a row sample (BERNOULLI) reads every page but sorts only the rows it
# draws. Each row is drawn on its own, so a chunk's share of the sample varies as a
# binomial, not by pages: at 1,000 rows a chunk, about 3%. 200 chunks of 1M rows: 0.1 s,
# against 0.45 s for the exact sort, on the benchmark machine.
ROW_SAMPLE_ROWS_PER_PART = 1_000
# A row sample above this share of the window saves too little of the sort to be worth it.
ROW_SAMPLE_MAX_FRACTION = 0.3


class Sampling(Enum):
    """A ``TABLESAMPLE`` method, by what it draws: (its SQL name, the plan note's noun)."""

    PAGES = ("SYSTEM", "page")
    ROWS = ("BERNOULLI", "row")

    def __init__(self, sql: str, unit: str) -> None:
        self.sql = sql
        self.unit = unit


def sample_method(parts: int, window_rows: int, table_rows: int) -> tuple[Sampling, float] | None:
    """How to sample a plain table for ``parts`` quantiles of a window of ``window_rows``
    of its ``table_rows``: (the method, fraction of the table), or None where the exact
    sort costs about as much.

    A page sample reads only its pages, so it is first choice while it needs a quarter of
    the window's worth of pages at most. A row sample reads the whole table, so it is
    taken only where the window is most of the table (an initial load or a full reload)."""
    wanted = min(max(SAMPLE_ROWS_PER_PART * parts, SAMPLE_MIN_TOTAL), SAMPLE_MAX_TOTAL)
    pages = wanted / window_rows  # of the table's pages, to find `wanted` window rows
    if pages <= 0.25 and pages * table_rows <= window_rows / 4:
        return Sampling.PAGES, pages
    rows = ROW_SAMPLE_ROWS_PER_PART * parts / window_rows
    if rows <= ROW_SAMPLE_MAX_FRACTION and table_rows <= 2 * window_rows:
        return Sampling.ROWS, rows
    return None


def plain_table_query(query: str) -> tuple[str, str] | None:
    """(select list, table) of a ``SELECT columns FROM table`` query, else None."""
    match = _PLAIN_TABLE_QUERY.match(query)
    if match is None or re.search(r"\b(FROM|WHERE|JOIN|UNION)\b", match["columns"], re.I):
        return None
    return match["columns"], match["table"]


_BUILDER_LOCK_TAG = 0x636C6C69  # "clli": high half of a late-index builder's advisory lock key


class PostgresAdapter(DialectAdapter):
    name = "postgresql"
    # 2: the row's text under HASH_SESSION (1: under the session's own settings)
    row_hash_version = 2

    # -- relay: COPY text from a PostgreSQL source straight into the stage (relay.py) --------
    identifier_limit = 63  # NAMEDATALEN - 1
    identifier_in_bytes = True

    def check_column_types(
        self, conn: Connection, target: TargetSpec, columns: Sequence[SourceColumn]
    ) -> None:
        """PostgreSQL reads a COPY's text into the target's type, and some types drop part
        of every value without an error: a timestamp's time in a ``date`` column, digits
        after a ``numeric(p, s)``'s scale, a double's digits in a ``real``. The relay has no
        per-value check, so such a target is refused when the run is planned."""
        stored = _type_names(conn, self.table_ref(target))
        for column in columns:
            have, kind = stored.get(column.name, ""), column.type.kind
            scaled = _NUMERIC_TYPE.fullmatch(have)
            why = None
            if kind in (TypeKind.TIMESTAMP, TypeKind.TIMESTAMPTZ) and have == "date":
                why = "a timestamp into a date drops its time of day"
            elif kind is TypeKind.FLOAT and have == "real":
                why = "a double precision into a real keeps 6 of its digits"
            elif (
                kind is TypeKind.NUMERIC
                and scaled is not None
                and column.type.scale is not None
                and int(scaled["scale"]) < column.type.scale
            ):
                why = f"the source's {column.type.scale} digits after the point would be rounded"
            if why:
                raise ConfigError(
                    f"target table {target.table} exists, and its column '{column.name}' is "
                    f"{have}: {why}; alter the column, or cast it in the query"
                )

    def text_reader(self, kind: TypeKind) -> Callable[[str], Any] | None:
        return _TEXT_READERS.get(kind)

    def shown_as_text(self, column_sql: str) -> str:
        """The value's output-function text, as COPY and the relay print it: a cast to text
        is no such thing for every type (``char(n)`` loses its padding, ``inet`` gains a
        ``/32``), and ``format`` of NULL would be the empty string."""
        return f"CASE WHEN {column_sql} IS NULL THEN NULL ELSE format('%s', {column_sql}) END"

    def relays_to(self, target: DialectAdapter) -> bool:
        return isinstance(target, PostgresAdapter)

    def relay(self, conn: Connection, sql: str, params: dict[str, Any]) -> CopyRelay:
        """The rows of ``sql`` as COPY text in pieces of whole lines. COPY takes no bind
        parameters, so the values are inlined by the driver's own quoting. The text is
        printed under HASH_SESSION: floats exactly (the default only since PostgreSQL 12),
        dates and intervals in the forms every session parses, whatever the source session's
        own DateStyle or IntervalStyle."""
        compiled = text(sql).compile(dialect=conn.dialect)
        dbapi = dbapi_connection(conn)
        cursor = dbapi.cursor()
        try:
            cursor.execute(HASH_SESSION)
            query = cursor.mogrify(compiled.string, compiled.construct_params(params)).decode(
                psycopg2.extensions.encodings[dbapi.encoding]
            )
        finally:
            cursor.close()
        return CopyRelay(dbapi, f"COPY ({query}) TO STDOUT")

    def relay_stage(self, conn: Connection, target: TargetSpec, columns: Sequence[str]) -> str:
        """A chunk stage (see chunk_stage) with ``cl_seq``, the line number of each relayed
        row, so the batch's first and last rows and the source order of duplicates are known
        without reading the lines in Python. Made, if missing, in one round trip."""
        table = self.table_ref(target)
        name = self._stage_name(conn, "relay", table, columns)
        cols = ", ".join(self.q(c) for c in columns)
        body = (
            f"BEGIN IF to_regclass('pg_temp.{name}') IS NULL THEN "
            f"CREATE TEMP TABLE {name} ON COMMIT DELETE ROWS AS SELECT {cols} FROM {table} "
            f"WHERE false; ALTER TABLE {name} ADD COLUMN cl_seq bigint GENERATED ALWAYS AS "
            f"IDENTITY; END IF; END"
        )
        tag = next(t for t in (f"$cl{i}$" for i in range(len(body) + 1)) if t not in body)
        conn.execute(text(f"DO {tag}{body}{tag}".replace(":", "\\:")))
        return f"pg_temp.{name}"

    def load_relayed(
        self, conn: Connection, stage: str, columns: Sequence[str], lines: bytes
    ) -> None:
        self.copy_lines(conn, stage, columns, lines)

    def relayed_shape(
        self, conn: Connection, stage: str, keys: Sequence[str], checkpoint: str | None
    ) -> RelayedShape:
        """What the loader must know of a relayed batch, in one query: its rows, whether any
        key is NULL or occurs twice, its checkpoint maximum, and its first and last keys (the
        rows arrive in key order: a key may continue from the previous batch)."""
        k = [self.q(c) for c in keys]
        key_row = f"({', '.join(k)})" if len(k) > 1 else k[0]
        first = [f"(SELECT {c} FROM {stage} ORDER BY cl_seq LIMIT 1)" for c in k]
        last = [f"(SELECT {c} FROM {stage} ORDER BY cl_seq DESC LIMIT 1)" for c in k]
        cp = self.q(checkpoint) if checkpoint else None
        any_null = " OR ".join(f"{c} IS NULL" for c in k)
        cp_max = f"max({cp})" if cp else "NULL"
        cp_last = f"(SELECT {cp} FROM {stage} ORDER BY cl_seq DESC LIMIT 1)" if cp else "NULL"
        row = conn.execute(
            text(
                f"SELECT count(*), count(*) FILTER (WHERE {any_null}), "
                f"count(DISTINCT {key_row}), {cp_max}, {cp_last}, "
                f"{', '.join(first + last)} FROM {stage}"
            )
        ).one()
        n = len(keys)
        return RelayedShape(
            rows=row[0],
            null_keys=row[1],
            distinct_keys=row[2],
            max_checkpoint=row[3],
            last_checkpoint=row[4],
            first_key=tuple(row[5 : 5 + n]),
            last_key=tuple(row[5 + n : 5 + 2 * n]),
        )

    # -- the initial load's COPY straight into the target (shared/chunk/direct.py) ---------
    def text_identity(self, conn: Connection) -> tuple[int, str]:
        """(major version, server encoding): two servers that agree print a value of one
        type as the same text and hash the same bytes for it."""
        row = conn.execute(
            text(
                "SELECT current_setting('server_version_num')::int / 10000, "
                "current_setting('server_encoding')"
            )
        ).one()
        return int(row[0]), str(row[1])

    def query_column_types(
        self, conn: Connection, sql: str, params: dict[str, Any]
    ) -> list[StoredType | None]:
        """For each output column of ``sql``: its stored type when the column is a table's
        column of a built-in base type whose text is the same under HASH_SESSION on any
        server of this version (not ``money``, which follows lc_monetary, nor ``xml``); None
        for an expression or any other type."""
        result = conn.execute(text(f"{sql} LIMIT 0"), params)
        description = cast("Sequence[_PgColumn]", result.cursor.description)
        origins = [(c.table_oid, c.table_column) for c in description]
        result.close()
        known = [(t, a) for t, a in origins if t is not None and a is not None]
        if not known:
            return [None] * len(origins)
        rows = conn.execute(
            text(
                f"SELECT a.attrelid, a.attnum, {_STORED_TYPE} FROM pg_attribute a JOIN "
                "pg_type t ON t.oid = a.atttypid WHERE (a.attrelid, a.attnum) IN (SELECT "
                "unnest(CAST(:rels AS oid[])), unnest(CAST(:nums AS int[]))) AND "
                "a.atttypid < 16384 AND t.typtype = 'b' AND (t.typelem = 0 OR "
                "t.typelem < 16384) AND t.typname NOT IN ('money', '_money', 'xml', '_xml')"
            ),
            {"rels": [t for t, _ in known], "nums": [a for _, a in known]},
        ).all()
        types = {(int(r[0]), int(r[1])): StoredType(int(r[2]), int(r[3]), str(r[4])) for r in rows}
        return [types.get((t, a)) if t is not None and a is not None else None for t, a in origins]

    def table_column_types(self, conn: Connection, target: TargetSpec) -> dict[str, StoredType]:
        """The target table's columns and their stored types."""
        return _table_types(conn, self.table_ref(target))

    def copy_lines(
        self, conn: Connection, table: str, columns: Sequence[str], lines: bytes | SupportsRead
    ) -> None:
        """COPY text lines into ``table``'s ``columns``: given whole, or read from a file
        (which may hand them over as they arrive)."""
        cols = ", ".join(self.q(c) for c in columns)
        source = io.BytesIO(lines) if isinstance(lines, bytes) else lines
        cursor = dbapi_connection(conn).cursor()
        try:
            cursor.copy_expert(f"COPY {table} ({cols}) FROM STDIN", source, size=1 << 16)
        finally:
            cursor.close()

    def relayed_rows(
        self, conn: Connection, stage: str, columns: Sequence[str], typed: Sequence[str] = ()
    ) -> list[tuple]:
        """The relayed batch as rows, in source order (for the loader's slow path). Only the
        ``typed`` columns (keys and checkpoint: the loader compares them) become Python
        values; every other column stays the database's own text (under HASH_SESSION), which
        COPY parses back exactly: jsonb numbers keep their digits, infinity and BC dates stay
        what they are."""
        cols = ", ".join(
            self.q(c) if c in typed else f"{self.shown_as_text(self.q(c))} AS {self.q(c)}"
            for c in columns
        )
        conn.execute(text(HASH_SESSION))
        cursor = dbapi_connection(conn).cursor()
        read_exactly(cursor)  # keys and checkpoint too: infinity stays infinity
        try:
            cursor.execute(f"SELECT {cols} FROM {stage} ORDER BY cl_seq")
            return [tuple(r) for r in cursor.fetchall()]
        finally:
            cursor.close()

    def source_columns(self, conn: Connection, query: str) -> list[SourceColumn]:
        result = conn.execute(text(f"SELECT * FROM {self.from_query(query)} LIMIT 0"))
        # psycopg2's Column items, which the DB-API typing knows only as plain tuples
        description = cast("Sequence[_PgColumn]", result.cursor.description)
        result.close()
        columns = []
        for col in description:
            kind = _OID_KINDS.get(col.type_code, TypeKind.TEXT)
            precision = scale = length = None
            if kind is TypeKind.NUMERIC and col.precision and col.precision < 1000:
                precision, scale = col.precision, _signed_scale(col.scale or 0)
                if scale < 0:  # numeric(5, -2): integers of up to 7 digits, as numeric(7, 0)
                    precision, scale = precision - scale, 0
            if col.type_code == 1043 and col.internal_size and col.internal_size > 0:
                length = col.internal_size
            columns.append(SourceColumn(col.name, ColumnType(kind, precision, scale, length)))
        return columns

    estimates_by_counting = False  # EXPLAIN's figure, from statistics that can be stale

    def max_row(self, conn: Connection, query: str, columns: Sequence[str]) -> Any:
        """The high-water mark, read exactly: psycopg2 would turn ``infinity`` into year 9999,
        and the window ``<= 9999-12-31 ...`` would then leave the infinity rows out of every
        run, silently. A maximum beyond Python's range is refused with what to do instead."""
        high = super().max_row(conn, query, columns)
        parts = high if isinstance(high, tuple) else (high,)
        if any(_at_edge(p) for p in parts):
            exact = self._exact_max(conn, query, columns)
            shown = [source_text(p) for p in exact if source_text(p) is not None]
            if shown:
                raise ConfigError(
                    f"the source's maximum of checkpoint column(s) {', '.join(columns)} is "
                    f"{', '.join(repr(s) for s in shown)}, which no checkpoint window can "
                    f"bound: leave such rows out of the query (e.g. WHERE {columns[0]} < "
                    f"'infinity') or use checkpoint strategy NONE"
                )
        return high

    def _exact_max(self, conn: Connection, query: str, columns: Sequence[str]) -> tuple:
        refs = [f"src.{self.q(c)}" for c in columns]
        sql = (
            f"SELECT {', '.join(refs)} FROM {self.from_query(query)} WHERE "
            f"{' AND '.join(f'{r} IS NOT NULL' for r in refs)} "
            f"ORDER BY {', '.join(f'{r} DESC' for r in refs)} LIMIT 1"
        )
        compiled = text(sql).compile(dialect=conn.dialect)
        cursor = dbapi_connection(conn).cursor()
        try:
            read_exactly(cursor)
            cursor.execute(compiled.string, compiled.construct_params({}))
            row = cursor.fetchone()
        finally:
            cursor.close()
        return tuple(row) if row is not None else ()

    def estimate_rows(
        self, conn: Connection, query: str, where: str, params: dict[str, Any], exact: bool
    ) -> int:
        if exact:
            return super().estimate_rows(conn, query, where, params, exact)
        plan = conn.execute(
            text(f"EXPLAIN (FORMAT JSON) SELECT 1 FROM {self.from_query(query)} WHERE {where}"),
            params,
        ).scalar_one()
        if isinstance(plan, str):
            plan = json.loads(plan)
        return int(plan[0]["Plan"]["Plan Rows"])

    def sampled_boundaries(
        self,
        conn: Connection,
        query: str,
        where: str,
        params: dict[str, Any],
        column: str,
        parts: int,
        estimate: int,
    ) -> tuple[list[Any], str] | None:
        """Quantiles of a ``TABLESAMPLE`` (``REPEATABLE``: the same plan for the same table)
        when the query is one plain table and the window is large: a page sample
        (``SYSTEM``) costs a fixed number of pages, a row sample (``BERNOULLI``, for many
        chunks) one read of the table, neither a sort of the whole window
        (``sample_method``). Only the chunks' balance depends on it: the ranges still cover
        every key."""
        plain = plain_table_query(query)
        if plain is None or parts <= 1 or estimate < SAMPLE_MIN_ROWS:
            return None
        table_rows = self.estimate_rows(conn, query, "true", {}, False)
        method = sample_method(parts, estimate, table_rows)
        if method is None:
            return None  # the sample would cost about as much as the exact sort
        sampling, fraction = method
        percent = round(100 * fraction, 4)
        columns, table = plain
        kind = conn.execute(
            text("SELECT relkind FROM pg_class WHERE oid = to_regclass(:table)"), {"table": table}
        ).scalar()
        if kind not in ("r", "m", "p"):  # a view (or a foreign table) takes no TABLESAMPLE
            return None
        sampled = (
            f"SELECT {columns} FROM {table} TABLESAMPLE {sampling.sql} ({percent}) REPEATABLE(0)"
        )
        col = f"src.{self.q(column)}"
        sql = (
            f"SELECT max(v) AS upper_value, count(*) AS n FROM (SELECT {col} AS v, "
            f"ntile(:parts) OVER (ORDER BY {col}) AS bucket FROM {self.from_query(sampled)} "
            f"WHERE ({where}) AND {col} IS NOT NULL) buckets GROUP BY bucket "
            f"ORDER BY upper_value"
        )
        rows = conn.execute(text(sql), {**params, "parts": parts}).all()
        sample = sum(row[1] for row in rows)
        if sample < SAMPLE_MIN_PER_PART * parts:
            return None
        bounds: list[Any] = []
        for row in rows[:-1]:
            if not bounds or row[0] != bounds[-1]:
                bounds.append(row[0])
        return bounds, f"a {percent}% {sampling.unit} sample ({sample} rows)"

    def stream(
        self, conn: Connection, sql: str, params: dict[str, Any], batch_rows: int
    ) -> Iterator[Sequence[tuple]]:
        """Batches from a named (server-side) cursor, read with FETCH FORWARD batch_rows; an
        abandoned stream just closes the cursor, nothing more is read."""
        compiled = text(sql).compile(dialect=conn.dialect)  # :name -> %(name)s, % doubled
        conn.execute(text(HASH_SESSION))  # values read as text: in forms every session parses
        cursor = dbapi_connection(conn).cursor(name=f"cl_stream_{uuid.uuid4().hex[:12]}")
        read_exactly(cursor)
        try:
            cursor.execute(compiled.string, compiled.construct_params(params))
            while True:
                rows = cursor.fetchmany(batch_rows)
                if not rows:
                    return
                yield rows
        finally:
            try:
                cursor.close()
            except Exception:  # noqa: BLE001 - a broken connection is discarded anyway
                pass

    def ddl_type(self, column_type: ColumnType) -> str:
        kind = column_type.kind
        if kind is TypeKind.NUMERIC:
            if column_type.precision:
                return f"numeric({column_type.precision}, {column_type.scale or 0})"
            return "numeric"
        if kind is TypeKind.TEXT and column_type.length:
            return f"varchar({column_type.length})"
        return {
            TypeKind.SMALLINT: "smallint",
            TypeKind.INTEGER: "integer",
            TypeKind.BIGINT: "bigint",
            TypeKind.FLOAT: "double precision",
            TypeKind.TEXT: "text",
            TypeKind.BOOLEAN: "boolean",
            TypeKind.DATE: "date",
            TypeKind.TIME: "time",
            TypeKind.TIMESTAMP: "timestamp",
            TypeKind.TIMESTAMPTZ: "timestamptz",
            TypeKind.BYTES: "bytea",
            TypeKind.JSON: "jsonb",
            TypeKind.UUID: "uuid",
        }[kind]

    def unique_key_sql(self, keys: Sequence[str]) -> str:
        """``NULLS NOT DISTINCT`` (PostgreSQL 15+; before it, NULL key parts stay distinct)."""
        cols = super().unique_key_sql(keys)
        version = self.engine.dialect.server_version_info or (0,)
        return f"{cols} NULLS NOT DISTINCT" if version >= (15,) else cols

    def null_safe_key_index(self, conn: Connection, target: TargetSpec, name: str) -> bool | None:
        """``pg_index.indnullsnotdistinct`` of the index (PostgreSQL 15+; before it, there
        is nothing to upgrade to)."""
        if (self.engine.dialect.server_version_info or (0,)) < (15,):
            return None
        value = conn.execute(
            text(
                "SELECT i.indnullsnotdistinct FROM pg_index i JOIN pg_class c ON "
                "c.oid = i.indexrelid WHERE i.indrelid = to_regclass(:table) AND "
                "c.relname = :name"
            ),
            {"table": self.table_ref(target), "name": name},
        ).scalar()
        return None if value is None else bool(value)

    def surrogate_key_ddl(self) -> str:
        # its primary key comes at the end of the first run (late_index_sql)
        return "bigint GENERATED BY DEFAULT AS IDENTITY"

    def late_index_sql(
        self,
        table: str,
        target: TargetSpec,
        scd_type: int,
        audit: AuditColumns,
    ) -> list[LateIndex]:
        """SCD2: the primary key on the surrogate key. A first load kept it row by row, two
        sessions appending to the same right-most page of it, the costliest of the three
        indexes to keep (docs/benchmarks.md); one build at the load's end costs a fraction.
        The unique current-row index and the plain key index are made with the table: the
        first refuses a key's second current row while the first run loads, the second
        serves a replay's look at a key's expired versions. The index is built first (a
        SHARE lock: readers go on), then attached, which locks the table only for the
        moment of that."""
        if scd_type == 1:
            return []
        pkey = self.q(self.index_name(target.table_name, "sk"))
        return [
            LateIndex(
                PRIMARY_KEY,
                (
                    f"CREATE UNIQUE INDEX {pkey} ON {table} ({self.q(audit.sk)})",
                    f"ALTER TABLE {table} ADD CONSTRAINT {pkey} PRIMARY KEY USING INDEX {pkey}",
                ),
            )
        ]

    def index_state(self, conn: Connection, target: TargetSpec) -> tuple[bool, set[str]]:
        rows = conn.execute(
            text(
                "SELECT c.relname, i.indisprimary FROM pg_index i JOIN pg_class c ON "
                "c.oid = i.indexrelid WHERE i.indrelid = to_regclass(:table)"
            ),
            {"table": self.table_ref(target)},
        ).all()
        return any(primary for _, primary in rows), {name for name, _ in rows}

    def lock_out_writers(self, conn: Connection, target: TargetSpec, wait_s: float) -> None:
        """Another builder is waited for as long as it builds (a transaction-scoped advisory
        lock keyed by chordload's tag and the table's oid), a writer only ``wait_s``."""
        table = self.table_ref(target)
        conn.execute(
            text(
                "SELECT pg_advisory_xact_lock((CAST(:tag AS bigint) << 32) | "
                "to_regclass(:t)::oid::bigint)"
            ),
            {"tag": _BUILDER_LOCK_TAG, "t": table},
        )
        conn.execute(text(f"SET LOCAL lock_timeout = '{int(wait_s * 1000)}ms'"))
        conn.execute(text(f"LOCK TABLE {table} IN SHARE ROW EXCLUSIVE MODE"))

    def create_stage(self, conn, target, columns) -> str:
        stage = f"pg_temp.{STAGE_TABLE}"
        cols = ", ".join(self.q(c) for c in columns)
        conn.execute(text(f"DROP TABLE IF EXISTS {stage}"))
        # ON COMMIT DELETE ROWS: every batch transaction starts with an empty stage for free.
        conn.execute(
            text(
                f"CREATE TEMP TABLE {STAGE_TABLE} ON COMMIT DELETE ROWS AS "
                f"SELECT {cols} FROM {self.table_ref(target)} WHERE false"
            )
        )
        return stage

    def chunk_stage(self, conn: Connection, target: TargetSpec, columns: Sequence[str]) -> str:
        """A temp stage kept for the life of the connection: creating and dropping one per
        chunk wrote the catalog twice per chunk, a fixed cost that made many small chunks
        slow. Its name hashes the target, the columns and their current types, so a changed
        target gets a new stage; ON COMMIT DELETE ROWS empties it after every batch."""
        table = self.table_ref(target)
        name = self._stage_name(conn, "stage", table, columns)
        cols = ", ".join(self.q(c) for c in columns)
        conn.execute(
            text(
                f"CREATE TEMP TABLE IF NOT EXISTS {name} ON COMMIT DELETE ROWS AS "
                f"SELECT {cols} FROM {table} WHERE false"
            )
        )
        return f"pg_temp.{name}"

    def _stage_name(self, conn: Connection, kind: str, table: str, columns: Sequence[str]) -> str:
        types = _type_names(conn, table)
        signature = "\x1f".join([kind, table, *(f"{c}\x1e{types.get(c)}" for c in columns)])
        return f"cl_{kind}_{hashlib.md5(signature.encode()).hexdigest()[:16]}"

    def release_stage(self, conn: Connection, stage: str) -> None:
        """Kept for the connection's next chunk (see chunk_stage); already empty."""

    def load_stage(
        self, conn: Connection, stage: str, columns: Sequence[str], rows: Sequence[tuple]
    ) -> None:
        """COPY ``rows`` into the stage under HASH_SESSION (for the rest of the batch's
        transaction): how PostgreSQL reads a value's text depends on the session too (a
        timestamp without an offset into a ``timestamptz`` column is read in ``TimeZone``,
        ``01/02/2024`` as a date by ``DateStyle``), and a target database's or role's
        defaults must not change the values. The settings are the apply's anyway."""
        buffer = io.StringIO(copy_text(rows))
        cols = ", ".join(self.q(c) for c in columns)
        cursor = dbapi_connection(conn).cursor()
        try:
            cursor.execute(HASH_SESSION)
            cursor.copy_expert(f"COPY {stage} ({cols}) FROM STDIN", buffer, size=1 << 16)
        finally:
            cursor.close()

    # -- SCD apply: probe the key index ---------------------------------------------------
    def _key_indexed(self, conn: Connection, table: str, keys: Sequence[str]) -> bool:
        """Whether the target has a valid index led by the first key (chordload creates two).
        Remembered on the connection for a minute: asked once per chunk, it was a round trip
        of every small chunk, and an index dropped or added is noticed soon enough."""
        cache = conn.info.setdefault("chordload_key_index", {})
        known = cache.get((table, keys[0]))
        if known is None or known[1] < time.monotonic():
            indexed = bool(
                conn.execute(text(_KEY_INDEX_SQL), {"table": table, "key": keys[0]}).scalar()
            )
            known = cache[(table, keys[0])] = (indexed, time.monotonic() + KEY_INDEX_TTL_S)
        return known[0]

    def prepare_apply(self, conn: Connection, table: str, keys: Sequence[str]) -> None:
        """Pin the settings the row hash depends on (HASH_SESSION), and turn hash and merge
        joins off when an index can serve the key lookups (without one the planner's choice
        stands), all for the rest of the batch transaction (``SET LOCAL``). What follows the
        apply in that transaction is more of the same key lookups, and a rolled-back
        savepoint undoes the settings with the rest of its slice. One round trip: it is part
        of every batch's fixed cost."""
        settings = HASH_SESSION
        if self._key_indexed(conn, table, keys):
            settings += "; SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off"
        conn.execute(text(settings))

    def value_check(
        self, conn: Connection, target: TargetSpec, columns: Sequence[str]
    ) -> ValueCheck:
        """PostgreSQL refuses by itself what a column cannot hold, but names neither the
        column nor the value for cases other databases produce: text with a NUL character
        (MariaDB, SQLite), a MariaDB ``TIME`` beyond a time of day (a duration such as
        ``-838:59:59``) for a ``time`` column, and a MariaDB ``TINYINT(1)`` other than 0 or 1
        for a ``boolean`` column."""
        types = _type_names(conn, self.table_ref(target))
        rules: list[Rules] = []
        for name in columns:
            type_name = types.get(name, "")
            shown = f"PostgreSQL {type_name or 'column'}"
            column: dict = {str: _no_nul(shown)}
            if type_name == "date" or type_name.startswith("timestamp"):
                kind: MomentKind = (
                    "date"
                    if type_name == "date"
                    else "timestamptz"
                    if "with time zone" in type_name
                    else "timestamp"
                )
                column[str] = always(both(column[str], moment_text(kind, shown)))
            elif type_name.startswith("time"):
                column[dt.timedelta] = _time_of_day(shown)
            elif type_name == "bytea":
                column[str] = always(both(column[str], _escapes_in_bytea))
            elif type_name == "boolean":
                column[int] = _not_boolean
            elif (scaled := _NUMERIC_TYPE.fullmatch(type_name)) and int(scaled["scale"]) >= 0:
                # COPY rounds a numeric(p, s) to its scale without a word (1.005 -> 1.01)
                column.update(fits_decimal(int(scaled["precision"]), int(scaled["scale"]), shown))
            if type_name != "bytea":
                column.update(
                    dict.fromkeys((bytes, bytearray, memoryview), _bytes_not_bytea(shown))
                )
            rules.append(column)
        return ValueCheck(columns, rules, screens={str: _nul_free})

    def row_hash_expr(self, qualified_columns: Sequence[str]) -> str:
        return f"md5(ROW({', '.join(qualified_columns)})::text)"
