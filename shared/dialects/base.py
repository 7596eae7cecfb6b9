"""The dialect adapter interface and the SQL that is the same everywhere.

An adapter is I/O and SQL pieces only: identifier quoting, reading source column types,
the row estimate, split boundaries, streaming, the bulk path into staging, the row-hash
expression, the DDL types used to create targets, and how to spell an UPDATE with a join.
The SCD algorithm is written once from those pieces in ``shared/scd/``; a dialect that can
relay bulk text also implements the protocols in ``shared/dialects/relay.py``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

from sqlalchemy import Connection, Engine, inspect, text
from sqlalchemy.engine.interfaces import DBAPIConnection

from shared.config.mapping import AuditColumns, TargetSpec
from shared.dialects.holds import ValueCheck
from shared.dialects.types import ColumnType, SourceColumn, TypeKind
from shared.errors import ConfigError

STAGE_TABLE = "cl_stage"
# Columns chordload's own SQL adds beside the query's (a stage's or a target's, or an alias
# over them): a source column of the same name would be taken for chordload's (compared
# without case: MariaDB's and SQLite's names are case-insensitive). Planning refuses such a
# query (coordinator/plan.py, check_columns).
INTERNAL_COLUMNS = frozenset(
    {"cl_hash", "cl_seq", "cl_sk", "cl_old_vf", "cl_restore_sk", "cl_current_key", "cl_key_hash"}
)


def dbapi_connection(conn: Connection) -> DBAPIConnection:
    """The driver's connection under ``conn``. SQLAlchemy types it Optional (a pooled entry
    can be detached or invalidated), but an open Connection always has one."""
    dbapi = conn.connection.dbapi_connection
    assert dbapi is not None, "the connection was invalidated or closed"
    return dbapi


class LateIndex(NamedTuple):
    """One of a new target's indexes built after its first load: its name (the primary
    key's is ``PRIMARY_KEY``) and the statements that build it."""

    name: str
    statements: tuple[str, ...]


PRIMARY_KEY = "primary key"  # LateIndex.name of the target's primary key

MARKER_TABLE = "chordload_targets"  # per target database: which row hash a target holds


