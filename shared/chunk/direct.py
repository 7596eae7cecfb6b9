"""An initial load's batches COPYed straight into the target, between PostgreSQL databases.

A first pass over a key range in which the target has no current row (``Pass.INITIAL`` in
``load.py``) compares nothing, so its rows need not pass through a stage: the source prints
each row followed by its row hash and the new version's audit values
(``scd.new_versions``, the same row ``insert_new`` writes), and a batch is one
``COPY target FROM STDIN``. Writing every row into the stage and reading it back was most of
what an initial load cost above one plain COPY stream (the benchmark's ``limit``).

The source computes the row hash, so it must be the hash the target would compute over the
stored row. It is when every column has the same built-in type, modifiers included, on both
sides (the target's without a modifier, or the source's), and both servers have one major
version and one server encoding: the target then parses the source's text (printed under
HASH_SESSION) back to the same value, whose text is the same again. Anything else (an
expression column, a domain, ``real`` into ``double precision``, ``timestamp`` into
``timestamp(0)``, another encoding) keeps the stage.

What the stage's shape query found out is known otherwise:

- a key twice in the batch, or a key that already has a current row: the target's unique
  current-row index (NULL parts as one value) refuses the COPY. The batch is rolled back and
  takes the stage with its extra fields cut off (``strip``), where duplicates are resolved;
  a staged key that is already current restarts the chunk as a replay (``load.py``).
- the checkpoint maximum: read once from the target at the chunk's end, over the chunk's key
  range (``max_checkpoint``); so the split columns must compare the same on both sides
  (not text, whose order follows each database's collation).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, text

from shared.dialects import adapter_for
from shared.dialects.postgres import PostgresAdapter, StoredType
from shared.run.plan import RunPlan
from shared.run.window import ChunkRange
from shared.scd import apply as scd
from shared.scd.target import ScdTarget
from shared.timeutil import utcnow

# split column types whose order is the same in every PostgreSQL database (no collation):
# smallint, integer, bigint, numeric, date, timestamp, timestamptz, uuid (built-in oids)
_ORDERED_ALIKE = {21, 23, 20, 1700, 1082, 1114, 1184, 2950}


@dataclass(frozen=True)
class DirectCopy:
    """How a chunk's initial batches go straight into the target."""

    columns: list[str]  # the target's columns the COPY fills, in the order of a line's fields
    extra: list[str]  # the expressions the source prints after the business columns
    params: dict[str, Any]  # what ``extra`` binds (inlined by the source's COPY)

    def strip(self, lines: bytes) -> bytes:
        """The batch's lines with the extra fields cut off, for the stage. A field's tabs
        are escaped in COPY text, so the last tabs of a line separate the extra fields."""
        n = len(self.extra)
        return b"".join(line.rsplit(b"\t", n)[0] + b"\n" for line in lines.splitlines())


def direct_copy(plan: RunPlan, scd_target: ScdTarget) -> DirectCopy:
    """The direct COPY of this chunk's initial batches (when ``refusal`` found none): the
    row ``insert_new`` writes, with the hash computed by the source over ``src``."""
    q, row_hash = scd_target.q, scd_target.dialect.row_hash_expr
    values = scd.new_versions(
        scd_target, "src", row_hash([f"src.{q(c)}" for c in scd_target.hashed_columns])
    )
    business = len(scd_target.columns)
    return DirectCopy(
        columns=[c for c, _ in values],
        extra=[v for _, v in values[business:]],
        params=scd.new_version_params(scd_target, plan.valid_from, utcnow()),
    )


def refusal(
    plan: RunPlan,
    scd_target: ScdTarget,
    sconn: Connection,
    tconn: Connection,
    chunk_sql: str,
    params: dict[str, Any],
) -> str | None:
    """Why the initial batches cannot go straight into the target (None: they can): the
    source's row hash could differ from the target's, or a batch's facts could not be known
    without a stage. The same for every chunk of a launch (the loader asks once)."""
    spec = plan.spec
    source, target = adapter_for(sconn.engine), scd_target.dialect
    if not (isinstance(source, PostgresAdapter) and isinstance(target, PostgresAdapter)):
        return "the source or the target is not PostgreSQL"
    if scd_target.options.valid_from_column:
        return "valid_from comes from a source column"
    index = target.unique_key_index_name(spec.target, spec.scd.type)
    if target.null_safe_key_index(tconn, spec.target, index) is not True:
        return f"the target has no NULL-safe unique key index {index}"
    if source.text_identity(sconn) != target.text_identity(tconn):
        return "the two servers differ in major version or server encoding"
    target_types = target.table_column_types(tconn, spec.target)
    for split in plan.split_columns:
        split_type = target_types.get(split)
        if split_type is None or split_type.oid not in _ORDERED_ALIKE:
            return (
                f"split column {split!r} is {split_type and split_type.name}, ordered by collation"
            )
    source_types = source.query_column_types(sconn, chunk_sql, params)
    for column, given in zip(plan.columns, source_types, strict=True):
        if not _holds_as_is(given, target_types.get(column)):
            shown = given.name if given else "an expression or a non-built-in type"
            held = target_types.get(column)
            return f"column {column!r} is {shown} in the source, {held and held.name} in the target"
    return None


def _holds_as_is(given: StoredType | None, held: StoredType | None) -> bool:
    """Whether the target column stores every value of the source column as it is, so its
    text (and the row hash) is the source's: the same built-in type, and no modifier at the
    target or the same one (``numeric(12,2)`` into ``numeric`` keeps ``1.50``; into
    ``numeric(12,3)`` it would become ``1.500``)."""
    if given is None or held is None or given.oid != held.oid:
        return False
    return held.typmod == -1 or held.typmod == given.typmod


def max_checkpoint(
    tconn: Connection, plan: RunPlan, scd_target: ScdTarget, chunk: ChunkRange, column: str
) -> Any:
    """The largest ``column`` value of the chunk's rows in the target: after an initial
    pass, exactly the rows this attempt wrote (none were current before it, and the fence
    kept every other writer out). Run in the last batch's transaction or one of its own."""
    adapter, q = scd_target.dialect, scd_target.q
    range_sql, range_params = chunk.predicate(adapter, plan.split_columns)
    # The target's statistics predate this load (they may say it is empty): the planner
    # would read the whole table for the last chunk's open range, not its key index. The
    # setting goes with the query, in one round trip (PostgreSQL: the result is the last
    # statement's).
    current = f" AND src.{q(scd_target.audit.is_current)} = :true_" if scd_target.scd2 else ""
    return tconn.execute(
        text(
            f"SET LOCAL enable_seqscan = off; SELECT max(src.{q(column)}) "
            f"FROM {scd_target.table} src WHERE {range_sql}{current}"
        ),
        {**range_params, **scd_target.flags()},
    ).scalar()
