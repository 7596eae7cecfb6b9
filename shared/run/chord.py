"""A run's chord: how a launch (first launch, resume, or reconcile's relaunch of chunks whose
messages were lost) is sent to the broker.

One chord per launch: a ``load_chunk`` task per chunk (ids from ``shared/run/task_ids.py``,
as chunk_log holds them), body ``finalize_run``, errback ``on_run_error``; a one-chunk run
takes the same path. The tasks are sent by name through the sender's own Celery app
(``shared/broker.py``): neither the coordinator nor reconcile imports the workers.
"""

from __future__ import annotations

from celery import chord
from celery._state import _set_task_join_will_block, task_join_will_block

from shared import broker
from shared.config.settings import Settings
from shared.engines import get_engine
from shared.errors import LaunchError, describe_db_error
from shared.fence import claim_target
from shared.metadata import store
from shared.metadata.models import ChunkLog
from shared.run.plan import RunPlan
from shared.run.statuses import RunStatus
from shared.run.task_ids import finalize_task_id
from shared.run.values import decode_value
from shared.run.window import ChunkRange


def chunk_range(chunk: ChunkLog) -> ChunkRange:
    """The key range of a chunk_log row, as its task message carries it."""
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
    # The sender never waits on Celery results (chunk_log is the truth), so it must not
    # subscribe to every task's result channel, as Celery's Redis backend does for each sent
    # task (200 subscriptions for a 200-chunk chord, then unsubscribe noise at exit).
    joining_was_blocked = task_join_will_block()
    _set_task_join_will_block(True)
    try:
        chord(header, body, app=app).apply_async()
    finally:
        _set_task_join_will_block(joining_was_blocked)


def start_chord(
    settings: Settings,
    run_id: str,
    chunks: list[ChunkLog],
    launch: int = 1,
    claim: RunPlan | None = None,
) -> None:
    """Send the chord; if the broker cannot take it, the run is marked FAILED (resumable).
    ``claim`` (a launch or a resume): first give the run's target to the run
    (``shared/fence.py``), so no attempt of an older run or launch writes to it any more."""
    metadata = get_engine(settings.metadata)
    if claim is not None:
        try:
            claim_target(settings, claim)
        except Exception as exc:  # noqa: BLE001 - the run is resumable once the target is back
            message = (
                f"could not claim target table {claim.spec.target.table} for the run: "
                f"{describe_db_error(exc)}"
            )
            store.set_run_status(
                metadata, run_id, RunStatus.FAILED, only_from={RunStatus.RUNNING}, message=message
            )
            raise LaunchError(f"run {run_id}: {message}") from None
    if not chunks:  # a resume with nothing left to load only finalizes
        return
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
