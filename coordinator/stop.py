"""Stopping a run.

A run still PLANNING has no chunks: stop ends it STOPPED at once, and the coordinator
planning it cancels its source queries. Otherwise stop writes a stop request (the source of
truth), marks the still-pending chunks REVOKED and
revokes their tasks by id; running chunks see the request at their next batch boundary and
end STOPPED, and the last of them finalizes the run. If nothing is running any more, stop
finalizes the run itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from coordinator.operator import operator
from shared.broker import client_app
from shared.config.settings import Settings
from shared.engines import get_engine
from shared.errors import NotFoundError, RunFinishedError
from shared.lifecycle.finalize import finalize_run
from shared.lifecycle.notify import notify_run_end
from shared.metadata import store
from shared.metadata.models import ProcessLog
from shared.run.statuses import RunStatus


@dataclass(frozen=True)
class StopOutcome:
    run_id: str
    new_request: bool
    revoked_task_ids: list[str]
    status: RunStatus  # the run's status right after the request


def resolve_run(settings: Settings, run_or_mapref: str) -> ProcessLog:
    """A run id, or a mapping name meaning its active run."""
    metadata = get_engine(settings.metadata)
    run = store.find_run(metadata, run_or_mapref)
    if run is not None:
        return run
    if run_or_mapref in settings.mappings:
        active = store.active_run(metadata, run_or_mapref)
        if active is None:
            raise RunFinishedError(f"mapping '{run_or_mapref}' has no active run to stop")
        return active
    raise NotFoundError(f"'{run_or_mapref}' is neither a run id nor a mapping in the config")


def stop(
    run_or_mapref: str,
    *,
    settings: Settings,
    reason: str | None = None,
    requested_by: str | None = None,
) -> StopOutcome:
    metadata = get_engine(settings.metadata)
    run = resolve_run(settings, run_or_mapref)
    if run.status is RunStatus.STOPPED and store.stop_requested(metadata, run.run_id):
        return StopOutcome(run.run_id, False, [], run.status)  # stopping twice is harmless
    if run.status.is_terminal:
        raise RunFinishedError(f"run {run.run_id} already finished: {run.status.value}")
    who = requested_by or operator()
    new_request = store.request_stop(metadata, run.run_id, who, reason)
    if run.status is RunStatus.PLANNING:
        # No chunk exists yet: the run ends here, and its coordinator, which checks the run
        # every second while planning, cancels the source queries in flight.
        if store.set_run_status(
            metadata,
            run.run_id,
            RunStatus.STOPPED,
            only_from={RunStatus.PLANNING},
            message=f"stopped while planning by {who}" + (f": {reason}" if reason else ""),
        ):
            notify_run_end(settings, run.run_id)
        return StopOutcome(run.run_id, new_request, [], store.get_run(metadata, run.run_id).status)
    task_ids = store.revoke_pending_chunks(metadata, run.run_id, "revoked by a stop request")
    if task_ids:
        client_app(settings).control.revoke(task_ids)
    # Nothing running any more (all chunks were pending, or already done): finish it now.
    outcome = finalize_run(settings, run.run_id)
    status = outcome.status if outcome else store.get_run(metadata, run.run_id).status
    return StopOutcome(run.run_id, new_request, task_ids, status)
