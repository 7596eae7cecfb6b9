"""Hard deletes as SCD statements: retire the keys that are current in the target and
absent from a stage holding every key of the source (``scd.deletes``).

SCD1 deletes the row. SCD2 ``invalidate`` expires the current version at ``at``;
``new_record`` also adds a current 'deleted' version (a copy of the key's latest version
with ``is_deleted`` true and a row_hash no row has, so the key coming back makes a new
version). The pass that fills the stage is ``shared/lifecycle/deletes.py``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, text

from shared.config.mapping import DeletesMode
from shared.scd import sql
from shared.scd.target import TOMBSTONE_HASH, ScdTarget


def retire_absent_keys(
    conn: Connection, target: ScdTarget, stage: str, mode: DeletesMode, at: Any
) -> int:
    """Retire the target's current keys that ``stage`` lacks. Idempotent; returns the keys
    retired."""
    q, audit, dialect, table, opts = (
        target.q,
        target.audit,
        target.dialect,
        target.table,
        target.options,
    )
    current = q(audit.is_current)
    params = {
        "at": at,
        "run_id": target.run_id,
        "valid_to_current": opts.current_valid_to,
        "tombstone": TOMBSTONE_HASH,
        **target.flags(),
    }
    retired = 0
    for null_safe in (False, True):
        absent = (
            f"{sql.key_filter(target, 't', null_safe)} AND NOT EXISTS (SELECT 1 FROM "
            f"{stage} st WHERE {sql.key_match(target, 'st', 't', null_safe)})"
        )
        if not target.scd2:
            retired += conn.execute(text(dialect.delete_where_sql(table, absent)), params).rowcount
            continue
        live = f"t.{current} = :true_"
        if opts.is_deleted:
            live += f" AND t.{q(opts.is_deleted)} = :false_"
        retired += conn.execute(
            text(
                dialect.update_where_sql(
                    table,
                    [(audit.valid_to, ":at"), (audit.is_current, ":false_")],
                    f"{live} AND {absent}",
                )
            ),
            params,
        ).rowcount
    if target.scd2 and mode is DeletesMode.NEW_RECORD and opts.is_deleted:
        cols = [q(c) for c in target.columns]
        for null_safe in (False, True):
            absent = (
                f"{sql.key_filter(target, 'o', null_safe)} AND NOT EXISTS (SELECT 1 "
                f"FROM {stage} st WHERE {sql.key_match(target, 'st', 'o', null_safe)})"
            )
            conn.execute(
                text(
                    f"INSERT INTO {table} ({', '.join(cols)}, {q(audit.row_hash)}, "
                    f"{q(audit.valid_from)}, {q(audit.valid_to)}, {current}, "
                    f"{q(opts.is_deleted)}, {q(audit.run_id)}) SELECT "
                    f"{', '.join(f'o.{c}' for c in cols)}, :tombstone, :at, :valid_to_current, "
                    f":true_, :true_, :run_id FROM {table} o WHERE o.{current} = :false_ AND "
                    f"o.{q(audit.valid_to)} = :at AND o.{q(opts.is_deleted)} = :false_ "
                    f"AND {absent} AND NOT EXISTS (SELECT 1 FROM {table} c WHERE "
                    f"{sql.key_match(target, 'c', 'o', null_safe)} AND (c.{current} = :true_ "
                    f"OR c.{q(audit.sk)} > o.{q(audit.sk)}))"
                ),
                params,
            )
    return retired
