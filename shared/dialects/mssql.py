"""SQL Server (``mssql+pyodbc://``), 2017 or later. UNTESTED: there is no SQL Server where
chordload is tested; see docs/databases.md for what is expected to work and what is not.

- ``UPDATE t SET ... FROM target AS t JOIN (stage) s ON ...``; null-safe equality is
  ``(a = b OR (a IS NULL AND b IS NULL))`` (``IS NOT DISTINCT FROM`` needs 2022).
- One current row per key (SCD2): a filtered unique index ``WHERE is_current = 1``.
- Staging: a ``#cl_stage`` temporary table made with ``SELECT ... INTO`` (it keeps the target's
  column types and collations), filled with pyodbc's ``fast_executemany`` (``shared.engines``).
- Row hash: ``HASHBYTES('MD5', CONCAT(...))``; target timestamps are ``DATETIME2`` /
  ``DATETIMEOFFSET`` so their text form keeps fractional seconds.
- Text keys are ``NVARCHAR(450)`` when the source gives no length (index keys are limited to
  900 bytes); other unbounded text is ``NVARCHAR(MAX)``.
"""
from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from decimal import Decimal

from sqlalchemy import Connection, text

from shared.dialects.base import DialectAdapter
from shared.dialects.types import ColumnType, SourceColumn, TypeKind
from shared.config.mapping import AuditColumns, TargetSpec

STAGE = "#cl_stage"
NVARCHAR_MAX_CHARS = 4000
KEY_NVARCHAR_CHARS = 450


def _column_type(description: tuple) -> ColumnType:
    """pyodbc describes a column by the Python type it returns, plus size/precision/scale."""
    py_type, size, precision, scale = description[1], description[3], description[4], description[5]
    if py_type is bool:
        return ColumnType(TypeKind.BOOLEAN)
    if py_type is int:
        if precision and precision <= 5:
            return ColumnType(TypeKind.SMALLINT)
        if precision and precision <= 10:
            return ColumnType(TypeKind.INTEGER)
        return ColumnType(TypeKind.BIGINT)
    if py_type is Decimal:
        return ColumnType(TypeKind.NUMERIC, precision or None, scale if precision else None)
    if py_type is float:
        return ColumnType(TypeKind.FLOAT)
    if py_type is dt.datetime:
        return ColumnType(TypeKind.TIMESTAMP)
    if py_type is dt.date:
        return ColumnType(TypeKind.DATE)
    if py_type is dt.time:
        return ColumnType(TypeKind.TIME)
    if py_type in (bytes, bytearray):
        return ColumnType(TypeKind.BYTES)
    if py_type is uuid.UUID:
        return ColumnType(TypeKind.UUID)
    if py_type is str:
        return ColumnType(TypeKind.TEXT, length=size if size and 0 < size <= NVARCHAR_MAX_CHARS
                          else None)
    return ColumnType(TypeKind.TEXT)


