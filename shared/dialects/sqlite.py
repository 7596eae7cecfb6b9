"""SQLite: exact counts, executemany into a temp stage, a registered md5 row-hash function
(see shared/engines.py). Used by the demo and for small local loads."""

from __future__ import annotations

import datetime as dt
import math
import re
import sqlite3
import uuid
from collections.abc import Sequence
from decimal import Decimal

from sqlalchemy import Connection, text

from shared.config.mapping import TargetSpec
from shared.dialects.base import STAGE_TABLE, DialectAdapter
from shared.dialects.exact import SourceDate, SourceDateTime, SourceTime
from shared.dialects.holds import (
    INT64_MAX,
    INT64_MIN,
    Rules,
    ValueCheck,
    negative_zero,
    significant_digits,
)
from shared.dialects.types import ColumnType, SourceColumn, TypeKind

sqlite3.register_adapter(Decimal, str)
sqlite3.register_adapter(dt.time, dt.time.isoformat)  # no default adapter (a TEXT column)
# a date or timestamp beyond Python's range (infinity, BC) is stored as the source's text
for _beyond in (SourceDate, SourceDateTime, SourceTime):
    sqlite3.register_adapter(_beyond, lambda value: value.source_text)

REAL_DIGITS = 15  # significant digits SQLite keeps converting a numeric text to REAL


def affinity(declared: str) -> str:
    """SQLite's column affinity of a declared type (its documented rules, in order)."""
    name = declared.upper()
    if "INT" in name:
        return "INTEGER"
    if any(t in name for t in ("CHAR", "CLOB", "TEXT")):
        return "TEXT"
    if "BLOB" in name or not name:
        return "BLOB"
    if any(t in name for t in ("REAL", "FLOA", "DOUB")):
        return "REAL"
    return "NUMERIC"


def _float(value: float) -> str | None:
    if value != value:
        return "NaN cannot be held by SQLite (it stores NaN as NULL)"
    if negative_zero(value):
        return "-0.0 cannot be held by SQLite (it stores 0)"
    return None


def _duration(value: dt.timedelta) -> str:
    """A MariaDB ``TIME`` beyond a time of day (``25:00:00``, ``-838:59:59``) is a
    duration: SQLite has no type for it, and the driver cannot bind it."""
    micros = abs(value) // dt.timedelta(microseconds=1)
    seconds, fraction = divmod(micros, 1_000_000)
    shown = f"{'-' if value < dt.timedelta(0) else ''}{seconds // 3600:02}:{seconds // 60 % 60:02}"
    shown += f":{seconds % 60:02}" + (f".{fraction:06}" if fraction else "")
    return (
        f"TIME {shown} is beyond a time of day and cannot be held by SQLite; cast the column "
        f"to text (or seconds) in the query to keep it"
    )


def _int64(value: int) -> str | None:
    if INT64_MIN <= value <= INT64_MAX:
        return None
    return f"{value} is beyond SQLite's 64-bit integers"


def _numeric_rules(column_affinity: str) -> Rules:
    """A NUMERIC, INTEGER or REAL column turns a numeric text into an INTEGER when it is one
    (64-bit) and into a REAL otherwise, keeping 15 significant digits: a decimal with more
    would arrive altered (1.00000000000000000001 becomes 1)."""

    def decimal(value: Decimal) -> str | None:
        if not value.is_finite():
            return None  # kept as the text 'NaN' / 'Infinity'
        if (
            column_affinity != "REAL"
            and value == value.to_integral_value()
            and INT64_MIN <= value <= INT64_MAX
        ):
            return None
        digits = significant_digits(value)
        if digits <= REAL_DIGITS:
            real = float(value)
            if math.isfinite(real) and Decimal(repr(real)) == value:
                return None
            return f"{value} is beyond the range of a SQLite REAL (it would store {real!r})"
        return (
            f"{value} has {digits} significant digits; a SQLite {column_affinity} column "
            f"keeps {REAL_DIGITS} (it would store {float(value)!r})"
        )

    def integer(value: int) -> str | None:
        if column_affinity == "REAL" and abs(value) > 2**53:
            return f"{value} cannot be held exactly by a SQLite REAL column"
        return _int64(value)

    return {Decimal: decimal, int: integer}


