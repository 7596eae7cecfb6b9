"""Launching a run: plan it, write its rows to the metadata database, send its chord.

One chord per run (``shared/run/chord.py``, shared with resume and reconcile's relaunch): a
``load_chunk`` task per chunk (ids from ``shared/run/task_ids.py``), body ``finalize_run``,
errback ``on_run_error``; a one-chunk run takes the same path. The tasks are sent by name
through the coordinator's own Celery app (``shared/broker.py``): the coordinator never
imports the workers.
"""

from __future__ import annotations

from coordinator.plan import Plan, plan_run
from shared.broker import require_broker
from shared.config.settings import Settings
from shared.engines import get_engine
from shared.errors import RunRefusedError
from shared.metadata import store
from shared.metadata.models import ChunkLog, ProcessLog
from shared.metadata.schema import require_current
from shared.run.chord import start_chord
from shared.run.statuses import ChunkStatus, RunStatus
from shared.run.task_ids import chunk_task_id
from shared.run.values import encode_value


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
    QUEUED or RUNNING, or when its stored checkpoint changed while the run was being planned;
    BrokerUnavailableError (nothing written) when the broker does not answer.
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
    # before planning (which may take minutes) and before anything is written: a broker
    # that is down is an error naming its URL, not a FAILED run to clean up
    require_broker(settings)
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
    start_chord(settings, plan.run.run_id, chunks, claim=plan.run)
    return plan.run.run_id
