"""Keeping a target's stored row hashes those of its database's current definition.

A row's hash (``row_hash``) is compared with the staged row's to tell unchanged from changed,
so it must depend on the values alone, and a change to its definition must not look like a
change of every row. Each target records the version its hashes were computed with in a
small marker table beside it (``DialectAdapter.stored_hash_version``); a target with an
older version has the hashes of its current versions recomputed in place, once, in one
transaction, before the next run loads anything. Versions of a key that are no longer
current keep the hash they had: nothing compares them.
"""

from __future__ import annotations

from sqlalchemy import Connection, text

from shared.config.mapping import TargetSpec
from shared.scd.target import TOMBSTONE_HASH, ScdTarget


def upgrade_row_hashes(conn: Connection, target: ScdTarget, spec: TargetSpec) -> int:
    """Bring the target's row hashes to its dialect's current definition; returns the rows
    rehashed (0 when they already were)."""
    dialect = target.dialect
    stored = dialect.stored_hash_version(conn, spec) or 1
    if stored >= dialect.row_hash_version:
        return 0
    dialect.prepare_apply(conn, target.table, target.keys)
    q, audit = target.q, target.audit
    rehash = dialect.row_hash_expr([f"t.{q(c)}" for c in target.hashed_columns])
    live = f"t.{q(audit.row_hash)} <> :tombstone"
    if target.scd2:
        live += f" AND t.{q(audit.is_current)} = :true_"
    rows = conn.execute(
        text(dialect.update_where_sql(target.table, [(audit.row_hash, rehash)], live)),
        {"tombstone": TOMBSTONE_HASH, **target.flags()},
    ).rowcount
    dialect.store_hash_version(conn, spec, dialect.row_hash_version)
    return int(rows)


def mark_new_target(conn: Connection, target: ScdTarget, spec: TargetSpec) -> None:
    """A target chordload just created holds hashes of the current definition."""
    target.dialect.stored_hash_version(conn, spec)  # makes the marker table
    target.dialect.store_hash_version(conn, spec, target.dialect.row_hash_version)
