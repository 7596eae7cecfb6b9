"""Plan and launch runs: config, row estimation, window and chunk boundaries, the chord.

Python API: ``coordinator.launch(mapref)`` returns the new run id;
``coordinator.wait(run_id)`` blocks until the run is terminal; ``coordinator.stop(run_id)``
and ``coordinator.resume(run_id)`` as the CLI's stop and resume.
"""
from coordinator.launch import launch, validate_mapping, wait  # noqa: F401
from coordinator.stop import resume, stop  # noqa: F401
