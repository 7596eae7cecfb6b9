"""Celery tasks. Messages carry only run id, chunk number and bounds (JSON); each task
rebuilds what it needs from the metadata database and its own config."""
from __future__ import annotations

import logging

from shared.db import get_engine
from shared.finalize import finalize_run as finalize_run_record
from shared.settings import current_settings
from shared.statuses import ChunkStatus
from shared.window import ChunkRange
from workers.app import app
from workers.chunk_loader import load_chunk as load_chunk_range

log = logging.getLogger("chordload.tasks")


@app.task(name="chordload.load_chunk", bind=True)
def load_chunk(self, run_id: str, chunk_no: int, bounds: dict) -> dict:
    """Header task of a run's chord: load one key range. Never raises."""
    chunk = ChunkRange.from_message(bounds)
    result = load_chunk_range(current_settings(), run_id, chunk, self.request.hostname or "worker")
    return result.to_json()


@app.task(name="chordload.finalize_run")
def finalize_run(run_id: str) -> dict:
    """Chord body: every header task returned, so every chunk is terminal."""
    outcome = finalize_run_record(get_engine(current_settings().metadata), run_id,
                                  unfinished_chunks=ChunkStatus.FAILED,
                                  reason="the chord completed while this chunk was unfinished")
    status = outcome.status.value if outcome else None
    log.info("run %s finalized: %s", run_id, status)
    return {"run_id": run_id, "status": status}


@app.task(name="chordload.on_run_error")
def on_run_error(request, exc, traceback, run_id: str) -> None:  # noqa: ANN001
    """Chord errback: a header task raised or the body failed; finalize what can be."""
    log.error("run %s: chord error %r", run_id, exc)
    finalize_run_record(get_engine(current_settings().metadata), run_id,
                        unfinished_chunks=ChunkStatus.FAILED,
                        reason=f"chord failed: {type(exc).__name__}")
