"""One current row per key, NULL key parts included, on targets made before it was so.

Targets chordload creates have a unique index on the business key (SCD2: of the current
rows) in which a NULL key part is one value (``unique_key_sql`` of the dialect: PostgreSQL
15's ``NULLS NOT DISTINCT``, SQLite's (IS NULL, ifnull) pairs). Targets created by an older
chordload have the plain index, which lets two current rows of a key with a NULL part in.
Planning a run upgrades such an index in place, in the planner's transaction, when the
target holds no key twice (the new index could not be built otherwise); if it does, the
index is left as it is and the plan note says how many keys to resolve.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, text

from shared.config.mapping import TargetSpec
from shared.dialects.types import SourceColumn
from shared.scd.target import ScdTarget


def upgrade_key_index(
    conn: Connection, target: ScdTarget, spec: TargetSpec, columns: Sequence[SourceColumn]
) -> str | None:
    """Rebuild the target's unique key index NULL-safe if it is not; a plan note saying what
    was done (or why not), or None when there was nothing to do."""
    dialect, audit = target.dialect, target.audit
    name = dialect.unique_key_index_name(spec, target.scd_type)
    if dialect.null_safe_key_index(conn, spec, name) is not False:
        return None
    q = target.q
    keys = ", ".join(q(k) for k in target.keys)
    current = f" WHERE {q(audit.is_current)} = :true_" if target.scd2 else ""
    twice = conn.execute(
        text(
            f"SELECT count(*) FROM (SELECT 1 AS one FROM {target.table}{current} "
            f"GROUP BY {keys} HAVING count(*) > 1) d"
        ),
        target.flags(),
    ).scalar_one()
    rows = "current rows" if target.scd2 else "rows"
    if twice:
        return (
            f"{spec.table}'s unique key index lets two {rows} of a key with a NULL part in, "
            f"and {twice} keys have several: resolve them (keep one {rows[:-1]} per key), and "
            f"the next plan rebuilds the index NULL-safe"
        )
    create = dialect.target_index_sql(
        target.table, spec, columns, target.keys, target.scd_type, audit
    )[0]
    conn.execute(text(dialect.drop_index_sql(spec, name)))
    conn.execute(text(create))
    return f"{spec.table}'s unique key index rebuilt to treat NULL key parts as one key (once)"
