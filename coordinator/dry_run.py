"""``chordload plan MAPREF``: a dry run of planning, like ``dbt compile`` or Sqoop's ``eval``.

It plans exactly as ``run`` would (the window, the estimate and the bounded count, the chunk
boundaries), then counts each chunk's rows and shows the statements that would create the
target, and writes nothing: no run row, no target table, no checkpoint change. The source
only sees reads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from coordinator.plan import Plan, plan_run
from shared.config.settings import Settings
from shared.dialects import adapter_for
from shared.engines import READ_ONLY, get_engine
from shared.errors import ConfigError, describe_db_error
from shared.metadata.schema import require_current
from shared.run.values import encode_value, plain_value


@dataclass(frozen=True)
class ChunkPreview:
    chunk_no: int
    lower: dict[str, Any] | None  # exclusive (typed JSON)
    upper: dict[str, Any] | None  # inclusive
    rows: int


@dataclass(frozen=True)
class DryRun:
    plan: Plan
    chunks: list[ChunkPreview]

    def to_json(self) -> dict[str, Any]:
        run, window = self.plan.run, self.plan.run.window
        return {
            "mapref": run.mapref,
            "load_kind": run.load_kind.value,
            "window": {
                "columns": list(window.columns),
                "from": plain_value(encode_value(window.lower)),
                "to": plain_value(encode_value(window.upper)),
                "includes_nulls": window.takes_nulls if window.columns else None,
            },
            "estimated_rows": self.plan.estimated_rows,
            "counted_rows": self.plan.counted_rows,
            "plan": self.plan.note,
            "chunks": [
                {
                    "chunk_no": c.chunk_no,
                    "lower_excl": plain_value(c.lower),
                    "upper_incl": plain_value(c.upper),
                    "rows": c.rows,
                }
                for c in self.chunks
            ],
            "rows": sum(c.rows for c in self.chunks),
            "target_ddl": self.plan.target_ddl,
            "target_ddl_after_first_run": self.plan.target_ddl_after_first_run,
        }


def dry_run(
    settings: Settings,
    mapref: str,
    *,
    full: bool = False,
    window_from: str | None = None,
    window_to: str | None = None,
    chunks_override: int | None = None,
) -> DryRun:
    metadata = get_engine(settings.metadata)
    require_current(metadata)
    spec = settings.mapping(mapref)
    plan = plan_run(
        settings,
        mapref,
        spec,
        metadata,
        chunks_override=chunks_override,
        full=full,
        window_from=window_from,
        window_to=window_to,
        dry_run=True,
    )
    return DryRun(plan, _count_chunks(settings, plan))


def _count_chunks(settings: Settings, plan: Plan) -> list[ChunkPreview]:
    """Each chunk's rows of the window, counted with the predicate its chunk would read."""
    spec = plan.run.spec
    adapter = adapter_for(get_engine(settings.connection_url(spec.source.connection)))
    window_sql, window_params = plan.run.window.predicate(adapter)
    previews = []
    try:
        with adapter.engine.connect().execution_options(**READ_ONLY) as conn:
            for chunk in plan.ranges:
                range_sql, range_params = chunk.predicate(adapter, spec.split_columns)
                rows = conn.execute(
                    text(
                        f"SELECT count(*) FROM {adapter.from_query(spec.source.query)} "
                        f"WHERE {window_sql} AND {range_sql}"
                    ),
                    {**window_params, **range_params},
                ).scalar_one()
                previews.append(
                    ChunkPreview(
                        chunk.chunk_no,
                        encode_value(chunk.lower),
                        encode_value(chunk.upper),
                        int(rows),
                    )
                )
    except DBAPIError as exc:
        raise ConfigError(
            f"mapping '{plan.run.mapref}': counting the chunks' rows fails: "
            f"{describe_db_error(exc)}"
        ) from None
    return previews
