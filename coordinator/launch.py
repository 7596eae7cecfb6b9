"""The coordinator's Python API: launch a run, wait for it, validate mappings."""
from __future__ import annotations

import time
from dataclasses import dataclass

from celery import chord
from celery._state import _set_task_join_will_block, task_join_will_block

from shared.engines import get_engine
from shared.errors import ChordloadError, RunRefusedError
from shared.metadata import store
from shared.metadata.models import ChunkLog, ProcessLog
from shared.metadata.schema import require_current
from shared.run.plan import PlannedRun
from shared.config.settings import Settings, current_settings
from shared.run.statuses import ChunkStatus, RunStatus
from shared.timeutil import utcnow
from shared.run.values import decode_value, encode_value
from shared.run.window import ChunkRange
from coordinator.plan import Plan, plan_run, read_source_columns


class LaunchError(ChordloadError):
    """The chord could not be sent to the broker; the run was marked FAILED."""

    transient = True


def task_id_for(run_id: str, chunk_no: int) -> str:
    """Deterministic header task id, so stop can revoke by id without asking the broker."""
    return f"{run_id}.{chunk_no}"


def _rows_for(plan: Plan) -> tuple[ProcessLog, list[ChunkLog]]:
    run = ProcessLog(
        run_id=plan.run_id, mapref=plan.mapref, status=RunStatus.QUEUED, created_at=utcnow(),
        load_kind=plan.load_kind, estimated_rows=plan.estimated_rows,
        chunks_total=len(plan.ranges), chunks_done=0, chunks_failed=0, rows_read=0,
        rows_inserted=0, rows_changed=0, rows_unchanged=0, rows_errored=0, rows_duplicate=0,
        rows_deleted=0, checkpoint_from=encode_value(plan.checkpoint_from),
        hwm=encode_value(plan.window.upper), plan_note=plan.note,
        mapping=PlannedRun.mapping_document(plan.spec, plan.columns, plan.run_document()))
    chunks = [ChunkLog(run_id=plan.run_id, chunk_no=r.chunk_no, lower_bound=encode_value(r.lower),
                       upper_bound=encode_value(r.upper), includes_nulls=r.includes_nulls,
                       task_id=task_id_for(plan.run_id, r.chunk_no), status=ChunkStatus.PENDING,
                       rows_read=0, rows_inserted=0, rows_changed=0, rows_unchanged=0,
                       rows_errored=0, rows_duplicate=0, batches_done=0, attempts=0)
              for r in plan.ranges]
    return run, chunks


def send_chord(settings: Settings, run_id: str, chunks: list[ChunkLog], launch: int) -> None:
    """One chord: a ``load_chunk`` per chunk (task id from chunk_log), body ``finalize_run``,
    errback ``on_run_error``. A one-chunk run takes the same path."""
    from workers.tasks import finalize_run, load_chunk, on_run_error

    # The coordinator never waits on Celery results (chunk_log is the truth), so it must not
    # subscribe to every task's result channel, as Celery's Redis backend does for each sent
    # task (200 subscriptions for a 200-chunk chord, then unsubscribe noise at exit).
    queue = settings.celery.queue
    header = [load_chunk.si(run_id, c.chunk_no, chunk_range(c).to_message()).set(
        task_id=c.task_id, queue=queue) for c in chunks]
    body = finalize_run.si(run_id, launch).set(task_id=f"{chunks[0].task_id}.finalize",
                                               queue=queue)
    body = body.on_error(on_run_error.s(run_id, launch).set(queue=queue))
    joining_was_blocked = task_join_will_block()
    _set_task_join_will_block(True)
    try:
        chord(header, body).apply_async()
    finally:
        _set_task_join_will_block(joining_was_blocked)


def chunk_range(chunk: ChunkLog) -> ChunkRange:
    return ChunkRange(chunk.chunk_no, decode_value(chunk.lower_bound),
                      decode_value(chunk.upper_bound), chunk.includes_nulls)


def start_chord(settings: Settings, run_id: str, chunks: list[ChunkLog], launch: int = 1) -> None:
    """Send the chord; if the broker cannot take it, the run is marked FAILED (resumable)."""
    metadata = get_engine(settings.metadata)
    try:
        send_chord(settings, run_id, chunks, launch)
    except Exception as exc:
        store.set_run_status(metadata, run_id, RunStatus.FAILED, only_from={RunStatus.RUNNING},
                             message=f"could not send the run to the broker: "
                                     f"{type(exc).__name__}: {exc}")
        raise LaunchError(f"run {run_id}: could not reach the broker: {exc}") from None


def launch(mapref: str, *, settings: Settings | None = None,
           chunks_override: int | None = None, full: bool = False,
           window_from: str | None = None, window_to: str | None = None) -> str:
    """Plan and launch one run of ``mapref``; returns its run id.

    ``full``: ignore the stored checkpoint (a full reload; the new checkpoint is still set on
    success). ``window_from``/``window_to``: a backfill of that checkpoint window, which never
    moves the stored checkpoint. Refused (RunRefusedError) while another run of the mapping is
    QUEUED or RUNNING.
    """
    settings = settings or current_settings()
    metadata = get_engine(settings.metadata)
    require_current(metadata)
    settings.mapping(mapref)
    active = store.active_run(metadata, mapref)
    if active is not None:
        raise RunRefusedError(f"mapping '{mapref}' already has an active run {active.run_id}; "
                              f"wait for it (chordload status {active.run_id}) or stop it",
                              active.run_id)
    plan = plan_run(settings, mapref, metadata, chunks_override=chunks_override, full=full,
                    window_from=window_from, window_to=window_to)
    run, chunks = _rows_for(plan)
    store.create_run(metadata, run, chunks)
    store.set_run_status(metadata, plan.run_id, RunStatus.RUNNING, only_from={RunStatus.QUEUED})
    start_chord(settings, plan.run_id, chunks)
    return plan.run_id


@dataclass(frozen=True)
class RunSnapshot:
    run: ProcessLog
    totals: dict[str, int]


def snapshot(settings: Settings, run_id: str) -> RunSnapshot:
    metadata = get_engine(settings.metadata)
    totals = store.progress_totals(metadata, run_id)
    return RunSnapshot(store.with_live_totals(metadata, store.get_run(metadata, run_id), totals),
                       totals)


def wait(run_id: str, *, settings: Settings | None = None, timeout_s: float | None = None,
         poll_s: float = 0.5, on_progress=None) -> ProcessLog:  # noqa: ANN001
    """Block until the run is terminal (or ``timeout_s`` passes: TimeoutError)."""
    settings = settings or current_settings()
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        snap = snapshot(settings, run_id)
        if on_progress is not None:
            on_progress(snap)
        if snap.run.status.is_terminal:
            return snap.run
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"run {run_id} still {snap.run.status.value} after {timeout_s}s")
        time.sleep(poll_s)


def validate_mapping(settings: Settings, mapref: str) -> list[str]:
    """Check a mapping against its source (columns exist, query runs); returns its columns."""
    _adapter, columns = read_source_columns(settings, mapref)
    return [c.name for c in columns]
