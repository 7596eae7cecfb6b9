"""The indexes a new target gets at the end of its first run instead of at its creation.

A first load into a new PostgreSQL SCD2 target wrote every row's entry into the primary key
on the surrogate key as it went, two sessions appending to the same right-most page of it:
about a tenth of what the target spent in the benchmark's initial load
(``docs/benchmarks.md``). Built once at the end it costs a fraction of that. So a target
chordload creates has its key indexes at first (the unique one keeps one current row per
key, which no run goes without; the plain one serves a replay's look at a key's expired
versions), and the rest (``late_index_sql`` of the dialect) are built:

- by the run's end (``shared/lifecycle/finalize.py``), before its status is written, so a
  finished run leaves the target whole, whatever its status;
- else by the next run's planning (``coordinator/plan.py``), should that end not have built
  them (a finalizer that died, or a stale writer's lock held past the wait).

No load reads them: they serve the target's readers and its primary-key contract. A target
counts as one chordload created and has not finished when it has the unique key index
chordload names and no primary key; a table made otherwise (with a primary key of its own,
or without chordload's index) is never touched.
"""

from __future__ import annotations

from sqlalchemy import Connection, text

from shared.config.mapping import TargetSpec
from shared.dialects.base import LateIndex
from shared.scd.target import ScdTarget

LOCK_WAIT_S = 10.0  # how long a build waits for a writer's transaction on the target


def planned(target: ScdTarget, spec: TargetSpec) -> list[LateIndex]:
    """The late indexes of a target of this kind, built or not (none: nothing to look at,
    not even a connection)."""
    return target.dialect.late_index_sql(target.table, spec, target.scd_type, target.audit)


def missing(conn: Connection, target: ScdTarget, spec: TargetSpec) -> list[LateIndex]:
    """The late indexes the target still lacks (none for a table chordload did not make)."""
    late = planned(target, spec)
    if not late:
        return []
    dialect = target.dialect
    has_primary_key, names = dialect.index_state(conn, spec)
    if has_primary_key or dialect.unique_key_index_name(spec, target.scd_type) not in names:
        return []
    return [index for index in late if index.name not in names]


def build(
    conn: Connection, target: ScdTarget, spec: TargetSpec, lock_wait_s: float = LOCK_WAIT_S
) -> list[str]:
    """Build the late indexes the target lacks, in the caller's transaction; the names of
    those built. Another builder is waited for until it is done, a writer (a stale
    attempt's batch) at most ``lock_wait_s`` (the database's lock-timeout error escapes);
    readers go on."""
    if not missing(conn, target, spec):
        return []
    target.dialect.lock_out_writers(conn, spec, lock_wait_s)
    todo = missing(conn, target, spec)  # another builder may have finished meanwhile
    for index in todo:
        for statement in index.statements:
            conn.execute(text(statement))
    return [index.name for index in todo]