class MssqlAdapter(DialectAdapter):
    name = "mssql"

    # -- source ------------------------------------------------------------------------
    def source_columns(self, conn: Connection, query: str) -> list[SourceColumn]:
        result = conn.execute(text(f"SELECT TOP 0 * FROM ({query}) src"))
        description = result.cursor.description
        result.close()
        return [SourceColumn(d[0], _column_type(d)) for d in description]

    # -- target DDL --------------------------------------------------------------------
    def ddl_type(self, column_type: ColumnType) -> str:
        kind = column_type.kind
        if kind is TypeKind.NUMERIC:
            if column_type.precision and column_type.precision <= 38:
                return f"DECIMAL({column_type.precision}, {column_type.scale or 0})"
            return "DECIMAL(38, 10)"
        if kind is TypeKind.TEXT:
            if column_type.length and column_type.length <= NVARCHAR_MAX_CHARS:
                return f"NVARCHAR({column_type.length})"
            return "NVARCHAR(MAX)"
        return {
            TypeKind.SMALLINT: "SMALLINT", TypeKind.INTEGER: "INT", TypeKind.BIGINT: "BIGINT",
            TypeKind.FLOAT: "FLOAT", TypeKind.BOOLEAN: "BIT", TypeKind.DATE: "DATE",
            TypeKind.TIME: "TIME(6)", TypeKind.TIMESTAMP: "DATETIME2(6)",
            TypeKind.TIMESTAMPTZ: "DATETIMEOFFSET(6)", TypeKind.BYTES: "VARBINARY(MAX)",
            TypeKind.JSON: "NVARCHAR(MAX)", TypeKind.UUID: "UNIQUEIDENTIFIER",
        }[kind]

    def key_ddl_type(self, column_type: ColumnType) -> str:
        if column_type.kind in (TypeKind.TEXT, TypeKind.JSON) and not (
                column_type.length and column_type.length <= KEY_NVARCHAR_CHARS):
            return f"NVARCHAR({KEY_NVARCHAR_CHARS})"
        if column_type.kind is TypeKind.BYTES:
            return "VARBINARY(900)"
        return self.ddl_type(column_type)

    def surrogate_key_ddl(self) -> str:
        return "BIGINT IDENTITY(1, 1) PRIMARY KEY"

    def target_index_sql(self, table: str, target: TargetSpec, columns: Sequence[SourceColumn],
                         keys: Sequence[str], scd_type: int, audit: AuditColumns) -> list[str]:
        if scd_type == 1:
            return super().target_index_sql(table, target, columns, keys, scd_type, audit)
        name = target.table_name
        key_cols = ", ".join(self.q(k) for k in keys)
        return [f"CREATE UNIQUE INDEX {self.q(self.index_name(name, 'current'))} ON {table} "
                f"({key_cols}) WHERE {self.q(audit.is_current)} = 1",
                f"CREATE INDEX {self.q(self.index_name(name, 'key'))} ON {table} ({key_cols})"]

    # -- staging -----------------------------------------------------------------------
    def create_stage(self, conn: Connection, target: TargetSpec, columns: Sequence[str]) -> str:
        cols = ", ".join(self.q(c) for c in columns)
        conn.execute(text(f"DROP TABLE IF EXISTS {STAGE}"))
        conn.execute(text(f"SELECT {cols} INTO {STAGE} FROM {self.table_ref(target)} "
                          f"WHERE 1 = 0"))
        return STAGE

    def clear_stage(self, conn: Connection, stage: str) -> None:
        conn.execute(text(f"TRUNCATE TABLE {stage}"))

    def load_stage(self, conn: Connection, stage: str, columns: Sequence[str],
                   rows: Sequence[tuple]) -> None:
        if not rows:
            return
        cols = ", ".join(self.q(c) for c in columns)
        marks = ", ".join("?" for _ in columns)
        conn.exec_driver_sql(f"INSERT INTO {stage} ({cols}) VALUES ({marks})", list(rows))

    # -- SCD apply ---------------------------------------------------------------------
    def null_safe_eq(self, left: str, right: str) -> str:
        return f"({left} = {right} OR ({left} IS NULL AND {right} IS NULL))"

    def row_hash_expr(self, qualified_columns: Sequence[str]) -> str:
        parts = ", N'|', ".join(f"CASE WHEN {c} IS NULL THEN N'~' ELSE CONCAT(LEN({c}), N':', "
                                f"{c}) END" for c in qualified_columns)
        return f"LOWER(CONVERT(CHAR(32), HASHBYTES('MD5', CONCAT({parts}, N'')), 2))"

    def update_from_sql(self, table: str, hashed: str, match: str,
                        sets: Sequence[tuple[str, str]], where: str) -> str:
        assignments = ", ".join(f"{self.q(column)} = {expr}" for column, expr in sets)
        return (f"UPDATE t SET {assignments} FROM {table} AS t JOIN {hashed} s ON {match} "
                f"WHERE {where}")

    def update_where_sql(self, table: str, sets: Sequence[tuple[str, str]], where: str) -> str:
        assignments = ", ".join(f"{self.q(column)} = {expr}" for column, expr in sets)
        return f"UPDATE t SET {assignments} FROM {table} AS t WHERE {where}"

    def delete_where_sql(self, table: str, where: str) -> str:
        return f"DELETE t FROM {table} AS t WHERE {where}"

    def row_compare(self, left: Sequence[str], op: str, right: Sequence[str]) -> str:
        return self.expanded_row_compare(left, op, right)  # no row-value comparisons

    def limit_sql(self, sql: str, limit: int, offset: int = 0) -> str:
        return f"{sql} OFFSET {int(offset)} ROWS FETCH NEXT {int(limit)} ROWS ONLY"
