"""``chordload.dispatch_due``: beat sends it every few seconds (a static entry, see
``shared/config/cron.py``); it launches the mappings whose schedule slot is due. The work is in
``coordinator/schedule.py``; each slot is claimed once in the metadata database, so extra
dispatches (two beats, redelivery) are harmless."""
from __future__ import annotations

import os

from shared.config.settings import current_settings
from workers.app import app


@app.task(name="chordload.dispatch_due", bind=True, ignore_result=True)
def dispatch_due(self) -> list[dict]:  # noqa: ANN001
    from coordinator.schedule import dispatch_due as dispatch

    claimer = f"{self.request.hostname or 'worker'}/{os.getpid()}"
    return [o.to_json() for o in dispatch(current_settings(), claimed_by=claimer)]
