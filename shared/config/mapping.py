"""The mapping spec: one named load definition, validated with pydantic.

A mapping is stored with each run as planned (``process_log.mapping``), so every chunk of a
run uses the same definition even if the config file changes mid-run.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection
from enum import Enum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CheckpointStrategy(str, Enum):
    NONE = "NONE"
    KEY = "KEY"
    PYTHON = "PYTHON"
    AUTO = "AUTO"


class DeletesMode(str, Enum):
    """What a full load does with keys that are current in the target and absent from the
    source: nothing, retire them, or retire them and add a 'deleted' version (SCD2)."""

    IGNORE = "ignore"
    INVALIDATE = "invalidate"
    NEW_RECORD = "new_record"


class ChunkStrategy(str, Enum):
    QUANTILE = "quantile"
    RANGE = "range"
    OFFSET = "offset"


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
    """Names of the columns chordload adds to the target. The defaults carry a ``dw_`` prefix
    that source tables do not use (a source's own ``updated_at`` or ``is_deleted`` loads as a
    business column). A target created before these defaults keeps the names it was created
    with: planning reads them from the target (``with_target_names``). A name set here is
    always used as given."""

    row_hash: str = "dw_row_hash"
    inserted_at: str = "dw_inserted_at"
    updated_at: str = "dw_updated_at"
    run_id: str = "dw_run_id"
    sk: str = "dw_sk"
    valid_from: str = "dw_valid_from"
    valid_to: str = "dw_valid_to"
    is_current: str = "dw_is_current"
    is_deleted: str = "dw_is_deleted"  # SCD2 with deletes: new_record only

    def with_target_names(
        self, target_columns: Collection[str], business: Collection[str]
    ) -> AuditColumns:
        """The names an existing target uses: for each role left at its default, the name
        of chordload's earlier defaults (``LEGACY_AUDIT_NAMES``) when the target has that
        column, lacks the new default and the source does not return it."""
        have, source = set(target_columns), set(business)
        legacy = {
            role: old
            for role, old in LEGACY_AUDIT_NAMES.items()
            if role not in self.model_fields_set
            and getattr(self, role) not in have
            and old in have
            and old not in source
        }
        return self.model_copy(update=legacy) if legacy else self


# The default audit names before the dw_ prefix: targets created with them keep them.
LEGACY_AUDIT_NAMES = {
    "row_hash": "row_hash",
    "inserted_at": "inserted_at",
    "updated_at": "updated_at",
    "run_id": "run_id",
    "sk": "sk",
    "valid_from": "valid_from",
    "valid_to": "valid_to",
    "is_current": "is_current",
    "is_deleted": "is_deleted",
}


SCD1_AUDIT = ("row_hash", "inserted_at", "updated_at", "run_id")
SCD2_AUDIT = ("sk", "row_hash", "valid_from", "valid_to", "is_current", "run_id")


def parse_timestamp_text(value: str) -> dt.date | dt.datetime:
    """An ISO date (``9999-12-31``) or timestamp (``9999-12-31 23:59:59``) from the config."""
    text = value.strip()
    if len(text) == 10:
        return dt.date.fromisoformat(text)
    return dt.datetime.fromisoformat(text)


class ScdSpec(_Strict):
    type: Literal[1, 2] = 2
    audit_columns: AuditColumns = AuditColumns()
    valid_from: str | None = Field(
        default=None,
        description="SCD2: source column whose value "
        "starts a version (default: the run's start time)",
    )
    current_valid_to: str | None = Field(
        default=None,
        description="SCD2: valid_to of current versions, e.g. '9999-12-31' (default: NULL)",
    )
    tracked: list[str] | None = Field(
        default=None,
        min_length=1,
        description="SCD2: columns "
        "whose change makes a new version; the others are "
        "updated in place on the current version",
    )
    deletes: DeletesMode = DeletesMode.IGNORE

    def audit_names(self) -> dict[str, str]:
        """Audit role -> column name, for the roles this SCD type (and deletes mode) uses."""
        roles = SCD1_AUDIT if self.type == 1 else SCD2_AUDIT
        if self.type == 2 and self.deletes is DeletesMode.NEW_RECORD:
            roles = (*roles, "is_deleted")
        return {role: getattr(self.audit_columns, role) for role in roles}

    @field_validator("current_valid_to")
    @classmethod
    def _sentinel_is_a_timestamp(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            parse_timestamp_text(value)
        except ValueError:
            raise ValueError(
                f"'{value}' is not an ISO date or timestamp "
                f"(e.g. '9999-12-31' or '9999-12-31 23:59:59')"
            ) from None
        return value.strip()

    @field_validator("tracked")
    @classmethod
    def _unique_tracked(cls, tracked: list[str] | None) -> list[str] | None:
        if tracked is not None and len(set(tracked)) != len(tracked):
            raise ValueError("columns are listed twice")
        return tracked

    @model_validator(mode="after")
    def _distinct_audit_names(self) -> ScdSpec:
        names = list(self.audit_names().values())
        if len(set(names)) != len(names):
            raise ValueError(f"audit_columns must be distinct names, got {names}")
        return self

    @model_validator(mode="after")
    def _type2_options(self) -> ScdSpec:
        if self.type == 1:
            used = [
                name
                for name in ("valid_from", "current_valid_to", "tracked")
                if getattr(self, name) is not None
            ]
            if used:
                raise ValueError(
                    f"{', '.join(used)} only apply to SCD type 2 (a type 1 target "
                    f"keeps no versions)"
                )
            if self.deletes is DeletesMode.NEW_RECORD:
                raise ValueError(
                    "deletes: new_record needs SCD type 2 (a 'deleted' version); "
                    "on type 1 use deletes: invalidate, which deletes the row"
                )
        return self

    @field_validator("type", mode="before")
    @classmethod
    def _a_number(cls, value: object) -> object:
        if isinstance(value, bool):  # YAML's true would read as 1: SCD1 by accident
            raise ValueError(f"must be 1 or 2, not {str(value).lower()}")
        return value


class CheckpointSpec(_Strict):
    strategy: CheckpointStrategy = CheckpointStrategy.NONE
    column: str | None = None
    columns: list[str] | None = Field(
        default=None,
        min_length=1,
        description="several columns, compared as a row value (c1, c2) >= (v1, v2)",
    )
    function: str | None = Field(
        default=None,
        description="PYTHON: 'package.module:function', "
        "called with each row as a dict; returns its checkpoint value",
    )
    lag: int | float = Field(
        default=0,
        ge=0,
        description="re-read this far below the stored "
        "checkpoint: seconds (timestamps), days (dates), units (numbers)",
    )

    @property
    def column_list(self) -> list[str]:
        if self.columns:
            return list(self.columns)
        return [self.column] if self.column else []

    @property
    def resolved(self) -> CheckpointStrategy:
        """AUTO is KEY when a column is given, else NONE."""
        if self.strategy is CheckpointStrategy.AUTO:
            return CheckpointStrategy.KEY if self.column_list else CheckpointStrategy.NONE
        return self.strategy

    @model_validator(mode="after")
    def _column_matches_strategy(self) -> CheckpointSpec:
        if self.column and self.columns:
            raise ValueError("give either 'column' or 'columns', not both")
        if self.columns and len(set(self.columns)) != len(self.columns):
            raise ValueError("'columns' lists a column twice")
        strategy = self.resolved
        if strategy is CheckpointStrategy.KEY and not self.column_list:
            raise ValueError(
                "strategy KEY needs 'column': the source column that only grows "
                "(e.g. updated_at), or 'columns' for several"
            )
        if strategy is CheckpointStrategy.NONE and self.column_list:
            raise ValueError(
                "strategy NONE takes no 'column'; use strategy KEY to load incrementally on it"
            )
        if strategy is CheckpointStrategy.PYTHON:
            if self.column_list:
                raise ValueError(
                    "strategy PYTHON takes no 'column': its 'function' computes "
                    "each row's checkpoint value"
                )
            if not self.function:
                raise ValueError("strategy PYTHON needs 'function': \"package.module:function\"")
        if self.function is not None:
            if strategy is not CheckpointStrategy.PYTHON:
                raise ValueError("'function' is only used by strategy PYTHON")
            module, _, name = self.function.partition(":")
            if (
                not module
                or not name
                or not all(part.isidentifier() for part in [*module.split("."), name])
            ):
                raise ValueError(
                    f"function '{self.function}' must look like \"package.module:function\""
                )
        if self.lag and strategy is CheckpointStrategy.NONE:
            raise ValueError("lag needs a checkpoint (strategy KEY or PYTHON)")
        return self


class ChunkingSpec(_Strict):
    strategy: ChunkStrategy = Field(
        default=ChunkStrategy.QUANTILE,
        description="quantile: "
        "balanced boundaries; range: equal strides between min and "
        "max; offset: every n-th key in key order",
    )
    column: str | None = Field(default=None, description="split column; default: first key")
    rows_per_chunk: int = Field(default=50_000, ge=1)
    min_rows_for_parallel: int = Field(default=100_000, ge=0)
    max_chunks: int = Field(default=256, ge=1, le=10_000)
    parallelism: int = Field(
        default=1,
        ge=1,
        le=10_000,
        description="worker slots (pool "
        "processes over all workers) this mapping's chunks run on; the "
        "chunk count is rounded up to a multiple of it",
    )
    exact_count: bool = False


class RetrySpec(_Strict):
    """Transient errors (lost connection, deadlock, timeout) retry the chunk as a Celery retry
    of the same task id, with exponential backoff capped at ``backoff_max_s``: at least
    ``max`` times, and for as long as ``window_s`` has not passed since the first failure,
    so an outage of a few minutes is ridden out rather than burning a count of retries."""

    max: int = Field(default=3, ge=0, le=100)
    backoff_s: float = Field(default=1.0, ge=0)
    backoff_max_s: float = Field(default=60.0, ge=0)
    window_s: float = Field(default=300.0, ge=0)


class ErrorsSpec(_Strict):
    """Row quarantine: a run with more error rows than ``max_rows`` is FAILED."""

    max_rows: int = Field(default=0, ge=0)


class VerifySpec(_Strict):
    """``chordload verify`` without a person: after each successful run (the run is marked
    VERIFIED or DIFFERENT) and/or on a cron schedule of its own (beat, UTC)."""

    after_run: bool = False
    schedule: str | None = None

    @field_validator("schedule")
    @classmethod
    def _valid_cron(cls, schedule: str | None) -> str | None:
        if schedule is None:
            return None
        from shared.config.cron import parse_cron

        parse_cron(schedule)  # a ValueError names the fields and what is wrong
        return " ".join(schedule.split())


class NotifySpec(_Strict):
    """A webhook told when a run ends FAILED or STOPPED, and on the first SUCCESS after one.
    The body is JSON that Slack incoming webhooks and generic receivers accept (``text``
    plus structured fields). Sending is retried and never changes the run's outcome."""

    webhook_url: str = Field(min_length=1, description="http(s) URL the JSON is POSTed to")
    timeout_s: float = Field(default=5.0, gt=0, description="per attempt")
    attempts: int = Field(default=3, ge=1, le=10)
    backoff_s: float = Field(default=1.0, ge=0, description="doubled after each failed attempt")

    @field_validator("webhook_url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return url


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
    schedule: str | None = Field(
        default=None,
        description="cron, UTC: minute hour day-of-month "
        "month day-of-week; beat launches the mapping at these times",
    )
    enabled: bool = Field(default=True, description="false: beat does not launch this mapping")
    freshness_s: int | None = Field(
        default=None,
        ge=1,
        description="the dashboard shows the mapping red when its last SUCCESS is older",
    )
    verify: VerifySpec = VerifySpec()
    notify: NotifySpec | None = Field(
        default=None, description="this mapping's webhook (default: the top-level notify)"
    )

    @field_validator("schedule")
    @classmethod
    def _valid_cron(cls, schedule: str | None) -> str | None:
        if schedule is None:
            return None
        from shared.config.cron import parse_cron

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
    def split_columns(self) -> list[str]:
        """The columns chunk ranges compare: the split column, and for ``offset`` the rest of
        the business key after it (so a chunk boundary never falls inside one key)."""
        if self.chunking.strategy is ChunkStrategy.OFFSET:
            return [self.split_column, *(k for k in self.keys if k != self.split_column)]
        return [self.split_column]

    @property
    def checkpoint_strategy(self) -> CheckpointStrategy:
        """NONE, KEY or PYTHON (AUTO resolved)."""
        return self.checkpoint.resolved

    @property
    def checkpoint_columns(self) -> list[str]:
        """The KEY checkpoint's columns (empty for NONE and PYTHON)."""
        if self.checkpoint_strategy is CheckpointStrategy.KEY:
            return self.checkpoint.column_list
        return []

    @property
    def checkpoint_column(self) -> str | None:
        """The first (usually only) KEY checkpoint column."""
        columns = self.checkpoint_columns
        return columns[0] if columns else None

    @model_validator(mode="after")
    def _deletes_need_full_loads(self) -> MappingSpec:
        if (
            self.scd.deletes is not DeletesMode.IGNORE
            and self.checkpoint_strategy is not CheckpointStrategy.NONE
        ):
            raise ValueError(
                f"scd.deletes: {self.scd.deletes.value} needs full loads (checkpoint strategy "
                f"NONE): an incremental {self.checkpoint_strategy.value} load reads only rows "
                f"that changed, so a key missing from it has not been deleted; use "
                f"checkpoint strategy NONE, or scd.deletes: ignore"
            )
        return self