_RUNTIME_KINDS = {
    "integer": TypeKind.BIGINT,
    "real": TypeKind.FLOAT,
    "text": TypeKind.TEXT,
    "blob": TypeKind.BYTES,
}


def kind_from_declared(declared: str) -> TypeKind | None:
    """SQLite's affinity rules, plus the date/bool names people declare."""
    name = declared.upper()
    if not name:
        return None
    if "INT" in name:
        return TypeKind.BIGINT
    if "BOOL" in name:
        return TypeKind.BOOLEAN
    if "TIMESTAMPTZ" in name or "WITH TIME ZONE" in name:
        return TypeKind.TIMESTAMPTZ
    if "TIMESTAMP" in name or "DATETIME" in name:
        return TypeKind.TIMESTAMP
    if "DATE" in name:
        return TypeKind.DATE
    if any(t in name for t in ("CHAR", "CLOB", "TEXT")):
        return TypeKind.TEXT
    if any(t in name for t in ("REAL", "FLOA", "DOUB")):
        return TypeKind.FLOAT
    if "BLOB" in name:
        return TypeKind.BYTES
    return TypeKind.NUMERIC


_TYPE_ARGS = re.compile(r"\(\s*(\d+)\s*(?:,\s*(\d+)\s*)?\)")


def column_type_from_declared(declared: str) -> ColumnType | None:
    """The declared type with its arguments: NUMERIC(12, 2) keeps precision and scale,
    VARCHAR(40) its length, so a target created from it elsewhere is typed the same."""
    kind = kind_from_declared(declared)
    if kind is None:
        return None
    args = _TYPE_ARGS.search(declared)
    if args and kind is TypeKind.NUMERIC:
        return ColumnType(kind, int(args.group(1)), int(args.group(2) or 0))
    if args and kind is TypeKind.TEXT:
        return ColumnType(kind, length=int(args.group(1)))
    return ColumnType(kind)


