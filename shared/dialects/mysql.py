"""MariaDB and MySQL through PyMySQL (``mysql+pymysql://``).

What differs from the generic SQL, and how this adapter handles it:

- Time zones: every connection runs with ``time_zone = '+00:00'`` and binds aware datetimes
  converted to UTC (``install_engine_hooks``, called by ``shared.engines``). A source ``TIMESTAMP``
  column is read as TIMESTAMPTZ (values come back as aware UTC datetimes); ``DATETIME`` is a
  naive timestamp. Targets store both as ``DATETIME(6)`` (``TIMESTAMP`` ends in 2038); a
  column that was a timestamp *with* time zone carries the comment ``chordload:timestamptz``.
- Text: targets are ``utf8mb4`` with a binary, no-pad collation, so business keys compare
  exactly (the server default collation is case-insensitive and ignores trailing spaces).
  Unbounded text is ``LONGTEXT``; the key lookup index uses a prefix where a key is long.
- One current row per key (SCD2) without partial indexes: a stored generated column
  ``cl_current_key`` = md5 of the business key while ``is_current``, else NULL, with a UNIQUE
  index on it (UNIQUE allows any number of NULLs, so expired versions are not constrained).
  SCD1 uses ``cl_key_hash`` = md5 of the key, UNIQUE. Hashing makes one fixed-width column
  for any number and type of key columns, and a NULL business key counts as one key, the
  same as the loader's null-safe key pass.
- No ``UPDATE ... FROM``: ``UPDATE t JOIN (stage) s ON ... SET t.c = ...`` (and
  ``UPDATE t SET ... WHERE`` / ``DELETE t FROM ...`` for the hard-delete pass); null-safe
  equality is ``<=>``.
- Staging: a ``TEMPORARY`` table per connection, filled by multi-row ``INSERT`` statements
  (PyMySQL's executemany packs rows into ~1 MB statements). ``LOAD DATA LOCAL INFILE`` is
  used instead when the connection URL opts in with ``local_infile=1``: faster, but it lets
  the server ask the client for any local file, so it is off by default. In LOCAL mode the
  server downgrades data errors to warnings; any warning fails the batch.
- Streaming: ``stream_results`` gives an unbuffered ``SSCursor``; ``net_write_timeout`` is
  raised for the session so a slow batch on the target does not make the server drop the
  stream, and a stream abandoned early closes its connection instead of reading the rest.
- Row estimate: ``EXPLAIN`` (rows x filtered for the top-level select), exact count when
  asked. Split boundaries: ``ntile`` (MariaDB 10.2+, MySQL 8+).
"""

from __future__ import annotations

import datetime as dt
import math
import os
import struct
import tempfile
from collections.abc import Callable, Iterator, Sequence
from decimal import Decimal
from typing import Any

from pymysql import converters as pymysql_converters
from pymysql.charset import charset_by_id
from pymysql.constants import CLIENT, FIELD_TYPE, FLAG
from sqlalchemy import Connection, Engine, event, text

from shared.config.mapping import AuditColumns, TargetSpec
from shared.dialects.base import STAGE_TABLE, DialectAdapter, dbapi_connection
from shared.dialects.holds import (
    ValueCheck,
    beyond_range,
    finite_decimal,
    fits_decimal,
    floats_held,
    moment_text,
)
from shared.dialects.types import ColumnType, SourceColumn, TypeKind
from shared.errors import ConfigError, LoadError

CURRENT_KEY_COLUMN = "cl_current_key"
KEY_HASH_COLUMN = "cl_key_hash"
TZ_COMMENT = "chordload:timestamptz"
VARCHAR_MAX_CHARS = 768  # longer (or unbounded) text becomes LONGTEXT
INDEX_PREFIX_CHARS = 191  # longest key part indexed in full (191 * 4 bytes < 767)
INDEX_MAX_BYTES = 3072  # InnoDB's limit for one index (DYNAMIC row format)
STREAM_WRITE_TIMEOUT_S = 3600  # net_write_timeout while a source is streamed

