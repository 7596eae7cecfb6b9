"""Celery tasks of ``chordload verify``: one ``verify_range`` per key range (the chord's
header) and ``finish_verify`` (its body). Thin wrappers over ``shared/verify/``; messages
carry only the verify id and a range's bounds, the plan is read from verify_log."""

from __future__ import annotations

import logging
from typing import Any

from celery import Task, current_app, shared_task

from shared import broker
from shared.engines import writer_metadata
from shared.errors import ChordloadError
from shared.metadata import store, verifies
from shared.run.plan import RunPlan
from shared.run.statuses import VerifyStatus
from shared.run.window import ChunkRange
from shared.verify.finish import finish_verify
from shared.verify.ranges import verify_range
from workers.celery_app import settings_of

log = logging.getLogger("chordload.tasks")


@shared_task(name=broker.VERIFY_RANGE, bind=True)
def verify_range_task(self: Task, verify_id: str, bounds: dict[str, Any]) -> dict[str, Any]:
    """Digest one key range on both sides, and list the keys that differ."""
    outcome = verify_range(settings_of(self.app), verify_id, ChunkRange.from_message(bounds))
    return outcome.to_json()


@shared_task(name=broker.VERIFY_AFTER_RUN, bind=True, ignore_result=True)
def verify_after_run_task(self: Task, run_id: str) -> str | None:
    """Sent by finalize when a run of a mapping with ``verify.after_run`` ends SUCCESS:
    launch its verify (``status`` shows the run VERIFIED or DIFFERENT from its outcome). A
    verify that cannot start (a new run already began, the source is down) is stored FAILED
    with the reason, so the run shows UNVERIFIED."""
    from coordinator.verify import start_verify

    settings = settings_of(self.app)
    metadata = writer_metadata(settings, pre_ping=True)
    run = store.get_run(metadata, run_id)
    try:
        return start_verify(settings, run.mapref, run_id=run_id, spec=RunPlan.from_row(run).spec)
    except ChordloadError as err:
        log.warning("run %s: its verify could not start: %s", run_id, err)
        verifies.record_unstarted(metadata, run.mapref, run_id, f"could not start: {err}")
        return None


@shared_task(name=broker.FINISH_VERIFY, bind=True)
def finish_verify_task(
    self: Task, outcomes: list[dict[str, Any]], verify_id: str
) -> dict[str, Any]:
    """Chord body: the verdict from every range's outcome."""
    status = finish_verify(settings_of(self.app), verify_id, outcomes)
    log.info("verify %s: %s", verify_id, status.value)
    return {"verify_id": verify_id, "status": status.value}


@shared_task(name=broker.ON_VERIFY_ERROR)
def on_verify_error(request: Any, exc: BaseException, traceback: Any, verify_id: str) -> None:
    """Chord errback: a range task raised or was lost instead of returning its outcome (range
    tasks report their own failures), so the body never runs; the verify ends FAILED. Not
    bound: Celery calls only unbound errbacks with the failed request."""
    settings = settings_of(current_app)
    log.error("verify %s: chord error %r", verify_id, exc)
    verifies.end_verify(
        writer_metadata(settings, pre_ping=True),
        verify_id,
        VerifyStatus.FAILED,
        message=f"a range task did not return: {exc}",
    )
