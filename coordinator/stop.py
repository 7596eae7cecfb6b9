"""Stopping and resuming runs.

Stop writes a stop request (the source of truth), marks the still-pending chunks REVOKED and
revokes their tasks by id; running chunks see the request at their next batch boundary and
end STOPPED, and the last of them finalizes the run. Resume re-launches, as a new chord, only
the chunks of a FAILED or STOPPED run that did not succeed, with the run's frozen window and
planned mapping, so a load that failed at 90% redoes 10%.
"""
from __future__ import annotations

import getpass
import socket
from dataclasses import dataclass

from shared.engines import get_engine
from shared.errors import ChordloadError, NotFoundError
from shared.lifecycle.finalize import finalize_run
from shared.metadata import store
from shared.metadata.models import ProcessLog
from shared.config.settings import Settings, current_settings
from shared.run.statuses import RunStatus


class RunFinishedError(ChordloadError):
    """The run named is already terminal; nothing to stop. CLI exit 2."""

    exit_code = 2


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


def stop(run_or_mapref: str, *, settings: Settings | None = None, reason: str | None = None,
         requested_by: str | None = None) -> StopOutcome:
    settings = settings or current_settings()
    metadata = get_engine(settings.metadata)
    run = resolve_run(settings, run_or_mapref)
    if run.status is RunStatus.STOPPED and store.stop_requested(metadata, run.run_id):
        return StopOutcome(run.run_id, False, [], run.status)  # stopping twice is harmless
    if run.status.is_terminal:
        raise RunFinishedError(f"run {run.run_id} already finished: {run.status.value}")
    who = requested_by or f"{getpass.getuser()}@{socket.gethostname()}"
    new_request = store.request_stop(metadata, run.run_id, who, reason)
    task_ids = store.revoke_pending_chunks(metadata, run.run_id, "revoked by a stop request")
    if task_ids:
        from workers.app import app

        app.control.revoke(task_ids)
    # Nothing running any more (all chunks were pending, or already done): finish it now.
    outcome = finalize_run(metadata, run.run_id, settings=settings)
    status = outcome.status if outcome else store.get_run(metadata, run.run_id).status
    return StopOutcome(run.run_id, new_request, task_ids, status)


def resume(run_id: str, *, settings: Settings | None = None) -> str:
    """Re-launch the unsuccessful chunks of a FAILED or STOPPED run; returns the run id."""
    from coordinator.launch import start_chord

    settings = settings or current_settings()
    metadata = get_engine(settings.metadata)
    run, chunks = store.reopen_for_resume(metadata, run_id)
    if not chunks:  # every chunk had succeeded (e.g. only finalize failed): finalize again
        finalize_run(metadata, run_id, settings=settings)
        return run_id
    start_chord(settings, run_id, chunks, run.launches)
    return run_id



