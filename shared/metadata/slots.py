"""Claiming schedule slots: ``(mapref, scheduled_for)`` is launched at most once.

A dispatcher first INSERTs the slot as CLAIMED (its own short transaction), then launches,
then records the outcome. The primary key turns a second claim - another beat process, a
redelivered ``dispatch_due``, a worker whose clock is a little off - into an IntegrityError,
i.e. "someone else has it". The price is at-most-once: a dispatcher that dies between claim
and launch leaves the slot CLAIMED and it is not retried; the next slot runs as usual.
"""

from __future__ import annotations

import datetime as dt
from enum import Enum

from sqlalchemy import Engine, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from shared.metadata.models import ScheduleSlot
from shared.metadata.store import session
from shared.timeutil import as_utc, utcnow


class SlotStatus(str, Enum):
    CLAIMED = "CLAIMED"
    LAUNCHED = "LAUNCHED"
    SKIPPED = "SKIPPED"
    FAILED = "FAILED"


def claim(engine: Engine, mapref: str, scheduled_for: dt.datetime, claimed_by: str) -> bool:
    """Claim a slot; False when it (or a later slot of the mapping) is already claimed.

    Refusing slots older than the newest claim keeps a dispatcher with a slow clock from
    launching a slot after a faster one has already moved on to the next.
    """
    try:
        with engine.begin() as conn:
            newest = conn.execute(
                select(func.max(ScheduleSlot.scheduled_for)).where(ScheduleSlot.mapref == mapref)
            ).scalar_one_or_none()
            if newest is not None and as_utc(newest) >= scheduled_for:
                return False
            conn.execute(
                insert(ScheduleSlot).values(
                    mapref=mapref,
                    scheduled_for=scheduled_for,
                    claimed_at=utcnow(),
                    claimed_by=claimed_by[:200],
                    status=SlotStatus.CLAIMED.value,
                )
            )
    except IntegrityError:
        return False
    return True


def finish(
    engine: Engine,
    mapref: str,
    scheduled_for: dt.datetime,
    status: SlotStatus,
    *,
    run_id: str | None = None,
    reason: str | None = None,
) -> None:
    with engine.begin() as conn:
        conn.execute(
            update(ScheduleSlot)
            .where(ScheduleSlot.mapref == mapref, ScheduleSlot.scheduled_for == scheduled_for)
            .values(status=status.value, run_id=run_id, reason=reason, finished_at=utcnow())
        )


def latest(engine: Engine, mapref: str) -> ScheduleSlot | None:
    with session(engine) as s:
        return s.scalars(
            select(ScheduleSlot)
            .where(ScheduleSlot.mapref == mapref)
            .order_by(ScheduleSlot.scheduled_for.desc())
            .limit(1)
        ).first()


def for_mapping(engine: Engine, mapref: str, limit: int = 100) -> list[ScheduleSlot]:
    with session(engine) as s:
        return list(
            s.scalars(
                select(ScheduleSlot)
                .where(ScheduleSlot.mapref == mapref)
                .order_by(ScheduleSlot.scheduled_for.desc())
                .limit(limit)
            )
        )