class SqliteAdapter(DialectAdapter):
    name = "sqlite"
    # 2: typed, length-prefixed values (shared/engines.py _sqlite_row_hash)
    row_hash_version = 2

    def source_columns(self, conn: Connection, query: str) -> list[SourceColumn]:
        view = f"cl_probe_{uuid.uuid4().hex[:10]}"
        conn.execute(text(f"CREATE TEMP VIEW {view} AS SELECT * FROM {self.from_query(query)}"))
        try:
            info = conn.execute(text(f"PRAGMA temp.table_info({view})")).all()
            columns = []
            for row in info:
                name, declared = row[1], row[2] or ""
                column_type = column_type_from_declared(declared)
                if column_type is None:  # an expression: look at a value
                    runtime = conn.execute(
                        text(
                            f"SELECT typeof({self.q(name)}) FROM {view} WHERE {self.q(name)} "
                            f"IS NOT NULL LIMIT 1"
                        )
                    ).scalar()
                    column_type = ColumnType(_RUNTIME_KINDS.get(runtime or "text", TypeKind.TEXT))
                columns.append(SourceColumn(name, column_type))
            return columns
        finally:
            conn.execute(text(f"DROP VIEW IF EXISTS temp.{view}"))

    def ddl_type(self, column_type: ColumnType) -> str:
        # the declared names keep what SQLite itself does not (scale, time zone) for reading
        # the table back as a source; the affinity is the same as plain NUMERIC/TIMESTAMP
        if column_type.kind is TypeKind.NUMERIC and column_type.precision:
            return f"NUMERIC({column_type.precision}, {column_type.scale or 0})"
        if column_type.kind is TypeKind.TIMESTAMPTZ:
            return "TIMESTAMPTZ"
        return {
            TypeKind.SMALLINT: "INTEGER",
            TypeKind.INTEGER: "INTEGER",
            TypeKind.BIGINT: "INTEGER",
            TypeKind.NUMERIC: "NUMERIC",
            TypeKind.FLOAT: "REAL",
            TypeKind.TEXT: "TEXT",
            TypeKind.BOOLEAN: "BOOLEAN",
            TypeKind.DATE: "DATE",
            TypeKind.TIME: "TEXT",
            TypeKind.TIMESTAMP: "TIMESTAMP",
            TypeKind.TIMESTAMPTZ: "TIMESTAMP",
            TypeKind.BYTES: "BLOB",
            TypeKind.JSON: "TEXT",
            TypeKind.UUID: "TEXT",
        }[column_type.kind]

    def timestamp_ddl(self) -> str:
        return "TIMESTAMP"

    def unique_key_sql(self, keys: Sequence[str]) -> str:
        """SQLite's unique indexes treat NULLs as distinct: index each key part as the pair
        (is it NULL, its value or 0), in which a NULL part is one value unlike any other."""
        parts = [f"{self.q(k)} IS NULL, ifnull({self.q(k)}, 0)" for k in keys]
        return "(" + ", ".join(parts) + ")"

    def null_safe_key_index(self, conn: Connection, target: TargetSpec, name: str) -> bool | None:
        """Whether the index's definition is the (IS NULL, ifnull) pairs of unique_key_sql."""
        schema = self.q(target.schema_name) + "." if target.schema_name else ""
        sql = conn.execute(
            text(f"SELECT sql FROM {schema}sqlite_master WHERE type = 'index' AND name = :name"),
            {"name": name},
        ).scalar()
        return None if sql is None else " IS NULL" in str(sql)

    def surrogate_key_ddl(self) -> str:
        return "INTEGER PRIMARY KEY AUTOINCREMENT"

    def create_stage(self, conn, target, columns) -> str:
        stage = f"temp.{STAGE_TABLE}"
        cols = ", ".join(self.q(c) for c in columns)
        conn.execute(text(f"DROP TABLE IF EXISTS {stage}"))
        conn.execute(
            text(
                f"CREATE TEMP TABLE {STAGE_TABLE} AS SELECT {cols} FROM "
                f"{self.table_ref(target)} WHERE 0"
            )
        )
        return stage

    def clear_stage(self, conn: Connection, stage: str) -> None:
        conn.execute(text(f"DELETE FROM {stage}"))

    def index_stage(self, conn: Connection, stage: str, columns: Sequence[str]) -> None:
        conn.execute(
            text(
                f"CREATE INDEX temp.cl_stage_keys ON {STAGE_TABLE} "
                f"({', '.join(self.q(c) for c in columns)})"
            )
        )

    def load_stage(
        self, conn: Connection, stage: str, columns: Sequence[str], rows: Sequence[tuple]
    ) -> None:
        cols = ", ".join(self.q(c) for c in columns)
        marks = ", ".join("?" for _ in columns)
        conn.exec_driver_sql(f"INSERT INTO {stage} ({cols}) VALUES ({marks})", list(rows))

    def value_check(
        self, conn: Connection, target: TargetSpec, columns: Sequence[str]
    ) -> ValueCheck:
        """NaN anywhere (SQLite stores NULL), integers beyond 64 bits, and in a column of
        numeric affinity decimals with more significant digits than a REAL keeps. Dates and
        timestamps beyond Python's range are held as the source's text."""
        table = target.table_name.replace('"', '""')
        schema = self.q(target.schema_name) + "." if target.schema_name else ""
        declared = {
            row[1]: str(row[2] or "")
            for row in conn.exec_driver_sql(f'PRAGMA {schema}table_info("{table}")')
        }
        rules: list[Rules] = []
        for name in columns:
            column_affinity = affinity(declared.get(name, ""))
            column: dict = {float: _float, int: _int64, dt.timedelta: _duration}
            if column_affinity in ("NUMERIC", "INTEGER", "REAL"):
                column.update(_numeric_rules(column_affinity))
            rules.append(column)
        return ValueCheck(columns, rules)

    def null_safe_eq(self, left: str, right: str) -> str:
        return f"{left} IS {right}"

    def row_hash_expr(self, qualified_columns: Sequence[str]) -> str:
        return f"chordload_row_hash({', '.join(qualified_columns)})"