_UTC = dt.UTC
_MAXLEN = {
    "utf8mb4": 4,
    "utf8mb3": 3,
    "utf8": 3,
    "ucs2": 2,
    "utf16": 4,
    "utf16le": 4,
    "utf32": 4,
    "big5": 2,
    "gbk": 2,
    "gb2312": 2,
    "sjis": 2,
    "cp932": 2,
    "euckr": 2,
    "ujis": 3,
    "eucjpms": 3,
    "gb18030": 4,
}
_TEXT_CODES = {FIELD_TYPE.VARCHAR, FIELD_TYPE.VAR_STRING, FIELD_TYPE.STRING}
_BLOB_CODES = {FIELD_TYPE.TINY_BLOB, FIELD_TYPE.MEDIUM_BLOB, FIELD_TYPE.LONG_BLOB, FIELD_TYPE.BLOB}
_DATETIME_CODES = {FIELD_TYPE.DATETIME, FIELD_TYPE.TIMESTAMP}


# -- engine hooks (installed by shared.engines for mysql/mariadb URLs) --------------------------
def _escape_datetime_utc(value: dt.datetime, mapping=None) -> str:
    """PyMySQL drops tzinfo when it binds a datetime; convert aware values to UTC first."""
    if value.tzinfo is not None:
        value = value.astimezone(_UTC).replace(tzinfo=None)
    return pymysql_converters.escape_datetime(value, mapping)


