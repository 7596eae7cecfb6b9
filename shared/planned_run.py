"""A run as planned: what every chunk of it must use, rebuilt from its process_log row.

The coordinator stores the mapping spec, the source's column list and the frozen window with
the run; workers rebuild this object instead of reading the config file, so a config change
mid-run cannot split one run across two definitions.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from shared.mapping import MappingSpec
from shared.metadata.models import ProcessLog
from shared.timeutil import as_utc
from shared.values import decode_value
from shared.window import Window


@dataclass(frozen=True)
class PlannedRun:
    run_id: str
    mapref: str
    spec: MappingSpec
    columns: list[str]
    window: Window
    valid_from: dt.datetime

    @staticmethod
    def mapping_document(spec: MappingSpec, columns: list[str]) -> dict[str, Any]:
        return {"spec": spec.model_dump(mode="json"), "columns": columns}

    @classmethod
    def from_row(cls, run: ProcessLog) -> "PlannedRun":
        spec = MappingSpec.model_validate(run.mapping["spec"])
        window = Window(spec.checkpoint_column, decode_value(run.checkpoint_from),
                        decode_value(run.hwm))
        return cls(run.run_id, run.mapref, spec, list(run.mapping["columns"]), window,
                   as_utc(run.created_at))
