"""SQL fragments the SCD statements are built from, written once over a dialect's pieces
(quoting, the row-hash expression, null-safe equality).

Aliases: ``t`` is the target, ``s`` the hashed stage (the stage plus ``cl_hash``), ``st``
the stage itself.
"""

from __future__ import annotations

from collections.abc import Sequence

from shared.scd.target import ScdTarget


def hashed_stage(
    target: ScdTarget, stage: str, only: str, hashed: Sequence[str] | None = None
) -> str:
    """The stage's rows that pass ``only``, each with its row hash as ``cl_hash``."""
    q = target.q
    hash_expr = target.dialect.row_hash_expr(
        [f"st.{q(c)}" for c in (hashed if hashed is not None else target.columns)]
    )
    return f"(SELECT st.*, {hash_expr} AS cl_hash FROM {stage} st WHERE {only})"


def key_match(target: ScdTarget, left: str, right: str, null_safe: bool) -> str:
    q = target.q
    if null_safe:
        return " AND ".join(
            target.dialect.null_safe_eq(f"{left}.{q(k)}", f"{right}.{q(k)}") for k in target.keys
        )
    return " AND ".join(f"{left}.{q(k)} = {right}.{q(k)}" for k in target.keys)


def key_filter(target: ScdTarget, alias: str, null_safe: bool) -> str:
    """Rows of ``alias`` that take this pass: no NULL key part, or (null-safe) some."""
    q = target.q
    if null_safe:
        return "(" + " OR ".join(f"{alias}.{q(k)} IS NULL" for k in target.keys) + ")"
    return " AND ".join(f"{alias}.{q(k)} IS NOT NULL" for k in target.keys)


def null_passes(has_null_keys: bool) -> tuple[bool, ...]:
    """Plain ``=`` uses the target's key index; rows with a NULL key take a second,
    null-safe pass, run only when the batch has such rows."""
    return (False, True) if has_null_keys else (False,)


def written_by_run(target: ScdTarget, target_alias: str, stage_alias: str) -> str:
    """``target.run_id = :run_id``, spelled as a join condition on the staged row. As a
    plain restriction on the target it is estimated from the target's statistics, which
    during a load are stale (they know few or no rows of this run); PostgreSQL then
    prefers scanning the whole target once per staged row to probing its key index."""
    return (
        f"{target_alias}.{target.q(target.audit.run_id)} = CASE WHEN {stage_alias}.cl_hash "
        f"IS NULL THEN NULL ELSE :run_id END"
    )


def differs(target: ScdTarget, left: str, right: str, columns: Sequence[str]) -> str:
    """The columns of two row aliases differ (compared by hash, so NULLs are values)."""
    q, row_hash = target.q, target.dialect.row_hash_expr
    return (
        f"{row_hash([f'{left}.{q(c)}' for c in columns])} <> "
        f"{row_hash([f'{right}.{q(c)}' for c in columns])}"
    )
