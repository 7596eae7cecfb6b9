"""An independent model of chordload's documented load contract (README.md), in plain Python.

It imports nothing from the product: given the source rows of each run, it computes what the
target must hold after the run and what the run must report, from the README alone:

- the window: checkpoint ``NONE`` reads every row; ``KEY`` reads ``checkpoint <= col <= hwm``
  (the lower bound re-read on purpose; a first run also takes NULL values; several columns
  compare as SQL row values); ``PYTHON`` keeps the rows whose computed value is above the
  stored checkpoint (every row on a first run);
- duplicate keys in one extract (a NULL key part is a value, matched null-safe): the row with
  the highest checkpoint value wins, NULL lowest; the others count as ``rows_duplicate``.
  Among rows tied on it the caller picks the winner (``choose``: the differential suite
  applies the README's rule, the row whose values sort last) and the model continues from
  that choice. It also requires that the same tied rows read again (a no-op rerun) keep the
  winner they had, so nothing changes;
- SCD1: one row per key with the winner's values (inserted, changed in place, or unchanged);
  SCD2: every version of every key, each opened (and closed) by one run, one current version
  per key, a new version only when the winner differs from the current one;
- hard deletes of full loads (``scd.deletes``): SCD1 deletes the row, SCD2 ``invalidate``
  closes the current version, ``new_record`` also opens a current 'deleted' copy of it that no
  source row ever equals;
- the counts (``rows_read`` = inserted + changed + unchanged + duplicate, ``rows_deleted``)
  and the stored checkpoint (the greatest value read, never backwards, never NULL).

Values are compared as given: the caller normalises what it writes and what it reads back
(the same value in every database of a pairing compares equal here).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

NONE, KEY, PYTHON = "NONE", "KEY", "PYTHON"
IGNORE, INVALIDATE, NEW_RECORD = "ignore", "invalidate", "new_record"
T0 = dt.datetime(2026, 1, 1)


def checkpoint_seconds(row: dict[str, Any]) -> int | None:
    """The PYTHON checkpoint function of the differential suite (workers import it as
    ``tests.scd_model:checkpoint_seconds``): ``chg_at`` as whole seconds after T0."""
    value = row["chg_at"]
    if value is None:
        return None
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return int((value - T0).total_seconds())


# -- ordering ---------------------------------------------------------------------------------
def rank(value: Any) -> tuple:
    """Duplicate resolution's order: NULL below every value (element-wise in a row value)."""
    if isinstance(value, tuple):
        return (1, tuple(rank(v) for v in value))
    return (0,) if value is None else (1, value)


def complete(value: Any) -> bool:
    return value is not None and not (isinstance(value, tuple) and None in value)


def _sql_cmp(a: Any, b: Any) -> int | None:
    """SQL comparison of two values or row values: -1, 0, 1, or None (unknown). A row
    comparison goes left to right and stops at the first pair that is unequal or has a NULL
    (PostgreSQL's row constructor comparison)."""
    if isinstance(a, tuple) or isinstance(b, tuple):
        for x, y in zip(a, b, strict=True):
            if x is None or y is None:
                return None
            if x != y:
                return -1 if x < y else 1
        return 0
    if a is None or b is None:
        return None
    return -1 if a < b else (1 if a > b else 0)


def _and(a: bool | None, b: bool | None) -> bool | None:
    if a is False or b is False:
        return False
    return None if a is None or b is None else True


def _cmp_holds(a: Any, b: Any, ok: Callable[[int], bool]) -> bool | None:
    c = _sql_cmp(a, b)
    return None if c is None else ok(c)


# -- state ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Version:
    """One target row: SCD2 a version, SCD1 the key's only row (``opened`` = the run that
    last wrote it)."""

    values: tuple
    opened: int | str  # the run (its number); a str: a time no run matches (a finding)
    closed: int | str | None = None
    current: bool = True
    deleted: bool = False


@dataclass(frozen=True)
class Counts:
    read: int = 0
    inserted: int = 0
    changed: int = 0
    unchanged: int = 0
    duplicate: int = 0
    deleted: int = 0


@dataclass(frozen=True)
class Outcome:
    """What one run must do: its counts, the stored checkpoint after it, and the keys whose
    winner was a free choice among tied rows (key -> the distinct tied values)."""

    run: int
    counts: Counts
    checkpoint: Any
    ties: dict[tuple, list[tuple]] = field(default_factory=dict)


@dataclass
class Mapping:
    columns: tuple[str, ...]  # business columns, in the query's order
    keys: tuple[str, ...]
    scd_type: int = 2
    checkpoint: str = NONE  # NONE | KEY | PYTHON
    checkpoint_columns: tuple[str, ...] = ()
    function: Callable[[dict[str, Any]], Any] | None = None  # PYTHON
    deletes: str = IGNORE
    lag: int = 0  # seconds below a timestamp checkpoint, units below a number


