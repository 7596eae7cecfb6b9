"""Reads for the run dashboard (``chordload ui``) and ``/metrics``: a few set-based queries
over the metadata tables, each one short and bounded (a page of runs, the last N runs of a
mapping, one aggregate per metric), so every page stays fast with a long history. The
columns read are listed: ``process_log.mapping`` (the frozen mapping, kilobytes a row) is
never read for a list.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, and_, func, select

from shared.metadata.models import Checkpoint, ChunkLog, ErrorRow, ProcessLog
from shared.run.statuses import ACTIVE_RUN_STATUSES, ChunkStatus, RunStatus
from shared.timeutil import as_utc

TERMINAL = [RunStatus.SUCCESS.value, RunStatus.FAILED.value, RunStatus.STOPPED.value]
ACTIVE = [s.value for s in ACTIVE_RUN_STATUSES]


@dataclass(frozen=True)
class RunRow:
    """One run as lists show it."""

    run_id: str
    mapref: str
    status: RunStatus
    load_kind: str
    created_at: dt.datetime
    started_at: dt.datetime | None
    ended_at: dt.datetime | None
    rows_read: int
    rows_errored: int
    message: str | None

    @property
    def duration_s(self) -> float | None:
        started, ended = as_utc(self.started_at), as_utc(self.ended_at)
        if started is None or ended is None:
            return None
        return (ended - started).total_seconds()


_ROW_COLUMNS = (
    ProcessLog.run_id,
    ProcessLog.mapref,
    ProcessLog.status,
    ProcessLog.load_kind,
    ProcessLog.created_at,
    ProcessLog.started_at,
    ProcessLog.ended_at,
    ProcessLog.rows_read,
    ProcessLog.rows_errored,
    ProcessLog.message,
)


def _run_row(row: Any) -> RunRow:
    return RunRow(
        run_id=row.run_id,
        mapref=row.mapref,
        status=RunStatus(row.status),
        load_kind=row.load_kind,
        created_at=as_utc(row.created_at),
        started_at=as_utc(row.started_at),
        ended_at=as_utc(row.ended_at),
        rows_read=row.rows_read,
        rows_errored=row.rows_errored,
        message=row.message,
    )


@dataclass(frozen=True)
class RunPage:
    runs: list[RunRow]
    page: int
    has_next: bool


def runs_page(
    engine: Engine,
    *,
    mapref: str | None = None,
    status: RunStatus | None = None,
    page: int = 1,
    page_size: int = 50,
) -> RunPage:
    """Runs newest first, filtered by mapping and/or status; one more row than the page is
    read to know whether a next page exists (no COUNT over the whole history)."""
    query = select(*_ROW_COLUMNS)
    if mapref:
        query = query.where(ProcessLog.mapref == mapref)
    if status is not None:
        query = query.where(ProcessLog.status == status.value)
    query = (
        query.order_by(ProcessLog.created_at.desc(), ProcessLog.run_id.desc())
        .offset((page - 1) * page_size)
        .limit(page_size + 1)
    )
    with engine.connect() as conn:
        rows = [_run_row(r) for r in conn.execute(query)]
    return RunPage(rows[:page_size], page, len(rows) > page_size)


def history(engine: Engine, mapref: str, limit: int = 50) -> list[RunRow]:
    """The mapping's last ``limit`` runs, oldest first (the order a chart reads)."""
    query = (
        select(*_ROW_COLUMNS)
        .where(ProcessLog.mapref == mapref)
        .order_by(ProcessLog.created_at.desc())
        .limit(limit)
    )
    with engine.connect() as conn:
        return [_run_row(r) for r in conn.execute(query)][::-1]


@dataclass(frozen=True)
class MappingState:
    """What the metadata says of one mapping: its latest run, the end of its latest SUCCESS
    and its stored checkpoint (typed JSON)."""

    mapref: str
    last_run: RunRow | None
    last_success_at: dt.datetime | None
    checkpoint: dict[str, Any] | None = None


def mapping_states(engine: Engine, maprefs: list[str]) -> dict[str, MappingState]:
    """Each mapping's latest run, latest success and checkpoint: three grouped queries for
    all mappings (on ``process_log`` by mapping and time), not three per mapping."""
    latest = (
        select(ProcessLog.mapref, func.max(ProcessLog.created_at).label("created_at"))
        .where(ProcessLog.mapref.in_(maprefs))
        .group_by(ProcessLog.mapref)
        .subquery()
    )
    with engine.connect() as conn:
        last = {
            row.mapref: _run_row(row)
            for row in conn.execute(
                select(*_ROW_COLUMNS).join(
                    latest,
                    and_(
                        ProcessLog.mapref == latest.c.mapref,
                        ProcessLog.created_at == latest.c.created_at,
                    ),
                )
            )
        }
        success: dict[str, Any] = dict(
            conn.execute(
                select(ProcessLog.mapref, func.max(ProcessLog.ended_at))
                .where(ProcessLog.mapref.in_(maprefs), ProcessLog.status == RunStatus.SUCCESS.value)
                .group_by(ProcessLog.mapref)
            ).all()
        )
        checkpoints: dict[str, Any] = dict(
            conn.execute(
                select(Checkpoint.mapref, Checkpoint.value).where(Checkpoint.mapref.in_(maprefs))
            ).all()
        )
    return {
        m: MappingState(m, last.get(m), as_utc(success.get(m)), checkpoints.get(m)) for m in maprefs
    }


