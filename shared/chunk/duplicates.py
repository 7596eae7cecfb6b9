"""Duplicate business keys in one extract: one row per key wins.

The rule: the row with the highest checkpoint value wins (NULL lowest; with no checkpoint
every row ties); among rows tied on it, the row whose values sort last in a canonical order
(``row_order``). That order is a total order over the values any driver returns, type by type,
and it does not depend on the order the rows arrive in: the same extract gives the same
winners whatever the batch size, the chunk count, the path (relay or typed) or the rerun.
Every other row of the key is counted as a duplicate and never written.

All rows of a key are in one chunk (chunks split on key columns) and arrive together (key
order). The loader cuts the stream so that a key's rows never straddle two batches
(``batches.py``); only a key with more rows than a batch is handed on unfinished, and the
resolver then holds that key's best row back (``DuplicateResolver.pending``) until the batch
in which the key ends. So a key is written once per attempt, by its winner: a losing row is
never applied and then overwritten.

Pure logic, no database: memory is the batch plus the best row of the one key that may
continue.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from shared.run.values import Value, max_value

# -- the canonical order of values ---------------------------------------------------------
# Each value becomes a tuple whose first item is its kind; within a kind the rest compares
# without error. Kinds never compare their payloads with each other, so rows of any types
# (a SQLite column can hold several) are totally ordered.
_NULL, _BOOL, _NUMBER, _TEXT, _BYTES, _DATE, _DATETIME, _DATETIME_TZ = range(8)
_TIME, _TIME_TZ, _INTERVAL, _UUID, _JSON, _OTHER = range(8, 14)
_MICROSECOND = dt.timedelta(microseconds=1)
_NUMBER_TYPES = {int: 0, Decimal: 1, float: 2}


def _micros(delta: dt.timedelta) -> int:
    return delta // _MICROSECOND


def _is_nan(value: int | float | Decimal) -> bool:
    if isinstance(value, float):
        return math.isnan(value)
    return isinstance(value, Decimal) and value.is_nan()


def _number(value: int | float | Decimal, exact: bool) -> tuple:
    if _is_nan(value):
        # NaN sorts above every number (as PostgreSQL sorts it); its spellings last
        return (_NUMBER, 1, type(value).__name__, str(value)) if exact else (_NUMBER, 1)
    magnitude = value if isinstance(value, Decimal) else Decimal(value)  # exact for floats
    if not exact:
        return (_NUMBER, 0, magnitude)
    # equal numbers of another type or spelling (1, 1.0, Decimal('1.00'), -0.0) still differ
    kind = next((rank for t, rank in _NUMBER_TYPES.items() if isinstance(value, t)), 3)
    return (_NUMBER, 0, magnitude, kind, str(value))


def _clock(value: dt.time) -> int:
    """Microseconds since midnight."""
    return ((value.hour * 60 + value.minute) * 60 + value.second) * 1_000_000 + value.microsecond


def _json_default(value: Any) -> Any:
    """Values inside a JSON document that json cannot write: tagged, so they stay apart."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"$bytes": bytes(value).hex()}
    if isinstance(value, (dt.date, dt.time)):
        return {"$" + type(value).__name__: value.isoformat()}
    if isinstance(value, (set, frozenset)):
        return sorted(map(repr, value))
    return {"$" + type(value).__name__: str(value)}


def _json_text(value: Any) -> str:
    try:
        return json.dumps(
            value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_json_default
        )
    except (TypeError, ValueError):  # keys of mixed types, circular: the text Python gives
        return repr(value)


