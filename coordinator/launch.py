"""Launching a run: plan it, write its rows to the metadata database, send its chord.

One chord per run (``shared/run/chord.py``, shared with resume and reconcile's relaunch): a
``load_chunk`` task per chunk (ids from ``shared/run/task_ids.py``), body ``finalize_run``,
errback ``on_run_error``; a one-chunk run takes the same path. The tasks are sent by name
through the coordinator's own Celery app (``shared/broker.py``): the coordinator never
imports the workers.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Engine

from coordinator.plan import Plan, new_run_id, plan_run, run_mode
from coordinator.planning_guard import PlanningGuard
from shared.broker import require_broker
from shared.config.settings import Settings
from shared.engines import get_engine
from shared.errors import ChordloadError, PlanningCancelled, RunRefusedError
from shared.lifecycle.notify import notify_run_end
from shared.metadata import store
from shared.metadata.models import ChunkLog, ProcessLog
from shared.metadata.schema import require_current
from shared.run.chord import start_chord
from shared.run.statuses import ChunkStatus, RunStatus
from shared.run.task_ids import chunk_task_id
from shared.run.values import encode_value
from shared.timeutil import utcnow


def _rows_for(plan: Plan) -> tuple[ProcessLog, list[ChunkLog]]:
    run_plan = plan.run
    run = ProcessLog(
        run_id=run_plan.run_id,
        mapref=run_plan.mapref,
        status=RunStatus.QUEUED,
        created_at=run_plan.created_at,
        load_kind=run_plan.load_kind.value,
        estimated_rows=plan.estimated_rows,
        counted_rows=plan.counted_rows,
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
    on_step: Callable[[str, str], None] | None = None,
    interruptible: bool = False,
) -> str:
    """Plan and launch one run of ``mapref``; returns its run id. ``on_step(run_id, step)``
    hears each planning step as it starts. ``interruptible``: SIGTERM of this process, like
    Ctrl-C, ends planning (the ``chordload run`` command).

    ``full``: ignore the stored checkpoint (a full reload; the new checkpoint is still set on
    success). ``window_from``/``window_to``: a backfill of that checkpoint window, which never
    moves the stored checkpoint. Refused (RunRefusedError) while another run of the mapping is
    PLANNING, QUEUED or RUNNING, or when its stored checkpoint changed while the run was being
    planned; BrokerUnavailableError (nothing written) when the broker does not answer. Planning
    is supervised (``coordinator/planning_guard.py``): stopped, interrupted or out of
    ``planning.timeout_s``, it ends the run and raises PlanningCancelled.
    """
    metadata = get_engine(settings.metadata)
    require_current(metadata)
    spec = settings.mapping(mapref)  # resolved once; the planner gets the spec
    mode = run_mode(mapref, spec, full, window_from, window_to)
    # before planning (which may take minutes) and before anything is written: a broker
    # that is down is an error naming its URL, not a FAILED run to clean up
    require_broker(settings)
    run_id = new_run_id()
    # The run exists, PLANNING, from here: it holds the mapping's one active slot (a second
    # launch is refused) and status/watch show the step planning is on.
    store.begin_planning(
        metadata,
        ProcessLog(
            run_id=run_id,
            mapref=mapref,
            created_at=utcnow(),
            load_kind=mode.value,
            mapping={},
            planning_step="starting",
        ),
    )
    guard = PlanningGuard(
        metadata, run_id, settings.planning.timeout_s, on_step=on_step, sigterm=interruptible
    )
    try:
        plan = guard.run(
            lambda: plan_run(
                settings,
                mapref,
                spec,
                metadata,
                chunks_override=chunks_override,
                full=full,
                window_from=window_from,
                window_to=window_to,
                run_id=run_id,
                hooks=guard,
            )
        )
    except PlanningCancelled as err:
        assert guard.cancellation is not None
        ended = store.set_run_status(
            metadata,
            run_id,
            guard.cancellation.status,
            only_from={RunStatus.PLANNING},
            message=str(err),
        )
        if not ended:
            return run_id  # stopped (or failed by reconcile) meanwhile: it says so itself
        notify_run_end(settings, run_id)
        raise
    except ChordloadError as err:
        if err.exit_code in (2, 4):  # bad input or refused: nothing was started
            store.discard_planning(metadata, run_id)
        else:
            _fail_planning(settings, metadata, run_id, str(err))
        raise
    except BaseException as exc:
        _fail_planning(settings, metadata, run_id, f"planning failed: {exc}")
        raise
    run, chunks = _rows_for(plan)
    # Refused if the stored checkpoint changed since planning read it (chordload checkpoint)
    try:
        launched = store.launch_planned(
            metadata, run, chunks, store.PlannedCheckpoint(plan.stored_checkpoint)
        )
    except RunRefusedError:
        store.discard_planning(metadata, run_id)
        raise
    if not launched:  # stopped while planning ended: no chunk was written
        return run_id
    store.set_run_status(metadata, run_id, RunStatus.RUNNING, only_from={RunStatus.QUEUED})
    start_chord(settings, run_id, chunks, claim=plan.run)
    return run_id


def _fail_planning(settings: Settings, metadata: Engine, run_id: str, message: str) -> None:
    if store.set_run_status(
        metadata, run_id, RunStatus.FAILED, only_from={RunStatus.PLANNING}, message=message
    ):
        notify_run_end(settings, run_id)
