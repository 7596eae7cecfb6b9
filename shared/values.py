"""Checkpoint and chunk-bound values as typed JSON.

Only JSON crosses the broker and lands in the metadata tables, but checkpoints are dates,
timestamps, numbers or strings. Each value is stored as ``{"type": ..., "value": ...}`` so it
comes back as the same Python type and binds to SQL with the right type.
"""
from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

ScalarValue = int | float | Decimal | str | dt.date | dt.datetime | bool | None


def encode_value(value: ScalarValue) -> dict[str, Any] | None:
    if value is None:
        return None
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


def decode_value(encoded: dict[str, Any] | None) -> ScalarValue:
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
    raise ValueError(f"unknown encoded value type {kind!r}")


def value_type_name(value: ScalarValue) -> str | None:
    encoded = encode_value(value)
    return encoded["type"] if encoded else None


def display_value(encoded: dict[str, Any] | None) -> str:
    return "-" if encoded is None else str(encoded["value"])


def max_value(values: list[ScalarValue]) -> ScalarValue:
    """The maximum of non-NULL values, or None. Mixed naive/aware datetimes are refused."""
    present = [v for v in values if v is not None]
    return max(present) if present else None
