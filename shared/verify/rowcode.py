"""One canonical code per value, a row hash over it, and an order-independent digest.

Two databases return one stored value as different Python objects: Decimal or float from
MariaDB, a tz-aware datetime or a naive one in UTC, ISO text for SQLite dates, memoryview
or bytes, a boolean or 0/1. Verify compares values, so each value is first brought to a
canonical, type-tagged byte string, chosen by the source column's kind (the target's
columns were created from those kinds):

- numbers: ``D`` + the exact decimal without trailing zeros or exponent (1.50 = 1.5 =
  1.5e0; 100 = 1E+2; -0 = 0); NaN and ±Inf
- booleans: ``B1`` / ``B0`` (true, 1 and '1' alike)
- dates: ``d`` + ISO date; timestamps: ``t`` + ISO timestamp, aware ones in UTC (naive
  values are taken as they are: naive means UTC in chordload)
- text ``S``, bytes ``X``, JSON ``J`` (keys sorted), NULL ``N``

A row's hash is the md5 of its codes, each length-prefixed (no two rows share an
encoding), and a range's digest is the sum of the first 64 bits of its rows' hashes modulo
2**64 with the row count: order-independent, so neither side needs ORDER BY to be digested.
"""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from shared.dialects.exact import source_text
from shared.dialects.holds import EXACT
from shared.dialects.types import TypeKind

Encoder = Callable[[Any], bytes]
MASK_64 = (1 << 64) - 1
NULL = b"N"
NUMBER_KINDS = frozenset(
    {TypeKind.SMALLINT, TypeKind.INTEGER, TypeKind.BIGINT, TypeKind.NUMERIC, TypeKind.FLOAT}
)
_TRUE_TEXT = {"1", "t", "true", "y", "yes", "on"}
_FALSE_TEXT = {"0", "f", "false", "n", "no", "off"}


_PLAIN = frozenset("0123456789.-")


def _plain(text: str) -> bytes | None:
    """A float's repr or a Decimal's str without exponent, as the Decimal path writes it
    (trailing zeros and point dropped, -0 = 0); None for anything else."""
    if not _PLAIN.issuperset(text):
        return None
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    if text in ("-0", "0", ""):
        return b"D0"
    return b"D" + text.encode()


def _number(value: Any) -> bytes:
    kind = type(value)
    if kind is int:  # the common cases first, as the Decimal path would write them
        return b"D%d" % value
    if kind is float or kind is Decimal:
        plain = _plain(repr(value) if kind is float else str(value))
        if plain is not None:
            return plain
    if isinstance(value, bool):
        return b"D1" if value else b"D0"
    if isinstance(value, float):
        if value != value:
            return b"DNaN"
        number = Decimal(repr(value))
    elif isinstance(value, (bytes, bytearray, memoryview)):
        number = Decimal(bytes(value).decode().strip())
    else:
        try:
            number = Decimal(value.strip() if isinstance(value, str) else value)
        except (decimal.InvalidOperation, TypeError, ValueError):
            return _other(value)
    if number.is_nan():
        return b"DNaN"
    if number.is_infinite():
        return b"D-Inf" if number < 0 else b"DInf"
    if number == 0:
        return b"D0"
    return b"D" + format(number.normalize(EXACT), "f").encode()  # 1E+2 -> 100


def _boolean(value: Any) -> bytes:
    """True and false, 1 and 0 and their words alike; another number (a MariaDB
    ``TINYINT(1)`` holds any) is that number."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE_TEXT:
            return b"B1"
        if text in _FALSE_TEXT:
            return b"B0"
        return _other(value)
    if isinstance(value, (bool, int, float, Decimal)) and value in (0, 1):
        return b"B1" if value else b"B0"
    return _other(value)


def _parse_moment(value: Any) -> Any:
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, str):
        text = value.strip()
        try:
            return dt.datetime.fromisoformat(text)
        except ValueError:
            return text
    return value


def _beyond(tag: bytes, value: Any) -> bytes | None:
    """A value beyond Python's range (infinity, a BC date, 24:00) by the source's text, as a
    target that holds it as text (SQLite) has it; None for any other value."""
    if (shown := source_text(value)) is not None:
        return tag + shown.encode()
    if isinstance(value, str):
        return tag + value.strip().encode()
    return None


def _date(value: Any) -> bytes:
    """A date; a timestamp other than midnight is not one (it codes as a timestamp)."""
    value = _parse_moment(value)
    if (beyond := _beyond(b"d", value)) is not None:
        return beyond
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        if value.time() != dt.time(0):
            return _timestamp(value)
        return b"d" + value.date().isoformat().encode()
    if isinstance(value, dt.date):
        return b"d" + value.isoformat().encode()
    return _other(value)


def _timestamp(value: Any) -> bytes:
    value = _parse_moment(value)
    if (beyond := _beyond(b"t", value)) is not None:
        return beyond
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        return b"t" + value.isoformat().encode()
    if isinstance(value, dt.date):
        return b"t" + dt.datetime(value.year, value.month, value.day).isoformat().encode()
    return _other(value)


def _time(value: Any) -> bytes:
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode()
    if isinstance(value, str) and source_text(value) is None:
        try:
            value = dt.time.fromisoformat(value.strip())
        except ValueError:
            pass
    if (beyond := _beyond(b"T", value)) is not None:
        return beyond
    if isinstance(value, dt.time):
        return b"T" + value.isoformat().encode()
    return _other(value)


def _json(value: Any) -> bytes:
    """JSON by its values: keys sorted, numbers exactly (``1e2`` = ``100``, but
    ``1.00000000000000000001`` is not ``1.0``)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        value = bytes(value).decode()
    if isinstance(value, str):
        try:
            value = json.loads(value, parse_float=Decimal, parse_int=Decimal)
        except ValueError:
            return b"S" + value.encode()
    return b"J" + _json_text(value).encode()


