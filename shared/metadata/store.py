"""Reads and writes of the metadata tables, one short transaction each.

Workers call these once per chunk start, once per batch (progress) and once per chunk end;
the coordinator once per plan. Nothing here holds a transaction open across a batch load.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from enum import Enum
from functools import cache
from typing import Any

from sqlalchemy import (
    BindParameter,
    Engine,
    Integer,
    String,
    Update,
    bindparam,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shared.errors import FenceLost, NotFoundError, RaceError, RunRefusedError
from shared.metadata.models import (
    Checkpoint,
    CheckpointChange,
    ChunkLog,
    ErrorRow,
    ProcessLog,
    StopRequest,
)
from shared.retry import retry_transient
from shared.run.statuses import ACTIVE_RUN_STATUSES, ChunkStatus, RunStatus
from shared.run.task_ids import chunk_task_id
from shared.run.values import display_value
from shared.timeutil import utcnow


@dataclass(frozen=True)
class BatchProgress:
    rows_read: int
    inserted: int
    changed: int
    unchanged: int
    errored: int = 0
    duplicate: int = 0


@dataclass(frozen=True)
class RecordedBatch:
    """A committed batch as chunk_log records it: its counts, the chunk's checkpoint maximum
    so far (encoded) and the batch's quarantined rows."""

    progress: BatchProgress
    max_checkpoint: dict[str, Any] | None = None
    error_rows: list[dict[str, Any]] = field(default_factory=list)


def session(engine: Engine) -> Session:
    return Session(engine, expire_on_commit=False)


def active_run(engine: Engine, mapref: str) -> ProcessLog | None:
    with session(engine) as s:
        return s.scalars(
            select(ProcessLog).where(
                ProcessLog.mapref == mapref,
                ProcessLog.status.in_([st.value for st in ACTIVE_RUN_STATUSES]),
            )
        ).first()


@dataclass(frozen=True)
class PlannedCheckpoint:
    """The stored checkpoint a run was planned from (typed JSON; None: none was stored)."""

    value: dict[str, Any] | None


@retry_transient()
def create_run(
    engine: Engine,
    run: ProcessLog,
    chunks: list[ChunkLog],
    planned_checkpoint: PlannedCheckpoint | None = None,
) -> None:
    """Insert the run (QUEUED) and its chunks (PENDING) in one transaction.

    The unique partial index on active runs turns a concurrent second run of the same
    mapping into an IntegrityError, reported as a refusal naming the active run.

    ``planned_checkpoint``: the stored checkpoint the plan read. Once the run's row holds the
    mapping's one active slot (a checkpoint change waits for it, see ``change_checkpoint``),
    a stored checkpoint that differs from it was changed while the run was being planned, by
    hand or by a run that ended meanwhile: the run is refused, since its window is stale.
    """
    try:
        with session(engine) as s, s.begin():
            s.add(run)
            s.flush()
            if planned_checkpoint is not None:
                _refuse_stale_checkpoint(s, run, planned_checkpoint)
            s.add_all(chunks)
    except IntegrityError:
        raise _refused_active(engine, run.mapref) from None


def _refused_active(engine: Engine, mapref: str) -> RunRefusedError:
    active = active_run(engine, mapref)
    active_id = active.run_id if active else None
    return RunRefusedError(
        f"mapping '{mapref}' already has an active run {active_id or '(just finished)'}; "
        f"wait for it (chordload status {active_id}) or stop it",
        active_id,
    )


@retry_transient()
def begin_planning(engine: Engine, run: ProcessLog) -> None:
    """Insert ``run`` as PLANNING: from here it holds the mapping's one active slot and shows
    in ``status``/``watch`` while the coordinator plans it (no chunks yet)."""
    run.status = RunStatus.PLANNING
    try:
        with session(engine) as s, s.begin():
            s.add(run)
    except IntegrityError:
        raise _refused_active(engine, run.mapref) from None


@retry_transient()
def set_planning_step(engine: Engine, run_id: str, step: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            update(ProcessLog)
            .where(ProcessLog.run_id == run_id, ProcessLog.status == RunStatus.PLANNING)
            .values(planning_step=step)
        )


@retry_transient()
def discard_planning(engine: Engine, run_id: str) -> None:
    """Delete a PLANNING run that planning refused (bad input): it never started, and a
    refused config leaves nothing behind."""
    with engine.begin() as conn:
        conn.execute(
            delete(ProcessLog).where(
                ProcessLog.run_id == run_id, ProcessLog.status == RunStatus.PLANNING
            )
        )


