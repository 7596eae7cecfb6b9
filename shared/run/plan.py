"""A run as planned: what every chunk of it must use, rebuilt from its process_log row.

The coordinator stores the mapping spec, the source's column list and the frozen window with
the run; workers rebuild this object instead of reading the config file, so a config change
mid-run cannot split one run across two definitions. ``mapping["run"]`` holds what the
planner decided beyond the spec: the run's mode (incremental, full or backfill), its window
(with lag applied), the PYTHON checkpoint's filter and the type of a valid_from column.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from shared.dialects.base import Scd2Options
from shared.config.mapping import DeletesMode, MappingSpec, parse_timestamp_text
from shared.metadata.models import ProcessLog
from shared.checkpoint import PythonFilter
from shared.timeutil import as_utc
from shared.run.values import decode_value
from shared.run.window import Window

UTC = dt.timezone.utc


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
class PlannedRun:
    run_id: str
    mapref: str
    spec: MappingSpec
    columns: list[str]
    window: Window
    valid_from: dt.datetime
    mode: str = "incremental"  # incremental | full | backfill
    python_filter: PythonFilter | None = None
    validity_kind: str | None = None  # type of the valid_from source column, if any

    @staticmethod
    def mapping_document(spec: MappingSpec, columns: list[str],
                         run: dict[str, Any] | None = None) -> dict[str, Any]:
        document = {"spec": spec.model_dump(mode="json"), "columns": columns}
        if run is not None:
            document["run"] = run
        return document

    @classmethod
    def from_row(cls, run: ProcessLog) -> "PlannedRun":
        spec = MappingSpec.model_validate(run.mapping["spec"])
        doc = run.mapping.get("run")
        if doc is None:  # planned before these options existed
            window = Window(spec.checkpoint_column, decode_value(run.checkpoint_from),
                            decode_value(run.hwm))
            return cls(run.run_id, run.mapref, spec, list(run.mapping["columns"]), window,
                       as_utc(run.created_at))
        python = PythonFilter.from_document(doc["python"]) if doc.get("python") else None
        return cls(run.run_id, run.mapref, spec, list(run.mapping["columns"]),
                   Window.from_document(doc["window"]), as_utc(run.created_at), doc["mode"],
                   python, doc.get("validity_kind"))

    @property
    def split_columns(self) -> list[str]:
        return self.spec.split_columns

    def scd2_options(self) -> Scd2Options:
        scd = self.spec.scd
        sentinel = parse_timestamp_text(scd.current_valid_to) if scd.current_valid_to else None
        return Scd2Options(
            valid_from_column=scd.valid_from,
            current_valid_to=bind_moment(sentinel, self.validity_kind),
            tracked=tuple(scd.tracked) if scd.tracked else None,
            is_deleted=(scd.audit_columns.is_deleted
                        if scd.deletes is DeletesMode.NEW_RECORD else None))

    @property
    def deleted_at(self) -> Any:
        """When a hard delete retires a version: the run's start, typed for valid_to."""
        return bind_moment(self.valid_from, self.validity_kind)
