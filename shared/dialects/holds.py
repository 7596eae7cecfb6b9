"""What a target can hold: values checked in Python before they are staged.

A target database that cannot hold a value does not always say so. MariaDB rounds a
``DECIMAL`` to its scale with a note, not an error, even in strict mode (and clamps out of
range values in a non-strict session); SQLite stores NaN as NULL and keeps 15 significant
digits of a numeric; PyMySQL writes a float NaN as the bare word ``nan``, which fails the
statement as a syntax error, not as a bad value. So each target adapter describes, per target
column, the values it cannot hold exactly (``DialectAdapter.value_check``), and the chunk
loader quarantines such a row before staging it: kept in ``error_row`` with a message naming
the column, the value and why, while the chunk goes on. Nothing is clamped or rounded.

What the database itself refuses (a text too long, a value out of range in a strict session)
is still found by the quarantine's bisection (``shared/scd/quarantine.py``).
"""

from __future__ import annotations

import decimal
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any, Literal

from shared.dialects.exact import SourceDate, SourceDateTime, SourceTime, source_text

Rule = Callable[[Any], "str | None"]  # why the target cannot hold the value, or None
Rules = Mapping[type, Rule]  # per value type (exact type) of one column

BEYOND_RANGE_TYPES = (SourceDate, SourceDateTime, SourceTime)
# Decimal's default context keeps 28 digits: normalize() under it rounds a longer value (a
# PostgreSQL numeric has up to 131,072 digits before the point and 16,383 after it)
EXACT = decimal.Context(prec=131_072 + 16_383, Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN)
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


class ValueCheck:
    """Per target column, rules by the value's type; a row is refused with the first rule
    that finds a problem. ``screens``: per value type, a quick test over all of a batch's
    values of that type (True: none needs its rule), so a rule that is rarely needed (text
    with a NUL character) costs one pass in C instead of a call per value; a rule made by
    ``always`` checks more than the screen does and stays."""

    def __init__(
        self,
        columns: Sequence[str],
        rules: Sequence[Rules],
        screens: Mapping[type, Callable[[list[Any]], bool]] | None = None,
    ):
        self.columns = list(columns)
        self.rules = [dict(r) for r in rules]
        self.screens = dict(screens or {})

    @classmethod
    def none(cls, columns: Sequence[str]) -> ValueCheck:
        """A target that refuses by itself what it cannot hold (PostgreSQL)."""
        return cls(columns, [{} for _ in columns])

    def add(self, columns: Iterable[str], rules: Rules) -> ValueCheck:
        """Add ``rules`` to ``columns`` (they take precedence over the column's own)."""
        for name in columns:
            self.rules[self.columns.index(name)].update(rules)
        return self

    def problem(self, row: Sequence[Any]) -> str | None:
        return self._problem(row, self._active(self.rules))

    def _active(self, rules: Sequence[Rules]) -> list[tuple[int, str, Rules]]:
        return [(i, self.columns[i], r) for i, r in enumerate(rules) if r]

    @staticmethod
    def _problem(row: Sequence[Any], active: list[tuple[int, str, Rules]]) -> str | None:
        for i, name, rules in active:
            value = row[i]
            rule = rules.get(type(value))
            if rule is not None and (why := rule(value)) is not None:
                return f"column {name!r}: {why}"
        return None

    def split(self, rows: Sequence[tuple]) -> tuple[list[tuple], list[tuple[tuple, str]]]:
        """The rows the target can hold, and the others with why not."""
        rules: Sequence[Rules] = self.rules
        passed = {
            kind
            for kind, screen in self.screens.items()
            if screen([v for row in rows for v in row if type(v) is kind])
        }
        if passed:
            rules = [
                {t: r for t, r in column.items() if t not in passed or unscreened(r)}
                for column in rules
            ]
        active = self._active(rules)
        if not active:
            return list(rows), []
        good: list[tuple] = []
        bad: list[tuple[tuple, str]] = []
        for row in rows:
            why = self._problem(row, active)
            if why is None:
                good.append(row)
            else:
                bad.append((row, why))
        return good, bad


def always(rule: Rule) -> Rule:
    """``rule``, kept when a screen passes its type (it checks more than the screen)."""
    rule.always = True  # type: ignore[attr-defined]
    return rule


def unscreened(rule: Rule) -> bool:
    return getattr(rule, "always", False)


def both(first: Rule, second: Rule) -> Rule:
    """One rule of two for the same value type: the first problem found."""

    def rule(value: Any) -> str | None:
        return first(value) or second(value)

    return rule


# -- rules shared by the adapters ------------------------------------------------------------
def _shown(value: Any) -> str:
    text = source_text(value)
    return repr(text if text is not None else value)


def beyond_range(target_type: str) -> Rules:
    """A date, timestamp or time beyond Python's range (infinity, BC, year 10000, 24:00)."""

    def rule(value: Any) -> str:
        return (
            f"{_shown(value)} cannot be held by {target_type} (infinity, a BC date, a year "
            f"after 9999 or 24:00:00); cast the column to text in the query to keep it as text"
        )

    return dict.fromkeys(BEYOND_RANGE_TYPES, rule)


def no_checkpoint_beyond_range() -> Rules:
    """A checkpoint column's value beyond Python's range: stored as the checkpoint, its
    stand-in (year 9999) would hide every later row from incremental runs."""

    def rule(value: Any) -> str:
        return (
            f"{_shown(value)} cannot be a checkpoint value (no infinity, no BC dates, years "
            f"up to 9999): the next incremental run would start there"
        )

    return dict.fromkeys(BEYOND_RANGE_TYPES, rule)