@retry_transient()
def launch_planned(
    engine: Engine,
    run: ProcessLog,
    chunks: list[ChunkLog],
    planned_checkpoint: PlannedCheckpoint | None = None,
) -> bool:
    """Turn the PLANNING run into ``run`` (QUEUED, with its plan) and insert its chunks, in
    one transaction. False (nothing written) if the run is no longer PLANNING: it was
    stopped, or failed by reconcile, meanwhile. Refused like ``create_run`` when the stored
    checkpoint changed during planning."""
    with session(engine) as s, s.begin():
        row = s.scalars(
            select(ProcessLog).where(ProcessLog.run_id == run.run_id).with_for_update()
        ).first()
        if row is None or row.status is not RunStatus.PLANNING:
            return False
        if planned_checkpoint is not None:
            _refuse_stale_checkpoint(s, run, planned_checkpoint)
        for column in ProcessLog.__table__.columns:
            value = getattr(run, column.key)
            # created_at stays when planning began; unset ones keep the row's defaults
            if column.key not in ("run_id", "created_at") and value is not None:
                setattr(row, column.key, value)
        row.status = RunStatus.QUEUED
        row.planning_step = None
        s.flush()
        s.add_all(chunks)
    return True


@retry_transient()
def set_run_status(
    engine: Engine,
    run_id: str,
    status: RunStatus,
    *,
    only_from: set[RunStatus],
    message: str | None = None,
) -> bool:
    values: dict[str, Any] = {"status": status}
    if status is RunStatus.RUNNING:
        values["started_at"] = utcnow()
    if status.is_terminal:
        values["ended_at"] = utcnow()
        values["planning_step"] = None
    if message is not None:
        values["message"] = message
    with engine.begin() as conn:
        result = conn.execute(
            update(ProcessLog)
            .where(
                ProcessLog.run_id == run_id, ProcessLog.status.in_([st.value for st in only_from])
            )
            .values(**values)
        )
        return result.rowcount == 1


@retry_transient()
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
        return s.scalars(
            select(ProcessLog)
            .where(ProcessLog.mapref == mapref)
            .order_by(ProcessLog.created_at.desc())
            .limit(1)
        ).first()


def recent_runs(engine: Engine, limit: int = 20) -> list[ProcessLog]:
    with session(engine) as s:
        return list(
            s.scalars(select(ProcessLog).order_by(ProcessLog.created_at.desc()).limit(limit))
        )


@retry_transient()
def get_chunks(engine: Engine, run_id: str) -> list[ChunkLog]:
    with session(engine) as s:
        return list(
            s.scalars(select(ChunkLog).where(ChunkLog.run_id == run_id).order_by(ChunkLog.chunk_no))
        )


_COUNTERS = (
    "rows_read",
    "rows_inserted",
    "rows_changed",
    "rows_unchanged",
    "rows_errored",
    "rows_duplicate",
)


class ChunkStartOutcome(str, Enum):
    STARTED = "STARTED"  # claimed for a new attempt: load it
    SUPERSEDED = "SUPERSEDED"  # the task belongs to an earlier launch of a resumed run
    STOPPED = "STOPPED"  # the run has a stop request: the chunk is now STOPPED
    ENDED = "ENDED"  # already terminal (done, revoked, stopped): a late or duplicate delivery


@dataclass(frozen=True)
class ChunkStart:
    outcome: ChunkStartOutcome
    status: ChunkStatus
    launches: int = 1  # the run's launch (resume) number: which planned run to use
    attempts: int = 0
    message: str | None = None


_OPEN = (ChunkStatus.PENDING.value, ChunkStatus.RUNNING.value)


# -- a chunk's own writes, built once ----------------------------------------------------------
# A worker writes these for every chunk and batch. Building a statement such as the claim
# and computing its cache key costs more Python than sending it (0.4 ms, where SQLAlchemy
# runs a built statement in about 0.1 ms); built once, a statement keeps its cache key and
# each write costs only its parameters. One statement per shape (``cache``).
_RUN: BindParameter[str] = bindparam("p_run_id", type_=String())
_CHUNK: BindParameter[int] = bindparam("p_chunk_no", type_=Integer())
_ATTEMPT: BindParameter[int] = bindparam("p_attempt", type_=Integer())
_NOW = bindparam("p_now", type_=ChunkLog.heartbeat_at.type)


def _chunk_row(by_attempt: bool) -> tuple[Any, ...]:
    """The chunk's row (``_owned``, with parameters): with ``by_attempt``, only while
    ``p_attempt`` is its latest attempt."""
    where: tuple[Any, ...] = (ChunkLog.run_id == _RUN, ChunkLog.chunk_no == _CHUNK)
    return (*where, ChunkLog.attempts == _ATTEMPT) if by_attempt else where