def _json_text(value: Any) -> str:
    if isinstance(value, dict):
        items = sorted(value.items())
        return "{" + ",".join(f"{json.dumps(k)}:{_json_text(v)}" for k, v in items) + "}"
    if isinstance(value, list):
        return "[" + ",".join(map(_json_text, value)) + "]"
    if isinstance(value, (int, float, Decimal)) and not isinstance(value, bool):
        return _number(value).decode()[1:]
    return json.dumps(value)


def _other(value: Any) -> bytes:
    """By the value's own type: what a column of another kind holds."""
    if isinstance(value, str):
        return b"S" + value.encode()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return b"X" + bytes(value)
    if isinstance(value, (bool, int, float, Decimal)):
        return _number(value)
    if isinstance(value, dt.datetime):
        return _timestamp(value)
    if isinstance(value, dt.date):
        return _date(value)
    if isinstance(value, dt.time):
        return _time(value)
    if isinstance(value, dt.timedelta):
        return b"V" + str(value.total_seconds()).encode()
    if isinstance(value, uuid.UUID):
        return b"S" + str(value).encode()
    if isinstance(value, (dict, list)):
        return _json(value)
    return b"O" + repr(value).encode()


def _uuid(value: Any) -> bytes:
    return b"S" + str(value).strip().lower().encode()


_BY_KIND: dict[TypeKind, Callable[[Any], bytes]] = {
    **dict.fromkeys(NUMBER_KINDS, _number),
    TypeKind.BOOLEAN: _boolean,
    TypeKind.DATE: _date,
    TypeKind.TIMESTAMP: _timestamp,
    TypeKind.TIMESTAMPTZ: _timestamp,
    TypeKind.TIME: _time,
    TypeKind.JSON: _json,
    TypeKind.UUID: _uuid,
}


def encoder(kind: TypeKind | None) -> Encoder:
    """The canonical code of a column of ``kind`` (None: by each value's own type)."""
    typed = _BY_KIND.get(kind) if kind is not None else None

    if typed is None:

        def code(value: Any) -> bytes:
            if value is None:
                return NULL
            if type(value) is str:
                return b"S" + value.encode()
            return _other(value)

        return code

    def code_typed(value: Any) -> bytes:
        return NULL if value is None else typed(value)

    return code_typed


@dataclass(frozen=True)
class RowCoder:
    """The codes and hash of rows with the given column kinds."""

    encoders: tuple[Encoder, ...]

    @classmethod
    def for_kinds(cls, kinds: Sequence[TypeKind | None]) -> RowCoder:
        return cls(tuple(encoder(k) for k in kinds))

    def codes(self, row: Sequence[Any]) -> list[bytes]:
        if len(row) != len(self.encoders):
            raise ValueError(f"a row of {len(row)} values for {len(self.encoders)} columns")
        return [code(value) for code, value in zip(self.encoders, row)]

    @staticmethod
    def hash64(codes: Sequence[bytes]) -> int:
        """The first 64 bits of the md5 of the length-prefixed codes."""
        payload = b"".join([b"%d:%b" % (len(c), c) for c in codes])
        return int.from_bytes(hashlib.md5(payload).digest()[:8], "big")


@dataclass
class Digest:
    """A range's rows as a count and an order-independent sum of 64-bit row hashes."""

    rows: int = 0
    total: int = 0

    def add(self, hash64: int) -> None:
        self.rows += 1
        self.total = (self.total + hash64) & MASK_64

    def matches(self, other: Digest) -> bool:
        return self.rows == other.rows and self.total == other.total
