"""Oracle (``oracle+oracledb://``), 12.2 or later. UNTESTED: there is no Oracle server where
chordload is tested; see docs/databases.md for what is expected to work and what is not.

- Sessions run with ``TIME_ZONE = '+00:00'`` and fixed NLS formats, so the row hash (which
  turns values into text) does not depend on client settings (``install_engine_hooks``).
- No ``UPDATE ... FROM``: the update half of the apply is a ``MERGE ... WHEN MATCHED THEN
  UPDATE`` (rowcount = changed rows); inserts are the generic ``INSERT ... SELECT``.
- Null-safe equality: ``DECODE(a, b, 1, 0) = 1``. Booleans are ``NUMBER(1)`` bound as 1/0.
- One current row per key (SCD2): a unique function-based index on
  ``CASE WHEN is_current = 1 THEN key END`` (rows whose entries are all NULL are not indexed).
- Staging: one global temporary table ``cl_stg_<hash>`` per target and column list, created on
  first use, ``ON COMMIT DELETE ROWS`` (each batch starts empty); it is left in place.
- Row hash: ``STANDARD_HASH(..., 'MD5')`` over a ``||`` concatenation: values must fit
  VARCHAR2 (4000 bytes unless MAX_STRING_SIZE = EXTENDED); CLOB/BLOB columns are not hashed.
- Oracle stores '' as NULL: an empty string in the source arrives as NULL.
"""
from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Engine, event, text
from sqlalchemy.exc import DBAPIError

from shared.dialects.base import DialectAdapter
from shared.dialects.types import ColumnType, SourceColumn, TypeKind
from shared.config.mapping import AuditColumns, TargetSpec

_SESSION = ("ALTER SESSION SET TIME_ZONE = '+00:00' "
            "NLS_DATE_FORMAT = 'YYYY-MM-DD HH24:MI:SS' "
            "NLS_TIMESTAMP_FORMAT = 'YYYY-MM-DD HH24:MI:SS.FF9' "
            "NLS_TIMESTAMP_TZ_FORMAT = 'YYYY-MM-DD HH24:MI:SS.FF9 TZH:TZM' "
            "NLS_NUMERIC_CHARACTERS = '.,'")
VARCHAR2_MAX_CHARS = 4000
_OWNER = "COALESCE(:owner, SYS_CONTEXT('USERENV', 'CURRENT_SCHEMA'))"


def install_engine_hooks(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):  # noqa: ANN001
        cursor = dbapi_conn.cursor()
        try:
            cursor.execute(_SESSION)
        finally:
            cursor.close()


def _type_name(type_code: Any) -> str:
    return str(getattr(type_code, "name", type_code)).upper()


def _column_type(description: tuple) -> ColumnType:
    name = _type_name(description[1])
    display, precision, scale = description[2], description[4], description[5]
    if "NUMBER" in name:
        if precision and (scale or 0) > 0:
            return ColumnType(TypeKind.NUMERIC, precision, scale)
        if precision and scale == 0:
            if precision <= 4:
                return ColumnType(TypeKind.SMALLINT)
            if precision <= 9:
                return ColumnType(TypeKind.INTEGER)
            if precision <= 18:
                return ColumnType(TypeKind.BIGINT)
            return ColumnType(TypeKind.NUMERIC, precision, 0)
        return ColumnType(TypeKind.NUMERIC)
    if "BINARY_FLOAT" in name or "BINARY_DOUBLE" in name:
        return ColumnType(TypeKind.FLOAT)
    if "TIMESTAMP_TZ" in name or "TIMESTAMP_LTZ" in name:
        return ColumnType(TypeKind.TIMESTAMPTZ)
    if "TIMESTAMP" in name or name.endswith("DATE"):  # Oracle DATE has a time of day
        return ColumnType(TypeKind.TIMESTAMP)
    if "BOOLEAN" in name:
        return ColumnType(TypeKind.BOOLEAN)
    if "JSON" in name:
        return ColumnType(TypeKind.JSON)
    if "BLOB" in name or "RAW" in name or "BFILE" in name:
        return ColumnType(TypeKind.BYTES)
    if "CHAR" in name:
        return ColumnType(TypeKind.TEXT, length=display or None)
    return ColumnType(TypeKind.TEXT)  # CLOB, LONG, INTERVAL, ROWID, ...


