"""Finalizing a run: aggregate the chunks, decide the status, run the hard-delete pass of a
full load (scd.deletes), move the checkpoint.

Idempotent and guarded by the RUNNING -> terminal transition in one transaction: the chord
body, the errback, stop and reconcile may all call it, and only the first one that finds the
run active writes anything. The chunk_log rows are the truth (not the chord's result list),
so every caller computes the same outcome.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from shared import checkpoint
from shared.config.mapping import DeletesMode
from shared.config.settings import Settings
from shared.dialects import adapter_for
from shared.engines import get_engine, writer_metadata
from shared.errors import describe_db_error
from shared.fence import close_target
from shared.lifecycle.notify import notify_run_end
from shared.metadata import store
from shared.metadata.models import Checkpoint, ChunkLog, ProcessLog
from shared.metadata.store import record_checkpoint_change, session
from shared.retry import FINALIZE, retry_transient
from shared.run.plan import RunPlan
from shared.run.statuses import LAUNCHED_RUN_STATUSES, ChunkStatus, RunStatus
from shared.run.values import decode_value, encode_value, value_type_name
from shared.scd import late_indexes
from shared.timeutil import as_utc, utcnow

log = logging.getLogger("chordload.finalize")


@dataclass(frozen=True)
class FinalizeOutcome:
    run_id: str
    status: RunStatus
    changed: bool  # False when another caller had already finalized the run


def _decide(chunks: list[ChunkLog], max_error_rows: int) -> tuple[RunStatus, str | None]:
    failed = [c for c in chunks if c.status is ChunkStatus.FAILED]
    if failed:
        first = failed[0]
        more = f" (+{len(failed) - 1} more failed chunks)" if len(failed) > 1 else ""
        return RunStatus.FAILED, f"chunk {first.chunk_no} failed: {first.message}{more}"
    stopped = [c for c in chunks if c.status in (ChunkStatus.STOPPED, ChunkStatus.REVOKED)]
    if stopped:
        return RunStatus.STOPPED, f"{len(stopped)} of {len(chunks)} chunks stopped or revoked"
    unfinished = [c for c in chunks if not c.status.is_terminal]
    if unfinished:
        return RunStatus.FAILED, f"{len(unfinished)} chunks never finished"
    errored = sum(c.rows_errored for c in chunks)
    if errored > max_error_rows:
        return RunStatus.FAILED, (
            f"{errored} error rows exceed errors.max_rows={max_error_rows}; "
            f"see `chordload errors {chunks[0].run_id}`"
        )
    return RunStatus.SUCCESS, None


def finalize_run(
    settings: Settings,
    run_id: str,
    *,
    unfinished_chunks: ChunkStatus | None = None,
    reason: str | None = None,
    launch: int | None = None,
) -> FinalizeOutcome | None:
    """Finalize ``run_id`` if it is still active.

    By default a run with chunks still PENDING/RUNNING is left alone (returns None): the chord
    body only fires when all are done. Callers that know the remaining chunks will never
    finish (errback, stop, reconcile) pass ``unfinished_chunks`` to close them with that status.
    A chord body or errback passes its ``launch``: a late callback of an earlier chord of a
    resumed run must not finalize the new launch.

    A run whose mapping retires hard deletes (``scd.deletes``) and whose chunks all succeeded
    first runs the hard-delete pass on the target, outside the metadata transaction: the
    caller claims it (``deletes_started_at``), commits, runs the pass, and finalizes in a
    second transaction. Callers meanwhile get None; a claim older than the broker's visibility
    timeout plus the heartbeat grace (its finalizer died) is taken over by the next caller,
    e.g. reconcile.
    """
    engine = writer_metadata(settings)
    lease = dt.timedelta(seconds=settings.visibility_timeout_s + settings.celery.heartbeat_grace_s)
    _complete_target(settings, engine, run_id, unfinished_chunks)
    outcome = _finalize(engine, run_id, unfinished_chunks, reason, launch, lease, None)
    if isinstance(outcome, _DeletePass):
        from shared.lifecycle.deletes import retire_deleted_keys

        try:
            retired = _retire(retire_deleted_keys, settings, outcome.plan)
            deleted = DeletePassResult(retired=retired)
        except Exception as exc:  # noqa: BLE001 - the run ends FAILED with the reason
            error = f"the hard-delete pass failed: {describe_db_error(exc)}"
            deleted = DeletePassResult(error=error)
        outcome = _finalize(engine, run_id, None, None, None, lease, deleted)
        assert not isinstance(outcome, _DeletePass)  # given the pass's result, never again
    if outcome is not None and outcome.changed:
        # the run has ended: no attempt of it may write to the target any more, and its
        # webhook hears of it (only the caller that committed the end gets here)
        close_target(settings, RunPlan.from_row(store.get_run(engine, run_id)))
        notify_run_end(settings, outcome.run_id)
    _after_success(settings, engine, outcome)
    return outcome


def _complete_target(
    settings: Settings, engine: Engine, run_id: str, unfinished_chunks: ChunkStatus | None
) -> None:
    """Build the target's late indexes (``shared/scd/late_indexes.py``) before the run that
    is ending writes its end: a finished run, whatever its status, leaves a target it
    created whole. Idempotent (a second finalizer finds nothing missing) and never fatal: a
    stale writer's lock held past the wait or an error is logged and leaves the build to
    the next plan."""
    try:
        run = store.find_run(engine, run_id)
        if run is None or run.status not in LAUNCHED_RUN_STATUSES:
            return
        if unfinished_chunks is None and store.open_chunk_count(engine, run_id):
            return  # not ending yet
    except Exception as exc:  # noqa: BLE001 - _finalize rides a metadata outage out, retrying
        log.debug("run %s: its target's late indexes left to the next plan: %s", run_id, exc)
        return
    plan = RunPlan.from_row(run)
    target = plan.spec.target
    try:
        target_engine = get_engine(settings.connection_url(target.connection))
        scd_target = plan.scd_target(adapter_for(target_engine))
        if not late_indexes.planned(scd_target, target):
            return
        started = time.monotonic()
        with target_engine.begin() as conn:
            built = late_indexes.build(conn, scd_target, target)
    except Exception as exc:  # noqa: BLE001 - the run ends whatever happens here
        log.warning(
            "run %s: %s's indexes after its first load not built (%s); the next plan builds them",
            run_id,
            target.table,
            describe_db_error(exc),
        )
        return
    if built:
        log.info(
            "run %s: built %s's %s in %.1f s",
            run_id,
            target.table,
            ", ".join(built),
            time.monotonic() - started,
        )


def _after_success(settings: Settings, engine: Engine, outcome: FinalizeOutcome | None) -> None:
    """A run this call just ended SUCCESS whose mapping asks for ``verify.after_run``: send
    the task that verifies it (by name, as every chordload task). Sending failing leaves
    the run SUCCESS and unmarked; it is logged, never raised."""
    if outcome is None or not outcome.changed or outcome.status is not RunStatus.SUCCESS:
        return
    from shared import broker

    try:
        with session(engine) as s:
            run = s.get(ProcessLog, outcome.run_id)
            wanted = run is not None and (run.mapping.get("spec") or {}).get("verify", {}).get(
                "after_run"
            )
        if wanted:
            broker.client_app(settings).send_task(
                broker.VERIFY_AFTER_RUN, args=(outcome.run_id,), queue=settings.celery.queue
            )
    except Exception as exc:  # noqa: BLE001 - the run succeeded whatever happens here
        log.warning("run %s: could not send its verify: %s", outcome.run_id, exc)


@retry_transient(FINALIZE)
def _retire(function: Callable[[Settings, RunPlan], int], settings: Settings, plan: RunPlan) -> int:
    return function(settings, plan)


@dataclass(frozen=True)
class _DeletePass:
    plan: RunPlan  # claimed: run the hard-delete pass, then finalize again


@dataclass(frozen=True)
class DeletePassResult:
    """What the hard-delete pass did: the keys it retired, or the error that fails the run."""

    retired: int = 0
    error: str | None = None


@retry_transient(FINALIZE)
def _finalize(
    engine: Engine,
    run_id: str,
    unfinished_chunks: ChunkStatus | None,
    reason: str | None,
    launch: int | None,
    lease: dt.timedelta,
    deleted: DeletePassResult | None,
) -> FinalizeOutcome | _DeletePass | None:
    """One metadata transaction. ``deleted``: the hard-delete pass's outcome when it has run;
    None before."""
    with session(engine) as s, s.begin():
        run = s.scalars(
            select(ProcessLog).where(ProcessLog.run_id == run_id).with_for_update()
        ).one()
        if run.status not in LAUNCHED_RUN_STATUSES or (
            launch is not None and launch != run.launches
        ):
            return FinalizeOutcome(run_id, run.status, changed=False)
        chunks = list(
            s.scalars(
                select(ChunkLog)
                .where(ChunkLog.run_id == run_id)
                .order_by(ChunkLog.chunk_no)
                .with_for_update()
            )
        )
        if any(not c.status.is_terminal for c in chunks):
            if unfinished_chunks is None:
                return None
            now = utcnow()
            for chunk in chunks:
                if not chunk.status.is_terminal:
                    chunk.status = unfinished_chunks
                    chunk.ended_at = now
                    chunk.message = reason
        plan = RunPlan.from_row(run)
        status, message = _decide(chunks, plan.spec.errors.max_rows)
        now = utcnow()
        if status is RunStatus.SUCCESS and plan.spec.scd.deletes is not DeletesMode.IGNORE:
            if deleted is None:
                claimed = as_utc(run.deletes_started_at)
                if claimed is not None and now - claimed < lease:
                    return None  # another finalizer is running the pass
                run.deletes_started_at = now
                return _DeletePass(plan)
            if deleted.error is not None:
                status, message = RunStatus.FAILED, deleted.error
            else:
                run.rows_deleted = deleted.retired
        if reason and status is not RunStatus.SUCCESS:
            message = f"{reason}; {message}" if message else reason
        run.status = status
        run.ended_at = now
        run.message = message
        run.chunks_done = sum(c.status is ChunkStatus.SUCCESS for c in chunks)
        run.chunks_failed = len(chunks) - run.chunks_done
        run.rows_read = sum(c.rows_read for c in chunks)
        run.rows_inserted = sum(c.rows_inserted for c in chunks)
        run.rows_changed = sum(c.rows_changed for c in chunks)
        run.rows_unchanged = sum(c.rows_unchanged for c in chunks)
        run.rows_errored = sum(c.rows_errored for c in chunks)
        run.rows_duplicate = sum(c.rows_duplicate or 0 for c in chunks)
        if status is RunStatus.SUCCESS:
            _store_checkpoint(s, run, plan, chunks, now)
        return FinalizeOutcome(run_id, status, changed=True)


def _store_checkpoint(
    s: Session, run: ProcessLog, plan: RunPlan, chunks: list[ChunkLog], now: dt.datetime
) -> None:
    """Store the checkpoint the run advanced to (``shared/checkpoint.py`` says which) and,
    when it moved, record the change (checkpoint_change), in the finalizing transaction."""
    if not checkpoint.stores(plan.spec, plan.mode):
        return
    stored = s.get(Checkpoint, run.mapref)
    old = stored.value if stored else None
    new = checkpoint.advanced(
        plan.spec,
        plan.mode,
        decode_value(old),
        [decode_value(c.max_checkpoint) for c in chunks],
    )
    run.checkpoint_to = encode_value(new)
    if new is None:
        return
    if stored is None:
        s.add(
            Checkpoint(
                mapref=run.mapref,
                value=encode_value(new),
                value_type=value_type_name(new),
                run_id=run.run_id,
                updated_at=now,
            )
        )
    else:
        stored.value = encode_value(new)
        stored.value_type = value_type_name(new)
        stored.run_id = run.run_id
        stored.updated_at = now
    if encode_value(new) != old:
        record_checkpoint_change(
            s,
            run.mapref,
            old,
            encode_value(new),
            changed_at=now,
            changed_by="run",
            run_id=run.run_id,
            reason=f"{run.load_kind} run",
        )
