"""The SCD algorithm: apply a staged batch to the target as SCD1 or SCD2, set-based.

Written once for every database from the dialect's SQL pieces (``shared/scd/sql.py``); a
dialect only says how to spell an UPDATE with a join, null-safe equality and the row hash,
and may prepare the transaction for the key lookups (``DialectAdapter.prepare_apply``).

- SCD1: a changed hash updates the row in place; new keys are inserted; an equal hash is
  not written.
- SCD2: a changed hash expires the current version and inserts a new current one; with
  ``tracked`` columns a change in the other columns updates the current version in place.
- Re-applying the same batch finds equal hashes and writes nothing, which makes
  redelivery harmless. ``replace_own_versions`` and ``count_applied_by_run`` make a replay
  (retry, redelivery, resume) that reads other rows than the attempt before it leave one
  version per key per run, counted as one clean pass would count it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, text

from shared.scd import sql
from shared.scd.target import ApplyCounts, ScdTarget


def apply(
    conn: Connection,
    target: ScdTarget,
    stage: str,
    staged_rows: int,
    has_null_keys: bool,
    *,
    valid_from: Any,
    now: Any,
) -> ApplyCounts:
    """Apply the staged rows as the target's SCD type says."""
    target.dialect.prepare_apply(conn, target.table, target.keys)
    if target.scd2:
        return apply_scd2(conn, target, stage, staged_rows, has_null_keys, valid_from)
    return apply_scd1(conn, target, stage, staged_rows, has_null_keys, now)


def apply_scd1(
    conn: Connection, target: ScdTarget, stage: str, staged_rows: int, has_null_keys: bool, now: Any
) -> ApplyCounts:
    """Update changed rows in place, insert new keys; equal hashes are not written."""
    q, audit, dialect, table = target.q, target.audit, target.dialect, target.table
    columns, keys = target.columns, target.keys
    sets = [(c, f"s.{q(c)}") for c in columns if c not in keys]
    sets += [(audit.row_hash, "s.cl_hash"), (audit.updated_at, ":now"), (audit.run_id, ":run_id")]
    cols = ", ".join(q(c) for c in columns)
    s_cols = ", ".join(f"s.{q(c)}" for c in columns)
    params = {"now": now, "run_id": target.run_id}
    changed = inserted = 0
    for null_safe in sql.null_passes(has_null_keys):
        match = sql.key_match(target, "t", "s", null_safe)
        hashed = sql.hashed_stage(target, stage, sql.key_filter(target, "st", null_safe))
        changed += conn.execute(
            text(
                dialect.update_from_sql(
                    table, hashed, match, sets, f"t.{q(audit.row_hash)} <> s.cl_hash"
                )
            ),
            params,
        ).rowcount
        inserted += conn.execute(
            text(
                f"INSERT INTO {table} ({cols}, {q(audit.row_hash)}, {q(audit.inserted_at)}, "
                f"{q(audit.updated_at)}, {q(audit.run_id)}) SELECT {s_cols}, s.cl_hash, :now, "
                f":now, :run_id FROM {hashed} s WHERE NOT EXISTS (SELECT 1 FROM {table} t "
                f"WHERE {match})"
            ),
            params,
        ).rowcount
    return ApplyCounts(
        inserted=inserted, changed=changed, unchanged=staged_rows - inserted - changed
    )


def insert_new(
    conn: Connection,
    target: ScdTarget,
    stage: str,
    staged_rows: int,
    *,
    valid_from: Any,
    now: Any,
) -> ApplyCounts:
    """Insert every staged row as a new key, without comparing: for a first pass over a key
    range in which the target had no current row (the caller knows; ``Pass.INITIAL`` in
    ``shared/chunk/load.py``). The row hash is computed in the insert; SCD2 rows are the
    current versions. The target's unique key index still guards one current row per key.
    ``prepare_apply`` first, as for every apply: it pins the session settings the row hash
    depends on."""
    target.dialect.prepare_apply(conn, target.table, target.keys)
    values = new_versions(target, "s", "s.cl_hash")
    hashed = sql.hashed_stage(target, stage, "1 = 1", target.hashed_columns)
    inserted: int = conn.execute(
        text(
            f"INSERT INTO {target.table} ({', '.join(target.q(c) for c, _ in values)}) "
            f"SELECT {', '.join(v for _, v in values)} FROM {hashed} s"
        ),
        new_version_params(target, valid_from, now),
    ).rowcount
    return ApplyCounts(inserted=inserted, changed=0, unchanged=staged_rows - inserted)


