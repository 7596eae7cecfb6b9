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
from shared.mapping import AuditColumns, TargetSpec

STAGE_TABLE = "cl_stage"
HASH_COLUMN = "row_hash"


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

    def key_ddl_type(self, column_type: ColumnType) -> str:
        """The DDL type of a business-key column (it is indexed); databases whose unbounded
        text type cannot be indexed override this."""
        return self.ddl_type(column_type)

    def surrogate_key_ddl(self) -> str:
        raise NotImplementedError

    def timestamp_ddl(self) -> str:
        return self.ddl_type(ColumnType(TypeKind.TIMESTAMPTZ))

    def bool_value(self, value: bool) -> Any:
        """How a boolean is bound (databases without a boolean type bind 1/0)."""
        return value

    def target_exists(self, conn: Connection, target: TargetSpec) -> bool:
        return inspect(conn).has_table(target.table_name, schema=target.schema_name)

    def target_column_names(self, conn: Connection, target: TargetSpec) -> list[str]:
        return [c["name"] for c in inspect(conn).get_columns(target.table_name,
                                                            schema=target.schema_name)]

    def target_columns_ddl(self, columns: Sequence[SourceColumn], keys: Sequence[str],
                           scd_type: int, audit: AuditColumns) -> list[str]:
        """Column definitions of a new target: business columns from the source's types plus
        the SCD contract's audit columns."""
        business = [f"{self.q(c.name)} "
                    f"{self.key_ddl_type(c.type) if c.name in keys else self.ddl_type(c.type)}"
                    for c in columns]
        ts = self.timestamp_ddl()
        hash_ddl = self.ddl_type(ColumnType(TypeKind.TEXT, length=32))
        run_ddl = self.ddl_type(ColumnType(TypeKind.TEXT, length=32))
        if scd_type == 1:
            return [*business, f"{self.q(audit.row_hash)} {hash_ddl} NOT NULL",
                    f"{self.q(audit.inserted_at)} {ts} NOT NULL",
                    f"{self.q(audit.updated_at)} {ts} NOT NULL",
                    f"{self.q(audit.run_id)} {run_ddl} NOT NULL"]
        return [f"{self.q(audit.sk)} {self.surrogate_key_ddl()}", *business,
                f"{self.q(audit.row_hash)} {hash_ddl} NOT NULL",
                f"{self.q(audit.valid_from)} {ts} NOT NULL", f"{self.q(audit.valid_to)} {ts}",
                f"{self.q(audit.is_current)} {self.ddl_type(ColumnType(TypeKind.BOOLEAN))} "
                f"NOT NULL", f"{self.q(audit.run_id)} {run_ddl} NOT NULL"]

    def create_table_sql(self, table: str, columns_ddl: Sequence[str]) -> str:
        return f"CREATE TABLE {table} ({', '.join(columns_ddl)})"

    def target_index_sql(self, table: str, target: TargetSpec, columns: Sequence[SourceColumn],
                         keys: Sequence[str], scd_type: int, audit: AuditColumns) -> list[str]:
        """SCD1: a unique index on the keys. SCD2: one current row per key, enforced by a
        unique partial index, plus a plain index on the keys."""
        key_cols = ", ".join(self.q(k) for k in keys)
        name = target.table_name
        if scd_type == 1:
            return [f"CREATE UNIQUE INDEX {self.q(self.index_name(name, 'key'))} "
                    f"ON {table} ({key_cols})"]
        return [f"CREATE UNIQUE INDEX {self.q(self.index_name(name, 'current'))} ON {table} "
                f"({key_cols}) WHERE {self.q(audit.is_current)}",
                f"CREATE INDEX {self.q(self.index_name(name, 'key'))} ON {table} ({key_cols})"]

    def create_target(self, conn: Connection, target: TargetSpec, columns: list[SourceColumn],
                      keys: Sequence[str], scd_type: int, audit: AuditColumns) -> None:
        """Create the target from the source's column types, with the SCD contract's columns
        and indexes (SCD2: one current row per key)."""
        table = self.table_ref(target)
        conn.execute(text(self.create_table_sql(
            table, self.target_columns_ddl(columns, keys, scd_type, audit))))
        for statement in self.target_index_sql(table, target, columns, keys, scd_type, audit):
            conn.execute(text(statement))

    def check_target(self, conn: Connection, target: TargetSpec, business: Sequence[str],
                     scd_type: int, audit_names: Sequence[str]) -> None:
        have = set(self.target_column_names(conn, target))
        missing = [c for c in (*business, *audit_names) if c not in have]
        if missing:
            raise ConfigError(
                f"target table {target.table} exists but lacks column(s) {', '.join(missing)} "
                f"needed for an SCD{scd_type} load of this source; drop the table to let chordload "
                f"create it, or add the columns")

    # -- staging -----------------------------------------------------------------------
    def create_stage(self, conn: Connection, target: TargetSpec, columns: Sequence[str]) -> str:
        raise NotImplementedError

    def clear_stage(self, conn: Connection, stage: str) -> None:
        """Empty the stage inside the batch transaction (the quarantine bisection loads
        several slices of one batch in one transaction, each in its own savepoint)."""
        conn.execute(text(f"DELETE FROM {stage}"))

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
    def null_safe_eq(self, left: str, right: str) -> str:
        """Equality that treats NULL = NULL as true (a NULL business key is one key)."""
        return f"{left} IS NOT DISTINCT FROM {right}"

    def _hashed_stage(self, stage: str, columns: Sequence[str], only: str) -> str:
        hash_expr = self.row_hash_expr([f"st.{self.q(c)}" for c in columns])
        return f"(SELECT st.*, {hash_expr} AS cl_hash FROM {stage} st WHERE {only})"

    def _passes(self, keys: Sequence[str], has_null_keys: bool) -> list[tuple[str, str]]:
        """(key match, stage filter) per pass. Plain ``=`` uses the target's key index; rows
        with a NULL key take a second, null-safe pass, run only when the batch has such rows."""
        plain = " AND ".join(f"t.{self.q(k)} = s.{self.q(k)}" for k in keys)
        not_null = " AND ".join(f"st.{self.q(k)} IS NOT NULL" for k in keys)
        passes = [(plain, not_null)]
        if has_null_keys:
            safe = " AND ".join(self.null_safe_eq(f"t.{self.q(k)}", f"s.{self.q(k)}") for k in keys)
            any_null = " OR ".join(f"st.{self.q(k)} IS NULL" for k in keys)
            passes.append((safe, f"({any_null})"))
        return passes

    def update_from_sql(self, table: str, hashed: str, match: str,
                        sets: Sequence[tuple[str, str]], where: str) -> str:
        """UPDATE the target rows ``t`` that join the hashed stage ``s`` on ``match`` and
        satisfy ``where``; ``sets`` are (target column, expression) pairs."""
        assignments = ", ".join(f"{self.q(column)} = {expr}" for column, expr in sets)
        return f"UPDATE {table} AS t SET {assignments} FROM {hashed} s WHERE {match} AND {where}"

    def apply_scd1(self, conn: Connection, stage: str, target: TargetSpec,
                   columns: Sequence[str], keys: Sequence[str], audit: AuditColumns,
                   run_id: str, now: Any, staged_rows: int,
                   has_null_keys: bool = False) -> ApplyCounts:
        """Update changed rows in place, insert new keys; equal hashes are not written."""
        table = self.table_ref(target)
        sets = [(c, f"s.{self.q(c)}") for c in columns if c not in keys]
        sets += [(audit.row_hash, "s.cl_hash"), (audit.updated_at, ":now"),
                 (audit.run_id, ":run_id")]
        cols = ", ".join(self.q(c) for c in columns)
        s_cols = ", ".join(f"s.{self.q(c)}" for c in columns)
        params = {"now": now, "run_id": run_id}
        changed = inserted = 0
        for match, only in self._passes(keys, has_null_keys):
            hashed = self._hashed_stage(stage, columns, only)
            changed += conn.execute(text(self.update_from_sql(
                table, hashed, match, sets, f"t.{self.q(audit.row_hash)} <> s.cl_hash")),
                params).rowcount
            inserted += conn.execute(text(
                f"INSERT INTO {table} ({cols}, {self.q(audit.row_hash)}, {self.q(audit.inserted_at)}, "
                f"{self.q(audit.updated_at)}, {self.q(audit.run_id)}) SELECT {s_cols}, s.cl_hash, :now, "
                f":now, :run_id FROM {hashed} s WHERE NOT EXISTS (SELECT 1 FROM {table} t "
                f"WHERE {match})"), params).rowcount
        return ApplyCounts(inserted=inserted, changed=changed,
                           unchanged=staged_rows - inserted - changed)

    def apply_scd2(self, conn: Connection, stage: str, target: TargetSpec,
                   columns: Sequence[str], keys: Sequence[str], audit: AuditColumns,
                   run_id: str, valid_from: Any, staged_rows: int,
                   has_null_keys: bool = False) -> ApplyCounts:
        """Expire current versions whose hash changed, then insert a current version for every
        staged key that has none (new keys and the ones just expired). Re-applying the same
        batch finds equal hashes and writes nothing, which makes redelivery harmless."""
        table = self.table_ref(target)
        current = self.q(audit.is_current)
        cols = ", ".join(self.q(c) for c in columns)
        s_cols = ", ".join(f"s.{self.q(c)}" for c in columns)
        params = {"valid_from": valid_from, "true_": self.bool_value(True),
                  "false_": self.bool_value(False), "run_id": run_id}
        expire = [(audit.valid_to, ":valid_from"), (audit.is_current, ":false_")]
        changed = written = 0
        for match, only in self._passes(keys, has_null_keys):
            hashed = self._hashed_stage(stage, columns, only)
            changed += conn.execute(text(self.update_from_sql(
                table, hashed, match, expire,
                f"t.{current} = :true_ AND t.{self.q(audit.row_hash)} <> s.cl_hash")),
                params).rowcount
            written += conn.execute(text(
                f"INSERT INTO {table} ({cols}, {self.q(audit.row_hash)}, {self.q(audit.valid_from)}, "
                f"{self.q(audit.valid_to)}, {current}, {self.q(audit.run_id)}) SELECT {s_cols}, s.cl_hash, "
                f":valid_from, NULL, :true_, :run_id FROM {hashed} s WHERE NOT EXISTS (SELECT 1 "
                f"FROM {table} t WHERE {match} AND t.{current} = :true_)"), params).rowcount
        return ApplyCounts(inserted=written - changed, changed=changed,
                           unchanged=staged_rows - written)

    def count_applied_by_run(self, conn: Connection, stage: str, target: TargetSpec,
                             columns: Sequence[str], keys: Sequence[str], audit: AuditColumns,
                             scd_type: int, run_id: str, valid_from: Any,
                             has_null_keys: bool = False) -> ApplyCounts:
        """Among staged rows the apply found unchanged, those that this same run had already
        written (an earlier attempt of a retried or redelivered chunk, or the launch before a
        resume), split into inserted and changed. Run only on replays, so counts stay exact
        without costing the first attempt anything."""
        table = self.table_ref(target)
        if scd_type == 1:
            changed_expr = (f"CASE WHEN t.{self.q(audit.inserted_at)} < "
                            f"t.{self.q(audit.updated_at)} THEN 1 ELSE 0 END")
            current = "1 = 1"
        else:
            current = f"t.{self.q(audit.is_current)} = :true_"
            changed_expr = (f"CASE WHEN EXISTS (SELECT 1 FROM {table} o WHERE "
                            f"{{match_o}} AND o.{self.q(audit.is_current)} = :false_ AND "
                            f"o.{self.q(audit.valid_to)} = :valid_from) THEN 1 ELSE 0 END")
        params = {"run_id": run_id, "valid_from": valid_from, "true_": self.bool_value(True),
                  "false_": self.bool_value(False)}
        total = changed = 0
        for match, only in self._passes(keys, has_null_keys):
            match_o = match.replace("t.", "o.")
            hashed = self._hashed_stage(stage, columns, only)
            row = conn.execute(text(
                f"SELECT count(*), sum({changed_expr.format(match_o=match_o)}) FROM {hashed} s "
                f"JOIN {table} t ON {match} AND {current} WHERE t.{self.q(audit.run_id)} = "
                f":run_id AND t.{self.q(audit.row_hash)} = s.cl_hash"), params).one()
            total += int(row[0] or 0)
            changed += int(row[1] or 0)
        return ApplyCounts(inserted=total - changed, changed=changed, unchanged=-total)
