"""Reconcile: no run stays RUNNING forever.

Celery does not run a chord body when a header task is revoked, lost or raised; chord keys
can expire; workers die. Reconcile (beat every ~30 s, or ``chordload reconcile``) looks at
every active run and
- finalizes it when all its chunks are terminal (the callback was lost or never fired);
- fails it when it is past its deadline (``run_timeout_s`` of the planned mapping);
- fails it when a RUNNING chunk has not heart-beaten for longer than the broker's visibility
  timeout plus a grace period (by then the broker would have redelivered it);
- relaunches its open chunks whose tasks are gone: PENDING chunks whose messages were lost
  (a Redis restarted without persistence, kombu failing to restore unacked messages) and
  RUNNING chunks whose worker died or whose task gave up during a metadata outage: no chunk
  of the run showed progress for ``celery.lost_message_grace_s``, the run's queue is empty
  and no worker holds their task ids (running, reserved or scheduled). Fencing
  (``shared/fence.py``) makes this safe even when the old attempt is only frozen. Those
  chunks get new task ids under a new launch and one chord of their own, as a resume would;
  the run stays RUNNING. An old message that comes back after all is superseded
  (``begin_chunk``), and the old chord's callback carries the old launch, so it is ignored.
A run left PLANNING longer than ``planning.timeout_s`` (plus a short grace, so a live
coordinator reports its own timeout first) lost its coordinator: it is failed, which frees
its mapping for the next launch or schedule slot.
A failed run also gets a stop request, so chunks still in flight quit at their next batch.
Finalization is idempotent, so racing the chord body or a stop is harmless.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from shared import broker
from shared.config.settings import Settings
from shared.engines import writer_metadata
from shared.errors import LaunchError
from shared.lifecycle.finalize import finalize_run
from shared.lifecycle.notify import notify_run_end
from shared.metadata import store
from shared.metadata.models import ChunkLog, ProcessLog
from shared.run.chord import start_chord
from shared.run.plan import RunPlan, on_run_queue
from shared.run.statuses import ChunkStatus, RunStatus
from shared.timeutil import as_utc, utcnow

log = logging.getLogger("chordload.reconcile")
# past planning.timeout_s, a live coordinator cancels planning and fails the run itself
PLANNING_GRACE_S = 30.0


@dataclass(frozen=True)
class ReconcileAction:
    run_id: str
    mapref: str
    action: str  # finalized, failed or relaunched
    status: str
    chunks: tuple[int, ...] = ()  # relaunched: the chunks resent


def _last_heartbeat(chunk: ChunkLog) -> dt.datetime:
    """When a RUNNING chunk last showed progress (or started)."""
    seen = as_utc(chunk.heartbeat_at or chunk.started_at)
    assert seen is not None  # the claim that makes a chunk RUNNING sets both timestamps
    return seen


def _last_progress(run: ProcessLog, chunks: list[ChunkLog]) -> dt.datetime:
    """When the run last showed any sign of life: its launch, or a chunk's start, heartbeat
    or end."""
    seen = [as_utc(run.started_at or run.created_at)]
    for c in chunks:
        seen.extend(as_utc(t) for t in (c.started_at, c.heartbeat_at, c.ended_at) if t)
    return max(t for t in seen if t is not None)


def _lost_chunks(
    settings: Settings, run: ProcessLog, chunks: list[ChunkLog], now: dt.datetime
) -> list[ChunkLog]:
    """The run's open chunks whose tasks are gone: nothing moved for ``lost_message_grace_s``,
    the queue is empty and no worker holds their task ids. PENDING: the message was lost
    (a Redis restarted without persistence). RUNNING: its worker died with the message
    unacknowledged (back only after the visibility timeout, hours by default), or its task
    gave up during a metadata outage; should that attempt still be alive after all (a frozen
    worker), fencing keeps it from writing once the new attempt has started. The queue is
    read before the workers are asked, so a message on its way from the queue to a worker is
    seen in one place or the other."""
    grace = dt.timedelta(seconds=settings.celery.lost_message_grace_s)
    open_ = [
        c
        for c in chunks
        if c.status is ChunkStatus.PENDING
        or (c.status is ChunkStatus.RUNNING and now - _last_heartbeat(c) > grace)
    ]
    if not open_ or now - _last_progress(run, chunks) < grace:
        return []
    if broker.queue_length(settings) > 0:
        return []
    held = broker.task_ids_held_by_workers(settings)
    return [c for c in open_ if c.task_id not in held]


def _relaunch(
    settings: Settings, run: ProcessLog, lost: list[ChunkLog], now: dt.datetime
) -> ReconcileAction | None:
    """Resend ``lost`` as a new launch's chord (one metadata transaction, then the chord)."""
    numbers = ", ".join(str(c.chunk_no) for c in lost)
    note = (
        f"{now.isoformat(' ', 'seconds')} reconcile relaunched chunk(s) {numbers}: their "
        f"tasks were lost (empty queue, no worker holds them, no progress for "
        f"{settings.celery.lost_message_grace_s} s)"
    )
    metadata = writer_metadata(settings, pre_ping=True)
    task_ids = {c.chunk_no: c.task_id for c in lost}
    reopened = store.relaunch_chunks(metadata, run.run_id, task_ids, note)
    if reopened is None:  # it moved on meanwhile (a chunk started, a stop, the run ended)
        return None
    relaunched, chunks = reopened
    numbers = ", ".join(str(c.chunk_no) for c in chunks)
    try:  # to the queue the run was sent to, whatever queue reconcile's config names
        start_chord(on_run_queue(settings, run), run.run_id, chunks, relaunched.launches)
    except LaunchError as exc:  # the run is now FAILED (resumable)
        log.error("reconcile: run %s: relaunching chunk(s) %s failed: %s", run.run_id, numbers, exc)
        return ReconcileAction(run.run_id, run.mapref, "failed", "FAILED")
    log.warning(
        "reconcile: run %s: relaunched chunk(s) %s as launch %s; their tasks were lost",
        run.run_id,
        numbers,
        relaunched.launches,
    )
    return ReconcileAction(
        run.run_id, run.mapref, "relaunched", "RUNNING", tuple(c.chunk_no for c in chunks)
    )