def new_versions(target: ScdTarget, row: str, row_hash: str) -> list[tuple[str, str]]:
    """(target column, SQL expression) of a new key's row made of the row alias ``row``
    (business columns) and the ``row_hash`` expression: SCD2 the current version, SCD1 the
    row. The expressions bind ``new_version_params``. Shared by ``insert_new`` and the
    initial load's COPY straight into the target (``shared/chunk/direct.py``), so both write
    the same row."""
    q, audit, opts = target.q, target.audit, target.options
    values = [(c, f"{row}.{q(c)}") for c in target.columns]
    if target.scd2:
        vf = f"{row}.{q(opts.valid_from_column)}" if opts.valid_from_column else ":valid_from"
        values += [(audit.row_hash, row_hash), (audit.valid_from, vf)]
        values += [(audit.valid_to, ":valid_to_current"), (audit.is_current, ":true_")]
        values.append((audit.run_id, ":run_id"))
        if opts.is_deleted:
            values.append((opts.is_deleted, ":false_"))
    else:
        values += [(audit.row_hash, row_hash), (audit.inserted_at, ":now")]
        values += [(audit.updated_at, ":now"), (audit.run_id, ":run_id")]
    return values


def new_version_params(target: ScdTarget, valid_from: Any, now: Any) -> dict[str, Any]:
    """The parameters ``new_versions`` binds."""
    return {
        "run_id": target.run_id,
        "now": now,
        "valid_from": valid_from,
        "valid_to_current": target.options.current_valid_to,
        **target.flags(),
    }


def apply_scd2(
    conn: Connection,
    target: ScdTarget,
    stage: str,
    staged_rows: int,
    has_null_keys: bool,
    valid_from: Any,
) -> ApplyCounts:
    """Expire current versions whose hash changed, then insert a current version for every
    staged key that has none (new keys and the ones just expired). With ``tracked``
    columns, a change in the other columns updates the current version in place."""
    q, audit, dialect, table, opts = (
        target.q,
        target.audit,
        target.dialect,
        target.table,
        target.options,
    )
    current = q(audit.is_current)
    in_place = target.in_place_columns
    vf = f"s.{q(opts.valid_from_column)}" if opts.valid_from_column else ":valid_from"
    insert_cols = [q(c) for c in target.columns] + [
        q(audit.row_hash),
        q(audit.valid_from),
        q(audit.valid_to),
        current,
        q(audit.run_id),
    ]
    insert_vals = [f"s.{q(c)}" for c in target.columns] + [
        "s.cl_hash",
        vf,
        ":valid_to_current",
        ":true_",
        ":run_id",
    ]
    if opts.is_deleted:
        insert_cols.append(q(opts.is_deleted))
        insert_vals.append(":false_")
    params = {
        "valid_from": valid_from,
        "run_id": target.run_id,
        "valid_to_current": opts.current_valid_to,
        **target.flags(),
    }
    expire = [(audit.valid_to, vf), (audit.is_current, ":false_")]
    # A row whose valid_from is NULL is an error row (README): a new version refuses it by
    # the column's NOT NULL, and an untracked valid_from column updated in place must too,
    # so the row is quarantined by bisection on every path instead of written
    null_valid_from_refused = (
        [
            (
                audit.valid_from,
                f"CASE WHEN s.{q(opts.valid_from_column)} IS NULL THEN NULL "
                f"ELSE t.{q(audit.valid_from)} END",
            )
        ]
        if opts.valid_from_column in in_place
        else []
    )
    changed = written = updated = 0
    for null_safe in sql.null_passes(has_null_keys):
        match = sql.key_match(target, "t", "s", null_safe)
        hashed = sql.hashed_stage(
            target, stage, sql.key_filter(target, "st", null_safe), target.hashed_columns
        )
        if in_place:
            updated += conn.execute(
                text(
                    dialect.update_from_sql(
                        table,
                        hashed,
                        match,
                        [(c, f"s.{q(c)}") for c in in_place] + null_valid_from_refused,
                        f"t.{current} = :true_ AND t.{q(audit.row_hash)} = s.cl_hash AND "
                        f"{sql.differs(target, 't', 's', in_place)}",
                    )
                ),
                params,
            ).rowcount
        changed += conn.execute(
            text(
                dialect.update_from_sql(
                    table,
                    hashed,
                    match,
                    expire,
                    f"t.{current} = :true_ AND t.{q(audit.row_hash)} <> s.cl_hash",
                )
            ),
            params,
        ).rowcount
        written += conn.execute(
            text(
                f"INSERT INTO {table} ({', '.join(insert_cols)}) SELECT {', '.join(insert_vals)} "
                f"FROM {hashed} s WHERE NOT EXISTS (SELECT 1 "
                f"FROM {table} t WHERE {match} AND t.{current} = :true_)"
            ),
            params,
        ).rowcount
    return ApplyCounts(
        inserted=written - changed,
        changed=changed + updated,
        unchanged=staged_rows - written - updated,
    )


