"""Celery tasks. Messages carry only run id, chunk number and bounds (JSON); each task
rebuilds what it needs from the metadata database and its own config."""
from __future__ import annotations

import logging

from shared.engines import get_engine
from shared.errors import is_transient_db_error
from shared.lifecycle.finalize import finalize_run as finalize_run_record
from shared.metadata import store
from shared.retry import backoff_s
from shared.config.settings import current_settings
from shared.run.statuses import ChunkStatus
from shared.run.window import ChunkRange
from workers.app import app
from shared.chunk.load import load_chunk as load_chunk_range

log = logging.getLogger("chordload.tasks")


METADATA_RETRY_MAX = 5


@app.task(name="chordload.load_chunk", bind=True, max_retries=None)
def load_chunk(self, run_id: str, chunk_no: int, bounds: dict) -> dict:
    """Header task of a run's chord: load one key range.

    Transient failures retry as a Celery retry of this same task id (the chord counts the
    chunk once); everything else ends the chunk with a status, not an exception. Only a
    metadata database that stays unreachable past its retries makes the task raise, and then
    the chord's errback or reconcile finalizes the run.
    """
    chunk = ChunkRange.from_message(bounds)
    try:
        result = load_chunk_range(current_settings(), run_id, chunk,
                                  self.request.hostname or "worker", task_id=self.request.id,
                                  retries_done=self.request.retries)
    except Exception as exc:
        if is_transient_db_error(exc) and self.request.retries < METADATA_RETRY_MAX:
            raise self.retry(countdown=backoff_s(self.request.retries, 1.0, 30.0)) from exc
        raise
    if result.retry_in_s is not None:
        raise self.retry(countdown=result.retry_in_s)
    return result.to_json()


@app.task(name="chordload.finalize_run")
def finalize_run(run_id: str, launch: int = 1) -> dict:
    """Chord body. Normally every chunk is terminal by now; if one is not (a duplicate
    delivery counted twice by the chord), finalizing is left to that chunk's own end."""
    metadata = get_engine(current_settings().metadata, pre_ping=False)
    outcome = finalize_run_record(metadata, run_id, launch=launch)
    status = outcome.status.value if outcome else None
    log.info("run %s finalized: %s", run_id, status)
    return {"run_id": run_id, "status": status}


@app.task(name="chordload.on_run_error")
def on_run_error(request, exc, traceback, run_id: str, launch: int = 1) -> None:  # noqa: ANN001
    """Chord errback: Celery calls it instead of the body when a header task was revoked,
    lost or raised (the chord fires only once every header task has returned, so chunks still
    open in chunk_log are the ones whose task did not run to its end)."""
    from celery.result import AsyncResult
    from celery import states

    metadata = get_engine(current_settings().metadata, pre_ping=False)
    log.error("run %s: chord error %r", run_id, exc)
    if store.get_run(metadata, run_id).launches != launch:
        log.info("run %s: errback of an earlier launch (%s); ignored", run_id, launch)
        return
    open_chunks = [c for c in store.get_chunks(metadata, run_id) if not c.status.is_terminal]
    revoked = [c for c in open_chunks
               if AsyncResult(c.task_id, app=app).state == states.REVOKED]
    for chunk in revoked:
        store.finish_chunk(metadata, run_id, chunk.chunk_no, ChunkStatus.REVOKED,
                           "its task was revoked")
    finalize_run_record(metadata, run_id, unfinished_chunks=ChunkStatus.FAILED, launch=launch,
                        reason=f"chord failed: {exc}")


@app.task(name="chordload.reconcile")
def reconcile() -> list[dict]:
    """Periodic (beat): finalize or fail runs that would otherwise stay RUNNING forever."""
    from dataclasses import asdict

    from shared.lifecycle.reconcile import reconcile as reconcile_runs

    from shared.logging_context import bind_run_context

    actions = reconcile_runs(current_settings())
    for action in actions:
        with bind_run_context(run_id=action.run_id, mapref=action.mapref):
            log.warning("reconcile: run %s %s -> %s", action.run_id, action.action,
                        action.status)
    return [asdict(a) for a in actions]
