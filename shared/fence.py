"""Fencing: only the chunk attempt that owns a chunk writes to the target.

A chunk attempt can outlive its ownership: a worker frozen past the broker's visibility
timeout (SIGSTOP, a VM pause, a swap storm) wakes after its message was delivered again, the
chunk was loaded by a newer attempt, the run ended, or a newer run loaded newer data. Checks
in the metadata database cannot stop it, because they are not in the target's transaction.
So the target holds the fence itself: a small table ``chordload_fences`` beside the target,
one row per (target table, mapping) for the run that owns the target and one per chunk for
the attempt that owns the chunk. Every batch transaction first updates its chunk's row on
the condition that it still names this run and attempt and is open; if it does not, the
batch writes nothing and the attempt ends quietly.

What moves the fence:
- a launch or resume claims the target for its run (``claim``): every row of the target
  now names that run, with no chunk attempt, so an attempt of an older run, or an older
  launch of this run, owns nothing;
- a chunk attempt enters (``enter``) with its attempt number from chunk_log, which only
  grows: a newer attempt (retry, redelivery, resume, reconcile's relaunch) takes the chunk;
- the run's end closes the fence (``close``): a woken attempt cannot write after the run
  is SUCCESS, FAILED or STOPPED.
The row updates take the rows' locks, so a claim or close waits for the batches in flight
and every later batch sees it. A frozen writer's locks are bounded by the worker sessions'
idle-in-transaction timeout (``target_sessions``, ``shared/engines.py``), except where the
writer froze while sending a batch's COPY: PostgreSQL waits for COPY data without a limit.
So on PostgreSQL a claim or an entry that waits looks at the session it waits for, and ends
it once it has waited that long for its COPY's data (``stalled_copy_s``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, text
from sqlalchemy.exc import OperationalError

from shared.config.settings import Settings
from shared.dialects import adapter_for
from shared.dialects.base import DialectAdapter
from shared.engines import get_engine
from shared.errors import describe_db_error
from shared.run.plan import RunPlan

log = logging.getLogger("chordload.fence")

FENCE_TABLE = "chordload_fences"
RUN_ROW = -1  # the chunk_no of the row naming the run that owns the target
STALL_CHECK_S = 1.0  # how often a fence update that waits looks at the session it waits for


@dataclass(frozen=True)
class TargetFence:
    """The fence rows of one mapping's target table."""

    dialect: DialectAdapter
    ref: str  # the quoted fence table, beside the target
    table_name: str
    mapref: str
    # a batch's session that has waited this long for its COPY's data, holding a fence row
    # an update waits for, is ended (PostgreSQL; 0: never)
    stalled_copy_s: float = 0

    @classmethod
    def of(cls, dialect: DialectAdapter, plan: RunPlan, stalled_copy_s: float = 0) -> TargetFence:
        target = plan.spec.target
        ref = dialect.q(FENCE_TABLE)
        if target.schema_name:
            ref = f"{dialect.q(target.schema_name)}.{ref}"
        return cls(dialect, ref, target.table_name, plan.mapref, stalled_copy_s)

    def _params(self, **more: object) -> dict[str, object]:
        return {"t": self.table_name, "m": self.mapref, **more}

    _WHERE = "table_name = :t AND mapref = :m"

    def ensure(self, conn: Connection) -> None:
        """Create the fence table if this target database has none yet."""
        conn.execute(
            text(
                f"CREATE TABLE IF NOT EXISTS {self.ref} ("
                "table_name VARCHAR(255) NOT NULL, mapref VARCHAR(200) NOT NULL, "
                "chunk_no INTEGER NOT NULL, run_id VARCHAR(32) NOT NULL, "
                "attempt INTEGER NOT NULL, closed INTEGER NOT NULL, writes BIGINT NOT NULL, "
                "PRIMARY KEY (table_name, mapref, chunk_no))"
            )
        )

    def claim(self, conn: Connection, run_id: str) -> None:
        """Give the target to ``run_id`` (a launch or a resume): every chunk row now names it
        with no attempt, so no attempt of an older run or launch owns a chunk any more."""
        self._update(
            conn,
            f"UPDATE {self.ref} SET run_id = :r, attempt = 0, closed = 0 WHERE {self._WHERE}",
            self._WHERE,
            self._params(r=run_id),
        )
        if not self._has_row(conn, RUN_ROW):
            conn.execute(
                text(
                    f"INSERT INTO {self.ref} "
                    "(table_name, mapref, chunk_no, run_id, attempt, closed, writes) "
                    "VALUES (:t, :m, :c, :r, 0, 0, 0)"
                ),
                self._params(c=RUN_ROW, r=run_id),
            )

    def close(self, conn: Connection, run_id: str) -> None:
        """The run has ended: none of its attempts may write any more."""
        conn.execute(
            text(f"UPDATE {self.ref} SET closed = 1 WHERE {self._WHERE} AND run_id = :r"),
            self._params(r=run_id),
        )

    def enter(self, conn: Connection, run_id: str, chunk_no: int, attempt: int) -> bool:
        """Take the chunk for ``attempt``, if the run still owns the target and no attempt
        as new holds the chunk. The run's row is locked for the moment it takes, so a claim
        or close and the entries of the run's chunks happen one after the other.

        On PostgreSQL the entry commits without waiting for its WAL to reach the disk: one
        flush less per chunk (milliseconds on a slow disk). Other sessions see the entry at
        once. Only a crash of the target server can lose it, and then nothing relies on it:
        the crash also ended this attempt's session, so the attempt writes nothing more;
        WAL is one sequence, so any batch of the attempt (each commits synchronously) that
        came after the entry was lost with it; and the retry is a newer attempt, which
        enters anew."""
        if conn.dialect.name == "postgresql":
            conn.execute(text("SET LOCAL synchronous_commit = off"))
        row = f"{self._WHERE} AND chunk_no = :c"
        held = self._update(
            conn,
            f"UPDATE {self.ref} SET writes = writes + 1 WHERE {row} AND run_id = :r AND closed = 0",
            row,
            self._params(c=RUN_ROW, r=run_id),
            one=True,
        )
        if held != 1:
            return False
        taken = self._update(
            conn,
            f"UPDATE {self.ref} SET attempt = :a, writes = 0 "
            f"WHERE {row} AND run_id = :r AND attempt < :a",
            row,
            self._params(c=chunk_no, r=run_id, a=attempt),
            one=True,
        )
        if taken == 1:
            return True
        if taken is not None and self._has_row(conn, chunk_no):
            return False  # an attempt as new or newer holds it
        conn.execute(
            text(
                f"INSERT INTO {self.ref} "
                "(table_name, mapref, chunk_no, run_id, attempt, closed, writes) "
                "VALUES (:t, :m, :c, :r, :a, 0, 0)"
            ),
            self._params(c=chunk_no, r=run_id, a=attempt),
        )
        return True

    def hold(self, conn: Connection, run_id: str, chunk_no: int, attempt: int) -> bool:
        """In a batch's transaction, before it writes: whether this attempt still owns the
        chunk. The row stays locked until the batch commits."""
        return (
            conn.execute(
                text(
                    f"UPDATE {self.ref} SET writes = writes + 1 WHERE {self._WHERE} "
                    "AND chunk_no = :c AND run_id = :r AND attempt = :a AND closed = 0"
                ),
                self._params(c=chunk_no, r=run_id, a=attempt),
            ).rowcount
            == 1
        )

    def hold_run(self, conn: Connection, run_id: str) -> bool:
        """Whether ``run_id`` still owns the target and is open (its hard-delete pass)."""
        return self.hold(conn, run_id, RUN_ROW, 0)

    def _update(
        self, conn: Connection, sql: str, rows: str, params: dict[str, Any], one: bool = False
    ) -> int | None:
        """Run a fence UPDATE (on the fence ``rows``); on PostgreSQL, while it waits for a
        row lock, end every holder of those rows that has waited ``stalled_copy_s`` for its
        COPY's data, seen so on two looks ``STALL_CHECK_S`` apart. Returns the rows updated.
        ``one``: ``rows`` is at most one row, which is usually free: locked at once (or found
        missing: then None, so a chunk's first entry need not look for its row again)
        without the waiting loop's round trips."""
        if not self.stalled_copy_s or conn.dialect.name != "postgresql":
            return int(conn.execute(text(sql), params).rowcount)
        if one:
            free = conn.execute(
                text(f"SELECT 1 FROM {self.ref} WHERE {rows} FOR UPDATE SKIP LOCKED"), params
            ).first()
            if free is not None:  # locked now by this transaction: the update cannot wait
                return int(conn.execute(text(sql), params).rowcount)
            present = conn.execute(text(f"SELECT 1 FROM {self.ref} WHERE {rows}"), params).first()
            if present is None:
                return None
        prior = conn.execute(text("SELECT current_setting('lock_timeout')")).scalar_one()
        seen: set[int] = set()
        while True:
            try:
                with conn.begin_nested():
                    conn.execute(
                        text("SELECT set_config('lock_timeout', :t, true)"),
                        {"t": f"{int(STALL_CHECK_S * 1000)}ms"},
                    )
                    updated = int(conn.execute(text(sql), params).rowcount)
                conn.execute(text("SELECT set_config('lock_timeout', :t, true)"), {"t": prior})
                return updated
            except OperationalError as exc:
                if getattr(exc.orig, "pgcode", None) != "55P03":  # lock_not_available
                    raise
            conn.execute(text("SELECT pg_stat_clear_snapshot()"))  # else read once a transaction
            stalled = set(
                conn.execute(
                    text(
                        "SELECT a.pid FROM pg_stat_activity a WHERE a.backend_xid IN "
                        f"(SELECT f.xmax FROM {self.ref} f WHERE {rows}) "
                        "AND a.state = 'active' AND a.wait_event = 'ClientRead' "
                        "AND a.query ILIKE 'COPY %' AND a.pid <> pg_backend_pid() "
                        "AND a.query_start < clock_timestamp() - make_interval(secs => :stall)"
                    ),
                    {**params, "stall": self.stalled_copy_s},
                ).scalars()
            )
            for pid in stalled & seen:
                log.warning(
                    "%s: the session %s holding the fence has waited over %.0f s for its "
                    "COPY's data (its worker is frozen or gone): ending it",
                    self.table_name,
                    pid,
                    self.stalled_copy_s,
                )
                conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
            seen = stalled

    def _has_row(self, conn: Connection, chunk_no: int) -> bool:
        return (
            conn.execute(
                text(f"SELECT 1 FROM {self.ref} WHERE {self._WHERE} AND chunk_no = :c"),
                self._params(c=chunk_no),
            ).first()
            is not None
        )