class DialectAdapter:
    name = "base"
    # The definition of this database's row hash (row_hash_expr). A target records the
    # version its row_hash column was computed with (MARKER_TABLE); when the definition
    # changes, existing targets are rehashed once (shared/scd/hashes.py) instead of seeing
    # every row as changed.
    row_hash_version = 1
    # estimate_rows counts (no planner statistics to ask): its figure needs no confirming
    estimates_by_counting = True

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

    # the longest table or schema name the database takes (None: no limit worth checking),
    # counted in bytes of UTF-8 (PostgreSQL) or in characters (MariaDB)
    identifier_limit: int | None = None
    identifier_in_bytes = False

    def identifier_too_long(self, name: str) -> str | None:
        """Why ``name`` cannot name a table or schema here (PostgreSQL would cut it short
        without an error, MariaDB refuses it), or None."""
        if self.identifier_limit is None:
            return None
        size = len(name.encode()) if self.identifier_in_bytes else len(name)
        if size <= self.identifier_limit:
            return None
        unit = "bytes" if self.identifier_in_bytes else "characters"
        return f"'{name}' is {size} {unit}; {self.name} names take at most {self.identifier_limit}"

    def index_name(self, table: str, suffix: str) -> str:
        digest = hashlib.md5(table.encode()).hexdigest()[:8]
        return f"cl_{table[:40]}_{digest}_{suffix}"

    def unique_key_index_name(self, target: TargetSpec, scd_type: int) -> str:
        """The name of the index that keeps one row (SCD2: one current row) per key."""
        return self.index_name(target.table_name, "current" if scd_type == 2 else "key")

    # -- source ------------------------------------------------------------------------
    def source_columns(self, conn: Connection, query: str) -> list[SourceColumn]:
        raise NotImplementedError

    @staticmethod
    def from_query(query: str) -> str:
        """The user's query as a derived table ``src``, taken literally: its colons are
        escaped (a ``':word'`` inside a string literal is no bind parameter) and a newline
        ends it (a trailing ``-- comment`` cannot swallow the closing parenthesis)."""
        return "(" + query.replace(":", "\\:") + "\n) src"

    def wrap_query(
        self,
        query: str,
        columns: Sequence[str],
        as_text: Sequence[str] = (),
        extra: Sequence[str] = (),
    ) -> str:
        """The query's ``columns``; those in ``as_text`` as the database's own text of the
        value (for a target that parses that text exactly); then the ``extra`` expressions
        (over the alias ``src``)."""
        exact = self.exact_reads(query) if len(as_text) < len(columns) else {}
        cols = []
        for c in columns:
            ref = f"src.{self.q(c)}"
            if c in as_text:
                cols.append(f"{self.shown_as_text(ref)} AS {self.q(c)}")
            elif c in exact:
                cols.append(f"{exact[c]} AS {self.q(c)}")
            else:
                cols.append(ref)
        return f"SELECT {', '.join([*cols, *extra])} FROM {self.from_query(query)}"

    def shown_as_text(self, column_sql: str) -> str:
        """The database's own text of a column's value (NULL stays NULL)."""
        return f"CAST({column_sql} AS TEXT)"

    def text_reader(self, kind: TypeKind) -> Callable[[str], Any] | None:
        """How to read this database's text of a value of ``kind`` (``shown_as_text``) back
        as the value its typed reads give: where a chunk compares values it received as
        text (duplicates' order). None: keep the text."""
        return None

    def exact_reads(self, query: str) -> dict[str, str]:
        """Per column of ``query`` whose plain value the driver would not receive exactly,
        an expression over ``src`` that gives it exactly (none by default)."""
        return {}

    def relays_to(self, target: DialectAdapter) -> bool:
        """Whether a chunk can move rows from this source to ``target`` as the databases'
        own bulk text, without parsing values in Python (PostgreSQL to PostgreSQL)."""
        return False

    def estimate_rows(
        self, conn: Connection, query: str, where: str, params: dict[str, Any], exact: bool
    ) -> int:
        sql = f"SELECT count(*) FROM {self.from_query(query)} WHERE {where}"
        return int(conn.execute(text(sql), params).scalar_one())

    def count_up_to(
        self, conn: Connection, query: str, where: str, params: dict[str, Any], limit: int
    ) -> int:
        """The window's rows counted, but no further than ``limit``: the scan stops there, so
        confirming that a source is small costs at most ``limit`` rows whatever its size."""
        sql = (
            f"SELECT count(*) FROM (SELECT 1 AS one FROM {self.from_query(query)} "
            f"WHERE {where} LIMIT {int(limit)}) bounded"
        )
        return int(conn.execute(text(sql), params).scalar_one())

    def cancel_statement(self, conn: Connection) -> None:
        """Cancel the statement ``conn`` is running, from another thread (planning that is
        stopped, interrupted or out of time). psycopg2 sends the server a cancel request
        (what ``pg_cancel_backend`` does); SQLite interrupts its VM."""
        dbapi: Any = dbapi_connection(conn)
        for method in ("cancel", "interrupt"):
            if hasattr(dbapi, method):
                getattr(dbapi, method)()
                return

    def max_value(self, conn: Connection, query: str, column: str) -> Any:
        sql = f"SELECT max(src.{self.q(column)}) FROM {self.from_query(query)}"
        return conn.execute(text(sql)).scalar_one()

    def row_compare(self, left: Sequence[str], op: str, right: Sequence[str]) -> str:
        """``left op right`` for one expression each, or as row values ``(a, b) >= (x, y)``
        (PostgreSQL, MariaDB/MySQL and SQLite compare rows lexicographically)."""
        if len(left) == 1:
            return f"{left[0]} {op} {right[0]}"
        return f"({', '.join(left)}) {op} ({', '.join(right)})"

    def key_order(self, ref: str) -> str:
        """``ref`` as an ORDER BY term that brings equal keys together: equal in the sort
        means equal as a key (true of PostgreSQL's and SQLite's default collations)."""
        return ref

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
            f"SELECT {', '.join(refs)} FROM {self.from_query(query)} WHERE "
            f"{' AND '.join(f'{r} IS NOT NULL' for r in refs)} "
            f"ORDER BY {', '.join(f'{r} DESC' for r in refs)}",
            1,
        )
        row = conn.execute(text(sql)).first()
        return tuple(row) if row is not None else None

    def min_max(
        self, conn: Connection, query: str, where: str, params: dict[str, Any], column: str
    ) -> tuple[Any, Any]:
        col = f"src.{self.q(column)}"
        row = conn.execute(
            text(
                f"SELECT min({col}), max({col}) FROM {self.from_query(query)} WHERE "
                f"({where}) AND {col} IS NOT NULL"
            ),
            params,
        ).one()
        return row[0], row[1]

    def split_boundaries(
        self,
        conn: Connection,
        query: str,
        where: str,
        params: dict[str, Any],
        column: str,
        parts: int,
    ) -> list[Any]:
        """Upper bounds of ``parts`` equal-count buckets of the split column (quantiles)."""
        col = f"src.{self.q(column)}"
        sql = (
            f"SELECT max(v) AS upper_value FROM (SELECT {col} AS v, ntile(:parts) OVER "
            f"(ORDER BY {col}) AS bucket FROM {self.from_query(query)} WHERE ({where}) AND "
            f"{col} IS NOT NULL"
            f") buckets GROUP BY bucket ORDER BY upper_value"
        )
        uppers = [row[0] for row in conn.execute(text(sql), {**params, "parts": parts})]
        bounds: list[Any] = []
        for value in uppers[:-1]:  # ascending in the database's own order (its collation)
            if not bounds or value != bounds[-1]:
                bounds.append(value)
        return bounds

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
        """Quantile boundaries from a sample of the source instead of a sort of the whole
        window, with a note saying how they were found; None where this database or this
        query allows no sample that is cheaper than the exact ``split_boundaries``."""
        return None

    def offset_boundaries(
        self,
        conn: Connection,
        query: str,
        where: str,
        params: dict[str, Any],
        columns: Sequence[str],
        parts: int,
        total: int,
    ) -> list[Any]:
        """Upper bounds at every ``total / parts``-th row of the source ordered by
        ``columns``, each read with ``ORDER BY columns LIMIT 1 OFFSET k``: a scalar for one
        column, a row for several. Rows with a NULL part are left out (chunk 0 takes them)."""
        refs = [f"src.{self.q(c)}" for c in columns]
        base = (
            f"SELECT {', '.join(refs)} FROM {self.from_query(query)} WHERE ({where}) AND "
            f"{' AND '.join(f'{r} IS NOT NULL' for r in refs)} ORDER BY {', '.join(refs)}"
        )
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

    def stream(
        self, conn: Connection, sql: str, params: dict[str, Any], batch_rows: int
    ) -> Iterator[Sequence[tuple]]:
        result = conn.execution_options(stream_results=True, yield_per=batch_rows).execute(
            text(sql), params
        )
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
        return [
            c["name"]
            for c in inspect(conn).get_columns(target.table_name, schema=target.schema_name)
        ]

    def target_columns_ddl(
        self,
        columns: Sequence[SourceColumn],
        keys: Sequence[str],
        scd_type: int,
        audit: AuditColumns,
        *,
        valid_from_type: ColumnType | None = None,
        is_deleted: bool = False,
    ) -> list[str]:
        """Column definitions of a new target: business columns from the source's types plus
        the SCD contract's audit columns. SCD2 ``valid_from``/``valid_to`` take the type of
        the source column that gives valid_from, if one does; ``is_deleted`` is added for
        deletes: new_record."""
        business = [
            f"{self.q(c.name)} "
            f"{self.key_ddl_type(c.type) if c.name in keys else self.ddl_type(c.type)}"
            for c in columns
        ]
        ts = self.timestamp_ddl()
        hash_ddl = self.ddl_type(ColumnType(TypeKind.TEXT, length=32))
        run_ddl = self.ddl_type(ColumnType(TypeKind.TEXT, length=32))
        if scd_type == 1:
            return [
                *business,
                f"{self.q(audit.row_hash)} {hash_ddl} NOT NULL",
                f"{self.q(audit.inserted_at)} {ts} NOT NULL",
                f"{self.q(audit.updated_at)} {ts} NOT NULL",
                f"{self.q(audit.run_id)} {run_ddl} NOT NULL",
            ]
        validity = self.ddl_type(valid_from_type) if valid_from_type is not None else ts
        boolean = self.ddl_type(ColumnType(TypeKind.BOOLEAN))
        ddl = [
            f"{self.q(audit.sk)} {self.surrogate_key_ddl()}",
            *business,
            f"{self.q(audit.row_hash)} {hash_ddl} NOT NULL",
            f"{self.q(audit.valid_from)} {validity} NOT NULL",
            f"{self.q(audit.valid_to)} {validity}",
            f"{self.q(audit.is_current)} {boolean} NOT NULL",
            f"{self.q(audit.run_id)} {run_ddl} NOT NULL",
        ]
        if is_deleted:
            ddl.append(f"{self.q(audit.is_deleted)} {boolean} NOT NULL")
        return ddl

    def create_table_sql(self, table: str, columns_ddl: Sequence[str]) -> str:
        return f"CREATE TABLE {table} ({', '.join(columns_ddl)})"

    def target_index_sql(
        self,
        table: str,
        target: TargetSpec,
        columns: Sequence[SourceColumn],
        keys: Sequence[str],
        scd_type: int,
        audit: AuditColumns,
    ) -> list[str]:
        """SCD1: a unique index on the keys. SCD2: one current row per key, enforced by a
        unique partial index, plus a plain index on the keys. A NULL key part is one value
        in both unique indexes (``unique_key_sql``), as it is one key to the loader."""
        key_cols = ", ".join(self.q(k) for k in keys)
        name = target.table_name
        unique = self.unique_key_sql(keys)
        unique_index = self.q(self.unique_key_index_name(target, scd_type))
        if scd_type == 1:
            return [f"CREATE UNIQUE INDEX {unique_index} ON {table} {unique}"]
        return [
            f"CREATE UNIQUE INDEX {unique_index} ON {table} "
            f"{unique} WHERE {self.q(audit.is_current)}",
            f"CREATE INDEX {self.q(self.index_name(name, 'key'))} ON {table} ({key_cols})",
        ]

    def late_index_sql(
        self,
        table: str,
        target: TargetSpec,
        scd_type: int,
        audit: AuditColumns,
    ) -> list[LateIndex]:
        """The indexes a target chordload creates gets at the end of its first run instead
        of at its creation (``shared/scd/late_indexes.py``); none here: everything is made
        with the table."""
        return []

    def index_state(self, conn: Connection, target: TargetSpec) -> tuple[bool, set[str]]:
        """Whether the target has a primary key, and the names of its indexes (asked only
        by a dialect with late indexes)."""
        raise NotImplementedError

    def lock_out_writers(self, conn: Connection, target: TargetSpec, wait_s: float) -> None:
        """Take the target's lock that keeps writers and another index builder out until
        the transaction ends, readers not; raise if a writer keeps it past ``wait_s``."""
        raise NotImplementedError

    # -- the row-hash marker of a target -------------------------------------------------------
    def marker_ref(self, target: TargetSpec) -> str:
        """The marker table, beside the target (same schema or database)."""
        if target.schema_name:
            return f"{self.q(target.schema_name)}.{self.q(MARKER_TABLE)}"
        return self.q(MARKER_TABLE)

    def stored_hash_version(self, conn: Connection, target: TargetSpec) -> int | None:
        """The row-hash version the target's marker records; None for a target without one
        (created before markers existed: the first definition, version 1)."""
        conn.execute(
            text(
                f"CREATE TABLE IF NOT EXISTS {self.marker_ref(target)} "
                f"(table_name VARCHAR(255) PRIMARY KEY, row_hash_version INTEGER NOT NULL)"
            )
        )
        version = conn.execute(
            text(f"SELECT row_hash_version FROM {self.marker_ref(target)} WHERE table_name = :t"),
            {"t": target.table_name},
        ).scalar()
        return None if version is None else int(version)

    def store_hash_version(self, conn: Connection, target: TargetSpec, version: int) -> None:
        marker = self.marker_ref(target)
        params = {"t": target.table_name, "v": version}
        conn.execute(text(f"DELETE FROM {marker} WHERE table_name = :t"), params)
        conn.execute(
            text(f"INSERT INTO {marker} (table_name, row_hash_version) VALUES (:t, :v)"), params
        )

    def unique_key_sql(self, keys: Sequence[str]) -> str:
        """The indexed part of a unique index on the business key in which NULL equals NULL,
        so the target itself refuses two rows (SCD2: two current rows) of one key that has
        NULL parts. By default the plain column list: a database whose unique indexes treat
        NULLs as distinct must override this."""
        return "(" + ", ".join(self.q(k) for k in keys) + ")"

    def null_safe_key_index(self, conn: Connection, target: TargetSpec, name: str) -> bool | None:
        """Whether the target's unique key index ``name`` treats a NULL key part as one value
        (``unique_key_sql``); None if there is no such index, or nothing to upgrade (a
        database whose key index always was NULL-safe)."""
        return None

    def drop_index_sql(self, target: TargetSpec, name: str) -> str:
        if target.schema_name:
            return f"DROP INDEX {self.q(target.schema_name)}.{self.q(name)}"
        return f"DROP INDEX {self.q(name)}"

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
        """Create the target from the source's column types, with the SCD contract's columns
        and indexes (SCD2: one current row per key). ``options``: see target_columns_ddl."""
        for statement in self.target_ddl(conn, target, columns, keys, scd_type, audit, **options):
            conn.execute(text(statement))

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
        """The statements that create the target (``create_target`` runs them; ``chordload
        plan`` prints them without running anything)."""
        table = self.table_ref(target)
        return [
            self.create_table_sql(
                table, self.target_columns_ddl(columns, keys, scd_type, audit, **options)
            ),
            *self.target_index_sql(table, target, columns, keys, scd_type, audit),
        ]

    def check_target(
        self,
        conn: Connection,
        target: TargetSpec,
        business: Sequence[str],
        scd_type: int,
        audit_names: Sequence[str],
    ) -> None:
        have = set(self.target_column_names(conn, target))
        missing = [c for c in (*business, *audit_names) if c not in have]
        if missing:
            raise ConfigError(
                f"target table {target.table} exists but lacks column(s) {', '.join(missing)} "
                f"needed for an SCD{scd_type} load of this source; drop the table to let chordload "
                f"create it, or add the columns"
            )

    def check_column_types(
        self, conn: Connection, target: TargetSpec, columns: Sequence[SourceColumn]
    ) -> None:
        """Refuse an existing target whose column would change every value of the source
        column without an error (a timestamp into a date drops its time). By default
        nothing is checked: the value checks and the database's own errors find the rest."""

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
        conn.execute(
            text(f"CREATE INDEX cl_stage_keys ON {stage} ({', '.join(self.q(c) for c in columns)})")
        )

    def load_stage(
        self, conn: Connection, stage: str, columns: Sequence[str], rows: Sequence[tuple]
    ) -> None:
        raise NotImplementedError

    def row_hash_expr(self, qualified_columns: Sequence[str]) -> str:
        raise NotImplementedError

    def value_check(
        self, conn: Connection, target: TargetSpec, columns: Sequence[str]
    ) -> ValueCheck:
        """The values of ``columns`` the target would not hold as they are, found in Python
        before staging (shared/dialects/holds.py). By default none: a database that refuses
        by itself every value it cannot hold (PostgreSQL) needs no rules."""
        return ValueCheck.none(columns)

    # -- SQL pieces of the SCD statements (shared/scd/) -------------------------------------
    def null_safe_eq(self, left: str, right: str) -> str:
        """Equality that treats NULL = NULL as true (a NULL business key is one key)."""
        return f"{left} IS NOT DISTINCT FROM {right}"

    def update_from_sql(
        self, table: str, hashed: str, match: str, sets: Sequence[tuple[str, str]], where: str
    ) -> str:
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

    def prepare_apply(self, conn: Connection, table: str, keys: Sequence[str]) -> None:
        """Called in the batch transaction before the SCD statements run on ``table``
        (a database may steer its planner towards the key index here); nothing by default."""