def _stop_requested() -> Any:
    return select(StopRequest.run_id).where(StopRequest.run_id == _RUN).exists()


@cache
def _claim(by_task: bool) -> Update:
    """``begin_chunk``'s claim of an open chunk for a new attempt."""
    launches = select(ProcessLog.launches).where(ProcessLog.run_id == _RUN).scalar_subquery()
    claim = update(ChunkLog).where(*_chunk_row(False), ChunkLog.status.in_(_OPEN))
    claim = claim.where(~_stop_requested())
    if by_task:
        claim = claim.where(ChunkLog.task_id == bindparam("p_task_id"))
    return claim.values(
        status=ChunkStatus.RUNNING,
        attempts=ChunkLog.attempts + 1,
        worker=bindparam("p_worker", type_=ChunkLog.worker.type),
        started_at=_NOW,
        heartbeat_at=_NOW,
        ended_at=None,
        message=None,
        batches_done=0,
        **dict.fromkeys(_COUNTERS, 0),
    ).returning(ChunkLog.attempts, launches)


def _batch_sets(checkpoint: bool) -> dict[str, Any]:
    """The SET of a recorded batch: its counts added, one batch more, the heartbeat and,
    with ``checkpoint``, the chunk's checkpoint maximum so far."""
    values: dict[str, Any] = {c: getattr(ChunkLog, c) + bindparam(f"d_{c}") for c in _COUNTERS}
    values.update(batches_done=ChunkLog.batches_done + 1, heartbeat_at=_NOW)
    if checkpoint:
        values["max_checkpoint"] = bindparam("p_max_checkpoint", type_=ChunkLog.max_checkpoint.type)
    return values


def _batch_params(batch: RecordedBatch) -> dict[str, Any]:
    p = batch.progress
    counts = (p.rows_read, p.inserted, p.changed, p.unchanged, p.errored, p.duplicate)
    params: dict[str, Any] = {f"d_{c}": v for c, v in zip(_COUNTERS, counts, strict=True)}
    if batch.max_checkpoint is not None:
        params["p_max_checkpoint"] = batch.max_checkpoint
    return params


def _row_params(run_id: str, chunk_no: int, attempt: int | None) -> dict[str, Any]:
    params: dict[str, Any] = {"p_run_id": run_id, "p_chunk_no": chunk_no, "p_now": utcnow()}
    if attempt is not None:
        params["p_attempt"] = attempt
    return params


@cache
def _record(by_attempt: bool, checkpoint: bool) -> Update:
    """``record_batch``'s UPDATE, returning whether the run has a stop request."""
    return (
        update(ChunkLog)
        .where(*_chunk_row(by_attempt))
        .values(**_batch_sets(checkpoint))
        .returning(_stop_requested())
    )


@cache
def _end(by_attempt: bool, batch: bool, checkpoint: bool) -> Update:
    """``finish_chunk``'s UPDATE of an open chunk: its end, with its last batch if ``batch``."""
    values: dict[str, Any] = {
        "status": bindparam("p_status", type_=ChunkLog.status.type),
        "ended_at": _NOW,
        "message": bindparam("p_message", type_=ChunkLog.message.type),
    }
    if batch:
        values.update(_batch_sets(checkpoint))
    return (
        update(ChunkLog).where(*_chunk_row(by_attempt), ChunkLog.status.in_(_OPEN)).values(**values)
    )


_RUN_LOCK = select(ProcessLog.run_id).where(ProcessLog.run_id == _RUN).with_for_update()
_LATEST_ATTEMPT = select(ChunkLog.attempts).where(*_chunk_row(False))
_OPEN_CHUNKS = select(func.count()).where(ChunkLog.run_id == _RUN, ChunkLog.status.in_(_OPEN))