def install_engine_hooks(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        encoders = getattr(dbapi_conn, "encoders", None)
        if encoders is not None:
            encoders[dt.datetime] = _escape_datetime_utc
            # psycopg2 returns bytea as memoryview, which PyMySQL would bind as the text
            # "<memory at 0x...>": bind its bytes, as PyMySQL binds bytes
            encoders[memoryview] = lambda value, _mapping=None: dbapi_conn.escape(bytes(value))
        cursor = dbapi_conn.cursor()
        try:
            cursor.execute("SET time_zone = '+00:00'")
            # strict: a value the column cannot hold is an error, never clamped or cut
            cursor.execute(
                "SET SESSION sql_mode = CONCAT_WS(',', NULLIF(@@SESSION.sql_mode, ''), "
                "'STRICT_ALL_TABLES')"
            )
        finally:
            cursor.close()


# -- source types ----------------------------------------------------------------------------
def _field_column_type(field: Any) -> ColumnType:
    """A PyMySQL result field (type code, length, scale, flags, charset) as a ColumnType."""
    code, length = field.type_code, field.length or 0
    flags = getattr(field, "flags", 0)
    unsigned = bool(flags & FLAG.UNSIGNED)
    binary = getattr(field, "charsetnr", 0) == 63
    if code == FIELD_TYPE.TINY:
        return ColumnType(TypeKind.BOOLEAN if length == 1 else TypeKind.SMALLINT)
    if code == FIELD_TYPE.SHORT:
        return ColumnType(TypeKind.INTEGER if unsigned else TypeKind.SMALLINT)
    if code in (FIELD_TYPE.INT24, FIELD_TYPE.YEAR):
        return ColumnType(TypeKind.INTEGER)
    if code == FIELD_TYPE.LONG:
        return ColumnType(TypeKind.BIGINT if unsigned else TypeKind.INTEGER)
    if code == FIELD_TYPE.LONGLONG:
        return ColumnType(TypeKind.NUMERIC, 20, 0) if unsigned else ColumnType(TypeKind.BIGINT)
    if code in (FIELD_TYPE.DECIMAL, FIELD_TYPE.NEWDECIMAL):
        scale = field.scale or 0
        precision = length - (1 if scale else 0) - (0 if unsigned else 1)
        return ColumnType(TypeKind.NUMERIC, max(precision, 1), scale)
    if code in (FIELD_TYPE.FLOAT, FIELD_TYPE.DOUBLE):
        return ColumnType(TypeKind.FLOAT)
    if code in (FIELD_TYPE.DATE, FIELD_TYPE.NEWDATE):
        return ColumnType(TypeKind.DATE)
    if code == FIELD_TYPE.TIME:
        return ColumnType(TypeKind.TIME)
    if code == FIELD_TYPE.DATETIME:
        return ColumnType(TypeKind.TIMESTAMP)
    if code == FIELD_TYPE.TIMESTAMP:
        return ColumnType(TypeKind.TIMESTAMPTZ)
    if code == FIELD_TYPE.BIT:
        return ColumnType(TypeKind.BOOLEAN if length == 1 else TypeKind.BYTES)
    if code == FIELD_TYPE.JSON:
        return ColumnType(TypeKind.JSON)
    if code in _TEXT_CODES:
        if binary:
            return ColumnType(TypeKind.BYTES)
        return ColumnType(TypeKind.TEXT, length=_chars(field))
    if code in _BLOB_CODES:
        return ColumnType(TypeKind.BYTES if binary else TypeKind.TEXT)
    if code == FIELD_TYPE.GEOMETRY:
        return ColumnType(TypeKind.BYTES)
    return ColumnType(TypeKind.TEXT)  # ENUM, SET, NULL and anything new


def _chars(field: Any) -> int | None:
    try:
        maxlen = _MAXLEN.get(charset_by_id(field.charsetnr).name, 1)
    except (KeyError, AttributeError):
        maxlen = 4
    chars = (field.length or 0) // maxlen
    return chars if chars > 0 else None


class _DescriptionField:
    """Stand-in for a PyMySQL field when only the DB-API description is available."""

    def __init__(self, description: tuple):
        self.name, self.type_code = description[0], description[1]
        self.length, self.scale = description[3] or 0, description[5] or 0
        self.flags, self.charsetnr = 0, 45


def _result_fields(cursor: Any) -> list[Any]:
    fields = getattr(getattr(cursor, "_result", None), "fields", None)
    if fields:
        return list(fields)
    return [_DescriptionField(d) for d in cursor.description or ()]


def _row_converters(
    fields: Sequence[Any], singles: frozenset[str] = frozenset()
) -> list[tuple[int, Callable[[Any], Any]]]:
    """Per-column fixes for values PyMySQL returns in a form other databases cannot take:
    TINYINT(1)/BIT(1) as bool, TIMESTAMP as aware UTC, TIME (a timedelta) as a time, and a
    ``FLOAT`` read as ``DOUBLE`` (``singles``, by name) as its shortest decimal."""
    converters: list[tuple[int, Callable[[Any], Any]]] = []
    for i, field in enumerate(fields):
        kind = _field_column_type(field).kind
        if field.name in singles and field.type_code == FIELD_TYPE.DOUBLE:
            converters.append((i, shortest_single))
        elif kind is TypeKind.BOOLEAN:
            converters.append((i, _to_bool))
        elif kind is TypeKind.TIMESTAMPTZ:
            converters.append((i, _to_utc))
        elif kind is TypeKind.TIME:
            converters.append((i, _to_time))
    return converters


def shortest_single(value: Any) -> Any:
    """A ``FLOAT`` (a 32-bit float), given as the ``DOUBLE`` it converts to exactly
    (1.2345677614212036), as the shortest decimal that is the same ``FLOAT`` (1.2345678):
    the number that was stored, as PostgreSQL prints a ``real`` and MySQL a ``FLOAT``. Nine
    significant digits always are."""
    if not isinstance(value, float) or not math.isfinite(value):
        return value
    single = _SINGLE.unpack(_SINGLE.pack(value))[0]
    for digits in range(1, 10):
        shortest = float(f"{value:.{digits}g}")
        try:
            if _SINGLE.unpack(_SINGLE.pack(shortest))[0] == single:
                return shortest
        except OverflowError:  # rounded up beyond the largest FLOAT
            continue
    return value


_SINGLE = struct.Struct("<f")


def _to_bool(value: Any) -> Any:
    """0 and 1 as booleans; any other number of a ``TINYINT(1)`` stays the number it is (a
    boolean target refuses it, and its row is quarantined; other targets keep it)."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, (bytes, bytearray)):
        return int.from_bytes(value, "big") != 0
    return bool(value) if value in (0, 1) else value


def _to_utc(value: Any) -> Any:
    if isinstance(value, dt.datetime) and value.tzinfo is None:
        return value.replace(tzinfo=_UTC)
    return value


def _to_time(value: Any) -> Any:
    if isinstance(value, dt.timedelta) and dt.timedelta(0) <= value < dt.timedelta(days=1):
        return (dt.datetime.min + value).time()
    return value


def _abandon_stream(conn: Connection) -> None:
    """End a stream that was not read to the end without reading the rest.

    PyMySQL closes an unbuffered result by reading every remaining row (any next command on
    the connection does the same), which for a stopped chunk can be millions of rows. Instead
    the result is detached and the connection dropped; the server ends the query when the
    socket closes, and the pool opens a fresh connection next time."""
    dbapi = conn.connection.dbapi_connection
    pending = getattr(dbapi, "_result", None)
    if dbapi is not None and pending is not None and getattr(pending, "unbuffered_active", False):
        pending.unbuffered_active = False
        dbapi._result = None
    conn.invalidate()


# -- LOAD DATA text format ---------------------------------------------------------------------
_INFILE_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", "\0": "\\0"})


class _NotInfileValue(Exception):
    """A value LOAD DATA's text format cannot carry as is (bytes, intervals)."""


def _infile_value(value: Any) -> str:
    if value is None:
        return "\\N"
    if value is True:
        return "1"
    if value is False:
        return "0"
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(_UTC).replace(tzinfo=None)
        return value.isoformat(" ")
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (int, Decimal)):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview, dt.timedelta)):
        raise _NotInfileValue
    return str(value).translate(_INFILE_ESCAPES)


