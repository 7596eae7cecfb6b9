"""Quarantine by bisection: isolate the rows a database rejects for their data.

A batch refused for its data (a value too long, out of range, NOT NULL, CHECK) is split in
halves, each tried in its own savepoint, until every rejected row stands alone. The rest is
loaded; each bad row comes back with the database's message. One algorithm for the chunk
loader's batches and the hard-delete pass's key stage.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError

from shared.errors import describe_db_error, is_data_error

T = TypeVar("T")
Row = tuple


def bisect(
    conn: Connection,
    rows: Sequence[Row],
    attempt: Callable[[Sequence[Row]], T],
    combine: Callable[[T, T], T],
    empty: T,
) -> tuple[T, list[tuple[Row, str]]]:
    """Run ``attempt(rows)`` in a savepoint; on a data error, halve and try each half.
    Returns the combined results of what was applied and the (row, message) pairs that
    were rejected. Any other error rolls the savepoint back and is raised."""
    savepoint = conn.begin_nested()
    try:
        result = attempt(rows)
        savepoint.commit()
        return result, []
    except Exception as exc:
        try:
            savepoint.rollback()
        except SQLAlchemyError:
            # The database ended the whole transaction, savepoints and all (InnoDB does on a
            # deadlock): the original error says why, and whether a retry may help.
            raise exc from None
        if not is_data_error(exc):
            raise
        if len(rows) == 1:
            return empty, [(rows[0], describe_db_error(exc))]
        middle = len(rows) // 2
        left, left_bad = bisect(conn, rows[:middle], attempt, combine, empty)
        right, right_bad = bisect(conn, rows[middle:], attempt, combine, empty)
        return combine(left, right), left_bad + right_bad