@retry_transient()
def begin_chunk(
    engine: Engine, run_id: str, chunk_no: int, worker: str, task_id: str | None = None
) -> ChunkStart:
    """Claim the chunk for a new attempt, if it is still open, still this task's (a resume
    gives chunks new task ids) and its run has no stop request: one UPDATE in the common
    case, as it runs once per chunk and its round trips are part of a chunk's fixed cost.
    Otherwise a second look says why not; a stop request marks the chunk STOPPED.

    A claim starts a new attempt: counters restart (re-applied batches are idempotent and
    are counted again) and the previous attempt's quarantined rows are deleted (the attempt
    re-reads the range and finds them again). Only the chunk's row is locked: the run's row
    is every chunk's, and a lock on it here would make chunks wait for each other.
    """
    now = utcnow()
    claim = _claim(by_task=task_id is not None)
    claim_params = {"p_run_id": run_id, "p_chunk_no": chunk_no, "p_now": now, "p_worker": worker}
    if task_id is not None:
        claim_params["p_task_id"] = task_id
    with engine.begin() as conn:
        for _ in range(3):  # a stop request withdrawn by a resume in between: claim again
            claimed = conn.execute(claim, claim_params).first()
            if claimed is not None:
                break
            chunk_where = (ChunkLog.run_id == run_id, ChunkLog.chunk_no == chunk_no)
            stop_requested = select(StopRequest.run_id).where(StopRequest.run_id == run_id)
            launches = select(ProcessLog.launches).where(ProcessLog.run_id == run_id)
            chunk = conn.execute(
                select(
                    ChunkLog.task_id,
                    ChunkLog.status,
                    ChunkLog.attempts,
                    ChunkLog.message,
                    launches.scalar_subquery(),
                    stop_requested.exists(),
                )
                .where(*chunk_where)
                .with_for_update()
            ).first()
            if chunk is None:
                raise NotFoundError(f"run '{run_id}' has no chunk {chunk_no}")
            status, launch = ChunkStatus(chunk.status), chunk[4]
            if task_id is not None and chunk.task_id != task_id:
                return ChunkStart(ChunkStartOutcome.SUPERSEDED, status, launch)
            if status.is_terminal:
                return ChunkStart(
                    ChunkStartOutcome.ENDED, status, launch, chunk.attempts, chunk.message
                )
            if chunk[5]:
                message = "stopped by request before it started"
                conn.execute(
                    update(ChunkLog)
                    .where(*chunk_where)
                    .values(status=ChunkStatus.STOPPED, ended_at=now, message=message)
                )
                return ChunkStart(
                    ChunkStartOutcome.STOPPED, ChunkStatus.STOPPED, launch, chunk.attempts, message
                )
        if claimed is not None:
            if claimed.attempts > 1:
                conn.execute(
                    delete(ErrorRow).where(ErrorRow.run_id == run_id, ErrorRow.chunk_no == chunk_no)
                )
            return ChunkStart(
                ChunkStartOutcome.STARTED, ChunkStatus.RUNNING, claimed[1], claimed.attempts
            )
    raise RaceError(
        f"run {run_id} chunk {chunk_no}: the claim kept racing with a change of the chunk; retrying"
    )


def _insert_error_rows(conn: Any, run_id: str, chunk_no: int, batch: RecordedBatch) -> None:
    if batch.error_rows:
        now = utcnow()
        conn.execute(
            insert(ErrorRow),
            [
                {
                    "run_id": run_id,
                    "chunk_no": chunk_no,
                    "row_key": e["key"],
                    "row_data": e["row"],
                    "message": e["message"],
                    "created_at": now,
                }
                for e in batch.error_rows
            ],
        )


def _owned(run_id: str, chunk_no: int, attempt: int | None) -> tuple[Any, ...]:
    """The WHERE of a chunk attempt's own writes: the chunk's row, if ``attempt`` is still
    its latest (a newer attempt restarted the counters; a stale one must not add to them)."""
    where: tuple[Any, ...] = (ChunkLog.run_id == run_id, ChunkLog.chunk_no == chunk_no)
    if attempt is not None:
        where += (ChunkLog.attempts == attempt,)
    return where


@retry_transient()
def record_batch(
    engine: Engine, run_id: str, chunk_no: int, batch: RecordedBatch, attempt: int | None = None
) -> bool:
    """A batch, in one short transaction: the chunk's counters, heartbeat and checkpoint
    maximum and the batch's quarantined rows. Returns whether the run has a stop request, so
    the chunk stops before its next batch without another round trip. The run's live totals
    are the sums over its chunks (``progress_totals``): a per-batch update of the run's row
    would make every chunk of the run queue on that one row. Raises FenceLost when
    ``attempt`` is no longer the chunk's latest: its counts belong to no attempt."""
    statement = _record(attempt is not None, batch.max_checkpoint is not None)
    params = {**_row_params(run_id, chunk_no, attempt), **_batch_params(batch)}
    with engine.begin() as conn:
        stop = conn.execute(statement, params).first()
        if stop is None:
            raise FenceLost(f"run {run_id} chunk {chunk_no}: attempt {attempt} was superseded")
        _insert_error_rows(conn, run_id, chunk_no, batch)
    return bool(stop[0])


