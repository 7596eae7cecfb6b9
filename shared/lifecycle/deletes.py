"""The hard-delete pass of a full load (``scd.deletes: invalidate | new_record``).

Run by finalize once every chunk of the run succeeded, outside the metadata transaction:
the source's keys (the run's window, i.e. the whole source: deletes need checkpoint strategy
NONE) are streamed into an indexed temporary stage on the target, and in one target
transaction the keys that are current in the target and absent from the stage are retired
(``shared/scd/deletes.py``). Reading the keys again at the end, instead of collecting them
while the chunks load, needs no state that a retry, redelivery or resume would have to keep
consistent; a key that arrives or goes meanwhile is judged as it is at the end. A source key
that does not fit the target's key column (one the chunks quarantined) cannot match a
target key and is skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from shared.config.settings import Settings
from shared.dialects import adapter_for
from shared.engines import READ_ONLY, get_engine
from shared.errors import FenceLost
from shared.fence import TargetFence
from shared.run.plan import RunPlan
from shared.run.window import ChunkRange, chunk_select
from shared.scd.deletes import retire_absent_keys
from shared.scd.quarantine import bisect

log = logging.getLogger("chordload.deletes")


def retire_deleted_keys(settings: Settings, plan: RunPlan) -> int:
    """Retire the target's current keys that the source no longer has; returns how many."""
    spec = plan.spec
    keys = list(spec.keys)
    source = get_engine(settings.connection_url(spec.source.connection))
    target = get_engine(settings.connection_url(spec.target.connection))
    source_adapter, target_adapter = adapter_for(source), adapter_for(target)
    sql, params = chunk_select(
        source_adapter, spec.source.query, keys, plan.window, plan.split_columns, ChunkRange(0)
    )
    with target.connect() as tconn:
        with tconn.begin():
            stage = target_adapter.create_stage(tconn, spec.target, keys)
        try:
            with tconn.begin():  # one transaction: a PostgreSQL stage empties on commit
                skipped = 0

                def load(rows: Sequence[tuple]) -> int:
                    target_adapter.load_stage(tconn, stage, keys, rows)
                    return 0

                with source.connect().execution_options(**READ_ONLY) as sconn:
                    for rows in source_adapter.stream(sconn, sql, params, spec.batch_rows):
                        _, bad = bisect(tconn, list(rows), load, lambda a, b: 0, 0)
                        skipped += len(bad)
                target_adapter.index_stage(tconn, stage, keys)
                if not TargetFence.of(target_adapter, plan).hold_run(tconn, plan.run_id):
                    raise FenceLost(
                        f"run {plan.run_id} no longer owns {spec.target.table}: a newer run "
                        "claimed it or this run already ended"
                    )
                retired = retire_absent_keys(
                    tconn, plan.scd_target(target_adapter), stage, spec.scd.deletes, plan.deleted_at
                )
        finally:
            if tconn.in_transaction():
                tconn.rollback()
            with tconn.begin():
                target_adapter.drop_stage(tconn, stage)
    if skipped:
        log.info(
            "run %s: %d source keys do not fit the target's key columns; skipped",
            plan.run_id,
            skipped,
        )
    return retired
