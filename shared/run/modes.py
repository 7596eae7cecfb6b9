"""What kind of run a run is: how it was asked for (mode) and what it loads (load kind)."""

from __future__ import annotations

from enum import Enum


class RunMode(str, Enum):
    """How the run was asked for: from the stored checkpoint, ignoring it, or a window."""

    INCREMENTAL = "incremental"
    FULL = "full"  # --full, or a mapping without checkpoint
    BACKFILL = "backfill"  # --from X --to Y


class LoadKind(str, Enum):
    """What the run loads, as process_log.load_kind shows it."""

    INITIAL = "initial"  # incremental with no stored checkpoint yet
    INCREMENTAL = "incremental"
    FULL = "full"
    BACKFILL = "backfill"