def error_row_count(engine: Engine, run_id: str) -> int:
    with engine.connect() as conn:
        return conn.execute(
            select(func.count()).select_from(ErrorRow).where(ErrorRow.run_id == run_id)
        ).scalar_one()


# -- /metrics ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class MappingMetrics:
    """Per mapping: what an operator alerts on. ``last_*`` describe the latest finished run;
    ``failed_chunks`` and ``quarantined_rows`` the latest run (finished or not)."""

    mapref: str
    last_success_at: dt.datetime | None = None
    last_run_duration_s: float | None = None
    last_run_rows: int | None = None
    last_run_status: str | None = None
    runs_by_status: dict[str, int] | None = None
    active_runs: int = 0
    failed_chunks: int = 0
    quarantined_rows: int = 0


def mapping_metrics(engine: Engine) -> dict[str, MappingMetrics]:
    """One aggregate query per metric over the whole history (grouped by mapping)."""
    data: dict[str, dict[str, Any]] = {}

    def of(mapref: str) -> dict[str, Any]:
        return data.setdefault(mapref, {"runs_by_status": {}})

    with engine.connect() as conn:
        for mapref, status, count in conn.execute(
            select(ProcessLog.mapref, ProcessLog.status, func.count()).group_by(
                ProcessLog.mapref, ProcessLog.status
            )
        ):
            entry = of(mapref)
            entry["runs_by_status"][RunStatus(status).value] = count
            if status in ACTIVE:
                entry["active_runs"] = entry.get("active_runs", 0) + count
        for mapref, ended in conn.execute(
            select(ProcessLog.mapref, func.max(ProcessLog.ended_at))
            .where(ProcessLog.status == RunStatus.SUCCESS.value)
            .group_by(ProcessLog.mapref)
        ):
            of(mapref)["last_success_at"] = as_utc(ended)
        finished = (
            select(ProcessLog.mapref, func.max(ProcessLog.created_at).label("created_at"))
            .where(ProcessLog.status.in_(TERMINAL))
            .group_by(ProcessLog.mapref)
            .subquery()
        )
        for row in conn.execute(
            select(
                ProcessLog.mapref,
                ProcessLog.status,
                ProcessLog.started_at,
                ProcessLog.ended_at,
                ProcessLog.rows_read,
            ).join(
                finished,
                and_(
                    ProcessLog.mapref == finished.c.mapref,
                    ProcessLog.created_at == finished.c.created_at,
                    ProcessLog.status.in_(TERMINAL),
                ),
            )
        ):
            entry = of(row.mapref)
            started, ended = as_utc(row.started_at), as_utc(row.ended_at)
            if started is not None and ended is not None:
                entry["last_run_duration_s"] = (ended - started).total_seconds()
            entry["last_run_rows"] = row.rows_read
            entry["last_run_status"] = RunStatus(row.status).value
        latest = (
            select(ProcessLog.mapref, func.max(ProcessLog.created_at).label("created_at"))
            .group_by(ProcessLog.mapref)
            .subquery()
        )
        latest_runs = (
            select(ProcessLog.mapref, ProcessLog.run_id)
            .join(
                latest,
                and_(
                    ProcessLog.mapref == latest.c.mapref,
                    ProcessLog.created_at == latest.c.created_at,
                ),
            )
            .subquery()
        )
        for mapref, count in conn.execute(
            select(latest_runs.c.mapref, func.count())
            .select_from(latest_runs)
            .join(ChunkLog, ChunkLog.run_id == latest_runs.c.run_id)
            .where(ChunkLog.status == ChunkStatus.FAILED.value)
            .group_by(latest_runs.c.mapref)
        ):
            of(mapref)["failed_chunks"] = count
        for mapref, count in conn.execute(
            select(latest_runs.c.mapref, func.count())
            .select_from(latest_runs)
            .join(ErrorRow, ErrorRow.run_id == latest_runs.c.run_id)
            .group_by(latest_runs.c.mapref)
        ):
            of(mapref)["quarantined_rows"] = count
    return {mapref: MappingMetrics(mapref, **values) for mapref, values in data.items()}
