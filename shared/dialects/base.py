"""The dialect adapter interface and the SQL that is the same everywhere.

An adapter owns what differs between databases: reading source column types, the row
estimate, split boundaries, streaming, the bulk path into staging, the row-hash expression,
identifier quoting and the DDL types used to create targets. The SCD apply statements are
written once here from those pieces.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, inspect, text

from shared.dialects.types import ColumnType, SourceColumn, TypeKind
from shared.errors import ConfigError, LoadError
from shared.mapping import TargetSpec

STAGE_TABLE = "cl_stage"
HASH_COLUMN = "row_hash"
SCD1_AUDIT_COLUMNS = ("row_hash", "inserted_at", "updated_at", "run_id")
SCD2_AUDIT_COLUMNS = ("sk", "row_hash", "valid_from", "valid_to", "is_current", "run_id")


@dataclass(frozen=True)
class ApplyCounts:
    inserted: int = 0
    changed: int = 0
    unchanged: int = 0


class DialectAdapter:
    name = "base"

    def __init__(self, engine: Engine):
        self.engine = engine
        self._preparer = engine.dialect.identifier_preparer

    # -- identifiers -------------------------------------------------------------------
    def q(self, identifier: str) -> str:
        """Quote an identifier always, so names are taken literally (case, spaces, quotes)."""
        return self._preparer.quote_identifier(identifier)

    def table_ref(self, target: TargetSpec) -> str:
        if target.schema_name:
            return f"{self.q(target.schema_name)}.{self.q(target.table_name)}"
        return self.q(target.table_name)

    def index_name(self, table: str, suffix: str) -> str:
        digest = hashlib.md5(table.encode()).hexdigest()[:8]
        return f"cl_{table[:40]}_{digest}_{suffix}"

    # -- source ------------------------------------------------------------------------
    def source_columns(self, conn: Connection, query: str) -> list[SourceColumn]:
        raise NotImplementedError

    def wrap_query(self, query: str, columns: Sequence[str]) -> str:
        cols = ", ".join(f"src.{self.q(c)}" for c in columns)
        return f"SELECT {cols} FROM ({query}) src"

    def estimate_rows(self, conn: Connection, query: str, where: str, params: dict[str, Any],
                      exact: bool) -> int:
        sql = f"SELECT count(*) FROM ({query}) src WHERE {where}"
        return int(conn.execute(text(sql), params).scalar_one())

    def max_value(self, conn: Connection, query: str, column: str) -> Any:
        sql = f"SELECT max(src.{self.q(column)}) FROM ({query}) src"
        return conn.execute(text(sql)).scalar_one()

    def split_boundaries(self, conn: Connection, query: str, where: str,
                         params: dict[str, Any], column: str, parts: int) -> list[Any]:
        """Upper bounds of ``parts`` equal-count buckets of the split column (quantiles)."""
        col = f"src.{self.q(column)}"
        sql = (f"SELECT max(v) AS upper_value FROM (SELECT {col} AS v, ntile(:parts) OVER "
               f"(ORDER BY {col}) AS bucket FROM ({query}) src WHERE ({where}) AND {col} IS NOT NULL"
               f") buckets GROUP BY bucket ORDER BY upper_value")
        uppers = [row[0] for row in conn.execute(text(sql), {**params, "parts": parts})]
        bounds: list[Any] = []
        for value in uppers[:-1]:
            if not bounds or value > bounds[-1]:
                bounds.append(value)
        return bounds

    def stream(self, conn: Connection, sql: str, params: dict[str, Any],
               batch_rows: int) -> Iterator[Sequence[tuple]]:
        result = conn.execution_options(stream_results=True, yield_per=batch_rows).execute(
            text(sql), params)
        for part in result.partitions(batch_rows):
            yield [tuple(row) for row in part]

    # -- target DDL --------------------------------------------------------------------
    def ddl_type(self, column_type: ColumnType) -> str:
        raise NotImplementedError

    def surrogate_key_ddl(self) -> str:
        raise NotImplementedError

    def timestamp_ddl(self) -> str:
        return self.ddl_type(ColumnType(TypeKind.TIMESTAMPTZ))

    def target_exists(self, conn: Connection, target: TargetSpec) -> bool:
        return inspect(conn).has_table(target.table_name, schema=target.schema_name)

    def target_column_names(self, conn: Connection, target: TargetSpec) -> list[str]:
        return [c["name"] for c in inspect(conn).get_columns(target.table_name,
                                                            schema=target.schema_name)]

    def create_target(self, conn: Connection, target: TargetSpec, columns: list[SourceColumn],
                      keys: Sequence[str], scd_type: int) -> None:
        """Create the target from the source's column types, with the SCD contract's columns
        and indexes (SCD2: one current row per key, enforced by a unique partial index)."""
        table = self.table_ref(target)
        key_set = set(keys)
        business = [f"{self.q(c.name)} {self.ddl_type(c.type)}"
                    f"{' NOT NULL' if c.name in key_set else ''}" for c in columns]
        ts = self.timestamp_ddl()
        hash_ddl = self.ddl_type(ColumnType(TypeKind.TEXT, length=32))
        run_ddl = self.ddl_type(ColumnType(TypeKind.TEXT, length=32))
        key_cols = ", ".join(self.q(k) for k in keys)
        name = target.table_name
        if scd_type == 1:
            ddl = [*business, f"{self.q('row_hash')} {hash_ddl} NOT NULL",
                   f"{self.q('inserted_at')} {ts} NOT NULL", f"{self.q('updated_at')} {ts} NOT NULL",
                   f"{self.q('run_id')} {run_ddl} NOT NULL"]
            conn.execute(text(f"CREATE TABLE {table} ({', '.join(ddl)})"))
            conn.execute(text(f"CREATE UNIQUE INDEX {self.q(self.index_name(name, 'key'))} "
                              f"ON {table} ({key_cols})"))
        else:
            ddl = [f"{self.q('sk')} {self.surrogate_key_ddl()}", *business,
                   f"{self.q('row_hash')} {hash_ddl} NOT NULL",
                   f"{self.q('valid_from')} {ts} NOT NULL", f"{self.q('valid_to')} {ts}",
                   f"{self.q('is_current')} {self.ddl_type(ColumnType(TypeKind.BOOLEAN))} NOT NULL",
                   f"{self.q('run_id')} {run_ddl} NOT NULL"]
            conn.execute(text(f"CREATE TABLE {table} ({', '.join(ddl)})"))
            conn.execute(text(
                f"CREATE UNIQUE INDEX {self.q(self.index_name(name, 'current'))} ON {table} "
                f"({key_cols}) WHERE {self.q('is_current')}"))
            conn.execute(text(f"CREATE INDEX {self.q(self.index_name(name, 'key'))} "
                              f"ON {table} ({key_cols})"))

    def check_target(self, conn: Connection, target: TargetSpec, business: Sequence[str],
                     scd_type: int) -> None:
        have = set(self.target_column_names(conn, target))
        audit = SCD1_AUDIT_COLUMNS if scd_type == 1 else SCD2_AUDIT_COLUMNS
        missing = [c for c in (*business, *audit) if c not in have]
        if missing:
            raise ConfigError(
                f"target table {target.table} exists but lacks column(s) {', '.join(missing)} "
                f"needed for an SCD{scd_type} load of this source; drop the table to let chordload "
                f"create it, or add the columns")

    # -- staging -----------------------------------------------------------------------
    def create_stage(self, conn: Connection, target: TargetSpec, columns: Sequence[str]) -> str:
        raise NotImplementedError

    def clear_stage(self, conn: Connection, stage: str) -> None:
        """Empty the stage at the start of a batch transaction."""

    def drop_stage(self, conn: Connection, stage: str) -> None:
        conn.execute(text(f"DROP TABLE IF EXISTS {stage}"))

    def load_stage(self, conn: Connection, stage: str, columns: Sequence[str],
                   rows: Sequence[tuple]) -> None:
        raise NotImplementedError

    def row_hash_expr(self, qualified_columns: Sequence[str]) -> str:
        raise NotImplementedError

    def stage_max(self, conn: Connection, stage: str, column: str) -> Any:
        return conn.execute(text(f"SELECT max({self.q(column)}) FROM {stage}")).scalar_one()

    # -- SCD apply ---------------------------------------------------------------------
    def _hashed_stage(self, stage: str, columns: Sequence[str]) -> str:
        hash_expr = self.row_hash_expr([f"st.{self.q(c)}" for c in columns])
        return f"(SELECT st.*, {hash_expr} AS cl_hash FROM {stage} st)"

    def _key_match(self, keys: Sequence[str], left: str, right: str) -> str:
        return " AND ".join(f"{left}.{self.q(k)} = {right}.{self.q(k)}" for k in keys)

    def apply_scd1(self, conn: Connection, stage: str, target: TargetSpec,
                   columns: Sequence[str], keys: Sequence[str], run_id: str,
                   now: Any, staged_rows: int) -> ApplyCounts:
        """Update changed rows in place, insert new keys; equal hashes are not written."""
        table = self.table_ref(target)
        hashed = self._hashed_stage(stage, columns)
        sets = ", ".join(f"{self.q(c)} = s.{self.q(c)}" for c in columns if c not in keys)
        sets = (sets + ", " if sets else "") + (
            f"{self.q('row_hash')} = s.cl_hash, {self.q('updated_at')} = :now, "
            f"{self.q('run_id')} = :run_id")
        changed = conn.execute(text(
            f"UPDATE {table} AS t SET {sets} FROM {hashed} s WHERE "
            f"{self._key_match(keys, 't', 's')} AND t.{self.q('row_hash')} <> s.cl_hash"),
            {"now": now, "run_id": run_id}).rowcount
        cols = ", ".join(self.q(c) for c in columns)
        s_cols = ", ".join(f"s.{self.q(c)}" for c in columns)
        inserted = conn.execute(text(
            f"INSERT INTO {table} ({cols}, {self.q('row_hash')}, {self.q('inserted_at')}, "
            f"{self.q('updated_at')}, {self.q('run_id')}) SELECT {s_cols}, s.cl_hash, :now, :now, "
            f":run_id FROM {hashed} s WHERE NOT EXISTS (SELECT 1 FROM {table} t WHERE "
            f"{self._key_match(keys, 't', 's')})"),
            {"now": now, "run_id": run_id}).rowcount
        return ApplyCounts(inserted=inserted, changed=changed,
                           unchanged=staged_rows - inserted - changed)

    def apply_scd2(self, conn: Connection, stage: str, target: TargetSpec,
                   columns: Sequence[str], keys: Sequence[str], run_id: str,
                   valid_from: Any, staged_rows: int) -> ApplyCounts:
        """Expire current versions whose hash changed, then insert a current version for every
        staged key that has none (new keys and the ones just expired). Re-applying the same
        batch finds equal hashes and writes nothing, which makes redelivery harmless."""
        table = self.table_ref(target)
        hashed = self._hashed_stage(stage, columns)
        current = self.q("is_current")
        changed = conn.execute(text(
            f"UPDATE {table} AS t SET {self.q('valid_to')} = :valid_from, {current} = :false_ "
            f"FROM {hashed} s WHERE {self._key_match(keys, 't', 's')} AND t.{current} = :true_ "
            f"AND t.{self.q('row_hash')} <> s.cl_hash"),
            {"valid_from": valid_from, "true_": True, "false_": False}).rowcount
        cols = ", ".join(self.q(c) for c in columns)
        s_cols = ", ".join(f"s.{self.q(c)}" for c in columns)
        written = conn.execute(text(
            f"INSERT INTO {table} ({cols}, {self.q('row_hash')}, {self.q('valid_from')}, "
            f"{self.q('valid_to')}, {current}, {self.q('run_id')}) SELECT {s_cols}, s.cl_hash, "
            f":valid_from, NULL, :true_, :run_id FROM {hashed} s WHERE NOT EXISTS (SELECT 1 FROM "
            f"{table} t WHERE {self._key_match(keys, 't', 's')} AND t.{current} = :true_)"),
            {"valid_from": valid_from, "true_": True, "run_id": run_id}).rowcount
        inserted = written - changed
        return ApplyCounts(inserted=inserted, changed=changed,
                           unchanged=staged_rows - written)
