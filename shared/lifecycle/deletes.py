"""The hard-delete pass of a full load (``scd.deletes: invalidate | new_record``).

Run by finalize once every chunk of the run succeeded, outside the metadata transaction:
the source's keys (the run's window, i.e. the whole source: deletes need checkpoint strategy
NONE) are streamed into an indexed temporary stage on the target, and in one target
transaction the keys that are current in the target and absent from the stage are retired
(``DialectAdapter.retire_absent_keys``). Reading the keys again at the end, instead of
collecting them while the chunks load, needs no state that a retry, redelivery or resume
would have to keep consistent; a key that arrives or goes meanwhile is judged as it is at
the end. A source key that does not fit the target's key column (one the chunks quarantined)
cannot match a target key and is skipped.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence

from sqlalchemy import Connection

from shared.engines import READ_ONLY, get_engine
from shared.dialects import adapter_for
from shared.dialects.base import DialectAdapter
from shared.errors import is_data_error
from shared.run.plan import PlannedRun
from shared.config.settings import Settings
from shared.run.window import ChunkRange, chunk_select

log = logging.getLogger("chordload.deletes")


def _load_keys(adapter: DialectAdapter, conn: Connection, stage: str, keys: Sequence[str],
               rows: list[tuple]) -> int:
    """Load key rows into the stage in a savepoint, halving around rows the stage rejects
    for their data; returns how many were skipped."""
    savepoint = conn.begin_nested()
    try:
        adapter.load_stage(conn, stage, keys, rows)
        savepoint.commit()
        return 0
    except Exception as exc:
        savepoint.rollback()
        if not is_data_error(exc):
            raise
        if len(rows) == 1:
            return 1
        middle = len(rows) // 2
        return (_load_keys(adapter, conn, stage, keys, rows[:middle])
                + _load_keys(adapter, conn, stage, keys, rows[middle:]))


def retire_deleted_keys(settings: Settings, planned: PlannedRun) -> int:
    """Retire the target's current keys that the source no longer has; returns how many."""
    spec = planned.spec
    keys = list(spec.keys)
    source = get_engine(settings.connection_url(spec.source.connection))
    target = get_engine(settings.connection_url(spec.target.connection))
    source_adapter, target_adapter = adapter_for(source), adapter_for(target)
    sql, params = chunk_select(source_adapter, spec.source.query, keys, planned.window,
                               planned.split_columns, ChunkRange(0))
    with target.connect() as tconn:
        with tconn.begin():
            stage = target_adapter.create_stage(tconn, spec.target, keys)
        try:
            with tconn.begin():  # one transaction: a PostgreSQL stage empties on commit
                skipped = 0
                with source.connect().execution_options(**READ_ONLY) as sconn:
                    for rows in source_adapter.stream(sconn, sql, params, spec.batch_rows):
                        skipped += _load_keys(target_adapter, tconn, stage, keys, list(rows))
                target_adapter.index_stage(tconn, stage, keys)
                retired = target_adapter.retire_absent_keys(
                    tconn, stage, spec.target, planned.columns, keys, spec.scd.audit_columns,
                    spec.scd.type, spec.scd.deletes.value, planned.run_id, planned.deleted_at,
                    options=planned.scd2_options() if spec.scd.type == 2 else None)
        finally:
            if tconn.in_transaction():
                tconn.rollback()
            with tconn.begin():
                target_adapter.drop_stage(tconn, stage)
    if skipped:
        log.info("run %s: %d source keys do not fit the target's key columns; skipped",
                 planned.run_id, skipped)
    return retired