@retry_transient()
def restart_chunk(engine: Engine, run_id: str, chunk_no: int, attempt: int | None = None) -> None:
    """Count a running chunk from zero again within its attempt (the loader starts it over
    on another path); its quarantined rows go with the counts. FenceLost if ``attempt`` was
    superseded meanwhile."""
    with engine.begin() as conn:
        restarted = conn.execute(
            update(ChunkLog)
            .where(*_owned(run_id, chunk_no, attempt))
            .values(
                batches_done=0,
                max_checkpoint=None,
                heartbeat_at=utcnow(),
                **dict.fromkeys(_COUNTERS, 0),
            )
        ).rowcount
        if not restarted:
            raise FenceLost(f"run {run_id} chunk {chunk_no}: attempt {attempt} was superseded")
        conn.execute(
            delete(ErrorRow).where(ErrorRow.run_id == run_id, ErrorRow.chunk_no == chunk_no)
        )


@retry_transient()
def finish_chunk(
    engine: Engine,
    run_id: str,
    chunk_no: int,
    status: ChunkStatus,
    message: str | None = None,
    last_batch: RecordedBatch | None = None,
    attempt: int | None = None,
) -> int | None:
    """End the chunk's attempt, recording its last batch with it (``last_batch``); a chunk
    already made terminal elsewhere (revoked by stop, failed by reconcile) keeps that status.
    Returns how many chunks of the run are still open: the chunk that sees 0 finalizes the
    run. The run's row is locked first, so chunks ending at the same moment take turns and
    the last one always counts the others' ends. None, and nothing written, when
    ``attempt`` is no longer the chunk's latest: a newer attempt ends the chunk."""
    statement = _end(
        attempt is not None,
        last_batch is not None,
        last_batch is not None and last_batch.max_checkpoint is not None,
    )
    params = {**_row_params(run_id, chunk_no, attempt), "p_status": status, "p_message": message}
    if last_batch is not None:
        params.update(_batch_params(last_batch))
    run_only = {"p_run_id": run_id}
    with engine.begin() as conn:
        conn.execute(_RUN_LOCK, run_only)
        if attempt is not None:
            latest = conn.execute(
                _LATEST_ATTEMPT, {"p_run_id": run_id, "p_chunk_no": chunk_no}
            ).scalar()
            if latest != attempt:
                return None
        ended = conn.execute(statement, params).rowcount
        if ended and last_batch is not None:
            _insert_error_rows(conn, run_id, chunk_no, last_batch)
        return conn.execute(_OPEN_CHUNKS, run_only).scalar_one()


@retry_transient()
def retry_chunk(
    engine: Engine, run_id: str, chunk_no: int, message: str, attempt: int | None = None
) -> bool:
    """Back to PENDING while a Celery retry of the same task waits out its backoff. False,
    and nothing changed, when ``attempt`` was superseded: the retry is not needed."""
    with engine.begin() as conn:
        if conn.execute(
            update(ChunkLog)
            .where(*_owned(run_id, chunk_no, attempt), ChunkLog.status == ChunkStatus.RUNNING)
            .values(status=ChunkStatus.PENDING, message=message)
        ).rowcount:
            return True
        latest = conn.execute(
            select(ChunkLog.attempts).where(*_owned(run_id, chunk_no, None))
        ).scalar()
        return attempt is None or latest == attempt


def error_rows(engine: Engine, run_id: str, limit: int | None = None) -> list[ErrorRow]:
    with session(engine) as s:
        query = (
            select(ErrorRow)
            .where(ErrorRow.run_id == run_id)
            .order_by(ErrorRow.chunk_no, ErrorRow.id)
        )
        return list(s.scalars(query.limit(limit) if limit else query))


def get_chunk(engine: Engine, run_id: str, chunk_no: int) -> ChunkLog:
    with session(engine) as s:
        chunk = s.get(ChunkLog, (run_id, chunk_no))
    if chunk is None:
        raise NotFoundError(f"run '{run_id}' has no chunk {chunk_no}")
    return chunk


def progress_totals(engine: Engine, run_id: str) -> dict[str, int]:
    """Live totals of a run, summed over its chunks: row counters, chunks done/failed/total
    and the chunk count of each status (``status_pending``, ``status_revoked``, ...)."""
    with engine.connect() as conn:
        groups = conn.execute(
            select(
                ChunkLog.status, func.count(), *(func.sum(getattr(ChunkLog, c)) for c in _COUNTERS)
            )
            .where(ChunkLog.run_id == run_id)
            .group_by(ChunkLog.status)
        ).all()
    by_status = {ChunkStatus(g[0]).value: g[1] for g in groups}
    return {
        **{c: sum(int(g[2 + i] or 0) for g in groups) for i, c in enumerate(_COUNTERS)},
        "chunks_done": by_status.get("SUCCESS", 0),
        # every chunk that ended without loading, the run's `chunks_failed` counter ...
        "chunks_failed": sum(by_status.get(s, 0) for s in ("FAILED", "STOPPED", "REVOKED")),
        "chunks_total": sum(by_status.values()),
        # ... and each status on its own, so a display tells a revoked chunk from a failed one
        **{f"status_{s.value.lower()}": by_status.get(s.value, 0) for s in ChunkStatus},
    }


