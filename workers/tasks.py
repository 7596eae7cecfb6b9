"""Celery tasks: thin wrappers that take their settings from their own app and call the
code that does the work. Messages carry only run id, chunk number and bounds (JSON); each
task rebuilds what it needs from the metadata database and the app's config.

The tasks are ``shared_task``s, so they belong to whichever app loads this module: the
worker's (``workers/celery_app.py``) or the demo's in-process worker. Their Celery names
(``shared/broker.py``) are the contract; the Python functions end in ``_task`` so they never
shadow the functions they call.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict
from typing import Any

from celery import Task, current_app, shared_task, states
from celery.result import AsyncResult

from shared import broker
from shared.chunk.load import load_chunk
from shared.engines import writer_metadata
from shared.errors import is_transient_db_error
from shared.lifecycle.finalize import finalize_run
from shared.lifecycle.reconcile import reconcile
from shared.logging_context import bind_run_context
from shared.metadata import store
from shared.retry import TASK_METADATA, TASK_METADATA_WINDOW_S
from shared.run.statuses import ChunkStatus
from shared.run.window import ChunkRange
from workers.celery_app import settings_of

log = logging.getLogger("chordload.tasks")


@shared_task(name=broker.LOAD_CHUNK, bind=True, max_retries=None)
def load_chunk_task(
    self: Task,
    run_id: str,
    chunk_no: int,
    bounds: dict[str, Any],
    failing_since: float | None = None,
) -> dict[str, Any]:
    """Header task of a run's chord: load one key range.

    Transient failures retry as a Celery retry of this same task id (the chord counts the
    chunk once), carrying when the failure began (``failing_since``) so the retries span
    the outage (``retries.window_s``); everything else ends the chunk with a status, not an
    exception. Only a metadata database that stays unreachable past its retries makes the
    task raise, and then the chord's errback or reconcile finalizes the run.
    """
    chunk = ChunkRange.from_message(bounds)
    try:
        result = load_chunk(
            settings_of(self.app),
            run_id,
            chunk,
            self.request.hostname or "worker",
            task_id=self.request.id,
            retries_done=self.request.retries,
            failing_since=failing_since,
        )
    except Exception as exc:
        since = failing_since or time.time()
        if is_transient_db_error(exc) and (
            self.request.retries < TASK_METADATA.attempts
            or time.time() - since < TASK_METADATA_WINDOW_S
        ):
            raise self.retry(
                countdown=TASK_METADATA.backoff_s(self.request.retries),
                kwargs={"failing_since": since},
            ) from exc
        raise
    if result.retry_in_s is not None:
        raise self.retry(
            countdown=result.retry_in_s, kwargs={"failing_since": result.failing_since}
        )
    return result.to_json()


@shared_task(name=broker.FINALIZE_RUN, bind=True)
def finalize_run_task(self: Task, run_id: str, launch: int = 1) -> dict[str, Any]:
    """Chord body. Normally every chunk is terminal by now; if one is not (a duplicate
    delivery counted twice by the chord), finalizing is left to that chunk's own end."""
    outcome = finalize_run(settings_of(self.app), run_id, launch=launch)
    status = outcome.status.value if outcome else None
    log.info("run %s finalized: %s", run_id, status)
    return {"run_id": run_id, "status": status}


@shared_task(name=broker.ON_RUN_ERROR)
def on_run_error(
    request: Any, exc: BaseException, traceback: Any, run_id: str, launch: int = 1
) -> None:
    """Chord errback: Celery calls it instead of the body when a header task was revoked,
    lost or raised (the chord fires only once every header task has returned, so chunks still
    open in chunk_log are the ones whose task did not run to its end). Not bound: Celery
    calls only unbound errbacks with the failed request (a bound one gets a task id)."""
    app = current_app
    settings = settings_of(app)
    metadata = writer_metadata(settings)
    log.error("run %s: chord error %r", run_id, exc)
    if store.get_run(metadata, run_id).launches != launch:
        log.info("run %s: errback of an earlier launch (%s); ignored", run_id, launch)
        return
    open_chunks = [c for c in store.get_chunks(metadata, run_id) if not c.status.is_terminal]
    revoked = [c for c in open_chunks if AsyncResult(c.task_id, app=app).state == states.REVOKED]
    for chunk in revoked:
        store.finish_chunk(
            metadata, run_id, chunk.chunk_no, ChunkStatus.REVOKED, "its task was revoked"
        )
    finalize_run(
        settings,
        run_id,
        unfinished_chunks=ChunkStatus.FAILED,
        launch=launch,
        reason=f"chord failed: {exc}",
    )


@shared_task(name=broker.RECONCILE, bind=True)
def reconcile_task(self: Task) -> list[dict[str, Any]]:
    """Periodic (beat): finalize or fail runs that would otherwise stay RUNNING forever."""
    actions = reconcile(settings_of(self.app))
    for action in actions:
        with bind_run_context(run_id=action.run_id, mapref=action.mapref):
            log.warning("reconcile: run %s %s -> %s", action.run_id, action.action, action.status)
    return [asdict(a) for a in actions]


@shared_task(name=broker.DISPATCH_DUE, bind=True, ignore_result=True)
def dispatch_due_task(self: Task) -> list[dict[str, Any]]:
    """Periodic (beat, every few seconds): launch the mappings whose schedule slot is due
    (``coordinator/schedule.py``). Each slot is claimed once in the metadata database, so
    extra dispatches (two beats, redelivery) are harmless."""
    from coordinator.schedule import dispatch_due

    claimer = f"{self.request.hostname or 'worker'}/{os.getpid()}"
    return [o.to_json() for o in dispatch_due(settings_of(self.app), claimed_by=claimer)]