def replace_own_versions(
    conn: Connection, target: ScdTarget, stage: str, has_null_keys: bool, *, now: Any = None
) -> int:
    """Bring the current rows that this same run wrote and that differ from the staged row
    to the staged row: a replayed batch (retry, redelivery, resume) that reads other rows
    than the attempt before it. A run thus writes one version per key however often its
    chunks are loaded, and the apply that follows finds these rows unchanged.

    SCD2: if the staged row equals the version this run's version replaced (its hash), the
    replacement is undone (``_revert_own_versions``): this run's version is deleted and the
    one before it is current again, as if this run had never changed the key; the apply
    then finds it unchanged. Otherwise this run's version is overwritten in place; with
    valid_from from a source column the predecessor's valid_to moves along. SCD1: the row is
    overwritten, ``now`` is its new updated_at (the row as it was before this run is gone, so
    a staged row equal to it is not recognised as such). Returns the rows reverted or
    overwritten."""
    q, audit, dialect, table, opts = (
        target.q,
        target.audit,
        target.dialect,
        target.table,
        target.options,
    )
    target.dialect.prepare_apply(conn, table, target.keys)
    current = q(audit.is_current)
    in_place = target.in_place_columns
    params = {
        "run_id": target.run_id,
        "now": now,
        "valid_to_current": opts.current_valid_to,
        **target.flags(),
    }
    replaced = 0
    for null_safe in sql.null_passes(has_null_keys):
        hashed = sql.hashed_stage(
            target, stage, sql.key_filter(target, "st", null_safe), target.hashed_columns
        )

        def differs(t: str, s: str) -> str:
            found = f"{t}.{q(audit.row_hash)} <> {s}.cl_hash"
            return f"({found} OR {sql.differs(target, t, s, in_place)})" if in_place else found

        own = f"{sql.written_by_run(target, 't', 's')} AND {differs('t', 's')}"
        if target.scd2:
            own = f"t.{current} = :true_ AND {own}"
            replaced += _revert_own_versions(conn, target, hashed, null_safe, params)
        match = sql.key_match(target, "t", "s", null_safe)
        sets = [(c, f"s.{q(c)}") for c in target.columns if c not in target.keys]
        sets.append((audit.row_hash, "s.cl_hash"))
        if not target.scd2:
            sets.append((audit.updated_at, ":now"))
        elif opts.valid_from_column:
            vf = f"s.{q(opts.valid_from_column)}"
            owned = (
                f"(SELECT s2.*, o.{q(audit.valid_from)} AS cl_old_vf FROM {hashed} s2 "
                f"JOIN {table} o ON {sql.key_match(target, 'o', 's2', null_safe)}"
                f" AND o.{current} = :true_ AND {sql.written_by_run(target, 'o', 's2')}"
                f" AND {differs('o', 's2')})"
            )
            conn.execute(
                text(
                    dialect.update_from_sql(
                        table,
                        owned,
                        match,
                        [(audit.valid_to, vf)],
                        f"t.{current} = :false_ AND t.{q(audit.valid_to)} = s.cl_old_vf",
                    )
                ),
                params,
            )
            sets.append((audit.valid_from, vf))
        replaced += conn.execute(
            text(dialect.update_from_sql(table, hashed, match, sets, own)), params
        ).rowcount
    return replaced


