"""Source values no Python type holds exactly, carried with the source's own text.

PostgreSQL dates and timestamps reach beyond Python's ``date``/``datetime``: ``infinity``,
``-infinity``, BC dates and years after 9999 (and ``time`` has ``24:00:00``). psycopg2 turns
infinity into ``date.max``/``datetime.min`` silently and fails on the others. The PostgreSQL
adapter reads such a value as one of the classes below instead: a subclass of the Python type
that sorts as its nearest end of the Python range (so sorting and checkpoint maxima still
work), equals only the same source value, and carries ``source_text``, the value as the
source printed it. A target that can hold the text stores that (PostgreSQL parses it back;
SQLite keeps it as text); a target that cannot (MariaDB's ``DATE``/``DATETIME``) quarantines
the row, naming the column and the value (``shared/dialects/holds.py``). Nothing turns one
into its stand-in Python value silently.
"""

from __future__ import annotations

import datetime as dt
from typing import Any


class _SourceText:
    """Mixin: the value as the source printed it (``source_text``)."""

    source_text: str

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.source_text!r})"

    # Equal only to the same source value: 'infinity' is not the key '9999-12-31 23:59:59.999999'
    # (duplicate resolution groups rows by equal keys). Order stays the stand-in's.
    def __eq__(self, other: object) -> bool:
        return isinstance(other, _SourceText) and other.source_text == self.source_text

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    def __hash__(self) -> int:
        return hash(self.source_text)


class SourceDate(_SourceText, dt.date):
    """A date beyond Python's range; compares as ``date.min``/``date.max``."""


class SourceDateTime(_SourceText, dt.datetime):
    """A timestamp beyond Python's range; compares as ``datetime.min``/``datetime.max``
    (aware in UTC for a timestamp with time zone)."""


class SourceTime(_SourceText, dt.time):
    """A time of day Python cannot hold (``24:00:00``); compares as ``time.max``."""


def beyond_range(kind: str, text: str, tz: dt.tzinfo | None = None) -> Any:
    """``text`` (a date/timestamp/time the source printed) as its stand-in: the low end of
    the Python range for ``-infinity`` and BC values, the high end otherwise."""
    low = text.startswith("-") or text.endswith(" BC")
    value: Any
    if kind == "date":
        base = dt.date.min if low else dt.date.max
        value = SourceDate(base.year, base.month, base.day)
    elif kind == "time":
        base_t = dt.time.max
        value = SourceTime(base_t.hour, base_t.minute, base_t.second, base_t.microsecond, tz)
    else:
        b = dt.datetime.min if low else dt.datetime.max
        value = SourceDateTime(
            b.year, b.month, b.day, b.hour, b.minute, b.second, b.microsecond, tzinfo=tz
        )
    value.source_text = text
    return value


def source_text(value: Any) -> str | None:
    """The source's text of a value read beyond Python's range, else None."""
    return value.source_text if isinstance(value, _SourceText) else None