def printed_by_the_source() -> Rules:
    """For a column read as the source database's own text of its values, which the target
    (the same kind of database) parses back exactly: no rule for its text."""
    return {str: lambda _value: None}


def negative_zero(value: float) -> bool:
    return value == 0.0 and math.copysign(1.0, value) < 0


def floats_held(target: str) -> Rules:
    """NaN and infinity, and -0.0, which such a target stores as 0."""

    def rule(value: float) -> str | None:
        if negative_zero(value):
            return f"-0.0 cannot be held by {target} (it stores 0)"
        if math.isfinite(value):
            return None
        return f"{value!r} cannot be held by {target}"

    return {float: rule}


def finite_decimal(target: str) -> Rules:
    def rule(value: Decimal) -> str | None:
        if value.is_finite():
            return None
        return f"numeric {value} cannot be held by {target}"

    return {Decimal: rule}


def decimal_digits(value: Decimal) -> tuple[int, int]:
    """(digits before the point, digits after it) of a finite decimal, as written
    (``2.50`` has 2 after it; trailing zeros of the integer part count before it)."""
    _sign, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    after = max(-exponent, 0)
    before = max(len(digits) + exponent, 0)
    if all(d == 0 for d in digits):
        before = 0
    return before, after


def fits_decimal(precision: int, scale: int, target: str) -> Rules:
    """A ``DECIMAL(precision, scale)`` column: no more integer digits than
    ``precision - scale``, and no digits after the scale that are not zeros (they would be
    rounded)."""

    def rule(value: Any) -> str | None:
        if isinstance(value, float):
            if not math.isfinite(value):
                return f"{value!r} cannot be held by {target}"
            value = Decimal(repr(value))
        elif not isinstance(value, Decimal):
            value = Decimal(value)
        if not value.is_finite():
            return f"numeric {value} cannot be held by {target}"
        exact = value.normalize(EXACT) if value else Decimal(0)
        before, after = decimal_digits(exact)
        if after > scale:
            return (
                f"{value} has {after} digits after the point, {target} holds {scale} "
                f"(it would be rounded)"
            )
        if before > precision - scale:
            return (
                f"{value} has {before} digits before the point, {target} holds {precision - scale}"
            )
        return None

    return {Decimal: rule, float: rule, int: rule}


def significant_digits(value: Decimal) -> int:
    digits = value.normalize(EXACT).as_tuple().digits
    return 0 if all(d == 0 for d in digits) else len(digits)


# Text for a date or timestamp column (SQLite sources hold dates and timestamps as text; the
# PostgreSQL typed path sends PostgreSQL's own ISO text) that the target would read as
# another value: a time of day after a date (a date column drops it), a zone after a
# timestamp without one (PostgreSQL ignores it), more than six digits of a second (rounded),
# or words the database reads its own way ('today', 'now', 'epoch', day-first dates).
_MOMENT_TEXT = re.compile(
    r"\s*(?P<date>\d{4,}-\d{1,2}-\d{1,2})"
    r"(?:(?:T|\s+)(?P<time>\d{1,2}:\d{2}(?::\d{2}(?:\.(?P<fraction>\d*))?)?))?"
    r"\s*(?P<zone>[zZ]|[+-]\d{1,2}(?::?\d{2}(?::?\d{2})?)?|(?!(?:BC|AD)\b)[A-Za-z][A-Za-z0-9_/+-]*)?"
    r"(?:\s+(?:BC|AD))?\s*"
)
_INFINITE = {"infinity", "+infinity", "-infinity"}
_NO_OFFSET = {"Z", "UTC", "+00", "+00:00", "+0000", "-00", "-00:00", "-0000"}
MomentKind = Literal["date", "timestamp", "timestamptz"]


def moment_text(kind: MomentKind, target: str, offsets: bool = False) -> Rule:
    """A rule for text into a ``kind`` column of ``target``: ISO text of that kind (a date
    may carry a midnight time), microseconds at most, a zone only for ``timestamptz`` (or,
    with ``offsets``, a target that converts an offset to UTC, as chordload's MariaDB
    sessions do), and the infinities."""

    def rule(value: str) -> str | None:
        found = _MOMENT_TEXT.fullmatch(value)
        if found is None:
            if value.strip().lower() in _INFINITE:
                return None
            shape = "YYYY-MM-DD" if kind == "date" else "YYYY-MM-DD HH:MM:SS"
            return (
                f"{value!r} is not an ISO {kind} ({shape}); {target} would read it its own "
                f"way (a day-first date, 'today', 'epoch'); convert it in the query"
            )
        time, zone, fraction = found["time"], found["zone"], found["fraction"] or ""
        if kind == "date" and time and any(ch not in "0:." for ch in time):
            return f"{value!r} has a time of day, which {target} would drop"
        if len(fraction) > 6:
            return (
                f"{value!r} has {len(fraction)} digits of a second, {target} keeps 6 (it "
                f"would round)"
            )
        if zone and kind == "timestamp" and not offsets and zone.upper() not in _NO_OFFSET:
            return (
                f"{value!r} has a time zone ({zone}), which {target} would drop; load it into "
                f"a timestamp with time zone, or convert it in the query"
            )
        return None

    return rule
