"""The run's frozen window and a chunk's key range, as SQL predicates with bound values.

The window is ``checkpoint <= col <= hwm``: the lower boundary is re-read on purpose (the SCD
apply is idempotent, so boundary rows cause no duplicates and ties are never lost). A first
run (no stored checkpoint) also takes rows whose checkpoint column is NULL. A chunk covers
``lower < split <= upper``; chunk 0 has no lower bound and also takes NULL split values.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.dialects.base import DialectAdapter
from shared.values import ScalarValue, decode_value, encode_value


@dataclass(frozen=True)
class Window:
    checkpoint_column: str | None = None
    lower: ScalarValue = None
    upper: ScalarValue = None

    def predicate(self, adapter: DialectAdapter) -> tuple[str, dict[str, Any]]:
        if self.checkpoint_column is None:
            return "1 = 1", {}
        col = f"src.{adapter.q(self.checkpoint_column)}"
        if self.lower is None:
            return f"({col} <= :cl_hwm OR {col} IS NULL)", {"cl_hwm": self.upper}
        return f"{col} >= :cl_from AND {col} <= :cl_hwm", {"cl_from": self.lower,
                                                          "cl_hwm": self.upper}


@dataclass(frozen=True)
class ChunkRange:
    chunk_no: int
    lower: ScalarValue = None  # exclusive; None = unbounded
    upper: ScalarValue = None  # inclusive; None = unbounded
    includes_nulls: bool = True

    def predicate(self, adapter: DialectAdapter, split_column: str) -> tuple[str, dict[str, Any]]:
        col = f"src.{adapter.q(split_column)}"
        parts, params = [], {}
        if self.lower is not None:
            parts.append(f"{col} > :cl_lo")
            params["cl_lo"] = self.lower
        if self.upper is not None:
            parts.append(f"{col} <= :cl_hi")
            params["cl_hi"] = self.upper
        if not parts:
            return "1 = 1", params
        clause = " AND ".join(parts)
        if self.includes_nulls:
            clause = f"({clause} OR {col} IS NULL)"
        return clause, params

    def to_message(self) -> dict[str, Any]:
        return {"chunk_no": self.chunk_no, "lower": encode_value(self.lower),
                "upper": encode_value(self.upper), "includes_nulls": self.includes_nulls}

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> "ChunkRange":
        return cls(message["chunk_no"], decode_value(message["lower"]),
                   decode_value(message["upper"]), message["includes_nulls"])


def ranges_from_bounds(bounds: list[ScalarValue]) -> list[ChunkRange]:
    """n sorted, distinct upper bounds -> n + 1 ranges covering everything (NULLs in chunk 0)."""
    edges: list[ScalarValue] = [None, *bounds, None]
    return [ChunkRange(i, edges[i], edges[i + 1], includes_nulls=(i == 0))
            for i in range(len(edges) - 1)]


def chunk_select(adapter: DialectAdapter, query: str, columns: list[str], window: Window,
                 split_column: str, chunk: ChunkRange) -> tuple[str, dict[str, Any]]:
    window_sql, params = window.predicate(adapter)
    range_sql, range_params = chunk.predicate(adapter, split_column)
    return (f"{adapter.wrap_query(query, columns)} WHERE {window_sql} AND {range_sql}",
            {**params, **range_params})
