"""Reconcile: no run stays RUNNING forever.

Celery does not run a chord body when a header task is revoked, lost or raised; chord keys
can expire; workers die. Reconcile (beat every ~30 s, or ``chordload reconcile``) looks at
every active run and
- finalizes it when all its chunks are terminal (the callback was lost or never fired);
- fails it when it is past its deadline (``run_timeout_s`` of the planned mapping);
- fails it when a RUNNING chunk has not heart-beaten for longer than the broker's visibility
  timeout plus a grace period (by then the broker would have redelivered it).
A failed run also gets a stop request, so chunks still in flight quit at their next batch.
Finalization is idempotent, so racing the chord body or a stop is harmless.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from shared.config.settings import Settings
from shared.engines import get_engine
from shared.lifecycle.finalize import finalize_run
from shared.metadata import store
from shared.metadata.models import ChunkLog
from shared.run.plan import RunPlan
from shared.run.statuses import ChunkStatus
from shared.timeutil import as_utc, utcnow


@dataclass(frozen=True)
class ReconcileAction:
    run_id: str
    mapref: str
    action: str
    status: str


def _last_heartbeat(chunk: ChunkLog) -> dt.datetime:
    """When a RUNNING chunk last showed progress (or started)."""
    seen = as_utc(chunk.heartbeat_at or chunk.started_at)
    assert seen is not None  # the claim that makes a chunk RUNNING sets both timestamps
    return seen


def reconcile(settings: Settings, now: dt.datetime | None = None) -> list[ReconcileAction]:
    metadata = get_engine(settings.metadata)
    now = now or utcnow()
    stale_after = dt.timedelta(
        seconds=settings.visibility_timeout_s + settings.celery.heartbeat_grace_s
    )
    actions = []
    for run in store.active_runs(metadata):
        chunks = store.get_chunks(metadata, run.run_id)
        unfinished_reason = None
        if all(c.status.is_terminal for c in chunks):
            outcome = finalize_run(settings, run.run_id)
            if outcome and outcome.changed:
                actions.append(
                    ReconcileAction(run.run_id, run.mapref, "finalized", outcome.status.value)
                )
            continue
        timeout_s = RunPlan.from_row(run).spec.run_timeout_s
        started = as_utc(run.started_at or run.created_at)
        if now - started > dt.timedelta(seconds=timeout_s):
            unfinished_reason = f"run exceeded its deadline (run_timeout_s={timeout_s})"
        else:
            stale = [
                c
                for c in chunks
                if c.status is ChunkStatus.RUNNING and now - _last_heartbeat(c) > stale_after
            ]
            if stale:
                unfinished_reason = (
                    f"chunk {stale[0].chunk_no} stopped heart-beating (no progress for more than "
                    f"{int(stale_after.total_seconds())} s: visibility timeout + grace); its "
                    f"worker is presumed dead"
                )
        if unfinished_reason:
            store.request_stop(metadata, run.run_id, "reconcile", unfinished_reason)
            outcome = finalize_run(
                settings, run.run_id, unfinished_chunks=ChunkStatus.FAILED, reason=unfinished_reason
            )
            if outcome and outcome.changed:
                actions.append(
                    ReconcileAction(run.run_id, run.mapref, "failed", outcome.status.value)
                )
    return actions
