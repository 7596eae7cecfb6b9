"""Following a run: its live totals now (``snapshot``) and until it ends (``wait``), what
``run --wait`` and ``watch`` show."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from shared.config.settings import Settings
from shared.engines import get_engine
from shared.metadata import store
from shared.metadata.models import ProcessLog
from shared.retry import ride_out


@dataclass(frozen=True)
class RunSnapshot:
    run: ProcessLog
    totals: dict[str, int]


def snapshot(settings: Settings, run_id: str) -> RunSnapshot:
    metadata = get_engine(settings.metadata)
    totals = store.progress_totals(metadata, run_id)
    return RunSnapshot(
        store.with_live_totals(metadata, store.get_run(metadata, run_id), totals), totals
    )


def wait(
    run_id: str,
    *,
    settings: Settings,
    timeout_s: float | None = None,
    poll_s: float = 0.5,
    on_progress: Callable[[RunSnapshot], None] | None = None,
) -> ProcessLog:
    """Block until the run is terminal (or ``timeout_s`` passes: TimeoutError). A metadata
    database that is unreachable for a while (up to ``POLL_OUTAGE_S``) is waited out."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        # a metadata blip is not the run's failure: keep asking (shared/retry.py)
        snap = ride_out(lambda: snapshot(settings, run_id))
        if on_progress is not None:
            on_progress(snap)
        if snap.run.status.is_terminal:
            return snap.run
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"run {run_id} still {snap.run.status.value} after {timeout_s}s")
        time.sleep(poll_s)
