"""Resuming a run: re-launch, as a new chord, only the chunks of a FAILED or STOPPED run that
did not succeed, with the run's frozen window and planned mapping, so a load that failed at
90% redoes 10%. The chunks get new task ids (``shared/run/task_ids.py``), so a late task of
the earlier launch is recognised as superseded and does nothing.
"""

from __future__ import annotations

from shared.config.settings import Settings
from shared.engines import get_engine
from shared.lifecycle.finalize import finalize_run
from shared.metadata import store
from shared.run.chord import start_chord
from shared.run.plan import RunPlan


def resume(run_id: str, *, settings: Settings) -> str:
    """Re-launch the unsuccessful chunks of a FAILED or STOPPED run; returns the run id."""
    metadata = get_engine(settings.metadata)
    run, chunks = store.reopen_for_resume(metadata, run_id)
    plan = RunPlan.from_row(run)
    if not chunks:  # every chunk had succeeded (e.g. only finalize failed): finalize again
        start_chord(settings, run_id, [], run.launches, claim=plan)
        finalize_run(settings, run_id)
        return run_id
    start_chord(settings, run_id, chunks, run.launches, claim=plan)
    return run_id