class OracleAdapter(DialectAdapter):
    name = "oracle"

    # -- source ------------------------------------------------------------------------
    def source_columns(self, conn: Connection, query: str) -> list[SourceColumn]:
        result = conn.execute(text(f"SELECT * FROM ({query}) src WHERE 1 = 0"))
        description = result.cursor.description
        result.close()
        return [SourceColumn(d[0], _column_type(d)) for d in description]

    # -- target DDL --------------------------------------------------------------------
    def ddl_type(self, column_type: ColumnType) -> str:
        kind = column_type.kind
        if kind is TypeKind.NUMERIC:
            if column_type.precision and column_type.precision <= 38:
                return f"NUMBER({column_type.precision}, {column_type.scale or 0})"
            return "NUMBER"
        if kind is TypeKind.TEXT:
            length = column_type.length
            if not length or length > VARCHAR2_MAX_CHARS:
                length = VARCHAR2_MAX_CHARS  # not CLOB: CLOBs cannot be compared or hashed
            return f"VARCHAR2({length} CHAR)"
        return {
            TypeKind.SMALLINT: "NUMBER(5)", TypeKind.INTEGER: "NUMBER(10)",
            TypeKind.BIGINT: "NUMBER(19)", TypeKind.FLOAT: "BINARY_DOUBLE",
            TypeKind.BOOLEAN: "NUMBER(1)", TypeKind.DATE: "DATE",
            TypeKind.TIME: "VARCHAR2(18 CHAR)", TypeKind.TIMESTAMP: "TIMESTAMP(6)",
            TypeKind.TIMESTAMPTZ: "TIMESTAMP(6) WITH TIME ZONE", TypeKind.BYTES: "BLOB",
            TypeKind.JSON: f"VARCHAR2({VARCHAR2_MAX_CHARS} CHAR)",
            TypeKind.UUID: "VARCHAR2(36 CHAR)",
        }[kind]

    def surrogate_key_ddl(self) -> str:
        return "NUMBER(19) GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"

    def bool_value(self, value: bool) -> Any:
        return 1 if value else 0

    def target_exists(self, conn: Connection, target: TargetSpec) -> bool:
        # names are quoted, so they are matched exactly (SQLAlchemy's inspector would fold
        # lower-case names to upper case)
        return bool(conn.execute(text(
            f"SELECT count(*) FROM all_tables WHERE owner = {_OWNER} "
            f"AND table_name = :name"),
            {"owner": target.schema_name, "name": target.table_name}).scalar_one())

    def target_column_names(self, conn: Connection, target: TargetSpec) -> list[str]:
        return list(conn.execute(text(
            f"SELECT column_name FROM all_tab_columns WHERE owner = {_OWNER} "
            f"AND table_name = :name ORDER BY column_id"),
            {"owner": target.schema_name, "name": target.table_name}).scalars())

    def target_index_sql(self, table: str, target: TargetSpec, columns: Sequence[SourceColumn],
                         keys: Sequence[str], scd_type: int, audit: AuditColumns) -> list[str]:
        if scd_type == 1:
            return super().target_index_sql(table, target, columns, keys, scd_type, audit)
        name = target.table_name
        current = self.q(audit.is_current)
        parts = ", ".join(f"CASE WHEN {current} = 1 THEN {self.q(k)} END" for k in keys)
        key_cols = ", ".join(self.q(k) for k in keys)
        return [f"CREATE UNIQUE INDEX {self.q(self.index_name(name, 'current'))} ON {table} "
                f"({parts})",
                f"CREATE INDEX {self.q(self.index_name(name, 'key'))} ON {table} ({key_cols})"]

    # -- staging -----------------------------------------------------------------------
    def create_stage(self, conn: Connection, target: TargetSpec, columns: Sequence[str]) -> str:
        table = self.table_ref(target)
        digest = hashlib.md5(f"{table}|{'|'.join(columns)}".encode()).hexdigest()[:16]
        name = f"cl_stg_{digest}"
        exists = conn.execute(text("SELECT count(*) FROM user_tables WHERE table_name = :n"),
                              {"n": name}).scalar_one()
        if not exists:
            cols = ", ".join(self.q(c) for c in columns)
            try:
                conn.execute(text(f"CREATE GLOBAL TEMPORARY TABLE {self.q(name)} ON COMMIT "
                                  f"DELETE ROWS AS SELECT {cols} FROM {table} WHERE 1 = 0"))
            except DBAPIError as exc:
                if "ORA-00955" not in str(exc):  # created meanwhile by a concurrent chunk
                    raise
        return self.q(name)

    def drop_stage(self, conn: Connection, stage: str) -> None:
        """The global temporary table stays (other sessions may be using it)."""

    def index_stage(self, conn: Connection, stage: str, columns: Sequence[str]) -> None:
        """No DDL on a global temporary table other sessions may be using."""

    def load_stage(self, conn: Connection, stage: str, columns: Sequence[str],
                   rows: Sequence[tuple]) -> None:
        if not rows:
            return
        cols = ", ".join(self.q(c) for c in columns)
        marks = ", ".join(f":{i + 1}" for i in range(len(columns)))
        conn.exec_driver_sql(f"INSERT INTO {stage} ({cols}) VALUES ({marks})",
                             [tuple(_bind(v) for v in row) for row in rows])

    # -- SCD apply ---------------------------------------------------------------------
    def null_safe_eq(self, left: str, right: str) -> str:
        return f"DECODE({left}, {right}, 1, 0) = 1"

    def row_hash_expr(self, qualified_columns: Sequence[str]) -> str:
        parts = " || '|' || ".join(f"NVL2({c}, LENGTH({c}) || ':' || {c}, '~')"
                                   for c in qualified_columns)
        return f"LOWER(RAWTOHEX(STANDARD_HASH({parts}, 'MD5')))"

    def update_from_sql(self, table: str, hashed: str, match: str,
                        sets: Sequence[tuple[str, str]], where: str) -> str:
        assignments = ", ".join(f"t.{self.q(column)} = {expr}" for column, expr in sets)
        return (f"MERGE INTO {table} t USING {hashed} s ON ({match}) "
                f"WHEN MATCHED THEN UPDATE SET {assignments} WHERE {where}")

    def update_where_sql(self, table: str, sets: Sequence[tuple[str, str]], where: str) -> str:
        assignments = ", ".join(f"t.{self.q(column)} = {expr}" for column, expr in sets)
        return f"UPDATE {table} t SET {assignments} WHERE {where}"

    def delete_where_sql(self, table: str, where: str) -> str:
        return f"DELETE FROM {table} t WHERE {where}"

    def row_compare(self, left: Sequence[str], op: str, right: Sequence[str]) -> str:
        return self.expanded_row_compare(left, op, right)  # no (a, b) < (x, y) in Oracle

    def limit_sql(self, sql: str, limit: int, offset: int = 0) -> str:
        return f"{sql} OFFSET {int(offset)} ROWS FETCH NEXT {int(limit)} ROWS ONLY"


def _bind(value: Any) -> Any:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value.astimezone(dt.timezone.utc)
    return value
