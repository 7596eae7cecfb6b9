"""The mapping spec: one named load definition, validated with pydantic.

A mapping is stored with each run as planned (``process_log.mapping``), so every chunk of a
run uses the same definition even if the config file changes mid-run.
"""
from __future__ import annotations

from enum import Enum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CheckpointStrategy(str, Enum):
    NONE = "NONE"
    KEY = "KEY"


class SourceSpec(_Strict):
    connection: str = Field(min_length=1)
    query: str = Field(min_length=1)

    @field_validator("query")
    @classmethod
    def _one_statement(cls, query: str) -> str:
        stripped = query.strip().rstrip(";").strip()
        if not stripped:
            raise ValueError("query is empty")
        if ";" in stripped:
            raise ValueError("query must be a single SELECT statement (found ';')")
        return stripped


class TargetSpec(_Strict):
    connection: str = Field(min_length=1)
    table: str = Field(min_length=1, description="table or schema.table")

    @property
    def schema_name(self) -> str | None:
        return self.table.split(".", 1)[0] if "." in self.table else None

    @property
    def table_name(self) -> str:
        return self.table.split(".", 1)[1] if "." in self.table else self.table


class AuditColumns(_Strict):
    """Names of the columns chordload adds to the target (rename one when the source already
    has a column of that name, e.g. ``updated_at: dw_updated_at``)."""

    row_hash: str = "row_hash"
    inserted_at: str = "inserted_at"
    updated_at: str = "updated_at"
    run_id: str = "run_id"
    sk: str = "sk"
    valid_from: str = "valid_from"
    valid_to: str = "valid_to"
    is_current: str = "is_current"


SCD1_AUDIT = ("row_hash", "inserted_at", "updated_at", "run_id")
SCD2_AUDIT = ("sk", "row_hash", "valid_from", "valid_to", "is_current", "run_id")


class ScdSpec(_Strict):
    type: Literal[1, 2] = 2
    audit_columns: AuditColumns = AuditColumns()

    def audit_names(self) -> dict[str, str]:
        """Audit role -> column name, for the roles this SCD type uses."""
        roles = SCD1_AUDIT if self.type == 1 else SCD2_AUDIT
        return {role: getattr(self.audit_columns, role) for role in roles}

    @model_validator(mode="after")
    def _distinct_audit_names(self) -> "ScdSpec":
        names = list(self.audit_names().values())
        if len(set(names)) != len(names):
            raise ValueError(f"audit_columns must be distinct names, got {names}")
        return self


class CheckpointSpec(_Strict):
    strategy: CheckpointStrategy = CheckpointStrategy.NONE
    column: str | None = None

    @model_validator(mode="after")
    def _column_matches_strategy(self) -> "CheckpointSpec":
        if self.strategy is CheckpointStrategy.KEY and not self.column:
            raise ValueError("strategy KEY needs 'column': the source column that only grows "
                             "(e.g. updated_at)")
        if self.strategy is CheckpointStrategy.NONE and self.column:
            raise ValueError("strategy NONE takes no 'column'; use strategy KEY to load "
                             "incrementally on it")
        return self


class ChunkingSpec(_Strict):
    column: str | None = Field(default=None, description="split column; default: first key")
    rows_per_chunk: int = Field(default=50_000, ge=1)
    min_rows_for_parallel: int = Field(default=100_000, ge=0)
    max_chunks: int = Field(default=256, ge=1, le=10_000)
    exact_count: bool = False


class RetrySpec(_Strict):
    """Transient errors (lost connection, deadlock, timeout) retry the chunk as a Celery retry
    of the same task id, with exponential backoff and full jitter."""

    max: int = Field(default=3, ge=0, le=100)
    backoff_s: float = Field(default=1.0, ge=0)
    backoff_max_s: float = Field(default=60.0, ge=0)


class ErrorsSpec(_Strict):
    """Row quarantine: a run with more error rows than ``max_rows`` is FAILED."""

    max_rows: int = Field(default=0, ge=0)


class MappingSpec(_Strict):
    source: SourceSpec
    target: TargetSpec
    keys: list[str] = Field(min_length=1)
    scd: ScdSpec = ScdSpec()
    checkpoint: CheckpointSpec = CheckpointSpec()
    chunking: ChunkingSpec = ChunkingSpec()
    batch_rows: int = Field(default=10_000, ge=1, le=1_000_000)
    run_timeout_s: int = Field(default=6 * 3600, ge=1, description="reconcile fails runs past it")
    retries: RetrySpec = RetrySpec()
    errors: ErrorsSpec = ErrorsSpec()
    schedule: str | None = Field(default=None, description="cron, UTC: minute hour day-of-month "
                                 "month day-of-week; beat launches the mapping at these times")
    enabled: bool = Field(default=True, description="false: beat does not launch this mapping")

    @field_validator("schedule")
    @classmethod
    def _valid_cron(cls, schedule: str | None) -> str | None:
        if schedule is None:
            return None
        from shared.scheduling import parse_cron

        parse_cron(schedule)  # a ValueError names the fields and what is wrong
        return " ".join(schedule.split())

    @field_validator("keys")
    @classmethod
    def _unique_keys(cls, keys: list[str]) -> list[str]:
        if len(set(keys)) != len(keys):
            raise ValueError("keys are listed twice")
        return keys

    @property
    def split_column(self) -> str:
        return self.chunking.column or self.keys[0]

    @property
    def checkpoint_column(self) -> str | None:
        return self.checkpoint.column if self.checkpoint.strategy is CheckpointStrategy.KEY else None

    @model_validator(mode="after")
    def _split_column_is_a_key(self) -> "MappingSpec":
        if self.chunking.column and self.chunking.column not in self.keys:
            raise ValueError(
                f"chunking.column '{self.chunking.column}' is not a business key; the split "
                f"column must be one of keys {self.keys} so that no two chunks touch one key")
        return self
