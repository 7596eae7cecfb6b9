"""Reads and writes of verify_log and verify_diff (``chordload verify``), one short
transaction each: the coordinator creates a verify, each range task replaces its range's
differing keys, the chord's body ends it."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, delete, insert, select, update

from shared.errors import NotFoundError
from shared.metadata.models import ProcessLog, VerifyDiff, VerifyLog
from shared.metadata.store import session
from shared.retry import retry_transient
from shared.run.statuses import RunStatus, VerifyStatus
from shared.timeutil import utcnow


@dataclass(frozen=True)
class DiffRow:
    """One differing key as a range task found it."""

    kind: str  # missing | extra | different
    key: dict[str, Any]
    columns: list[str] | None = None
    explained: bool | None = None


@retry_transient()
def create_verify(engine: Engine, verify: VerifyLog) -> None:
    with session(engine) as s, s.begin():
        s.add(verify)


@retry_transient()
def get_verify(engine: Engine, verify_id: str) -> VerifyLog:
    with session(engine) as s:
        found = s.get(VerifyLog, verify_id)
    if found is None:
        raise NotFoundError(f"verify {verify_id} not found")
    return found


@retry_transient()
def replace_range_diffs(engine: Engine, verify_id: str, range_no: int) -> None:
    """Forget what an earlier delivery of this range task wrote (a redelivered task starts
    its range over, so no key is listed twice)."""
    with engine.begin() as conn:
        conn.execute(
            delete(VerifyDiff).where(
                VerifyDiff.verify_id == verify_id, VerifyDiff.range_no == range_no
            )
        )


@retry_transient()
def add_diffs(engine: Engine, verify_id: str, range_no: int, diffs: Sequence[DiffRow]) -> None:
    if not diffs:
        return
    with engine.begin() as conn:
        conn.execute(
            insert(VerifyDiff),
            [
                {
                    "verify_id": verify_id,
                    "range_no": range_no,
                    "kind": d.kind,
                    "row_key": d.key,
                    "columns": d.columns,
                    "explained": d.explained,
                }
                for d in diffs
            ],
        )


@retry_transient()
def end_verify(engine: Engine, verify_id: str, status: VerifyStatus, **counts: Any) -> bool:
    """End a RUNNING verify; False if it had already ended (a second body delivery)."""
    with engine.begin() as conn:
        ended = conn.execute(
            update(VerifyLog)
            .where(VerifyLog.verify_id == verify_id, VerifyLog.status == VerifyStatus.RUNNING)
            .values(status=status, ended_at=utcnow(), **counts)
        ).rowcount
    return bool(ended)


# what the verify after a run (``verify.after_run``) makes of the run
RUN_MARK = {
    VerifyStatus.RUNNING: "VERIFYING",
    VerifyStatus.EQUAL: "VERIFIED",
    VerifyStatus.DIFFERENT: "DIFFERENT",
    VerifyStatus.FAILED: "UNVERIFIED",
}


def run_verification(engine: Engine, run_id: str) -> tuple[str, VerifyLog] | None:
    """How the latest verify after run ``run_id`` ended (VERIFIED, DIFFERENT, UNVERIFIED
    or VERIFYING), with that verify; None when none was made after it."""
    with session(engine) as s:
        verify = s.scalars(
            select(VerifyLog)
            .where(VerifyLog.run_id == run_id)
            .order_by(VerifyLog.started_at.desc())
            .limit(1)
        ).first()
    return None if verify is None else (RUN_MARK[verify.status], verify)


@retry_transient()
def record_unstarted(engine: Engine, mapref: str, run_id: str, message: str) -> None:
    """A verify after ``run_id`` that could not even be planned: stored FAILED, saying why."""
    now = utcnow()
    with session(engine) as s, s.begin():
        s.add(
            VerifyLog(
                verify_id=uuid.uuid4().hex[:12],
                mapref=mapref,
                status=VerifyStatus.FAILED,
                scope="all",
                started_at=now,
                ended_at=now,
                run_id=run_id,
                plan={},
                message=message,
            )
        )


def first_diffs(engine: Engine, verify_id: str, kind: str, limit: int | None) -> list[VerifyDiff]:
    """The verify's differing keys of one kind, in the order the ranges found them."""
    query = (
        select(VerifyDiff)
        .where(VerifyDiff.verify_id == verify_id, VerifyDiff.kind == kind)
        .order_by(VerifyDiff.range_no, VerifyDiff.id)
    )
    if limit is not None:
        query = query.limit(limit)
    with session(engine) as s:
        return list(s.scalars(query))


def last_successful_run(engine: Engine, mapref: str) -> ProcessLog | None:
    with session(engine) as s:
        return s.scalars(
            select(ProcessLog)
            .where(ProcessLog.mapref == mapref, ProcessLog.status == RunStatus.SUCCESS)
            .order_by(ProcessLog.created_at.desc())
            .limit(1)
        ).first()


def runs_started_between(engine: Engine, mapref: str, since: Any) -> list[str]:
    """Runs of ``mapref`` created at or after ``since`` (they moved the target meanwhile)."""
    with session(engine) as s:
        return list(
            s.scalars(
                select(ProcessLog.run_id).where(
                    ProcessLog.mapref == mapref, ProcessLog.created_at >= since
                )
            )
        )


def recent_verifies(engine: Engine, mapref: str, limit: int = 20) -> list[VerifyLog]:
    with session(engine) as s:
        return list(
            s.scalars(
                select(VerifyLog)
                .where(VerifyLog.mapref == mapref)
                .order_by(VerifyLog.started_at.desc())
                .limit(limit)
            )
        )