def _fail_stale_planning(
    settings: Settings, run: ProcessLog, now: dt.datetime
) -> ReconcileAction | None:
    """Fail a run PLANNING for longer than planning.timeout_s + grace: its coordinator died
    (killed, host lost) before it could launch or end the run."""
    limit_s = settings.planning.timeout_s + PLANNING_GRACE_S
    if now - as_utc(run.created_at) <= dt.timedelta(seconds=limit_s):
        return None
    message = (
        f"planning did not finish within planning.timeout_s ({settings.planning.timeout_s:g} "
        f"s; last step '{run.planning_step or '-'}'): its coordinator presumably died; "
        f"nothing was launched, run the mapping again"
    )
    metadata = writer_metadata(settings, pre_ping=True)
    if not store.set_run_status(
        metadata, run.run_id, RunStatus.FAILED, only_from={RunStatus.PLANNING}, message=message
    ):
        return None
    log.warning("reconcile: run %s: %s", run.run_id, message)
    notify_run_end(settings, run.run_id)
    return ReconcileAction(run.run_id, run.mapref, "failed", "FAILED")


def reconcile(settings: Settings, now: dt.datetime | None = None) -> list[ReconcileAction]:
    metadata = writer_metadata(settings, pre_ping=True)
    now = now or utcnow()
    stale_after = dt.timedelta(
        seconds=settings.visibility_timeout_s + settings.celery.heartbeat_grace_s
    )
    actions = []
    for run in store.active_runs(metadata):
        if run.status is RunStatus.PLANNING:
            failed = _fail_stale_planning(settings, run, now)
            if failed is not None:
                actions.append(failed)
            continue
        chunks = store.get_chunks(metadata, run.run_id)
        unfinished_reason: str | None = None
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
        if unfinished_reason is None:
            try:
                lost = _lost_chunks(settings, run, chunks, now)
            except Exception as exc:  # noqa: BLE001 - broker unreachable: look again next time
                log.warning("reconcile: run %s: cannot look for lost messages: %s", run.run_id, exc)
                lost = []
            if lost:
                action = _relaunch(settings, run, lost, now)
                if action is not None:
                    actions.append(action)
            continue
        store.request_stop(metadata, run.run_id, "reconcile", unfinished_reason)
        outcome = finalize_run(
            settings, run.run_id, unfinished_chunks=ChunkStatus.FAILED, reason=unfinished_reason
        )
        if outcome and outcome.changed:
            actions.append(ReconcileAction(run.run_id, run.mapref, "failed", outcome.status.value))
    return actions