def with_live_totals(
    engine: Engine, run: ProcessLog, totals: dict[str, int] | None = None
) -> ProcessLog:
    """An active run with its row and chunk counters filled in from its chunks (the run's
    row gets them when it is finalized), for display; not written back."""
    if run.status in ACTIVE_RUN_STATUSES:
        totals = totals or progress_totals(engine, run.run_id)
        for name in (*_COUNTERS, "chunks_done", "chunks_failed"):
            setattr(run, name, totals[name])
    return run


@retry_transient()
def open_chunk_count(engine: Engine, run_id: str) -> int:
    """Chunks of the run still PENDING or RUNNING (one indexed count)."""
    with engine.connect() as conn:
        return conn.execute(
            select(func.count()).where(
                ChunkLog.run_id == run_id,
                ChunkLog.status.in_([ChunkStatus.PENDING.value, ChunkStatus.RUNNING.value]),
            )
        ).scalar_one()


# -- the checkpoint -------------------------------------------------------------------------
def get_checkpoint(engine: Engine, mapref: str) -> Checkpoint | None:
    with session(engine) as s:
        return s.get(Checkpoint, mapref)


def _stored_value(s: Session, mapref: str) -> dict[str, Any] | None:
    row = s.execute(select(Checkpoint.value).where(Checkpoint.mapref == mapref)).first()
    return row.value if row is not None else None


def _latest_change(s: Session, mapref: str) -> CheckpointChange | None:
    # By id, not by time: changes of one mapping are serialized (see change_checkpoint), and
    # the clocks of the machines that make them need not agree.
    return s.scalars(
        select(CheckpointChange)
        .where(CheckpointChange.mapref == mapref)
        .order_by(CheckpointChange.id.desc())
        .limit(1)
    ).first()


def _refuse_stale_checkpoint(s: Session, run: ProcessLog, planned: PlannedCheckpoint) -> None:
    current = _stored_value(s, run.mapref)
    if current == planned.value:
        return
    last = _latest_change(s, run.mapref)
    by = ""
    if last is not None:
        who = f"run {last.run_id}" if last.run_id else last.changed_by
        by = f", by {who} at {last.changed_at.isoformat(' ', 'seconds')}"
    raise RunRefusedError(
        f"mapping '{run.mapref}': its checkpoint changed while run {run.run_id} was being "
        f"planned ({display_value(planned.value)} -> {display_value(current)}{by}); nothing "
        f"was launched: launch it again to plan from the stored checkpoint"
    )


def record_checkpoint_change(
    s: Session,
    mapref: str,
    old: dict[str, Any] | None,
    new: dict[str, Any] | None,
    *,
    changed_at: Any,
    changed_by: str,
    run_id: str | None = None,
    reason: str | None = None,
) -> CheckpointChange:
    """Add a checkpoint_change row to the caller's transaction (the one that changes the
    checkpoint: finalize, or ``change_checkpoint``)."""
    change = CheckpointChange(
        mapref=mapref,
        changed_at=changed_at,
        changed_by=changed_by,
        old_value=old,
        new_value=new,
        run_id=run_id,
        reason=reason,
    )
    s.add(change)
    return change


def _hold_active_slot(s: Session, mapref: str, now: Any) -> ProcessLog:
    """A placeholder active run of ``mapref``, flushed: it takes the mapping's entry in the
    one-active-run unique index until the transaction ends. The caller deletes it before
    committing, so no reader ever sees it."""
    placeholder = ProcessLog(
        run_id=f"hold-{uuid.uuid4().hex[:16]}",
        mapref=mapref,
        status=RunStatus.RUNNING,
        created_at=now,
        load_kind="checkpoint",
        mapping={},
        plan_note="placeholder: holds the mapping while its checkpoint is changed by hand",
    )
    s.add(placeholder)
    s.flush()
    return placeholder


