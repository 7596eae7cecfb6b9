"""Checkpoint and chunk-bound values as typed JSON.

Only JSON crosses the broker and lands in the metadata tables, but checkpoints are dates,
timestamps, numbers or strings. Each value is stored as ``{"type": ..., "value": ...}`` so it
comes back as the same Python type and binds to SQL with the right type. A multi-column
checkpoint or a composite chunk bound is a tuple, stored as ``{"type": "row", "value":
[<typed value>, ...]}``.

Also here: the arithmetic on such values that planning needs (a checkpoint minus its lag,
equal strides between a minimum and a maximum) and reading a value typed on the command line.
"""

from __future__ import annotations

import datetime as dt
import math
import uuid
from decimal import Decimal
from typing import Any

ScalarValue = int | float | Decimal | str | dt.date | dt.datetime | bool | None
Value = ScalarValue | tuple  # a tuple: one value per column of a multi-column checkpoint

_UTC = dt.UTC


def encode_value(value: Value) -> dict[str, Any] | None:
    if value is None:
        return None
    if isinstance(value, tuple):
        return {"type": "row", "value": [encode_value(v) for v in value]}
    if isinstance(value, bool):
        return {"type": "bool", "value": value}
    if isinstance(value, int):
        return {"type": "int", "value": value}
    if isinstance(value, float):
        return {"type": "float", "value": value}
    if isinstance(value, Decimal):
        return {"type": "decimal", "value": str(value)}
    if isinstance(value, dt.datetime):
        return {"type": "datetime", "value": value.isoformat()}
    if isinstance(value, dt.date):
        return {"type": "date", "value": value.isoformat()}
    if isinstance(value, str):
        return {"type": "str", "value": value}
    raise TypeError(f"cannot use a {type(value).__name__} value as a checkpoint or split bound")


def decode_value(encoded: dict[str, Any] | None) -> Value:
    if encoded is None:
        return None
    kind, raw = encoded["type"], encoded["value"]
    if kind in ("bool", "int", "float", "str"):
        return raw
    if kind == "decimal":
        return Decimal(raw)
    if kind == "datetime":
        return dt.datetime.fromisoformat(raw)
    if kind == "date":
        return dt.date.fromisoformat(raw)
    if kind == "row":
        return tuple(decode_value(v) for v in raw)
    raise ValueError(f"unknown encoded value type {kind!r}")


def value_type_name(value: Value) -> str | None:
    encoded = encode_value(value)
    return encoded["type"] if encoded else None


def plain_value(encoded: dict[str, Any] | None) -> Any:
    """The JSON-friendly value without its type tag (a row becomes a list)."""
    if encoded is None:
        return None
    if encoded["type"] == "row":
        return [plain_value(v) for v in encoded["value"]]
    return encoded["value"]


def display_value(encoded: dict[str, Any] | None) -> str:
    if encoded is None:
        return "-"
    if encoded["type"] == "row":
        return (
            "("
            + ", ".join("NULL" if v is None else display_value(v) for v in encoded["value"])
            + ")"
        )
    return str(encoded["value"])


def _complete(value: Value) -> bool:
    return value is not None and not (isinstance(value, tuple) and any(v is None for v in value))


def max_value(values: list[Value]) -> Value:
    """The maximum of non-NULL values, or None. Rows with a NULL part are left out (SQL's row
    comparison cannot order them either), so a checkpoint never passes a row it did not
    compare. Mixed naive/aware datetimes are refused."""
    # Any: the values are of one comparable type at runtime, which the Value union cannot say
    present: list[Any] = [v for v in values if _complete(v)]
    return max(present) if present else None


def same_shape(a: Value, b: Value) -> bool:
    """Whether two checkpoint values can be compared: both scalars, or rows of one length."""
    if isinstance(a, tuple) or isinstance(b, tuple):
        return isinstance(a, tuple) and isinstance(b, tuple) and len(a) == len(b)
    return True


def rank(value: Value) -> tuple:
    """A sort key in which NULL (and a row with NULL parts) ranks below every value."""
    if value is None:
        return (0,)
    if isinstance(value, tuple):
        return (1, tuple(rank(v) for v in value))
    return (1, value)


# -- ISO text (SQLite keeps dates and timestamps as text) ------------------------------------
def _parse_iso_text(text: str) -> tuple[dt.date | dt.datetime, str] | None:
    """An ISO date or timestamp held as text, and the separator to write it back with."""
    try:
        if len(text) == 10:
            return dt.date.fromisoformat(text), ""
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed, text[10] if len(text) > 10 else " "


def _format_like(value: dt.date | dt.datetime, sep: str) -> str:
    return value.isoformat(sep) if isinstance(value, dt.datetime) else value.isoformat()