def _revert_own_versions(
    conn: Connection,
    target: ScdTarget,
    hashed: str,
    null_safe: bool,
    params: dict[str, Any],
) -> int:
    """SCD2: undo this run's version of the staged keys whose staged row equals the version
    it replaced (same row hash; the untracked columns are the apply's business): delete it
    and make its predecessor current again, with the current ``valid_to``. A version equal
    to the one it replaced is never right, so this also heals one an older release wrote.

    Three statements, each reading the target through a derived table (MariaDB refuses a
    statement that reads the table it changes otherwise): set this run's version aside (not
    current), restore the newest predecessor of the keys left without a current version,
    delete the versions set aside whose key is current again. Returns the keys reverted."""
    q, audit, dialect, table = target.q, target.audit, target.dialect, target.table
    current, sk, row_hash = q(audit.is_current), q(audit.sk), q(audit.row_hash)
    valid_from, valid_to, run_id = q(audit.valid_from), q(audit.valid_to), q(audit.run_id)

    def match(left: str, right: str) -> str:
        return sql.key_match(target, left, right, null_safe)

    # p: an expired version of another run that ends where o starts, equal to the staged row
    replaced_by = (
        f"p.{current} = :false_ AND p.{valid_to} = o.{valid_from} AND "
        f"p.{row_hash} = s2.cl_hash AND p.{run_id} <> :run_id"
    )
    reverting = (
        f"(SELECT s2.* FROM {hashed} s2 JOIN {table} o ON {match('o', 's2')} AND "
        f"o.{current} = :true_ AND {sql.written_by_run(target, 'o', 's2')} WHERE EXISTS "
        f"(SELECT 1 FROM {table} p WHERE {match('p', 's2')} AND {replaced_by}))"
    )
    reverted: int = conn.execute(
        text(
            dialect.update_from_sql(
                table,
                reverting,
                match("t", "s"),
                [(audit.is_current, ":false_")],
                f"t.{current} = :true_ AND {sql.written_by_run(target, 't', 's')}",
            )
        ),
        params,
    ).rowcount
    if not reverted:
        return 0
    set_aside = (
        f"{hashed} s2 JOIN {table} o ON {match('o', 's2')} AND o.{current} = :false_ AND "
        f"{sql.written_by_run(target, 'o', 's2')}"
    )
    restore = (
        f"(SELECT p.{sk} AS cl_restore_sk FROM {set_aside} JOIN {table} p ON "
        f"{match('p', 's2')} AND {replaced_by} WHERE NOT EXISTS (SELECT 1 FROM {table} c "
        f"WHERE {match('c', 's2')} AND c.{current} = :true_) AND NOT EXISTS (SELECT 1 FROM "
        f"{table} n WHERE {match('n', 'p')} AND n.{current} = :false_ AND "
        f"n.{valid_to} = p.{valid_to} AND n.{row_hash} = p.{row_hash} AND "
        f"n.{run_id} <> :run_id AND n.{sk} > p.{sk}))"
    )
    conn.execute(
        text(
            dialect.update_from_sql(
                table,
                restore,
                f"t.{sk} = s.cl_restore_sk",
                [(audit.is_current, ":true_"), (audit.valid_to, ":valid_to_current")],
                f"t.{current} = :false_",
            )
        ),
        params,
    )
    conn.execute(
        text(
            dialect.delete_where_sql(
                table,
                f"t.{current} = :false_ AND t.{sk} IN (SELECT d.cl_sk FROM (SELECT o.{sk} AS "
                f"cl_sk FROM {set_aside} JOIN {table} c ON {match('c', 's2')} AND "
                f"c.{current} = :true_ AND c.{run_id} <> :run_id) d)",
            )
        ),
        params,
    )
    return reverted