@retry_transient()
def change_checkpoint(
    engine: Engine,
    mapref: str,
    value: dict[str, Any] | None,
    *,
    changed_by: str,
    reason: str | None = None,
) -> CheckpointChange | None:
    """Set the stored checkpoint of ``mapref`` to ``value`` (typed JSON), or delete it
    (``value`` None), and record the change, in one transaction. Returns the change; None
    when there was nothing to delete.

    Refused (RunRefusedError naming the run) while a run of the mapping is PLANNING, QUEUED
    or RUNNING, also under a race with a launch: the transaction first inserts a placeholder
    active run of the mapping, which the one-active-run unique index refuses while a run is
    active, and makes wait while a run is being created, resumed or finalized, until that commits. A
    launch that comes while this transaction is open waits for it in turn, then finds the
    checkpoint it was planned from changed and is refused (``create_run``)."""
    now = utcnow()
    try:
        with session(engine) as s, s.begin():
            placeholder = _hold_active_slot(s, mapref, now)
            stored = s.scalars(
                select(Checkpoint).where(Checkpoint.mapref == mapref).with_for_update()
            ).first()
            s.delete(placeholder)
            old = stored.value if stored is not None else None
            if value is None:
                if stored is None:
                    return None  # nothing to delete
                s.delete(stored)
            elif stored is None:
                s.add(
                    Checkpoint(
                        mapref=mapref,
                        value=value,
                        value_type=value["type"],
                        run_id=None,
                        updated_at=now,
                    )
                )
            else:
                stored.value = value
                stored.value_type = value["type"]
                stored.run_id = None
                stored.updated_at = now
            change = record_checkpoint_change(
                s, mapref, old, value, changed_at=now, changed_by=changed_by, reason=reason
            )
    except IntegrityError:
        active = active_run(engine, mapref)
        if active is None:  # it ended in between: try again
            raise RaceError(
                f"mapping '{mapref}': a run ended while the checkpoint was being changed"
            ) from None
        raise RunRefusedError(
            f"mapping '{mapref}' has an active run {active.run_id} ({active.status.value}); "
            f"its checkpoint cannot change while a run is PLANNING, QUEUED or RUNNING: wait for it "
            f"(chordload watch {active.run_id}) or stop it (chordload stop {active.run_id}), "
            f"then try again",
            active.run_id,
        ) from None
    return change


def latest_checkpoint_change(engine: Engine, mapref: str) -> CheckpointChange | None:
    with session(engine) as s:
        return _latest_change(s, mapref)


def checkpoint_changes(
    engine: Engine, mapref: str, limit: int | None = None
) -> list[CheckpointChange]:
    """The changes of a mapping's checkpoint, newest first."""
    with session(engine) as s:
        query = (
            select(CheckpointChange)
            .where(CheckpointChange.mapref == mapref)
            .order_by(CheckpointChange.id.desc())
        )
        return list(s.scalars(query.limit(limit) if limit else query))


# -- stop requests -----------------------------------------------------------------------
@retry_transient()
def request_stop(engine: Engine, run_id: str, requested_by: str, reason: str | None) -> bool:
    """Write the stop request (the source of truth for stopping); False if one exists."""
    try:
        with session(engine) as s, s.begin():
            s.add(
                StopRequest(
                    run_id=run_id, requested_at=utcnow(), requested_by=requested_by, reason=reason
                )
            )
    except IntegrityError:
        return False
    return True


def stop_requested(engine: Engine, run_id: str) -> bool:
    with engine.connect() as conn:
        return (
            conn.execute(select(StopRequest.run_id).where(StopRequest.run_id == run_id)).first()
            is not None
        )


@retry_transient()
def revoke_pending_chunks(engine: Engine, run_id: str, reason: str) -> list[str]:
    """Mark the run's PENDING chunks REVOKED; returns their task ids (to revoke in Celery)."""
    with engine.begin() as conn:
        conn.execute(select(ProcessLog.run_id).where(ProcessLog.run_id == run_id).with_for_update())
        task_ids = list(
            conn.execute(
                select(ChunkLog.task_id)
                .where(ChunkLog.run_id == run_id, ChunkLog.status == ChunkStatus.PENDING)
                .with_for_update()
            ).scalars()
        )
        conn.execute(
            update(ChunkLog)
            .where(ChunkLog.run_id == run_id, ChunkLog.status == ChunkStatus.PENDING)
            .values(status=ChunkStatus.REVOKED, ended_at=utcnow(), message=reason)
        )
    return task_ids


def active_runs(engine: Engine) -> list[ProcessLog]:
    with session(engine) as s:
        return list(
            s.scalars(
                select(ProcessLog).where(
                    ProcessLog.status.in_([st.value for st in ACTIVE_RUN_STATUSES])
                )
            )
        )


