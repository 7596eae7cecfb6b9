"""Run and chunk statuses, as enums (stored as their string values)."""

from __future__ import annotations

from enum import Enum


class RunStatus(str, Enum):
    PLANNING = "PLANNING"  # the coordinator is planning it: no chunks yet
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"
    STOPPED = "STOPPED"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_RUN_STATUSES

    @property
    def exit_code(self) -> int:
        """CLI exit code for a run that ended in this status."""
        return {RunStatus.SUCCESS: 0, RunStatus.FAILED: 1, RunStatus.STOPPED: 3}.get(self, 1)


TERMINAL_RUN_STATUSES = frozenset({RunStatus.SUCCESS, RunStatus.FAILED, RunStatus.STOPPED})
# a run in one of these holds its mapping's one active slot (the unique partial index)
ACTIVE_RUN_STATUSES = frozenset({RunStatus.PLANNING, RunStatus.QUEUED, RunStatus.RUNNING})
# launched: its chunks exist and its chord was (or is being) sent; finalize decides these
LAUNCHED_RUN_STATUSES = frozenset({RunStatus.QUEUED, RunStatus.RUNNING})


class ChunkStatus(str, Enum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"
    STOPPED = "STOPPED"
    REVOKED = "REVOKED"

    @property
    def is_terminal(self) -> bool:
        return self not in (ChunkStatus.PENDING, ChunkStatus.RUNNING)


class VerifyStatus(str, Enum):
    """A ``chordload verify``: RUNNING until its chord's body ends it EQUAL, DIFFERENT or
    FAILED (a range could not be read; nothing is proven)."""

    RUNNING = "RUNNING"
    EQUAL = "EQUAL"
    DIFFERENT = "DIFFERENT"
    FAILED = "FAILED"

    @property
    def is_terminal(self) -> bool:
        return self is not VerifyStatus.RUNNING

    @property
    def exit_code(self) -> int:
        """CLI exit code: 0 equal, 1 different (or failed: not proven equal)."""
        return 0 if self is VerifyStatus.EQUAL else 1
