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
from shared.errors import ConfigError
from shared.config.mapping import AuditColumns, TargetSpec

STAGE_TABLE = "cl_stage"
HASH_COLUMN = "row_hash"


TOMBSTONE_HASH = "deleted"  # row_hash of a 'deleted' version: never equal to an md5


@dataclass(frozen=True)
class ApplyCounts:
    inserted: int = 0
    changed: int = 0
    unchanged: int = 0


@dataclass(frozen=True)
class Scd2Options:
    """SCD2 options of a mapping, as the apply statements need them.

    ``valid_from_column``: a staged column whose value starts a version (default: the run's
    start, bound as ``valid_from``). ``current_valid_to``: the value bound as valid_to of
    current versions (default NULL). ``tracked``: the columns hashed into row_hash; the other
    non-key columns are updated in place on the current version. ``is_deleted``: the column
    marking 'deleted' versions (deletes: new_record), set false on every version written here.
    """

    valid_from_column: str | None = None
    current_valid_to: Any = None
    tracked: tuple[str, ...] | None = None
    is_deleted: str | None = None

    def hashed_columns(self, columns: Sequence[str]) -> list[str]:
        return [c for c in columns if c in self.tracked] if self.tracked else list(columns)

    def in_place_columns(self, columns: Sequence[str], keys: Sequence[str]) -> list[str]:
        if not self.tracked:
            return []
        return [c for c in columns if c not in self.tracked and c not in keys]


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

    def relays_to(self, target: "DialectAdapter") -> bool:
        """Whether a chunk can move rows from this source to ``target`` as the databases'
        own bulk text, without parsing values in Python (PostgreSQL to PostgreSQL)."""
        return False

    def estimate_rows(self, conn: Connection, query: str, where: str, params: dict[str, Any],
                      exact: bool) -> int:
        sql = f"SELECT count(*) FROM ({query}) src WHERE {where}"
        return int(conn.execute(text(sql), params).scalar_one())

    def max_value(self, conn: Connection, query: str, column: str) -> Any:
        sql = f"SELECT max(src.{self.q(column)}) FROM ({query}) src"
        return conn.execute(text(sql)).scalar_one()

    def row_compare(self, left: Sequence[str], op: str, right: Sequence[str]) -> str:
        """``left op right`` for one expression each, or as row values ``(a, b) >= (x, y)``
        (PostgreSQL, MariaDB/MySQL and SQLite compare rows lexicographically)."""
        if len(left) == 1:
            return f"{left[0]} {op} {right[0]}"
        return f"({', '.join(left)}) {op} ({', '.join(right)})"

    @staticmethod
    def expanded_row_compare(left: Sequence[str], op: str, right: Sequence[str]) -> str:
        """A row comparison spelled out, for databases without row-value comparisons:
        ``(a, b) >= (x, y)`` is ``a > x OR (a = x AND b >= y)``."""
        strict = op[0]  # '<' or '>'
        terms = []
        for i in range(len(left)):
            equal = [f"{left[j]} = {right[j]}" for j in range(i)]
            last = op if i == len(left) - 1 else strict
            terms.append("(" + " AND ".join([*equal, f"{left[i]} {last} {right[i]}"]) + ")")
        return "(" + " OR ".join(terms) + ")"

    def limit_sql(self, sql: str, limit: int, offset: int = 0) -> str:
        """``sql`` (ending in ORDER BY) limited to ``limit`` rows after ``offset``."""
        return f"{sql} LIMIT {int(limit)} OFFSET {int(offset)}"

    def max_row(self, conn: Connection, query: str, columns: Sequence[str]) -> Any:
        """The high-water mark: max(column), or for several columns the greatest row of them
        (rows with a NULL part cannot be ordered and are left out)."""
        if len(columns) == 1:
            return self.max_value(conn, query, columns[0])
        refs = [f"src.{self.q(c)}" for c in columns]
        sql = self.limit_sql(
            f"SELECT {', '.join(refs)} FROM ({query}) src WHERE "
            f"{' AND '.join(f'{r} IS NOT NULL' for r in refs)} "
            f"ORDER BY {', '.join(f'{r} DESC' for r in refs)}", 1)
        row = conn.execute(text(sql)).first()
        return tuple(row) if row is not None else None

    def min_max(self, conn: Connection, query: str, where: str, params: dict[str, Any],
                column: str) -> tuple[Any, Any]:
        col = f"src.{self.q(column)}"
        row = conn.execute(text(f"SELECT min({col}), max({col}) FROM ({query}) src WHERE "
                                f"({where}) AND {col} IS NOT NULL"), params).one()
        return row[0], row[1]

    def split_boundaries(self, conn: Connection, query: str, where: str,
                         params: dict[str, Any], column: str, parts: int) -> list[Any]:
        """Upper bounds of ``parts`` equal-count buckets of the split column (quantiles)."""
        col = f"src.{self.q(column)}"
        sql = (f"SELECT max(v) AS upper_value FROM (SELECT {col} AS v, ntile(:parts) OVER "
               f"(ORDER BY {col}) AS bucket FROM ({query}) src WHERE ({where}) AND {col} IS NOT NULL"
               f") buckets GROUP BY bucket ORDER BY upper_value")
        uppers = [row[0] for row in conn.execute(text(sql), {**params, "parts": parts})]
        bounds: list[Any] = []
        for value in uppers[:-1]:  # ascending in the database's own order (its collation)
            if not bounds or value != bounds[-1]:
                bounds.append(value)
        return bounds

    def offset_boundaries(self, conn: Connection, query: str, where: str,
                          params: dict[str, Any], columns: Sequence[str], parts: int,
                          total: int) -> list[Any]:
        """Upper bounds at every ``total / parts``-th row of the source ordered by
        ``columns``, each read with ``ORDER BY columns LIMIT 1 OFFSET k``: a scalar for one
        column, a row for several. Rows with a NULL part are left out (chunk 0 takes them)."""
        refs = [f"src.{self.q(c)}" for c in columns]
        base = (f"SELECT {', '.join(refs)} FROM ({query}) src WHERE ({where}) AND "
                f"{' AND '.join(f'{r} IS NOT NULL' for r in refs)} ORDER BY {', '.join(refs)}")
        bounds: list[Any] = []
        for i in range(1, parts):
            position = total * i // parts
            if position < 1:
                continue
            row = conn.execute(text(self.limit_sql(base, 1, position - 1)), params).first()
            if row is None:
                break
            value = row[0] if len(columns) == 1 else tuple(row)
            if not bounds or value != bounds[-1]:  # ascending in the database's order
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
                           scd_type: int, audit: AuditColumns, *,
                           valid_from_type: ColumnType | None = None,
                           is_deleted: bool = False) -> list[str]:
        """Column definitions of a new target: business columns from the source's types plus
        the SCD contract's audit columns. SCD2 ``valid_from``/``valid_to`` take the type of
        the source column that gives valid_from, if one does; ``is_deleted`` is added for
        deletes: new_record."""
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
        validity = self.ddl_type(valid_from_type) if valid_from_type is not None else ts
        boolean = self.ddl_type(ColumnType(TypeKind.BOOLEAN))
        ddl = [f"{self.q(audit.sk)} {self.surrogate_key_ddl()}", *business,
               f"{self.q(audit.row_hash)} {hash_ddl} NOT NULL",
               f"{self.q(audit.valid_from)} {validity} NOT NULL",
               f"{self.q(audit.valid_to)} {validity}",
               f"{self.q(audit.is_current)} {boolean} NOT NULL",
               f"{self.q(audit.run_id)} {run_ddl} NOT NULL"]
        if is_deleted:
            ddl.append(f"{self.q(audit.is_deleted)} {boolean} NOT NULL")
        return ddl

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
                      keys: Sequence[str], scd_type: int, audit: AuditColumns,
                      **options: Any) -> None:
        """Create the target from the source's column types, with the SCD contract's columns
        and indexes (SCD2: one current row per key). ``options``: see target_columns_ddl."""
        table = self.table_ref(target)
        conn.execute(text(self.create_table_sql(
            table, self.target_columns_ddl(columns, keys, scd_type, audit, **options))))
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

    def chunk_stage(self, conn: Connection, target: TargetSpec, columns: Sequence[str]) -> str:
        """The stage a chunk loads its batches through; given back with ``release_stage``.
        By default a new one per chunk; databases where making one costs a catalog write
        keep one per connection."""
        return self.create_stage(conn, target, columns)

    def release_stage(self, conn: Connection, stage: str) -> None:
        self.drop_stage(conn, stage)

    def index_stage(self, conn: Connection, stage: str, columns: Sequence[str]) -> None:
        """Index the stage on ``columns`` (the hard-delete pass probes it once per target
        key); dropped with the stage."""
        conn.execute(text(f"CREATE INDEX cl_stage_keys ON {stage} "
                          f"({', '.join(self.q(c) for c in columns)})"))

    def load_stage(self, conn: Connection, stage: str, columns: Sequence[str],
                   rows: Sequence[tuple]) -> None:
        raise NotImplementedError

    def row_hash_expr(self, qualified_columns: Sequence[str]) -> str:
        raise NotImplementedError

    # -- SCD apply ---------------------------------------------------------------------
    def null_safe_eq(self, left: str, right: str) -> str:
        """Equality that treats NULL = NULL as true (a NULL business key is one key)."""
        return f"{left} IS NOT DISTINCT FROM {right}"

    def _hashed_stage(self, stage: str, columns: Sequence[str], only: str,
                      hashed: Sequence[str] | None = None) -> str:
        hash_expr = self.row_hash_expr([f"st.{self.q(c)}" for c in (hashed or columns)])
        return f"(SELECT st.*, {hash_expr} AS cl_hash FROM {stage} st WHERE {only})"

    def _key_match(self, keys: Sequence[str], left: str, right: str, null_safe: bool) -> str:
        if null_safe:
            return " AND ".join(self.null_safe_eq(f"{left}.{self.q(k)}", f"{right}.{self.q(k)}")
                                for k in keys)
        return " AND ".join(f"{left}.{self.q(k)} = {right}.{self.q(k)}" for k in keys)

    def _key_filter(self, keys: Sequence[str], alias: str, null_safe: bool) -> str:
        """Rows of ``alias`` that take this pass: no NULL key part, or (null-safe) some."""
        if null_safe:
            return "(" + " OR ".join(f"{alias}.{self.q(k)} IS NULL" for k in keys) + ")"
        return " AND ".join(f"{alias}.{self.q(k)} IS NOT NULL" for k in keys)

    def _passes(self, keys: Sequence[str], has_null_keys: bool) -> list[tuple[str, str]]:
        """(key match, stage filter) per pass. Plain ``=`` uses the target's key index; rows
        with a NULL key take a second, null-safe pass, run only when the batch has such rows."""
        passes = [(self._key_match(keys, "t", "s", False), self._key_filter(keys, "st", False))]
        if has_null_keys:
            passes.append((self._key_match(keys, "t", "s", True),
                           self._key_filter(keys, "st", True)))
        return passes

    def _written_by_run(self, target_alias: str, stage_alias: str, audit: AuditColumns) -> str:
        """``target.run_id = :run_id``, spelled as a join condition on the staged row. As a
        plain restriction on the target it is estimated from the target's statistics, which
        during a load are stale (they know few or no rows of this run); PostgreSQL then
        prefers scanning the whole target once per staged row to probing its key index."""
        return (f"{target_alias}.{self.q(audit.run_id)} = CASE WHEN {stage_alias}.cl_hash IS "
                f"NULL THEN NULL ELSE :run_id END")

    def _differs(self, left: str, right: str, columns: Sequence[str]) -> str:
        """The columns of two row aliases differ (compared by hash, so NULLs are values)."""
        return (f"{self.row_hash_expr([f'{left}.{self.q(c)}' for c in columns])} <> "
                f"{self.row_hash_expr([f'{right}.{self.q(c)}' for c in columns])}")

    def update_from_sql(self, table: str, hashed: str, match: str,
                        sets: Sequence[tuple[str, str]], where: str) -> str:
        """UPDATE the target rows ``t`` that join the hashed stage ``s`` on ``match`` and
        satisfy ``where``; ``sets`` are (target column, expression) pairs."""
        assignments = ", ".join(f"{self.q(column)} = {expr}" for column, expr in sets)
        return f"UPDATE {table} AS t SET {assignments} FROM {hashed} s WHERE {match} AND {where}"

    def update_where_sql(self, table: str, sets: Sequence[tuple[str, str]], where: str) -> str:
        """UPDATE the target rows ``t`` that satisfy ``where`` (no join)."""
        assignments = ", ".join(f"{self.q(column)} = {expr}" for column, expr in sets)
        return f"UPDATE {table} AS t SET {assignments} WHERE {where}"

    def delete_where_sql(self, table: str, where: str) -> str:
        """DELETE the target rows ``t`` that satisfy ``where``."""
        return f"DELETE FROM {table} AS t WHERE {where}"

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
                   has_null_keys: bool = False, options: Scd2Options | None = None) -> ApplyCounts:
        """Expire current versions whose hash changed, then insert a current version for every
        staged key that has none (new keys and the ones just expired). With ``tracked``
        columns, a change in the other columns updates the current version in place. Re-applying
        the same batch finds equal hashes and writes nothing, which makes redelivery harmless."""
        opts = options or Scd2Options()
        table = self.table_ref(target)
        current = self.q(audit.is_current)
        hashed_cols = opts.hashed_columns(columns)
        in_place = opts.in_place_columns(columns, keys)
        vf = f"s.{self.q(opts.valid_from_column)}" if opts.valid_from_column else ":valid_from"
        insert_cols = [self.q(c) for c in columns] + [self.q(audit.row_hash), self.q(audit.valid_from),
                                                      self.q(audit.valid_to), current,
                                                      self.q(audit.run_id)]
        insert_vals = [f"s.{self.q(c)}" for c in columns] + ["s.cl_hash", vf, ":valid_to_current",
                                                            ":true_", ":run_id"]
        if opts.is_deleted:
            insert_cols.append(self.q(opts.is_deleted))
            insert_vals.append(":false_")
        params = {"valid_from": valid_from, "true_": self.bool_value(True),
                  "false_": self.bool_value(False), "run_id": run_id,
                  "valid_to_current": opts.current_valid_to}
        expire = [(audit.valid_to, vf), (audit.is_current, ":false_")]
        changed = written = updated = 0
        for match, only in self._passes(keys, has_null_keys):
            hashed = self._hashed_stage(stage, columns, only, hashed_cols)
            if in_place:
                updated += conn.execute(text(self.update_from_sql(
                    table, hashed, match, [(c, f"s.{self.q(c)}") for c in in_place],
                    f"t.{current} = :true_ AND t.{self.q(audit.row_hash)} = s.cl_hash AND "
                    f"{self._differs('t', 's', in_place)}")), params).rowcount
            changed += conn.execute(text(self.update_from_sql(
                table, hashed, match, expire,
                f"t.{current} = :true_ AND t.{self.q(audit.row_hash)} <> s.cl_hash")),
                params).rowcount
            written += conn.execute(text(
                f"INSERT INTO {table} ({', '.join(insert_cols)}) SELECT {', '.join(insert_vals)} "
                f"FROM {hashed} s WHERE NOT EXISTS (SELECT 1 "
                f"FROM {table} t WHERE {match} AND t.{current} = :true_)"), params).rowcount
        return ApplyCounts(inserted=written - changed, changed=changed + updated,
                           unchanged=staged_rows - written - updated)

    def replace_own_versions(self, conn: Connection, stage: str, target: TargetSpec,
                             columns: Sequence[str], keys: Sequence[str], audit: AuditColumns,
                             run_id: str, has_null_keys: bool = False,
                             options: Scd2Options | None = None, *, scd_type: int = 2,
                             now: Any = None) -> int:
        """Overwrite, in place, the current rows that this same run wrote and that differ from
        the staged row: a later duplicate of a key that won, or a replayed batch that reads
        other rows than the attempt before it. A run thus writes one version per key however
        often the key occurs in its extract, and the apply that follows finds these rows
        unchanged. SCD2 with valid_from from a source column: the predecessor's valid_to
        moves along. SCD1: ``now`` is the new updated_at. Returns the rows overwritten."""
        opts = options or Scd2Options()
        table = self.table_ref(target)
        scd2 = scd_type == 2
        current = self.q(audit.is_current)
        hashed_cols = opts.hashed_columns(columns) if scd2 else list(columns)
        in_place = opts.in_place_columns(columns, keys) if scd2 else []
        params = {"true_": self.bool_value(True), "false_": self.bool_value(False),
                  "run_id": run_id, "now": now}
        replaced = 0
        for null_safe in ((False, True) if has_null_keys else (False,)):
            only = self._key_filter(keys, "st", null_safe)
            hashed = self._hashed_stage(stage, columns, only, hashed_cols)

            def differs(t: str, s: str) -> str:
                found = f"{t}.{self.q(audit.row_hash)} <> {s}.cl_hash"
                return f"({found} OR {self._differs(t, s, in_place)})" if in_place else found

            own = f"{self._written_by_run('t', 's', audit)} AND {differs('t', 's')}"
            if scd2:
                own = f"t.{current} = :true_ AND {own}"
            match = self._key_match(keys, "t", "s", null_safe)
            sets = [(c, f"s.{self.q(c)}") for c in columns if c not in keys]
            sets.append((audit.row_hash, "s.cl_hash"))
            if not scd2:
                sets.append((audit.updated_at, ":now"))
            elif opts.valid_from_column:
                vf = f"s.{self.q(opts.valid_from_column)}"
                owned = (f"(SELECT s2.*, o.{self.q(audit.valid_from)} AS cl_old_vf FROM "
                         f"{hashed} s2 JOIN {table} o ON {self._key_match(keys, 'o', 's2', null_safe)}"
                         f" AND o.{current} = :true_ AND {self._written_by_run('o', 's2', audit)}"
                         f" AND {differs('o', 's2')})")
                conn.execute(text(self.update_from_sql(
                    table, owned, match, [(audit.valid_to, vf)],
                    f"t.{current} = :false_ AND t.{self.q(audit.valid_to)} = s.cl_old_vf")),
                    params)
                sets.append((audit.valid_from, vf))
            replaced += conn.execute(text(self.update_from_sql(table, hashed, match, sets, own)),
                                     params).rowcount
        return replaced

    def count_applied_by_run(self, conn: Connection, stage: str, target: TargetSpec,
                             columns: Sequence[str], keys: Sequence[str], audit: AuditColumns,
                             scd_type: int, run_id: str, valid_from: Any,
                             has_null_keys: bool = False,
                             options: Scd2Options | None = None) -> ApplyCounts:
        """Among staged rows the apply found unchanged, those that this same run had already
        written (an earlier attempt of a retried or redelivered chunk, or the launch before a
        resume), split into inserted and changed. Run only on replays, so counts stay exact
        without costing the first attempt anything."""
        opts = options or Scd2Options()
        table = self.table_ref(target)
        hashed_cols = opts.hashed_columns(columns) if scd_type == 2 else list(columns)
        if scd_type == 1:  # changed: inserted before this run (at valid_from), updated since
            changed_expr = (f"CASE WHEN t.{self.q(audit.inserted_at)} < "
                            f"t.{self.q(audit.updated_at)} AND t.{self.q(audit.inserted_at)} < "
                            f":valid_from THEN 1 ELSE 0 END")
            current = "1 = 1"
        else:
            current = f"t.{self.q(audit.is_current)} = :true_"
            changed_expr = (f"CASE WHEN EXISTS (SELECT 1 FROM {table} o WHERE "
                            f"{{match_o}} AND o.{self.q(audit.is_current)} = :false_ AND "
                            f"o.{self.q(audit.valid_to)} = t.{self.q(audit.valid_from)}) "
                            f"THEN 1 ELSE 0 END")
        params = {"run_id": run_id, "valid_from": valid_from, "true_": self.bool_value(True),
                  "false_": self.bool_value(False)}
        total = changed = 0
        for null_safe in ((False, True) if has_null_keys else (False,)):
            match = self._key_match(keys, "t", "s", null_safe)
            match_o = self._key_match(keys, "o", "t", null_safe)
            hashed = self._hashed_stage(stage, columns, self._key_filter(keys, "st", null_safe),
                                        hashed_cols)
            row = conn.execute(text(
                f"SELECT count(*), sum({changed_expr.format(match_o=match_o)}) FROM {hashed} s "
                f"JOIN {table} t ON {match} AND {current} WHERE "
                f"{self._written_by_run('t', 's', audit)} AND "
                f"t.{self.q(audit.row_hash)} = s.cl_hash"), params).one()
            total += int(row[0] or 0)
            changed += int(row[1] or 0)
        return ApplyCounts(inserted=total - changed, changed=changed, unchanged=-total)

    # -- hard deletes (full loads, in finalize) -------------------------------------------
    def retire_absent_keys(self, conn: Connection, stage: str, target: TargetSpec,
                           columns: Sequence[str], keys: Sequence[str], audit: AuditColumns,
                           scd_type: int, mode: str, run_id: str, at: Any,
                           options: Scd2Options | None = None) -> int:
        """Retire the keys that are current in the target and absent from ``stage`` (every
        key of the source's window). SCD1 deletes the row. SCD2 ``invalidate`` expires the
        current version at ``at``; ``new_record`` also adds a current 'deleted' version (a
        copy of the key's latest version with ``is_deleted`` true and a row_hash no row has,
        so the key coming back makes a new version). Idempotent; returns the keys retired."""
        opts = options or Scd2Options()
        table = self.table_ref(target)
        current = self.q(audit.is_current)
        params = {"true_": self.bool_value(True), "false_": self.bool_value(False),
                  "at": at, "run_id": run_id, "valid_to_current": opts.current_valid_to,
                  "tombstone": TOMBSTONE_HASH}
        retired = 0
        for null_safe in (False, True):
            absent = (f"{self._key_filter(keys, 't', null_safe)} AND NOT EXISTS (SELECT 1 FROM "
                      f"{stage} st WHERE {self._key_match(keys, 'st', 't', null_safe)})")
            if scd_type == 1:
                retired += conn.execute(text(self.delete_where_sql(table, absent)), params).rowcount
                continue
            live = f"t.{current} = :true_"
            if opts.is_deleted:
                live += f" AND t.{self.q(opts.is_deleted)} = :false_"
            retired += conn.execute(text(self.update_where_sql(
                table, [(audit.valid_to, ":at"), (audit.is_current, ":false_")],
                f"{live} AND {absent}")), params).rowcount
        if scd_type == 2 and mode == "new_record" and opts.is_deleted:
            cols = [self.q(c) for c in columns]
            for null_safe in (False, True):
                absent = (f"{self._key_filter(keys, 'o', null_safe)} AND NOT EXISTS (SELECT 1 "
                          f"FROM {stage} st WHERE {self._key_match(keys, 'st', 'o', null_safe)})")
                conn.execute(text(
                    f"INSERT INTO {table} ({', '.join(cols)}, {self.q(audit.row_hash)}, "
                    f"{self.q(audit.valid_from)}, {self.q(audit.valid_to)}, {current}, "
                    f"{self.q(opts.is_deleted)}, {self.q(audit.run_id)}) SELECT "
                    f"{', '.join(f'o.{c}' for c in cols)}, :tombstone, :at, :valid_to_current, "
                    f":true_, :true_, :run_id FROM {table} o WHERE o.{current} = :false_ AND "
                    f"o.{self.q(audit.valid_to)} = :at AND o.{self.q(opts.is_deleted)} = :false_ "
                    f"AND {absent} AND NOT EXISTS (SELECT 1 FROM {table} c WHERE "
                    f"{self._key_match(keys, 'c', 'o', null_safe)} AND (c.{current} = :true_ "
                    f"OR c.{self.q(audit.sk)} > o.{self.q(audit.sk)}))"),
                    params)
        return retired
