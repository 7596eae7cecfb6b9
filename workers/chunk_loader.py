"""Loading one chunk: stream its key range from the source in batches and apply each batch
to the target set-based, one transaction per batch.

Per batch: empty the stage, bulk-load the rows into it (COPY on Postgres), apply the SCD SQL,
commit; then record progress in chunk_log. Memory is one batch, whatever the chunk's size.
A batch rejected for its data (a value too long, out of range, NOT NULL, CHECK) is bisected
in savepoints until the bad rows are isolated: the rest is loaded and each bad row is kept
in error_row. Transient errors ask the task for a retry; the loader itself never raises.
"""
from __future__ import annotations

import datetime as dt
import logging
import os
import uuid
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection

from shared.db import READ_ONLY, get_engine
from shared.dialects import adapter_for
from shared.dialects.base import ApplyCounts, DialectAdapter
from shared.errors import describe_db_error, is_data_error, is_transient_db_error
from shared.finalize import finalize_run
from shared.metadata import store
from shared.metadata.store import BatchProgress
from shared.planned_run import PlannedRun
from shared.retry import backoff_s
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
    retry_in_s: float | None = None  # set: the task should retry itself after this delay

    def to_json(self) -> dict[str, Any]:
        """What the task returns through the result backend: small and JSON only."""
        return {"chunk_no": self.chunk_no, "status": self.status.value,
                "counts": asdict(self.counts), "max_checkpoint": encode_value(self.max_checkpoint),
                "error": self.error}


class StopRequested(Exception):
    """Raised between batches when the run has a stop request; ends the chunk STOPPED."""


def load_chunk(settings: Settings, run_id: str, chunk: ChunkRange, worker: str,
               task_id: str | None = None, retries_done: int = 0) -> ChunkResult:
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
    run = store.get_run(metadata, run_id)
    planned = PlannedRun.from_row(run)
    replay = run.launches > 1 or store.get_chunk(metadata, run_id, chunk.chunk_no).attempts > 1
    result = ChunkResult(chunk.chunk_no, ChunkStatus.RUNNING)
    try:
        ChunkLoad(settings, planned, chunk, result, replay).run()
    except StopRequested:
        result.status = ChunkStatus.STOPPED
        result.error = "stopped by request at a batch boundary"
    except Exception as exc:  # noqa: BLE001 - the task must end with a status, not raise
        result.error = describe_db_error(exc)
        retries = planned.spec.retries
        if is_transient_db_error(exc) and retries_done < retries.max:
            # stay well inside the broker's visibility timeout, or Redis would redeliver the
            # waiting retry as if its worker had died
            cap_s = min(retries.backoff_max_s, settings.visibility_timeout_s / 2)
            result.retry_in_s = backoff_s(retries_done, retries.backoff_s, cap_s)
            result.status = ChunkStatus.PENDING
            store.retry_chunk(metadata, run_id, chunk.chunk_no,
                              f"attempt {retries_done + 1} failed ({result.error}); retry "
                              f"{retries_done + 1}/{retries.max} in {result.retry_in_s:.1f}s")
            log.warning("run %s chunk %s: transient error, retry %d/%d in %.1fs: %s", run_id,
                        chunk.chunk_no, retries_done + 1, retries.max, result.retry_in_s,
                        result.error)
            return result
        result.status = ChunkStatus.FAILED
        if is_transient_db_error(exc):
            result.error = f"{result.error} (after {retries_done} retries)"
        log.warning("run %s chunk %s failed: %s", run_id, chunk.chunk_no, result.error)
    else:
        result.status = ChunkStatus.SUCCESS
    store.finish_chunk(metadata, run_id, chunk.chunk_no, result.status, result.error)
    # The last chunk to end finalizes the run (a no-op while others are open): a stop ends
    # the run at once, and a chord callback that fires early or never is not needed.
    finalize_run(metadata, run_id)
    return result