# -- lag --------------------------------------------------------------------------------------
def minus_lag(value: Value, lag: float) -> Value:
    """``value - lag``: seconds for timestamps, days for dates (rounded up), units for numbers.
    A row (multi-column checkpoint) moves on its first column. Raises TypeError for values
    that have no such arithmetic (text that is not an ISO date or timestamp)."""
    if not lag or value is None:
        return value
    if isinstance(value, tuple):
        return (minus_lag(value[0], lag), *value[1:])
    if isinstance(value, bool):
        raise TypeError("a boolean checkpoint has no lag")
    if isinstance(lag, float) and lag.is_integer():
        lag = int(lag)
    if isinstance(value, int):
        return value - lag
    if isinstance(value, Decimal):
        return value - Decimal(str(lag))
    if isinstance(value, float):
        return value - lag
    if isinstance(value, dt.datetime):
        return value - dt.timedelta(seconds=lag)
    if isinstance(value, dt.date):
        return value - dt.timedelta(days=math.ceil(lag))
    if isinstance(value, str):
        parsed = _parse_iso_text(value)
        if parsed is not None:
            lagged = minus_lag(parsed[0], lag)
            assert isinstance(lagged, dt.date)  # a date (or datetime) minus a timedelta
            return _format_like(lagged, parsed[1])
    raise TypeError(
        f"a checkpoint value {value!r} ({type(value).__name__}) has no lag "
        f"arithmetic; lag needs a number, date or timestamp"
    )


# -- equal strides (chunking.strategy: range) -------------------------------------------------
def stride_bounds(low: Any, high: Any, parts: int) -> list[Any]:
    """``parts - 1`` upper bounds that cut ``[low, high]`` into equal strides, for numbers,
    dates and timestamps (also ISO text). Raises TypeError for other values."""
    if low is None or high is None or parts <= 1:
        return []
    if isinstance(low, str) and isinstance(high, str):
        lo, hi = _parse_iso_text(low), _parse_iso_text(high)
        if lo is None or hi is None or type(lo[0]) is not type(hi[0]):
            raise TypeError(f"text values ({low!r} .. {high!r}) have no equal strides")
        return [_format_like(v, lo[1]) for v in stride_bounds(lo[0], hi[0], parts)]
    if isinstance(low, bool) or type(low) is not type(high):
        raise TypeError(f"values of type {type(low).__name__} have no equal strides")
    if isinstance(low, int):
        raw = [low + (high - low) * i // parts for i in range(1, parts)]
    elif isinstance(low, (float, Decimal, dt.datetime)):
        raw = [low + (high - low) * i / parts for i in range(1, parts)]
    elif isinstance(low, dt.date):
        days = (high - low).days
        raw = [low + dt.timedelta(days=days * i // parts) for i in range(1, parts)]
    else:
        raise TypeError(f"values of type {type(low).__name__} have no equal strides")
    bounds: list[Any] = []
    for value in raw:
        if value < high and (not bounds or value > bounds[-1]):
            bounds.append(value)
    return bounds


# -- values typed on the command line (run --from X --to Y) -----------------------------------
def parse_loose(text: str) -> ScalarValue:
    """A command-line value with nothing to go by: integer, decimal, date, timestamp, text."""
    for parse in (int, Decimal, dt.date.fromisoformat, dt.datetime.fromisoformat):
        try:
            return parse(text)
        except (ValueError, ArithmeticError):
            continue
    return text


def coerce_like(text: str, example: Value) -> Value:
    """``text`` read as a value of the same type as ``example`` (a value from the source or
    the stored checkpoint). A row takes comma-separated parts. Raises ValueError."""
    if isinstance(example, tuple):
        parts = [p.strip() for p in text.split(",")]
        if len(parts) != len(example):
            raise ValueError(f"expected {len(example)} comma-separated values, got {len(parts)}")
        return tuple(coerce_like(p, e) for p, e in zip(parts, example))
    text = text.strip()
    if example is None:
        return parse_loose(text)
    if isinstance(example, bool):
        if text.lower() not in ("true", "false", "1", "0"):
            raise ValueError("expected true or false")
        return text.lower() in ("true", "1")
    if isinstance(example, int):
        return int(text)
    if isinstance(example, Decimal):
        try:
            return Decimal(text)
        except ArithmeticError:
            raise ValueError("expected a number") from None
    if isinstance(example, float):
        return float(text)
    if isinstance(example, dt.datetime):
        value = dt.datetime.fromisoformat(text)
        if example.tzinfo is not None and value.tzinfo is None:
            return value.replace(tzinfo=_UTC)
        if example.tzinfo is None and value.tzinfo is not None:
            return value.astimezone(_UTC).replace(tzinfo=None)
        return value
    if isinstance(example, dt.date):
        return dt.date.fromisoformat(text)
    return text


def json_safe(value: Any) -> Any:
    """A source value as JSON can hold it (for error rows): text for dates, decimals, UUIDs,
    hex for bytes."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)  # JSON has no NaN or infinity: 'nan', 'inf', '-inf'
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    original = getattr(value, "source_text", None)  # infinity, a BC date (dialects/exact.py)
    if isinstance(original, str):
        return original
    if isinstance(value, (dt.date, dt.datetime, dt.time)):
        return value.isoformat()
    if isinstance(value, (Decimal, uuid.UUID)):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    return str(value)