class ScdModel:
    def __init__(self, mapping: Mapping):
        self.m = mapping
        self.key_pos = [mapping.columns.index(k) for k in mapping.keys]
        self.cp_pos = [mapping.columns.index(c) for c in mapping.checkpoint_columns]
        self.versions: dict[tuple, list[Version]] = {}
        self.checkpoint: Any = None
        self.runs = 0
        self.ties: dict[tuple, set[tuple]] = {}  # key -> the tied values its last run read

    # -- reading ------------------------------------------------------------------------------
    def key(self, values: Sequence[Any]) -> tuple:
        return tuple(values[p] for p in self.key_pos)

    def value(self, values: Sequence[Any]) -> Any:
        """The row's checkpoint value (None without a checkpoint: every row ties)."""
        m = self.m
        if m.checkpoint == PYTHON:
            assert m.function is not None
            return m.function(dict(zip(m.columns, values)))
        if m.checkpoint == KEY:
            parts = tuple(values[p] for p in self.cp_pos)
            return parts[0] if len(parts) == 1 else parts
        return None

    def hwm(self, source: Sequence[Sequence[Any]]) -> Any:
        present = [v for v in (self.value(r) for r in source) if complete(v)]
        return max(present) if present else None

    def lower(self, full: bool = False) -> Any:
        """The window's lower bound: the stored checkpoint minus the lag (on the first of
        several columns); none on a first run or with ``--full``."""
        stored = None if full else self.checkpoint
        if stored is None or not self.m.lag:
            return stored
        first = stored[0] if isinstance(stored, tuple) else stored
        if isinstance(first, dt.datetime):
            first = first - dt.timedelta(seconds=self.m.lag)
        else:
            first = first - self.m.lag
        return (first, *stored[1:]) if isinstance(stored, tuple) else first

    def window(
        self, source: Sequence[Sequence[Any]], full: bool = False
    ) -> list[tuple[int, tuple, Any]]:
        """The rows the run reads: (position in the source, values, checkpoint value)."""
        m, lower = self.m, self.lower(full)
        out = []
        if m.checkpoint == KEY:
            high = self.hwm(source)
            for i, row in enumerate(source):
                v = self.value(row)
                held = _cmp_holds(v, high, lambda c: c <= 0)
                if lower is not None:
                    held = _and(_cmp_holds(v, lower, lambda c: c >= 0), held)
                elif not complete(v):  # a first run (and --full) also takes NULL values
                    held = True
                if held is True:
                    out.append((i, tuple(row), v))
        elif m.checkpoint == PYTHON:
            for i, row in enumerate(source):
                v = self.value(row)
                if lower is None or (v is not None and v > lower):
                    out.append((i, tuple(row), v))
        else:
            out = [(i, tuple(row), None) for i, row in enumerate(source)]
        return out

    def groups(
        self, source: Sequence[Sequence[Any]], full: bool = False
    ) -> dict[tuple, list[tuple[int, tuple, Any]]]:
        """The window's rows by business key (NULL parts equal), in source order."""
        grouped: dict[tuple, list[tuple[int, tuple, Any]]] = {}
        for item in self.window(source, full):
            grouped.setdefault(self.key(item[1]), []).append(item)
        return grouped

    def current(self, key: tuple) -> Version | None:
        for version in reversed(self.versions.get(key, [])):
            if version.current:
                return version
        return None

    def live_values(self, key: tuple) -> tuple | None:
        """The values a staged row must equal to be unchanged (a 'deleted' version equals
        none)."""
        version = self.current(key)
        return None if version is None or version.deleted else version.values

    # -- one run ------------------------------------------------------------------------------
    def run(
        self,
        source: Sequence[Sequence[Any]],
        choose: Callable[[tuple, list[tuple]], int] | None = None,
        full: bool = False,
    ) -> Outcome:
        """Apply one run over ``source`` (the whole source as the run sees it). ``choose``
        picks the winner among tied rows with different values (default: the last).
        ``full``: ``run --full``, which ignores the stored checkpoint (and still stores one,
        never backwards)."""
        m = self.m
        self.runs += 1
        run = self.runs
        read = inserted = changed = unchanged = duplicate = deleted = 0
        ties: dict[tuple, list[tuple]] = {}
        loaded = []
        for key, items in self.groups(source, full).items():
            read += len(items)
            duplicate += len(items) - 1
            loaded += [v for _, _, v in items]
            top = max(rank(v) for _, _, v in items)
            tied: list[tuple] = []
            for _, values, v in items:
                if rank(v) == top and values not in tied:
                    tied.append(values)
            winner = tied[-1]
            if len(tied) > 1:
                ties[key] = tied
                live = self.live_values(key)
                if self.ties.get(key) == set(tied) and live in tied:
                    winner = live  # the same tie again: the same winner
                elif choose is not None:
                    winner = tied[choose(key, tied)]
            outcome = self._apply(key, winner, run)
            inserted += outcome == "inserted"
            changed += outcome == "changed"
            unchanged += outcome == "unchanged"
        if m.checkpoint == NONE and m.deletes != IGNORE:
            present = {self.key(row) for row in source}
            for key in list(self.versions):
                if key not in present and self._retire(key, run):
                    deleted += 1
        if m.checkpoint != NONE:
            best = [v for v in loaded if complete(v)]
            if best:
                top_value = max(best)
                if self.checkpoint is None or top_value > self.checkpoint:
                    self.checkpoint = top_value
        self.ties = {key: set(tied) for key, tied in ties.items()}
        counts = Counts(read, inserted, changed, unchanged, duplicate, deleted)
        return Outcome(run, counts, self.checkpoint, ties)

    def _apply(self, key: tuple, values: tuple, run: int) -> str:
        history = self.versions.setdefault(key, [])
        current = self.current(key)
        if self.m.scd_type == 1:
            if current is None:
                history.append(Version(values, run))
                return "inserted"
            if current.values == values:
                return "unchanged"
            history[-1] = Version(values, run)
            return "changed"
        if current is None:
            history.append(Version(values, run))
            return "inserted"
        if not current.deleted and current.values == values:
            return "unchanged"
        history[history.index(current)] = replace(current, closed=run, current=False)
        history.append(Version(values, run))
        return "changed"

    def _retire(self, key: tuple, run: int) -> bool:
        history = self.versions[key]
        current = self.current(key)
        if current is None or current.deleted:
            return False
        if self.m.scd_type == 1:
            del self.versions[key]
            return True
        history[history.index(current)] = replace(current, closed=run, current=False)
        if self.m.deletes == NEW_RECORD:
            history.append(Version(current.values, run, deleted=True))
        return True
