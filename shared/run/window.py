"""The run's frozen window and a chunk's key range, as SQL predicates with bound values.

The window is ``checkpoint <= col <= hwm``: the lower boundary is re-read on purpose (the SCD
apply is idempotent, so boundary rows cause no duplicates and ties are never lost). A first
run (no stored checkpoint) and a full reload also take rows whose checkpoint column is NULL;
a backfill (``run --from X --to Y``) takes exactly ``X <= col <= Y``. With several checkpoint
columns the comparisons are row values, ``(c1, c2) >= (v1, v2)``, and "NULL" means any of them.

A chunk covers ``lower < split <= upper``; chunk 0 has no lower bound and also takes NULL
split values. With ``chunking.strategy: offset`` the split is the whole business key (its
bounds are rows) and chunk 0 takes every row with a NULL key part.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from shared.dialects.base import DialectAdapter
from shared.run.values import Value, decode_value, encode_value


def column_tuple(columns: str | Sequence[str] | None) -> tuple[str, ...]:
    if columns is None:
        return ()
    if isinstance(columns, str):
        return (columns,)
    return tuple(columns)


def compare(
    adapter: DialectAdapter, refs: Sequence[str], op: str, value: Value, name: str
) -> tuple[str, dict[str, Any]]:
    """``refs op value`` with ``value`` bound: a scalar for one column, a row for several."""
    if len(refs) == 1:
        if isinstance(value, tuple):
            raise ValueError(f"a row value {value!r} for the single column {refs[0]}")
        return f"{refs[0]} {op} :{name}", {name: value}
    parts = value if isinstance(value, tuple) else (None,) * len(refs)
    if len(parts) != len(refs):
        raise ValueError(f"a row of {len(parts)} values for {len(refs)} columns")
    names = [f"{name}_{i}" for i in range(len(refs))]
    return (adapter.row_compare(list(refs), op, [f":{n}" for n in names]), dict(zip(names, parts)))


def _any_null(refs: Sequence[str]) -> str:
    return " OR ".join(f"{r} IS NULL" for r in refs)


@dataclass(frozen=True)
class Window:
    checkpoint_column: str | tuple[str, ...] | None = None
    lower: Value = None  # inclusive; None = unbounded
    upper: Value = None  # inclusive (the frozen high-water mark)
    include_nulls: bool | None = None  # rows with a NULL checkpoint; default: lower is None

    @property
    def columns(self) -> tuple[str, ...]:
        return column_tuple(self.checkpoint_column)

    @property
    def takes_nulls(self) -> bool:
        return self.lower is None if self.include_nulls is None else self.include_nulls

    def predicate(self, adapter: DialectAdapter) -> tuple[str, dict[str, Any]]:
        columns = self.columns
        if not columns:
            return "1 = 1", {}
        refs = [f"src.{adapter.q(c)}" for c in columns]
        parts, params = [], {}
        if self.lower is not None:
            sql, p = compare(adapter, refs, ">=", self.lower, "cl_from")
            parts.append(sql)
            params.update(p)
        sql, p = compare(adapter, refs, "<=", self.upper, "cl_hwm")
        parts.append(sql)
        params.update(p)
        clause = " AND ".join(parts)
        if self.takes_nulls:
            clause = f"({clause} OR {_any_null(refs)})"
        return clause, params

    def to_document(self) -> dict[str, Any]:
        return {
            "columns": list(self.columns),
            "lower": encode_value(self.lower),
            "upper": encode_value(self.upper),
            "include_nulls": self.takes_nulls,
        }

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> Window:
        columns = tuple(doc["columns"])
        return cls(
            columns[0] if len(columns) == 1 else (columns or None),
            decode_value(doc["lower"]),
            decode_value(doc["upper"]),
            doc["include_nulls"],
        )


@dataclass(frozen=True)
class ChunkRange:
    chunk_no: int
    lower: Value = None  # exclusive; None = unbounded
    upper: Value = None  # inclusive; None = unbounded
    includes_nulls: bool = True

    def predicate(
        self, adapter: DialectAdapter, split_columns: str | Sequence[str]
    ) -> tuple[str, dict[str, Any]]:
        refs = [f"src.{adapter.q(c)}" for c in column_tuple(split_columns)]
        parts, params = [], {}
        if self.lower is not None:
            sql, p = compare(adapter, refs, ">", self.lower, "cl_lo")
            parts.append(sql)
            params.update(p)
        if self.upper is not None:
            sql, p = compare(adapter, refs, "<=", self.upper, "cl_hi")
            parts.append(sql)
            params.update(p)
        if not parts:
            return "1 = 1", params
        clause = " AND ".join(parts)
        if self.includes_nulls:
            clause = f"({clause} OR {_any_null(refs)})"
        elif len(refs) > 1:
            # A row comparison can hold with a NULL part ((5, NULL) > (4, 0) is true), but
            # such rows belong to chunk 0: without this they would be loaded twice.
            clause += " AND " + " AND ".join(f"{r} IS NOT NULL" for r in refs)
        return clause, params

    def to_message(self) -> dict[str, Any]:
        return {
            "chunk_no": self.chunk_no,
            "lower": encode_value(self.lower),
            "upper": encode_value(self.upper),
            "includes_nulls": self.includes_nulls,
        }

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> ChunkRange:
        return cls(
            message["chunk_no"],
            decode_value(message["lower"]),
            decode_value(message["upper"]),
            message["includes_nulls"],
        )


def ranges_from_bounds(bounds: list[Value]) -> list[ChunkRange]:
    """n sorted, distinct upper bounds -> n + 1 ranges covering everything (NULLs in chunk 0)."""
    edges: list[Value] = [None, *bounds, None]
    return [
        ChunkRange(i, edges[i], edges[i + 1], includes_nulls=(i == 0))
        for i in range(len(edges) - 1)
    ]


def chunk_select(
    adapter: DialectAdapter,
    query: str,
    columns: list[str],
    window: Window,
    split_columns: str | Sequence[str],
    chunk: ChunkRange,
    order_by: Sequence[str] = (),
    as_text: Sequence[str] = (),
    extra: Sequence[str] = (),
) -> tuple[str, dict[str, Any]]:
    """The chunk's rows of the window; ``order_by`` (the business key) makes every key's
    rows arrive together, so the loader recognises duplicate keys with one batch of memory;
    ``as_text`` columns come as the source's text of the value; ``extra`` expressions over
    ``src`` follow the columns."""
    window_sql, params = window.predicate(adapter)
    range_sql, range_params = chunk.predicate(adapter, split_columns)
    select = adapter.wrap_query(query, columns, as_text, extra)
    sql = f"{select} WHERE {window_sql} AND {range_sql}"
    if order_by:
        sql += " ORDER BY " + ", ".join(adapter.key_order(f"src.{adapter.q(c)}") for c in order_by)
    return sql, {**params, **range_params}
