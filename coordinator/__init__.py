"""Plan and launch runs: config, row estimation, window and chunk boundaries, the chord.

Python API: ``coordinator.launch(mapref)`` returns the new run id;
``coordinator.wait(run_id)`` blocks until the run is terminal.
"""
from coordinator.api import launch, validate_mapping, wait  # noqa: F401