CLOSE_LOCK_TIMEOUT_S = 10  # a close waits this long for batches in flight (PostgreSQL)


def claim_target(settings: Settings, plan: RunPlan) -> None:
    """Give the run's target to the run, before its chord is sent (a launch or a resume)."""
    engine = get_engine(settings.connection_url(plan.spec.target.connection))
    stalled_s = settings.target_sessions.idle_in_transaction_timeout_s
    fence = TargetFence.of(adapter_for(engine), plan, stalled_s)
    with engine.begin() as conn:
        fence.ensure(conn)
    with engine.begin() as conn:
        fence.claim(conn, plan.run_id)


def close_target(settings: Settings, plan: RunPlan) -> None:
    """At the run's end: no attempt of it may write any more. Best effort: if the target is
    out of reach, the next launch's claim moves the fence instead (and until then a woken
    attempt of this run could write the run's own window once more)."""
    try:
        engine = get_engine(settings.connection_url(plan.spec.target.connection))
        fence = TargetFence.of(adapter_for(engine), plan)
        with engine.begin() as conn:
            if engine.dialect.name == "postgresql":
                conn.execute(text(f"SET LOCAL lock_timeout = '{CLOSE_LOCK_TIMEOUT_S}s'"))
            fence.close(conn, plan.run_id)
    except Exception as exc:  # noqa: BLE001 - the run's end does not depend on it
        log.warning(
            "run %s: could not close the fence of its target %s: %s",
            plan.run_id,
            plan.spec.target.table,
            describe_db_error(exc),
        )
