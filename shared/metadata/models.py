"""SQLAlchemy models of the metadata tables. Alembic migrations create them; these classes
are what the code reads and writes. Works on Postgres and SQLite."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.run.statuses import ChunkStatus, RunStatus, VerifyStatus


def _status(enum_cls: type) -> Enum:
    return Enum(
        enum_cls,
        native_enum=False,
        length=16,
        create_constraint=False,
        values_callable=lambda e: [m.value for m in e],
        validate_strings=True,
    )


class Base(DeclarativeBase):
    pass


class ProcessLog(Base):
    """One row per run."""

    __tablename__ = "process_log"

    run_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    mapref: Mapped[str] = mapped_column(String(200), nullable=False)
    status: Mapped[RunStatus] = mapped_column(_status(RunStatus), nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    started_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    load_kind: Mapped[str] = mapped_column(String(16), nullable=False, default="incremental")
    estimated_rows: Mapped[int | None] = mapped_column(BigInteger)
    # a bounded count(*) that confirmed a low estimate (stops at min_rows_for_parallel + 1)
    counted_rows: Mapped[int | None] = mapped_column(BigInteger)
    # while PLANNING: the step planning is on (shown by status and watch)
    planning_step: Mapped[str | None] = mapped_column(Text)
    chunks_total: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    chunks_done: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    chunks_failed: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    rows_read: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    rows_inserted: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    rows_changed: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    rows_unchanged: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    rows_errored: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    rows_duplicate: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    rows_deleted: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    # set while a finalizer runs the hard-delete pass (a claim; see shared/lifecycle/finalize.py)
    deletes_started_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    checkpoint_from: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    checkpoint_to: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    hwm: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    plan_note: Mapped[str | None] = mapped_column(Text)
    message: Mapped[str | None] = mapped_column(Text)
    mapping: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    launches: Mapped[int] = mapped_column(Integer, nullable=False, default=1)

    __table_args__ = (
        Index("ix_process_log_mapref_created", "mapref", "created_at"),
        # One active run per mapping, enforced by the database under races.
        Index(
            "ux_process_log_one_active_run",
            "mapref",
            unique=True,
            postgresql_where=text("status IN ('PLANNING', 'QUEUED', 'RUNNING')"),
            sqlite_where=text("status IN ('PLANNING', 'QUEUED', 'RUNNING')"),
        ),
    )


class ChunkLog(Base):
    """One row per chunk of a run."""

    __tablename__ = "chunk_log"

    run_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("process_log.run_id", ondelete="CASCADE"), primary_key=True
    )
    chunk_no: Mapped[int] = mapped_column(Integer, primary_key=True)
    lower_bound: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    upper_bound: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    includes_nulls: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    task_id: Mapped[str] = mapped_column(String(64), nullable=False)
    status: Mapped[ChunkStatus] = mapped_column(_status(ChunkStatus), nullable=False)
    rows_read: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    rows_inserted: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    rows_changed: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    rows_unchanged: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    rows_errored: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    rows_duplicate: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    batches_done: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    max_checkpoint: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    worker: Mapped[str | None] = mapped_column(String(200))
    started_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    message: Mapped[str | None] = mapped_column(Text)


class Checkpoint(Base):
    """The stored checkpoint of each mapping, set by a successful run (``run_id``) or by hand
    (``chordload checkpoint --set``: ``run_id`` is NULL, checkpoint_change says who)."""

    __tablename__ = "checkpoint"

    mapref: Mapped[str] = mapped_column(String(200), primary_key=True)
    value: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    value_type: Mapped[str | None] = mapped_column(String(16))
    run_id: Mapped[str | None] = mapped_column(String(32))
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class CheckpointChange(Base):
    """One change of a mapping's stored checkpoint: by a run (``run_id``) or by hand
    (``chordload checkpoint --set`` / ``--reset``: who, and why). Values are typed JSON; a
    NULL value is no checkpoint (before the first run, or after a reset)."""

    __tablename__ = "checkpoint_change"
    __table_args__ = (Index("ix_checkpoint_change_mapref", "mapref", "id"),)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    mapref: Mapped[str] = mapped_column(String(200), nullable=False)
    changed_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    changed_by: Mapped[str] = mapped_column(String(200), nullable=False)
    old_value: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    new_value: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    run_id: Mapped[str | None] = mapped_column(String(32))
    reason: Mapped[str | None] = mapped_column(Text)


class StopRequest(Base):
    """A request to stop a run: the source of truth that chunks check between batches."""

    __tablename__ = "stop_request"

    run_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("process_log.run_id", ondelete="CASCADE"), primary_key=True
    )
    requested_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    requested_by: Mapped[str] = mapped_column(String(200), nullable=False)
    reason: Mapped[str | None] = mapped_column(Text)


class ErrorRow(Base):
    """One source row that could not be loaded, with its key and the database's message."""

    __tablename__ = "error_row"
    __table_args__ = (Index("ix_error_row_run_chunk", "run_id", "chunk_no"),)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    run_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("process_log.run_id", ondelete="CASCADE"), nullable=False
    )
    chunk_no: Mapped[int] = mapped_column(Integer, nullable=False)
    row_key: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    row_data: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    message: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class ScheduleSlot(Base):
    """One claimed slot (cron fire time) of a mapping's schedule. The primary key
    ``(mapref, scheduled_for)`` is the unique constraint that makes every slot start at most
    once, however many beat processes or redelivered dispatches see it. ``status``: CLAIMED
    (being launched), LAUNCHED (``run_id`` set), SKIPPED or FAILED (``reason`` says why)."""

    __tablename__ = "schedule_slot"

    mapref: Mapped[str] = mapped_column(String(200), primary_key=True)
    scheduled_for: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    claimed_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    claimed_by: Mapped[str] = mapped_column(String(200), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    run_id: Mapped[str | None] = mapped_column(String(32))
    reason: Mapped[str | None] = mapped_column(Text)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class VerifyLog(Base):
    """One ``chordload verify`` of a mapping: when, over what (all keys or the last window,
    sampled or not), the outcome and its counts. ``plan`` is what the range tasks need (the
    mapping spec, columns and window as verified), so a config change meanwhile cannot split
    one verify across two definitions."""

    __tablename__ = "verify_log"
    __table_args__ = (Index("ix_verify_log_mapref_started", "mapref", "started_at"),)

    verify_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    mapref: Mapped[str] = mapped_column(String(200), nullable=False)
    status: Mapped[VerifyStatus] = mapped_column(_status(VerifyStatus), nullable=False)
    scope: Mapped[str] = mapped_column(String(16), nullable=False)  # all | window
    started_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    ended_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    ranges_total: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    ranges_verified: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    sample_pct: Mapped[float | None] = mapped_column(Float)
    rows_source: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    rows_target: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    missing: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    extra: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    different: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    # differing (sub)ranges that were compared key by key, after splitting
    ranges_compared: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    run_id: Mapped[str | None] = mapped_column(String(32))  # the run verified after, if any
    plan: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    message: Mapped[str | None] = mapped_column(Text)


class VerifyDiff(Base):
    """One key that differs: ``kind`` missing (in the source, not the target), extra (in
    the target, not the source) or different (``columns`` lists the columns that differ).
    ``explained``: for extra keys, whether the mapping's ``scd.deletes: ignore`` explains
    them (keys deleted from the source stay in the target)."""

    __tablename__ = "verify_diff"
    __table_args__ = (Index("ix_verify_diff_verify_kind", "verify_id", "kind", "id"),)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    verify_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("verify_log.verify_id", ondelete="CASCADE"), nullable=False
    )
    range_no: Mapped[int] = mapped_column(Integer, nullable=False)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    row_key: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    columns: Mapped[list[str] | None] = mapped_column(JSON)
    explained: Mapped[bool | None] = mapped_column(Boolean)
