"""Reads and writes of the metadata tables, one short transaction each.

Workers call these once per chunk start, once per batch (progress) and once per chunk end;
the coordinator once per plan. Nothing here holds a transaction open across a batch load.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shared.errors import NotFoundError, RunRefusedError
from shared.metadata.models import Checkpoint, ChunkLog, ProcessLog
from shared.statuses import ACTIVE_RUN_STATUSES, ChunkStatus, RunStatus
from shared.timeutil import utcnow


@dataclass(frozen=True)
class BatchProgress:
    rows_read: int
    inserted: int
    changed: int
    unchanged: int
    errored: int = 0


def session(engine: Engine) -> Session:
    return Session(engine, expire_on_commit=False)


def active_run(engine: Engine, mapref: str) -> ProcessLog | None:
    with session(engine) as s:
        return s.scalars(select(ProcessLog).where(
            ProcessLog.mapref == mapref,
            ProcessLog.status.in_([st.value for st in ACTIVE_RUN_STATUSES]))).first()


def create_run(engine: Engine, run: ProcessLog, chunks: list[ChunkLog]) -> None:
    """Insert the run (QUEUED) and its chunks (PENDING) in one transaction.

    The unique partial index on active runs turns a concurrent second run of the same
    mapping into an IntegrityError, reported as a refusal naming the active run.
    """
    try:
        with session(engine) as s, s.begin():
            s.add(run)
            s.flush()
            s.add_all(chunks)
    except IntegrityError:
        active = active_run(engine, run.mapref)
        active_id = active.run_id if active else None
        raise RunRefusedError(
            f"mapping '{run.mapref}' already has an active run {active_id or '(just finished)'}; "
            f"wait for it (chordload status {active_id}) or stop it", active_id) from None


def set_run_status(engine: Engine, run_id: str, status: RunStatus, *, only_from: set[RunStatus],
                   message: str | None = None) -> bool:
    values: dict[str, Any] = {"status": status}
    if status is RunStatus.RUNNING:
        values["started_at"] = utcnow()
    if status.is_terminal:
        values["ended_at"] = utcnow()
    if message is not None:
        values["message"] = message
    with engine.begin() as conn:
        result = conn.execute(update(ProcessLog).where(
            ProcessLog.run_id == run_id,
            ProcessLog.status.in_([st.value for st in only_from])).values(**values))
        return result.rowcount == 1


def get_run(engine: Engine, run_id: str) -> ProcessLog:
    with session(engine) as s:
        run = s.get(ProcessLog, run_id)
    if run is None:
        raise NotFoundError(f"no run with id '{run_id}' in the metadata database")
    return run


def find_run(engine: Engine, run_id: str) -> ProcessLog | None:
    with session(engine) as s:
        return s.get(ProcessLog, run_id)


def latest_run(engine: Engine, mapref: str) -> ProcessLog | None:
    with session(engine) as s:
        return s.scalars(select(ProcessLog).where(ProcessLog.mapref == mapref)
                         .order_by(ProcessLog.created_at.desc()).limit(1)).first()


def recent_runs(engine: Engine, limit: int = 20) -> list[ProcessLog]:
    with session(engine) as s:
        return list(s.scalars(select(ProcessLog).order_by(ProcessLog.created_at.desc())
                              .limit(limit)))


def get_chunks(engine: Engine, run_id: str) -> list[ChunkLog]:
    with session(engine) as s:
        return list(s.scalars(select(ChunkLog).where(ChunkLog.run_id == run_id)
                              .order_by(ChunkLog.chunk_no)))


def start_chunk(engine: Engine, run_id: str, chunk_no: int, worker: str) -> None:
    """Mark the chunk RUNNING for a new attempt; counters restart (re-applied batches are
    idempotent and are counted again as unchanged)."""
    now = utcnow()
    with engine.begin() as conn:
        conn.execute(update(ChunkLog).where(ChunkLog.run_id == run_id,
                                            ChunkLog.chunk_no == chunk_no).values(
            status=ChunkStatus.RUNNING, attempts=ChunkLog.attempts + 1, worker=worker,
            started_at=now, heartbeat_at=now, ended_at=None, message=None, rows_read=0,
            rows_inserted=0, rows_changed=0, rows_unchanged=0, rows_errored=0, batches_done=0))


def record_batch(engine: Engine, run_id: str, chunk_no: int, progress: BatchProgress,
                 max_checkpoint: dict[str, Any] | None) -> None:
    """One small UPDATE per batch: counters, heartbeat and the chunk's checkpoint maximum."""
    values: dict[str, Any] = dict(
        rows_read=ChunkLog.rows_read + progress.rows_read,
        rows_inserted=ChunkLog.rows_inserted + progress.inserted,
        rows_changed=ChunkLog.rows_changed + progress.changed,
        rows_unchanged=ChunkLog.rows_unchanged + progress.unchanged,
        rows_errored=ChunkLog.rows_errored + progress.errored,
        batches_done=ChunkLog.batches_done + 1, heartbeat_at=utcnow())
    if max_checkpoint is not None:
        values["max_checkpoint"] = max_checkpoint
    with engine.begin() as conn:
        conn.execute(update(ChunkLog).where(ChunkLog.run_id == run_id,
                                            ChunkLog.chunk_no == chunk_no).values(**values))


def finish_chunk(engine: Engine, run_id: str, chunk_no: int, status: ChunkStatus,
                 message: str | None = None) -> None:
    with engine.begin() as conn:
        conn.execute(update(ChunkLog).where(ChunkLog.run_id == run_id,
                                            ChunkLog.chunk_no == chunk_no).values(
            status=status, ended_at=utcnow(), message=message))


def get_chunk(engine: Engine, run_id: str, chunk_no: int) -> ChunkLog:
    with session(engine) as s:
        chunk = s.get(ChunkLog, (run_id, chunk_no))
    if chunk is None:
        raise NotFoundError(f"run '{run_id}' has no chunk {chunk_no}")
    return chunk


def progress_totals(engine: Engine, run_id: str) -> dict[str, int]:
    """Live totals of a run, summed over its chunks (one query)."""
    with engine.connect() as conn:
        row = conn.execute(select(
            func.coalesce(func.sum(ChunkLog.rows_read), 0),
            func.coalesce(func.sum(ChunkLog.rows_inserted), 0),
            func.coalesce(func.sum(ChunkLog.rows_changed), 0),
            func.coalesce(func.sum(ChunkLog.rows_unchanged), 0),
            func.coalesce(func.sum(ChunkLog.rows_errored), 0),
        ).where(ChunkLog.run_id == run_id)).one()
        statuses = conn.execute(select(ChunkLog.status, func.count()).where(
            ChunkLog.run_id == run_id).group_by(ChunkLog.status)).all()
    by_status = {ChunkStatus(s).value: n for s, n in statuses}
    return {
        "rows_read": int(row[0]), "rows_inserted": int(row[1]), "rows_changed": int(row[2]),
        "rows_unchanged": int(row[3]), "rows_errored": int(row[4]),
        "chunks_done": by_status.get("SUCCESS", 0),
        "chunks_failed": sum(by_status.get(s, 0) for s in ("FAILED", "STOPPED", "REVOKED")),
        "chunks_total": sum(by_status.values()),
    }


def get_checkpoint(engine: Engine, mapref: str) -> Checkpoint | None:
    with session(engine) as s:
        return s.get(Checkpoint, mapref)
