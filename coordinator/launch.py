"""Launching a run: plan it, write its rows to the metadata database, send its chord.

One chord per run: a ``load_chunk`` task per chunk (ids from ``shared/run/task_ids.py``),
body ``finalize_run``, errback ``on_run_error``; a one-chunk run takes the same path. The
tasks are sent by name through the coordinator's own Celery app (``shared/broker.py``): the
coordinator never imports the workers.
"""

from __future__ import annotations

from celery import chord
from celery._state import _set_task_join_will_block, task_join_will_block

from coordinator.plan import Plan, plan_run
from shared import broker
from shared.config.settings import Settings
from shared.engines import get_engine
from shared.errors import LaunchError, RunRefusedError
from shared.metadata import store
from shared.metadata.models import ChunkLog, ProcessLog
from shared.metadata.schema import require_current
from shared.run.statuses import ChunkStatus, RunStatus
from shared.run.task_ids import chunk_task_id, finalize_task_id
from shared.run.values import decode_value, encode_value
from shared.run.window import ChunkRange


def _rows_for(plan: Plan) -> tuple[ProcessLog, list[ChunkLog]]:
    run_plan = plan.run
    run = ProcessLog(
        run_id=run_plan.run_id,
        mapref=run_plan.mapref,
        status=RunStatus.QUEUED,
        created_at=run_plan.created_at,
        load_kind=run_plan.load_kind.value,
        estimated_rows=plan.estimated_rows,
        chunks_total=len(plan.ranges),
        chunks_done=0,
        chunks_failed=0,
        rows_read=0,
        rows_inserted=0,
        rows_changed=0,
        rows_unchanged=0,
        rows_errored=0,
        rows_duplicate=0,
        rows_deleted=0,
        checkpoint_from=encode_value(run_plan.checkpoint_from),
        hwm=encode_value(run_plan.window.upper),
        plan_note=plan.note,
        mapping=run_plan.to_document(),
    )
    chunks = [
        ChunkLog(
            run_id=run_plan.run_id,
            chunk_no=r.chunk_no,
            lower_bound=encode_value(r.lower),
            upper_bound=encode_value(r.upper),
            includes_nulls=r.includes_nulls,
            task_id=chunk_task_id(run_plan.run_id, r.chunk_no),
            status=ChunkStatus.PENDING,
            rows_read=0,
            rows_inserted=0,
            rows_changed=0,
            rows_unchanged=0,
            rows_errored=0,
            rows_duplicate=0,
            batches_done=0,
            attempts=0,
        )
        for r in plan.ranges
    ]
    return run, chunks


def chunk_range(chunk: ChunkLog) -> ChunkRange:
    return ChunkRange(
        chunk.chunk_no,
        decode_value(chunk.lower_bound),
        decode_value(chunk.upper_bound),
        chunk.includes_nulls,
    )


def send_chord(settings: Settings, run_id: str, chunks: list[ChunkLog], launch: int) -> None:
    """One chord: a ``load_chunk`` per chunk (task id from chunk_log), body ``finalize_run``,
    errback ``on_run_error``."""
    app = broker.client_app(settings)
    queue = settings.celery.queue
    header = [
        app.signature(
            broker.LOAD_CHUNK,
            args=(run_id, c.chunk_no, chunk_range(c).to_message()),
            immutable=True,
        ).set(task_id=c.task_id, queue=queue)
        for c in chunks
    ]
    body = app.signature(broker.FINALIZE_RUN, args=(run_id, launch), immutable=True).set(
        task_id=finalize_task_id(chunks[0].task_id), queue=queue
    )
    body = body.on_error(app.signature(broker.ON_RUN_ERROR, args=(run_id, launch)).set(queue=queue))
    # The coordinator never waits on Celery results (chunk_log is the truth), so it must not
    # subscribe to every task's result channel, as Celery's Redis backend does for each sent
    # task (200 subscriptions for a 200-chunk chord, then unsubscribe noise at exit).
    joining_was_blocked = task_join_will_block()
    _set_task_join_will_block(True)
    try:
        chord(header, body, app=app).apply_async()
    finally:
        _set_task_join_will_block(joining_was_blocked)


def start_chord(settings: Settings, run_id: str, chunks: list[ChunkLog], launch: int = 1) -> None:
    """Send the chord; if the broker cannot take it, the run is marked FAILED (resumable)."""
    metadata = get_engine(settings.metadata)
    try:
        send_chord(settings, run_id, chunks, launch)
    except Exception as exc:  # noqa: BLE001 - whatever the broker did, the run is resumable
        store.set_run_status(
            metadata,
            run_id,
            RunStatus.FAILED,
            only_from={RunStatus.RUNNING},
            message=f"could not send the run to the broker: {type(exc).__name__}: {exc}",
        )
        raise LaunchError(f"run {run_id}: could not reach the broker: {exc}") from None


def launch(
    mapref: str,
    *,
    settings: Settings,
    chunks_override: int | None = None,
    full: bool = False,
    window_from: str | None = None,
    window_to: str | None = None,
) -> str:
    """Plan and launch one run of ``mapref``; returns its run id.

    ``full``: ignore the stored checkpoint (a full reload; the new checkpoint is still set on
    success). ``window_from``/``window_to``: a backfill of that checkpoint window, which never
    moves the stored checkpoint. Refused (RunRefusedError) while another run of the mapping is
    QUEUED or RUNNING, or when its stored checkpoint changed while the run was being planned.
    """
    metadata = get_engine(settings.metadata)
    require_current(metadata)
    spec = settings.mapping(mapref)  # resolved once; the planner gets the spec
    active = store.active_run(metadata, mapref)
    if active is not None:
        raise RunRefusedError(
            f"mapping '{mapref}' already has an active run {active.run_id}; "
            f"wait for it (chordload status {active.run_id}) or stop it",
            active.run_id,
        )
    plan = plan_run(
        settings,
        mapref,
        spec,
        metadata,
        chunks_override=chunks_override,
        full=full,
        window_from=window_from,
        window_to=window_to,
    )
    run, chunks = _rows_for(plan)
    # Refused if the stored checkpoint changed since planning read it (chordload checkpoint)
    store.create_run(metadata, run, chunks, store.PlannedCheckpoint(plan.stored_checkpoint))
    store.set_run_status(metadata, plan.run.run_id, RunStatus.RUNNING, only_from={RunStatus.QUEUED})
    start_chord(settings, plan.run.run_id, chunks)
    return plan.run.run_id