@retry_transient()
def relaunch_chunks(
    engine: Engine, run_id: str, task_ids: dict[int, str], note: str
) -> tuple[ProcessLog, list[ChunkLog]] | None:
    """Give the RUNNING run's chunks ``task_ids`` (chunk_no -> the task id that was lost) new
    task ids under a new launch, PENDING, in one transaction, for a chord of just those
    chunks; the run stays RUNNING (its deadline is not reset) and ``note`` is appended to its
    plan note. Only chunks still open under the given task id are taken. None, and
    nothing changed, if the run is no longer RUNNING, has a stop request or no chunk is left.
    """
    with session(engine) as s, s.begin():
        run = s.scalars(
            select(ProcessLog).where(ProcessLog.run_id == run_id).with_for_update()
        ).first()
        if run is None or run.status is not RunStatus.RUNNING:
            return None
        if s.execute(select(StopRequest.run_id).where(StopRequest.run_id == run_id)).first():
            return None
        chunks = [
            c
            for c in s.scalars(
                select(ChunkLog)
                .where(ChunkLog.run_id == run_id, ChunkLog.chunk_no.in_(list(task_ids)))
                .order_by(ChunkLog.chunk_no)
                .with_for_update()
            )
            if c.status in (ChunkStatus.PENDING, ChunkStatus.RUNNING)
            and c.task_id == task_ids[c.chunk_no]
        ]
        if not chunks:
            return None
        run.launches += 1
        run.plan_note = f"{run.plan_note}; {note}" if run.plan_note else note
        for chunk in chunks:
            chunk.task_id = chunk_task_id(run_id, chunk.chunk_no, run.launches)
            chunk.status = ChunkStatus.PENDING
            chunk.message = f"relaunched (launch {run.launches}): its task was lost"
        s.flush()
    return run, chunks


@retry_transient()
def reopen_for_resume(engine: Engine, run_id: str) -> tuple[ProcessLog, list[ChunkLog]]:
    """Put a FAILED or STOPPED run back to RUNNING with its unsuccessful chunks PENDING under
    fresh task ids; returns the run and the chunks to launch. The one-active-run index refuses
    this while another run of the mapping is active."""
    with session(engine) as s:
        try:
            with s.begin():
                run = s.scalars(
                    select(ProcessLog).where(ProcessLog.run_id == run_id).with_for_update()
                ).first()
                if run is None:
                    raise NotFoundError(f"no run with id '{run_id}' in the metadata database")
                if run.status not in (RunStatus.FAILED, RunStatus.STOPPED):
                    raise RunRefusedError(
                        f"run {run_id} is {run.status.value}; only a FAILED or STOPPED run can "
                        f"be resumed",
                        run_id if run.status in ACTIVE_RUN_STATUSES else None,
                    )
                if not run.mapping:  # it ended while planning: no window, no chunks
                    raise RunRefusedError(
                        f"run {run_id} ended while planning ({run.message}); it has nothing "
                        f"to resume: launch the mapping again (chordload run {run.mapref})"
                    )
                newer = s.scalars(
                    select(ProcessLog.run_id)
                    .where(ProcessLog.mapref == run.mapref, ProcessLog.created_at > run.created_at)
                    .order_by(ProcessLog.created_at)
                    .limit(1)
                ).first()
                if newer is not None:
                    raise RunRefusedError(
                        f"run {run_id} cannot be resumed: run {newer} of mapping '{run.mapref}' "
                        f"was launched after it, and resuming would write this run's older "
                        f"window over what that run loaded; launch a new run instead "
                        f"(chordload run {run.mapref})"
                    )
                s.execute(delete(StopRequest).where(StopRequest.run_id == run_id))
                run.launches += 1
                run.status = RunStatus.RUNNING
                # the launch's start: run_timeout_s counts from here, so a run resumed hours
                # after it first started is not failed by the next reconcile
                run.started_at = utcnow()
                run.ended_at = None
                run.message = None
                run.deletes_started_at = None
                run.rows_deleted = 0
                chunks = list(
                    s.scalars(
                        select(ChunkLog)
                        .where(ChunkLog.run_id == run_id, ChunkLog.status != ChunkStatus.SUCCESS)
                        .order_by(ChunkLog.chunk_no)
                    )
                )
                for chunk in chunks:
                    chunk.status = ChunkStatus.PENDING
                    chunk.task_id = chunk_task_id(run_id, chunk.chunk_no, run.launches)
                    chunk.ended_at = None
                    chunk.message = None
                s.flush()
        except IntegrityError:
            active = active_run(engine, get_run(engine, run_id).mapref)
            raise RunRefusedError(
                f"cannot resume run {run_id}: mapping already has an active run "
                f"{active.run_id if active else '(just finished)'}",
                active.run_id if active else None,
            ) from None
    return run, chunks
