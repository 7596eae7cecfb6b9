"""Loading one chunk: stream its key range from the source in batches and apply each batch
to the target set-based, one transaction per batch.

Per batch: empty the stage, bulk-load the rows into it (COPY on Postgres), apply the SCD SQL,
read the batch's checkpoint maximum, commit; then record progress in chunk_log. Memory is one
batch, whatever the chunk's size. The loader never raises: the outcome is a small JSON result.
"""
from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from shared.db import READ_ONLY, get_engine
from shared.dialects import adapter_for
from shared.errors import describe_db_error
from shared.finalize import finalize_run
from shared.metadata import store
from shared.metadata.store import BatchProgress
from shared.planned_run import PlannedRun
from shared.settings import Settings
from shared.statuses import ChunkStatus
from shared.timeutil import utcnow
from shared.values import ScalarValue, encode_value, max_value
from shared.window import ChunkRange, chunk_select

log = logging.getLogger("chordload.chunk")


@dataclass
class ChunkCounts:
    rows_read: int = 0
    inserted: int = 0
    changed: int = 0
    unchanged: int = 0
    errored: int = 0


@dataclass
class ChunkResult:
    chunk_no: int
    status: ChunkStatus
    counts: ChunkCounts = field(default_factory=ChunkCounts)
    max_checkpoint: ScalarValue = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        """What the task returns through the result backend: small and JSON only."""
        return {"chunk_no": self.chunk_no, "status": self.status.value,
                "counts": asdict(self.counts), "max_checkpoint": encode_value(self.max_checkpoint),
                "error": self.error}


class StopRequested(Exception):
    """Raised between batches when the run has a stop request; ends the chunk STOPPED."""


def load_chunk(settings: Settings, run_id: str, chunk: ChunkRange, worker: str,
               task_id: str | None = None) -> ChunkResult:
    metadata = get_engine(settings.metadata)
    if task_id is not None and store.get_chunk(metadata, run_id, chunk.chunk_no).task_id != task_id:
        log.info("run %s chunk %s: task %s belongs to an earlier launch; nothing to do", run_id,
                 chunk.chunk_no, task_id)
        return ChunkResult(chunk.chunk_no, ChunkStatus.REVOKED, error="superseded by a resume")
    if store.stop_requested(metadata, run_id):
        store.finish_chunk(metadata, run_id, chunk.chunk_no, ChunkStatus.STOPPED,
                           "stopped by request before it started")
        finalize_run(metadata, run_id)
        return ChunkResult(chunk.chunk_no, ChunkStatus.STOPPED, error="stop requested")
    if not store.start_chunk(metadata, run_id, chunk.chunk_no, f"{worker}/{os.getpid()}"):
        current = store.get_chunk(metadata, run_id, chunk.chunk_no)
        log.info("run %s chunk %s is already %s; this delivery does nothing", run_id,
                 chunk.chunk_no, current.status.value)
        return ChunkResult(chunk.chunk_no, current.status, error=current.message)
    planned = PlannedRun.from_row(store.get_run(metadata, run_id))
    result = ChunkResult(chunk.chunk_no, ChunkStatus.RUNNING)
    try:
        _stream_and_apply(settings, planned, chunk, result)
    except StopRequested:
        result.status = ChunkStatus.STOPPED
        result.error = "stopped by request at a batch boundary"
    except Exception as exc:  # noqa: BLE001 - the task must end with a status, not raise
        result.status = ChunkStatus.FAILED
        result.error = describe_db_error(exc)
        log.warning("run %s chunk %s failed: %s", run_id, chunk.chunk_no, result.error)
    else:
        result.status = ChunkStatus.SUCCESS
    store.finish_chunk(metadata, run_id, chunk.chunk_no, result.status, result.error)
    if result.status is ChunkStatus.STOPPED:
        finalize_run(metadata, run_id)  # the last chunk to stop ends the run at once
    return result


def _stream_and_apply(settings: Settings, planned: PlannedRun, chunk: ChunkRange,
                      result: ChunkResult) -> None:
    spec = planned.spec
    metadata = get_engine(settings.metadata)
    source = get_engine(settings.connection_url(spec.source.connection))
    target = get_engine(settings.connection_url(spec.target.connection))
    source_adapter, target_adapter = adapter_for(source), adapter_for(target)
    sql, params = chunk_select(source_adapter, spec.source.query, planned.columns,
                               planned.window, spec.split_column, chunk)
    checkpoint_column = spec.checkpoint_column
    key_positions = [planned.columns.index(k) for k in spec.keys]
    with target.connect() as tconn:
        with tconn.begin():
            stage = target_adapter.create_stage(tconn, spec.target, planned.columns)
        try:
            with source.connect().execution_options(**READ_ONLY) as sconn:
                for rows in source_adapter.stream(sconn, sql, params, spec.batch_rows):
                    if store.stop_requested(metadata, planned.run_id):
                        raise StopRequested()
                    with tconn.begin():
                        target_adapter.clear_stage(tconn, stage)
                        target_adapter.load_stage(tconn, stage, planned.columns, rows)
                        counts = _apply(target_adapter, tconn, stage, planned, len(rows),
                                        _has_null_keys(rows, key_positions))
                        batch_max = (target_adapter.stage_max(tconn, stage, checkpoint_column)
                                     if checkpoint_column else None)
                    result.max_checkpoint = max_value([result.max_checkpoint, batch_max])
                    _add(result.counts, len(rows), counts)
                    store.record_batch(
                        metadata, planned.run_id, chunk.chunk_no,
                        BatchProgress(len(rows), counts.inserted, counts.changed,
                                      counts.unchanged),
                        encode_value(result.max_checkpoint))
        finally:
            with tconn.begin():
                target_adapter.drop_stage(tconn, stage)


def _has_null_keys(rows, key_positions: list[int]) -> bool:  # noqa: ANN001
    return any(row[i] is None for row in rows for i in key_positions)


def _apply(adapter, conn, stage: str, planned: PlannedRun, staged_rows: int,  # noqa: ANN001
           has_null_keys: bool):
    spec = planned.spec
    if spec.scd.type == 1:
        return adapter.apply_scd1(conn, stage, spec.target, planned.columns, spec.keys,
                                  spec.scd.audit_columns, planned.run_id, utcnow(), staged_rows,
                                  has_null_keys)
    return adapter.apply_scd2(conn, stage, spec.target, planned.columns, spec.keys,
                              spec.scd.audit_columns, planned.run_id, planned.valid_from,
                              staged_rows, has_null_keys)


def _add(total: ChunkCounts, rows_read: int, counts) -> None:  # noqa: ANN001
    total.rows_read += rows_read
    total.inserted += counts.inserted
    total.changed += counts.changed
    total.unchanged += counts.unchanged