class LoadDataWarning(LoadError):
    """LOAD DATA LOCAL reported warnings (the server's data errors in LOCAL mode)."""


class MysqlAdapter(DialectAdapter):
    name = "mysql"
    identifier_limit = 64

    def __init__(self, engine: Engine):
        super().__init__(engine)
        self._collation = "utf8mb4_bin"
        # per stage: positions of DATETIME/TIMESTAMP columns, and columns marked timestamptz
        self._stage_datetimes: dict[str, list[int]] = {}
        # the FLOAT columns the last query built here reads as DOUBLE (exact_reads), and
        # those of each query asked
        self._singles: frozenset[str] = frozenset()
        self._singles_by_query: dict[str, frozenset[str]] = {}

    # -- source ------------------------------------------------------------------------
    def _query_fields(self, conn: Connection, query: str) -> list[Any]:
        """The result fields of ``query`` (type codes, lengths, flags), without its rows."""
        result = conn.execute(text(f"SELECT * FROM {self.from_query(query)} LIMIT 0"))
        try:
            return _result_fields(result.cursor)
        finally:
            result.close()

    def source_columns(self, conn: Connection, query: str) -> list[SourceColumn]:
        return [
            SourceColumn(f.name, _field_column_type(f)) for f in self._query_fields(conn, query)
        ]

    def exact_reads(self, query: str) -> dict[str, str]:
        """``FLOAT`` columns read as ``DOUBLE``: the text protocol prints a ``FLOAT`` with
        six significant digits (16777216 as 16777200), while the ``DOUBLE`` is exact;
        ``stream`` gives it back as the ``FLOAT``'s shortest decimal (``shortest_single``).
        Asked of the database once per adapter (a chunk's, a verify range's): a column's
        type can change between runs."""
        singles = self._singles_by_query.get(query)
        if singles is None:
            with self.engine.connect() as conn:
                fields = self._query_fields(conn, query)
            singles = frozenset(f.name for f in fields if f.type_code == FIELD_TYPE.FLOAT)
            self._singles_by_query[query] = singles
        self._singles = singles
        return {name: f"src.{self.q(name)} + 0e0" for name in singles}

    estimates_by_counting = False  # EXPLAIN's figure, from statistics that can be stale

    def estimate_rows(
        self, conn: Connection, query: str, where: str, params: dict[str, Any], exact: bool
    ) -> int:
        if exact:
            return super().estimate_rows(conn, query, where, params, exact)
        plan = (
            conn.execute(
                text(f"EXPLAIN SELECT 1 FROM {self.from_query(query)} WHERE {where}"), params
            )
            .mappings()
            .all()
        )
        top = [row for row in plan if str(row.get("id")) == "1"] or plan
        estimate, counted = 1.0, False
        for row in top:
            rows = row.get("rows")
            if rows is None:
                continue
            filtered = row.get("filtered")
            estimate *= float(rows) * (float(filtered) / 100 if filtered is not None else 1.0)
            counted = True
        if not counted:
            impossible = any("impossible" in str(row.get("Extra") or "").lower() for row in plan)
            return 0 if impossible else 1
        return round(estimate)

    def stream(
        self, conn: Connection, sql: str, params: dict[str, Any], batch_rows: int
    ) -> Iterator[Sequence[tuple]]:
        conn.exec_driver_sql(f"SET SESSION net_write_timeout = {STREAM_WRITE_TIMEOUT_S}")
        result = conn.execution_options(stream_results=True, yield_per=batch_rows).execute(
            text(sql), params
        )
        converters = _row_converters(_result_fields(result.cursor), self._singles)
        finished = False
        try:
            for part in result.partitions(batch_rows):
                if converters:
                    rows = []
                    for row in part:
                        values = list(row)
                        for i, convert in converters:
                            values[i] = convert(values[i])
                        rows.append(tuple(values))
                    yield rows
                else:
                    yield [tuple(row) for row in part]
            finished = True
        finally:
            if not finished and not conn.closed and not conn.invalidated:
                _abandon_stream(conn)

    # -- target DDL --------------------------------------------------------------------
    def ddl_type(self, column_type: ColumnType) -> str:
        kind = column_type.kind
        if kind is TypeKind.NUMERIC:
            precision, scale = column_type.precision, column_type.scale or 0
            if not precision:
                return "DECIMAL(65, 30)"
            scale = min(scale, 30)
            return f"DECIMAL({max(min(precision, 65), scale, 1)}, {scale})"
        if kind is TypeKind.TEXT:
            if column_type.length and column_type.length <= VARCHAR_MAX_CHARS:
                return f"VARCHAR({column_type.length})"
            return "LONGTEXT"
        if kind is TypeKind.TIMESTAMPTZ:
            return f"DATETIME(6) COMMENT '{TZ_COMMENT}'"
        return {
            TypeKind.SMALLINT: "SMALLINT",
            TypeKind.INTEGER: "INT",
            TypeKind.BIGINT: "BIGINT",
            TypeKind.FLOAT: "DOUBLE",
            TypeKind.BOOLEAN: "BOOLEAN",
            TypeKind.DATE: "DATE",
            TypeKind.TIME: "TIME(6)",
            TypeKind.TIMESTAMP: "DATETIME(6)",
            TypeKind.BYTES: "LONGBLOB",
            TypeKind.JSON: "LONGTEXT",
            TypeKind.UUID: "CHAR(36)",
        }[kind]

    def timestamp_ddl(self) -> str:
        return "DATETIME(6)"  # audit timestamps: UTC, like every timestamp chordload writes

    def surrogate_key_ddl(self) -> str:
        return "BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY"

    def _binary_collation(self, conn: Connection) -> str:
        dialect = conn.dialect
        if getattr(dialect, "is_mariadb", False):
            return "utf8mb4_nopad_bin"  # binary and NO PAD: 'a' <> 'a ' <> 'A'
        version = getattr(dialect, "server_version_info", None) or (0,)
        return "utf8mb4_0900_bin" if version >= (8,) else "utf8mb4_bin"

    def cancel_statement(self, conn: Connection) -> None:
        """``KILL QUERY`` of the connection's thread, from a connection of its own (PyMySQL
        has no cancel request)."""
        thread_id = dbapi_connection(conn).thread_id()
        with self.engine.connect() as killer:
            killer.execute(text(f"KILL QUERY {int(thread_id)}"))

    def create_target(
        self,
        conn: Connection,
        target: TargetSpec,
        columns: list[SourceColumn],
        keys: Sequence[str],
        scd_type: int,
        audit: AuditColumns,
        **options: Any,
    ) -> None:
        clash = {CURRENT_KEY_COLUMN, KEY_HASH_COLUMN} & {c.name for c in columns}
        if clash:
            raise ConfigError(
                f"the source returns a column named {', '.join(sorted(clash))}, "
                f"which chordload uses on MariaDB/MySQL targets; alias it"
            )
        super().create_target(conn, target, columns, keys, scd_type, audit, **options)

    def target_ddl(
        self,
        conn: Connection,
        target: TargetSpec,
        columns: Sequence[SourceColumn],
        keys: Sequence[str],
        scd_type: int,
        audit: AuditColumns,
        **options: Any,
    ) -> list[str]:
        self._collation = self._binary_collation(conn)
        return super().target_ddl(conn, target, columns, keys, scd_type, audit, **options)

    def create_table_sql(self, table: str, columns_ddl: Sequence[str]) -> str:
        return (
            f"CREATE TABLE {table} ({', '.join(columns_ddl)}) ENGINE=InnoDB "
            f"DEFAULT CHARSET=utf8mb4 COLLATE={self._collation}"
        )

    def target_columns_ddl(
        self,
        columns: Sequence[SourceColumn],
        keys: Sequence[str],
        scd_type: int,
        audit: AuditColumns,
        **options: Any,
    ) -> list[str]:
        ddl = super().target_columns_ddl(columns, keys, scd_type, audit, **options)
        key_hash = self.row_hash_expr([self.q(k) for k in keys])
        if scd_type == 1:
            ddl.append(f"{self.q(KEY_HASH_COLUMN)} CHAR(32) AS ({key_hash}) STORED")
        else:
            ddl.append(
                f"{self.q(CURRENT_KEY_COLUMN)} CHAR(32) AS "
                f"(IF({self.q(audit.is_current)}, {key_hash}, NULL)) STORED"
            )
        return ddl

    def target_index_sql(
        self,
        table: str,
        target: TargetSpec,
        columns: Sequence[SourceColumn],
        keys: Sequence[str],
        scd_type: int,
        audit: AuditColumns,
    ) -> list[str]:
        """A UNIQUE index on the key hash (SCD1) or the current-key hash (SCD2), and a lookup
        index on the key columns for the apply statements' joins."""
        name = target.table_name
        unique_column, suffix = (
            (KEY_HASH_COLUMN, "uniq") if scd_type == 1 else (CURRENT_KEY_COLUMN, "current")
        )
        return [
            f"CREATE UNIQUE INDEX {self.q(self.index_name(name, suffix))} ON {table} "
            f"({self.q(unique_column)})",
            f"CREATE INDEX {self.q(self.index_name(name, 'key'))} ON {table} "
            f"({self._key_index_parts(columns, keys)})",
        ]

    def _key_index_parts(self, columns: Sequence[SourceColumn], keys: Sequence[str]) -> str:
        types = {c.name: c.type for c in columns}

        def long(key: str) -> bool:
            ctype = types.get(key)
            if ctype is None:
                return False
            if ctype.kind in (TypeKind.TEXT, TypeKind.JSON):
                return not ctype.length or ctype.length > INDEX_PREFIX_CHARS
            return ctype.kind is TypeKind.BYTES

        long_keys = [k for k in keys if long(k)]
        prefix = INDEX_PREFIX_CHARS
        if long_keys:
            prefix = max(16, min(prefix, (INDEX_MAX_BYTES - 64) // 4 // len(long_keys)))
        return ", ".join(f"{self.q(k)}({prefix})" if k in long_keys else self.q(k) for k in keys)

    # -- staging -----------------------------------------------------------------------
    def create_stage(self, conn: Connection, target: TargetSpec, columns: Sequence[str]) -> str:
        stage = STAGE_TABLE
        cols = ", ".join(self.q(c) for c in columns)
        conn.execute(text(f"DROP TEMPORARY TABLE IF EXISTS {stage}"))
        conn.execute(
            text(
                f"CREATE TEMPORARY TABLE {stage} AS SELECT {cols} FROM "
                f"{self.table_ref(target)} WHERE 1 = 0"
            )
        )
        result = conn.execute(text(f"SELECT * FROM {stage} LIMIT 0"))
        codes = [d[1] for d in result.cursor.description]
        result.close()
        self._stage_datetimes[stage] = [
            i for i, code in enumerate(codes) if code in _DATETIME_CODES
        ]
        return stage

    def clear_stage(self, conn: Connection, stage: str) -> None:
        conn.execute(text(f"DELETE FROM {stage}"))

    def drop_stage(self, conn: Connection, stage: str) -> None:
        conn.execute(text(f"DROP TEMPORARY TABLE IF EXISTS {stage}"))
        self._stage_datetimes.pop(stage, None)

    def index_stage(self, conn: Connection, stage: str, columns: Sequence[str]) -> None:
        """Text and blob columns are indexed by a prefix (InnoDB cannot index them whole)."""
        types = {
            row[0]: str(row[1]).lower() for row in conn.execute(text(f"SHOW COLUMNS FROM {stage}"))
        }
        long_types = ("text", "blob", "json")
        parts = [
            f"{self.q(c)}({INDEX_PREFIX_CHARS})"
            if any(t in types.get(c, "") for t in long_types)
            else self.q(c)
            for c in columns
        ]
        conn.execute(text(f"CREATE INDEX cl_stage_keys ON {stage} ({', '.join(parts)})"))

    def _coerce_datetimes(self, stage: str, rows: Sequence[tuple]) -> Sequence[tuple]:
        """DATETIME columns: aware values and ISO strings with an offset (e.g. from SQLite)
        become naive UTC, which MariaDB can parse; it refuses literal offsets."""
        positions = self._stage_datetimes.get(stage)
        if not positions:
            return rows
        out = []
        for row in rows:
            values = None
            for i in positions:
                value = row[i]
                if isinstance(value, str):
                    try:
                        parsed = dt.datetime.fromisoformat(value)
                    except ValueError:
                        continue
                    if parsed.tzinfo is None:
                        continue
                    value = parsed
                elif not (isinstance(value, dt.datetime) and value.tzinfo is not None):
                    continue
                if values is None:
                    values = list(row)
                values[i] = value.astimezone(_UTC).replace(tzinfo=None)
            out.append(row if values is None else tuple(values))
        return out

    def load_stage(
        self, conn: Connection, stage: str, columns: Sequence[str], rows: Sequence[tuple]
    ) -> None:
        if not rows:
            return
        rows = self._coerce_datetimes(stage, rows)
        if self._local_infile(conn) and self._load_data(conn, stage, columns, rows):
            return
        # PyMySQL's executemany packs the rows into multi-row INSERTs of up to ~1 MB each.
        cols = ", ".join(self.q(c) for c in columns).replace("%", "%%")
        marks = ", ".join("%s" for _ in columns)
        conn.exec_driver_sql(f"INSERT INTO {stage} ({cols}) VALUES ({marks})", list(rows))

    @staticmethod
    def _local_infile(conn: Connection) -> bool:
        dbapi = conn.connection.dbapi_connection
        return bool(getattr(dbapi, "client_flag", 0) & CLIENT.LOCAL_FILES)

    def _load_data(
        self, conn: Connection, stage: str, columns: Sequence[str], rows: Sequence[tuple]
    ) -> bool:
        """LOAD DATA LOCAL INFILE from a temporary file; False when a value cannot be written
        in its text format (the caller falls back to INSERT)."""
        fd, path = tempfile.mkstemp(prefix="chordload-", suffix=".tsv")
        try:
            with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
                write = handle.write
                try:
                    for row in rows:
                        write("\t".join([_infile_value(v) for v in row]))
                        write("\n")
                except _NotInfileValue:
                    return False
            cols = ", ".join(self.q(c) for c in columns)
            quoted = pymysql_converters.escape_string(path)
            conn.exec_driver_sql(
                f"LOAD DATA LOCAL INFILE '{quoted}' INTO TABLE {stage} "
                f"CHARACTER SET utf8mb4 ({cols})"
            )
            warnings = conn.exec_driver_sql("SELECT @@warning_count").scalar_one()
            if warnings:
                first = conn.exec_driver_sql("SHOW WARNINGS LIMIT 1").one()
                more = f" (+{warnings - 1} more warnings)" if warnings > 1 else ""
                # (errno, message) like a PyMySQL error, so it is classified as a data error
                # and the loader can bisect the batch to the bad rows
                raise LoadDataWarning(int(first[1]), f"LOAD DATA: {first[2]}{more}")
            return True
        finally:
            os.unlink(path)

    def value_check(
        self, conn: Connection, target: TargetSpec, columns: Sequence[str]
    ) -> ValueCheck:
        """Per target column, the values MariaDB would not hold as they are: NaN and
        infinity anywhere (PyMySQL writes the bare word ``nan``), dates and timestamps beyond
        Python's range (infinity, BC, year 10000 from PostgreSQL), and in a ``DECIMAL(p, s)``
        more digits after the point than ``s`` (rounded with a mere note, even in strict mode)
        or before it than ``p - s``; an integer column rounds a fraction the same way."""
        schema = "DATABASE()" if not target.schema_name else ":schema"
        described = {
            row[0]: row[1:]
            for row in conn.execute(
                text(
                    "SELECT column_name, data_type, numeric_precision, numeric_scale, "
                    "column_type FROM information_schema.columns WHERE table_schema = "
                    f"{schema} AND table_name = :table"
                ),
                {"schema": target.schema_name, "table": target.table_name},
            )
        }
        rules = []
        for name in columns:
            data_type, precision, scale, column_type = described.get(name, ("", None, None, ""))
            data_type = str(data_type).lower()
            shown = f"MariaDB {str(column_type).upper()}"
            column: dict = {
                **floats_held(shown),
                **finite_decimal(shown),
                **beyond_range(shown),
            }
            if data_type == "date":
                column[str] = moment_text("date", shown)
            elif data_type in ("datetime", "timestamp"):  # an offset is converted to UTC
                column[str] = moment_text("timestamp", shown, offsets=True)
            if data_type == "decimal" and precision is not None:
                column.update(fits_decimal(int(precision), int(scale or 0), shown))
            elif data_type in ("tinyint", "smallint", "mediumint", "int", "bigint"):
                column.update({t: r for t, r in fits_decimal(65, 0, shown).items() if t is not int})
            rules.append(column)
        return ValueCheck(columns, rules)

    # -- SCD apply ---------------------------------------------------------------------
    def key_order(self, ref: str) -> str:
        """A case- or pad-insensitive collation sorts 'a', 'A' and 'a ' as equal and
        interleaves their rows, though they are three keys (targets compare keys exactly):
        the bytes break the tie, so each key's rows arrive together."""
        return f"{ref}, CAST({ref} AS BINARY)"

    def null_safe_eq(self, left: str, right: str) -> str:
        return f"{left} <=> {right}"

    def row_hash_expr(self, qualified_columns: Sequence[str]) -> str:
        """md5 over the values, each as ``<char length>:<value>`` or ``~`` for NULL, joined
        by ``|``: NULL differs from every value and values cannot run into each other."""
        parts = ", ".join(
            f"IFNULL(CONCAT(CHAR_LENGTH({c}), ':', {c}), '~')" for c in qualified_columns
        )
        return f"MD5(CONCAT_WS('|', {parts}))"

    def update_from_sql(
        self, table: str, hashed: str, match: str, sets: Sequence[tuple[str, str]], where: str
    ) -> str:
        assignments = ", ".join(f"t.{self.q(column)} = {expr}" for column, expr in sets)
        return f"UPDATE {table} t JOIN {hashed} s ON {match} SET {assignments} WHERE {where}"

    def update_where_sql(self, table: str, sets: Sequence[tuple[str, str]], where: str) -> str:
        assignments = ", ".join(f"t.{self.q(column)} = {expr}" for column, expr in sets)
        return f"UPDATE {table} t SET {assignments} WHERE {where}"

    def delete_where_sql(self, table: str, where: str) -> str:
        return f"DELETE t FROM {table} t WHERE {where}"