class ChunkLoad:
    """One attempt at one chunk: the streaming loop and the per-batch apply."""

    def __init__(self, settings: Settings, planned: PlannedRun, chunk: ChunkRange,
                 result: ChunkResult, replay: bool = False):
        spec = planned.spec
        self.replay = replay  # an earlier attempt of this run may have written these rows
        self.settings = settings
        self.planned = planned
        self.chunk = chunk
        self.result = result
        self.metadata = get_engine(settings.metadata)
        self.source = get_engine(settings.connection_url(spec.source.connection))
        self.target = get_engine(settings.connection_url(spec.target.connection))
        self.source_adapter: DialectAdapter = adapter_for(self.source)
        self.target_adapter: DialectAdapter = adapter_for(self.target)
        self.key_positions = [planned.columns.index(k) for k in spec.keys]
        cp = spec.checkpoint_column
        self.checkpoint_position = planned.columns.index(cp) if cp else None
        self.stage = ""

    def run(self) -> None:
        spec = self.planned.spec
        sql, params = chunk_select(self.source_adapter, spec.source.query, self.planned.columns,
                                   self.planned.window, spec.split_column, self.chunk)
        with self.target.connect() as tconn:
            with tconn.begin():
                self.stage = self.target_adapter.create_stage(tconn, spec.target,
                                                              self.planned.columns)
            try:
                with self.source.connect().execution_options(**READ_ONLY) as sconn:
                    for rows in self.source_adapter.stream(sconn, sql, params, spec.batch_rows):
                        if store.stop_requested(self.metadata, self.planned.run_id):
                            raise StopRequested()
                        self._load_batch(tconn, rows)
            finally:
                if tconn.in_transaction():
                    tconn.rollback()
                with tconn.begin():
                    self.target_adapter.drop_stage(tconn, self.stage)

    def _load_batch(self, tconn: Connection, rows: list[tuple]) -> None:
        with tconn.begin():
            counts, bad = self._apply_slice(tconn, rows)
        bad_ids = {id(row) for row, _ in bad}
        good_max = max_value([row[self.checkpoint_position] for row in rows
                              if id(row) not in bad_ids]) if self.checkpoint_position is not None else None
        result = self.result
        result.max_checkpoint = max_value([result.max_checkpoint, good_max])
        result.counts.rows_read += len(rows)
        result.counts.inserted += counts.inserted
        result.counts.changed += counts.changed
        result.counts.unchanged += counts.unchanged
        result.counts.errored += len(bad)
        store.record_batch(
            self.metadata, self.planned.run_id, self.chunk.chunk_no,
            BatchProgress(len(rows), counts.inserted, counts.changed, counts.unchanged, len(bad)),
            encode_value(result.max_checkpoint), [self._error_row(row, msg) for row, msg in bad])

    def _apply_slice(self, tconn: Connection, rows: list[tuple]) -> tuple[ApplyCounts, list]:
        """Stage and apply ``rows`` in a savepoint; on a data error, bisect. Returns the
        counts of what was applied and the (row, message) pairs that were rejected."""
        savepoint = tconn.begin_nested()
        try:
            self.target_adapter.clear_stage(tconn, self.stage)
            self.target_adapter.load_stage(tconn, self.stage, self.planned.columns, rows)
            counts = self._apply(tconn, len(rows), self._has_null_keys(rows))
            savepoint.commit()
            return counts, []
        except Exception as exc:
            savepoint.rollback()
            if not is_data_error(exc):
                raise
            if len(rows) == 1:
                return ApplyCounts(), [(rows[0], describe_db_error(exc))]
            middle = len(rows) // 2
            left, left_bad = self._apply_slice(tconn, rows[:middle])
            right, right_bad = self._apply_slice(tconn, rows[middle:])
            return (ApplyCounts(left.inserted + right.inserted, left.changed + right.changed,
                                left.unchanged + right.unchanged), left_bad + right_bad)

    def _has_null_keys(self, rows: list[tuple]) -> bool:
        return any(row[i] is None for row in rows for i in self.key_positions)

    def _apply(self, conn: Connection, staged_rows: int, has_null_keys: bool) -> ApplyCounts:
        spec, planned, adapter = self.planned.spec, self.planned, self.target_adapter
        if spec.scd.type == 1:
            counts = adapter.apply_scd1(conn, self.stage, spec.target, planned.columns,
                                        spec.keys, spec.scd.audit_columns, planned.run_id,
                                        utcnow(), staged_rows, has_null_keys)
        else:
            counts = adapter.apply_scd2(conn, self.stage, spec.target, planned.columns,
                                        spec.keys, spec.scd.audit_columns, planned.run_id,
                                        planned.valid_from, staged_rows, has_null_keys)
        if self.replay and counts.unchanged:
            earlier = adapter.count_applied_by_run(
                conn, self.stage, spec.target, planned.columns, spec.keys, spec.scd.audit_columns,
                spec.scd.type, planned.run_id, planned.valid_from, has_null_keys)
            counts = ApplyCounts(counts.inserted + earlier.inserted,
                                 counts.changed + earlier.changed,
                                 counts.unchanged + earlier.unchanged)
        return counts

    def _error_row(self, row: tuple, message: str) -> dict[str, Any]:
        columns = self.planned.columns
        data = {c: _json_safe(v) for c, v in zip(columns, row)}
        return {"key": {k: data[k] for k in self.planned.spec.keys}, "row": data,
                "message": message}


def _json_safe(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (dt.date, dt.datetime, dt.time)):
        return value.isoformat()
    if isinstance(value, (Decimal, uuid.UUID)):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    return str(value)
