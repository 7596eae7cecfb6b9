"""A run's plan: what every chunk of a run uses, with one codec for the stored document.

The coordinator plans a run once and stores the plan with it (``process_log.mapping``): the
mapping spec, the source's columns and the planner's decisions (mode, window, the PYTHON
checkpoint's filter, the type of a valid_from column). Workers, finalize and reconcile
rebuild the plan from that row instead of reading the config file, so a config change
mid-run cannot split one run across two definitions. ``to_document`` writes it and
``from_row`` reads it: nothing else parses the document.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from shared.checkpoint import PythonFilter
from shared.config.mapping import CheckpointStrategy, DeletesMode, MappingSpec, parse_timestamp_text
from shared.config.settings import Settings
from shared.dialects.base import DialectAdapter
from shared.dialects.types import TypeKind
from shared.metadata.models import ProcessLog
from shared.run.modes import LoadKind, RunMode
from shared.run.values import Value, decode_value
from shared.run.window import Window
from shared.scd.target import Scd2Options, ScdTarget
from shared.timeutil import as_utc

UTC = dt.UTC


def bind_moment(value: dt.date | dt.datetime | None, kind: str | None) -> Any:
    """A date or timestamp as a value for a validity column of ``kind`` ('date',
    'timestamp' = without time zone, else with time zone; naive means UTC)."""
    if value is None:
        return None
    if kind == "date":
        return value.date() if isinstance(value, dt.datetime) else value
    if not isinstance(value, dt.datetime):
        value = dt.datetime(value.year, value.month, value.day)
    if kind == "timestamp":
        return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@dataclass(frozen=True)
class RunPlan:
    """One run as planned. ``created_at`` is the run's start: SCD2 versions begin then
    (unless a source column gives valid_from)."""

    run_id: str
    mapref: str
    spec: MappingSpec
    columns: list[str]
    window: Window
    created_at: dt.datetime
    mode: RunMode = RunMode.INCREMENTAL
    python_filter: PythonFilter | None = None
    validity_kind: str | None = None  # type of the valid_from source column, if any
    checkpoint_from: Value = None  # the stored checkpoint when the run was planned
    queue: str | None = None  # the Celery queue the run was sent to
    # the source columns' kinds (None: planned before they were kept), for reading a
    # column the chunk receives as the source's text back as its value (duplicates' order)
    kinds: tuple[TypeKind, ...] | None = None

    @property
    def load_kind(self) -> LoadKind:
        if self.mode is RunMode.BACKFILL:
            return LoadKind.BACKFILL
        if self.mode is RunMode.FULL or self.spec.checkpoint_strategy is CheckpointStrategy.NONE:
            return LoadKind.FULL
        return LoadKind.INITIAL if self.checkpoint_from is None else LoadKind.INCREMENTAL

    # -- the stored document (process_log.mapping) ----------------------------------------
    def to_document(self) -> dict[str, Any]:
        return {
            "spec": self.spec.model_dump(mode="json"),
            "columns": list(self.columns),
            "run": {
                "mode": self.mode.value,
                "window": self.window.to_document(),
                "python": self.python_filter.to_document() if self.python_filter else None,
                "validity_kind": self.validity_kind,
                "queue": self.queue,
                "kinds": [k.value for k in self.kinds] if self.kinds is not None else None,
            },
        }

    @classmethod
    def from_row(cls, run: ProcessLog) -> RunPlan:
        spec = MappingSpec.model_validate(run.mapping["spec"])
        columns = list(run.mapping["columns"])
        checkpoint_from = decode_value(run.checkpoint_from)
        created_at = as_utc(run.created_at)
        assert created_at is not None  # the column is NOT NULL
        doc = run.mapping.get("run")
        if doc is None:  # planned before these options existed
            window = Window(spec.checkpoint_column, checkpoint_from, decode_value(run.hwm))
            return cls(
                run.run_id,
                run.mapref,
                spec,
                columns,
                window,
                created_at,
                checkpoint_from=checkpoint_from,
            )
        python = PythonFilter.from_document(doc["python"]) if doc.get("python") else None
        return cls(
            run.run_id,
            run.mapref,
            spec,
            columns,
            Window.from_document(doc["window"]),
            created_at,
            RunMode(doc["mode"]),
            python,
            doc.get("validity_kind"),
            checkpoint_from,
            doc.get("queue"),
            tuple(map(TypeKind, doc["kinds"])) if doc.get("kinds") is not None else None,
        )

    # -- what the SCD statements need --------------------------------------------------------
    @property
    def valid_from(self) -> dt.datetime:
        return self.created_at

    @property
    def split_columns(self) -> list[str]:
        return self.spec.split_columns

    def scd2_options(self) -> Scd2Options:
        scd = self.spec.scd
        if scd.type != 2:
            return Scd2Options()
        sentinel = parse_timestamp_text(scd.current_valid_to) if scd.current_valid_to else None
        return Scd2Options(
            valid_from_column=scd.valid_from,
            current_valid_to=bind_moment(sentinel, self.validity_kind),
            tracked=tuple(scd.tracked) if scd.tracked else None,
            is_deleted=(
                scd.audit_columns.is_deleted if scd.deletes is DeletesMode.NEW_RECORD else None
            ),
        )

    @property
    def deleted_at(self) -> Any:
        """When a hard delete retires a version: the run's start, typed for valid_to."""
        return bind_moment(self.valid_from, self.validity_kind)

    def scd_target(self, dialect: DialectAdapter) -> ScdTarget:
        """The target as the SCD statements see it, on ``dialect``."""
        spec = self.spec
        return ScdTarget(
            dialect,
            dialect.table_ref(spec.target),
            tuple(self.columns),
            tuple(spec.keys),
            spec.scd.audit_columns,
            spec.scd.type,
            self.run_id,
            self.scd2_options(),
        )


def on_run_queue(settings: Settings, run: ProcessLog) -> Settings:
    """``settings`` with the Celery queue ``run`` was sent to (stored with its plan), so what
    is asked of or sent to the workers about a run goes to its queue, whatever queue this
    process's config names (``CHORDLOAD_QUEUE`` may differ between shells)."""
    queue = (run.mapping or {}).get("run", {}).get("queue")
    if not queue or queue == settings.celery.queue:
        return settings
    return settings.model_copy(
        update={"celery": settings.celery.model_copy(update={"queue": queue})}
    )