def count_applied_by_run(
    conn: Connection, target: ScdTarget, stage: str, has_null_keys: bool, valid_from: Any
) -> ApplyCounts:
    """The staged rows whose current version this same run already wrote, equal to them (an
    earlier attempt of a retried or redelivered chunk, the launch before a resume, or the
    relayed batches before a chunk restarted typed), split into inserted and changed. Run
    on replays after ``replace_own_versions`` and before the apply, which finds these rows
    unchanged: ``unchanged`` is negative, the rows to take back from the apply's unchanged
    count. (Counted after the apply it would also count what the apply itself wrote.)"""
    q, audit, table = target.q, target.audit, target.table
    target.dialect.prepare_apply(conn, table, target.keys)
    if not target.scd2:  # changed: inserted before this run (at valid_from), updated since
        changed_expr = (
            f"CASE WHEN t.{q(audit.inserted_at)} < t.{q(audit.updated_at)} AND "
            f"t.{q(audit.inserted_at)} < :valid_from THEN 1 ELSE 0 END"
        )
        current = "1 = 1"
    else:
        current = f"t.{q(audit.is_current)} = :true_"
        changed_expr = (
            f"CASE WHEN EXISTS (SELECT 1 FROM {table} o WHERE "
            f"{{match_o}} AND o.{q(audit.is_current)} = :false_ AND "
            f"o.{q(audit.valid_to)} = t.{q(audit.valid_from)}) THEN 1 ELSE 0 END"
        )
    params = {"run_id": target.run_id, "valid_from": valid_from, **target.flags()}
    total = changed = 0
    for null_safe in sql.null_passes(has_null_keys):
        match = sql.key_match(target, "t", "s", null_safe)
        match_o = sql.key_match(target, "o", "t", null_safe)
        hashed = sql.hashed_stage(
            target, stage, sql.key_filter(target, "st", null_safe), target.hashed_columns
        )
        row = conn.execute(
            text(
                f"SELECT count(*), sum({changed_expr.format(match_o=match_o)}) FROM {hashed} s "
                f"JOIN {table} t ON {match} AND {current} WHERE "
                f"{sql.written_by_run(target, 't', 's')} AND "
                f"t.{q(audit.row_hash)} = s.cl_hash"
            ),
            params,
        ).one()
        total += int(row[0] or 0)
        changed += int(row[1] or 0)
    return ApplyCounts(inserted=total - changed, changed=changed, unchanged=-total)


def staged_keys_current(conn: Connection, target: ScdTarget, stage: str) -> bool:
    """Whether some staged key already has a current row in the target (SCD1: any row),
    NULL key parts compared as values: a first pass that meant to insert without comparing
    (``Pass.INITIAL``) must then compare after all."""
    current = target.q(target.audit.is_current)
    only = f" AND t.{current} = :true_" if target.scd2 else ""
    for null_safe in sql.null_passes(True):  # plain = first: it probes the key index
        found = conn.execute(
            text(
                f"SELECT 1 FROM {stage} st WHERE {sql.key_filter(target, 'st', null_safe)} AND "
                f"EXISTS (SELECT 1 FROM {target.table} t WHERE "
                f"{sql.key_match(target, 't', 'st', null_safe)}{only}) LIMIT 1"
            ),
            target.flags(),
        )
        if found.first() is not None:
            return True
    return False
