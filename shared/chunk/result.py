"""What one chunk attempt reports: its counts, checkpoint maximum, status and error."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from shared.run.statuses import ChunkStatus
from shared.run.values import Value, encode_value


@dataclass
class ChunkCounts:
    rows_read: int = 0
    inserted: int = 0
    changed: int = 0
    unchanged: int = 0
    errored: int = 0
    duplicate: int = 0


@dataclass
class ChunkResult:
    chunk_no: int
    status: ChunkStatus
    counts: ChunkCounts = field(default_factory=ChunkCounts)
    max_checkpoint: Value = None
    error: str | None = None
    retry_in_s: float | None = None  # set: the task should retry itself after this delay
    failing_since: float | None = None  # epoch seconds the failure being retried began

    def to_json(self) -> dict[str, Any]:
        """What the task returns through the result backend: small and JSON only."""
        return {
            "chunk_no": self.chunk_no,
            "status": self.status.value,
            "counts": asdict(self.counts),
            "max_checkpoint": encode_value(self.max_checkpoint),
            "error": self.error,
        }