def value_order(value: Any, exact: bool = True) -> tuple:
    """A sort key for one value of any type a driver returns: NULL lowest, then booleans,
    numbers (int, Decimal and float by value; NaN above all), text, bytes, dates, naive
    timestamps, aware timestamps (by instant), times, intervals, UUIDs, JSON documents and
    lists (by their canonical JSON text), anything else (by type name and text).

    ``exact``: values that are equal but not the same (1 and 1.0, Decimal('1.0') and
    Decimal('1.00'), one instant at two offsets) get distinct keys, in a fixed order, so
    the order is total over values. Without it they compare equal (checkpoint values)."""
    if value is None:
        return (_NULL,)
    if isinstance(value, bool):
        return (_BOOL, int(value))
    if isinstance(value, (int, float, Decimal)):
        return _number(value, exact)
    if isinstance(value, str):
        return (_TEXT, value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return (_BYTES, bytes(value))
    if isinstance(value, dt.datetime):
        local = _micros(value.replace(tzinfo=None) - dt.datetime.min)
        offset = value.utcoffset()
        if offset is None:
            return (_DATETIME, local, value.fold) if exact else (_DATETIME, local)
        instant = local - _micros(offset)
        if not exact:
            return (_DATETIME_TZ, instant)
        return (_DATETIME_TZ, instant, _micros(offset), value.tzname() or "", value.fold)
    if isinstance(value, dt.date):
        return (_DATE, value.toordinal())
    if isinstance(value, dt.time):
        offset = value.utcoffset()
        if offset is None:
            return (_TIME, _clock(value), value.fold) if exact else (_TIME, _clock(value))
        instant = _clock(value) - _micros(offset)
        if not exact:
            return (_TIME_TZ, instant)
        return (_TIME_TZ, instant, _micros(offset), value.tzname() or "", value.fold)
    if isinstance(value, dt.timedelta):
        return (_INTERVAL, _micros(value))
    if isinstance(value, uuid.UUID):
        return (_UUID, value.int)
    if isinstance(value, (dict, list, tuple)):
        return (_JSON, _json_text(value))
    return (_OTHER, type(value).__qualname__, str(value))


Readers = Mapping[int, Callable[[Any], Any]]  # per column position: its text -> its value


def row_order(row: Sequence[Any], readers: Readers | None = None) -> tuple:
    """The canonical sort key of a row: its values' ``value_order``, column by column. Two
    rows get the same key only if their values are the same, so among tied rows the one
    with the greatest key is a well-defined winner. ``readers``: columns that arrive as
    the source database's text (between two PostgreSQL databases) are read back as their
    values first, so that numbers compare as numbers on every path."""
    if not readers:
        return tuple(value_order(v) for v in row)
    return tuple(
        value_order(readers[i](v) if i in readers and isinstance(v, str) else v)
        for i, v in enumerate(row)
    )


def checkpoint_order(value: Value) -> tuple:
    """The order of checkpoint values: NULL lowest, a row value (several checkpoint columns)
    part by part with NULL parts lowest, values of one type in their natural order (equal
    values tie), values of different types by kind (see ``value_order``)."""
    if isinstance(value, tuple):
        return (1, tuple(checkpoint_order(v) for v in value))
    if value is None:
        return (0,)
    return (1, value_order(value, exact=False))


def key_of(parts: tuple) -> Any:
    """A business key as a dict key: the value of a one-column key, else the tuple."""
    key = parts[0] if len(parts) == 1 else parts
    try:
        hash(key)
    except TypeError:  # e.g. a JSON key: compare its text
        key = repr(key)
    return key


# -- one key's rows -------------------------------------------------------------------------
class _Best:
    """The rows of one key seen so far: the best of them, how many there were, and the
    highest checkpoint value among the others."""

    __slots__ = ("key", "losers_max", "order", "readers", "row", "rows", "tie", "value")

    def __init__(self, key: Any, row: tuple, value: Value, readers: Readers | None = None):
        self.key, self.row, self.value, self.readers = key, row, value, readers
        self.order = checkpoint_order(value)
        self.tie: tuple | None = None  # row_order(row), computed on the first tie
        self.rows = 1
        self.losers_max: Value = None

    def offer(self, row: tuple, value: Value) -> None:
        order = checkpoint_order(value)
        wins = order > self.order
        if order == self.order:
            if self.tie is None:
                self.tie = row_order(self.row, self.readers)
            tie = row_order(row, self.readers)
            wins = tie > self.tie
            if wins:
                self.tie = tie
        elif wins:
            self.tie = None
        self.rows += 1
        if wins:
            loser = self.value
            self.row, self.value, self.order = row, value, order
        else:
            loser = value
        self.losers_max = max_value([self.losers_max, loser])


@dataclass(frozen=True)
class Resolved:
    """A batch after resolution: the winners to write (one per key, with their checkpoint
    values), and the rows it settles: ``read`` = winners + ``dropped``. A key held back for
    the next batch is in neither; the previous batch's held key, if it ends here, is in both.
    ``dropped_max`` is the highest checkpoint value among the dropped rows."""

    rows: list[tuple]
    values: list[Value]
    dropped: int
    dropped_max: Value
    read: int


NO_KEY: Any = object()  # ``resolve(hold=...)`` when no key is held back (None is a NULL key)


class DuplicateResolver:
    def __init__(self, key_positions: Sequence[int], readers: Readers | None = None):
        self.key_positions = list(key_positions)
        self.readers = readers  # see row_order
        # the best row so far of the key that the latest batch left unfinished (a key with
        # more rows than a batch): not written yet, it meets the key's next rows first
        self.pending: _Best | None = None

    def key(self, row: Sequence[Any]) -> Any:
        return key_of(tuple(row[p] for p in self.key_positions))

    def reset(self) -> None:
        self.pending = None

    def resolve(self, rows: list[tuple], values: list[Value], hold: Any = NO_KEY) -> Resolved:
        """One row per business key (see the module docstring). ``hold``: the key (as
        ``key``; a NULL key is None) whose rows continue in the next batch; its best row is
        kept back."""
        pending, self.pending = self.pending, None
        keys = [self.key(row) for row in rows]
        groups: dict[Any, _Best] = {}  # keys with more than one row (or the pending one)
        if pending is not None:
            groups[pending.key] = pending
        first: dict[Any, int] = {}
        for i, key in enumerate(keys):
            group = groups.get(key)
            if group is not None:
                group.offer(rows[i], values[i])
                continue
            j = first.setdefault(key, i)
            if j != i:
                group = groups[key] = _Best(key, rows[j], values[j], self.readers)
                group.offer(rows[i], values[i])
        if hold is not NO_KEY:
            held = groups.pop(hold, None)
            if held is None and hold in first:
                held = _Best(hold, rows[first[hold]], values[first[hold]], self.readers)
            self.pending = held
        if not groups and hold is NO_KEY:
            return Resolved(rows, values, 0, None, len(rows))
        winners: list[tuple] = []
        winner_values: list[Value] = []
        dropped, losers = 0, []
        if pending is not None and pending.key not in first and pending.key != hold:
            first = {pending.key: -1, **first}  # it ends here, before this batch's keys
        for key, i in first.items():
            if key == hold:
                continue
            group = groups.get(key)
            if group is None:
                winners.append(rows[i])
                winner_values.append(values[i])
                continue
            winners.append(group.row)
            winner_values.append(group.value)
            dropped += group.rows - 1
            losers.append(group.losers_max)
        return Resolved(winners, winner_values, dropped, max_value(losers), len(winners) + dropped)
