"""The run's window and the chunks' key ranges, evaluated as SQL on in-memory SQLite."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, text

from shared.dialects import adapter_for
from shared.run.window import (
    ChunkRange,
    Window,
    chunk_select,
    column_tuple,
    compare,
    ranges_from_bounds,
)

SMALL = st.integers(-6, 6)
OPTIONAL = st.one_of(st.none(), SMALL)


class Source:
    """An in-memory SQLite table ``src_t(id, k1, k2, c)`` and its adapter."""

    def __init__(self, rows: list[tuple]):
        self.engine = create_engine("sqlite://")
        self.adapter = adapter_for(self.engine)
        self.conn = self.engine.connect()
        self.conn.execute(
            text("CREATE TABLE src_t (id INTEGER, k1 INTEGER, k2 INTEGER, c INTEGER)")
        )
        if rows:
            self.conn.execute(
                text("INSERT INTO src_t VALUES (:id, :k1, :k2, :c)"),
                [dict(zip(("id", "k1", "k2", "c"), (i, *row))) for i, row in enumerate(rows)],
            )

    def ids(self, window: Window, split, chunk: ChunkRange) -> list[int]:
        sql, params = chunk_select(
            self.adapter, "SELECT * FROM src_t", ["id", "k1", "k2", "c"], window, split, chunk
        )
        return [row[0] for row in self.conn.execute(text(sql), params)]

    def where(self, clause: str, params: dict) -> list[int]:
        sql = f"SELECT src.id FROM (SELECT * FROM src_t) src WHERE {clause}"
        return [row[0] for row in self.conn.execute(text(sql), params)]

    def close(self):
        self.conn.close()
        self.engine.dispose()


def sql_lt(a: tuple, b: tuple):
    """SQL's three-valued ``a < b`` for rows (a row compares part by part); None = unknown."""
    if not a:
        return False
    if a[0] is None or b[0] is None:
        first_lt, first_eq = None, None
    else:
        first_lt, first_eq = a[0] < b[0], a[0] == b[0]
    rest = sql_lt(a[1:], b[1:])
    return sql_or(first_lt, sql_and(first_eq, rest))


def sql_eq(a: tuple, b: tuple):
    result = True
    for x, y in zip(a, b):
        result = sql_and(result, None if x is None or y is None else x == y)
    return result


def sql_and(x, y):
    if x is False or y is False:
        return False
    return None if x is None or y is None else True


def sql_or(x, y):
    if x is True or y is True:
        return True
    return None if x is None or y is None else False


def sql_le(a: tuple, b: tuple):
    return sql_or(sql_lt(a, b), sql_eq(a, b))


def as_row(value) -> tuple:
    return value if isinstance(value, tuple) else (value,)


def model_window(window: Window, row: tuple) -> bool:
    """Whether a checkpoint row ``row`` is in ``window``, by SQL's rules."""
    if not window.columns:
        return True
    upper = as_row(window.upper) if window.upper is not None else (None,) * len(row)
    clause = sql_le(row, upper)
    if window.lower is not None:
        clause = sql_and(sql_le(as_row(window.lower), row), clause)
    if window.takes_nulls:
        clause = sql_or(clause, any(v is None for v in row))
    return clause is True


# -- the window ---------------------------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(
    st.lists(OPTIONAL, max_size=25),
    OPTIONAL,
    OPTIONAL,
    st.sampled_from([None, True, False]),
)
def test_window_predicate_on_one_column_matches_the_contract(cs, lower, upper, nulls):
    """One column: lower <= c <= upper, plus NULL rows when the window takes them."""
    source = Source([(None, None, c) for c in cs])
    try:
        window = Window("c", lower, upper, nulls)
        got = sorted(source.where(*window.predicate(source.adapter)))
        want = [i for i, c in enumerate(cs) if model_window(window, (c,))]
        assert got == want
        takes = lower is None if nulls is None else nulls
        assert want == [
            i
            for i, c in enumerate(cs)
            if (c is None and takes)
            or (
                c is not None and upper is not None and c <= upper and (lower is None or lower <= c)
            )
        ]
    finally:
        source.close()


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(OPTIONAL, OPTIONAL), max_size=25),
    st.one_of(st.none(), st.tuples(SMALL, SMALL)),
    st.one_of(st.none(), st.tuples(SMALL, SMALL)),
    st.sampled_from([None, True, False]),
)
def test_window_predicate_on_two_columns_compares_row_values(cs, lower, upper, nulls):
    """Several columns compare as row values with SQL's NULL rules; any NULL part is NULL."""
    source = Source([(c1, c2, None) for c1, c2 in cs])
    try:
        window = Window(("k1", "k2"), lower, upper, nulls)
        got = sorted(source.where(*window.predicate(source.adapter)))
        assert got == [i for i, row in enumerate(cs) if model_window(window, row)]
    finally:
        source.close()


def test_window_without_a_checkpoint_takes_everything():
    """No checkpoint column: the window is every row, with no parameters."""
    engine = create_engine("sqlite://")
    assert Window().predicate(adapter_for(engine)) == ("1 = 1", {})


@settings(max_examples=50)
@given(
    st.one_of(st.none(), st.just("c"), st.just(("a", "b"))).flatmap(
        lambda cols: st.tuples(
            st.just(cols),
            *(
                [st.one_of(st.none(), st.tuples(SMALL, st.dates()))] * 2
                if isinstance(cols, tuple)
                else [st.one_of(st.none(), SMALL, st.text(max_size=3), st.dates())] * 2
            ),
            st.sampled_from([None, True, False]),
        )
    )
)
def test_window_document_round_trip(args):
    """A window read back from its JSON document gives the same SQL and parameters."""
    window = Window(*args)
    back = Window.from_document(json.loads(json.dumps(window.to_document())))
    assert back.columns == window.columns
    assert (back.lower, back.upper, back.takes_nulls) == (
        window.lower,
        window.upper,
        window.takes_nulls,
    )
    adapter = adapter_for(create_engine("sqlite://"))
    if window.columns:
        assert back.predicate(adapter) == window.predicate(adapter)


def test_compare_refuses_a_row_for_one_column_and_a_row_of_the_wrong_length():
    """A row value for a single column, or of another length than the columns, is an error."""
    adapter = adapter_for(create_engine("sqlite://"))
    with pytest.raises(ValueError, match="single column"):
        compare(adapter, ["a"], "<=", (1, 2), "x")
    with pytest.raises(ValueError, match="a row of 3 values for 2 columns"):
        compare(adapter, ["a", "b"], "<=", (1, 2, 3), "x")
    assert column_tuple(None) == () and column_tuple("a") == ("a",)


# -- chunk ranges -------------------------------------------------------------------------------
@settings(max_examples=50)
@given(st.lists(SMALL, unique=True).map(sorted))
def test_ranges_from_bounds_are_contiguous_and_only_chunk_0_takes_nulls(bounds):
    """n bounds make n + 1 contiguous ranges, open at both ends; only chunk 0 takes NULLs."""
    ranges = ranges_from_bounds(bounds)
    assert [r.chunk_no for r in ranges] == list(range(len(bounds) + 1))
    assert ranges[0].lower is None and ranges[-1].upper is None
    assert [r.upper for r in ranges[:-1]] == bounds
    assert [r.lower for r in ranges[1:]] == bounds
    assert [r.includes_nulls for r in ranges] == [True] + [False] * len(bounds)


@settings(max_examples=50)
@given(
    st.integers(0, 500),
    st.one_of(st.none(), SMALL, st.tuples(SMALL, st.none()), st.text(max_size=4)),
    st.one_of(st.none(), SMALL, st.tuples(SMALL, SMALL), st.dates()),
    st.booleans(),
)
def test_chunk_range_message_round_trip(no, lower, upper, nulls):
    """A chunk range survives its JSON message (what the broker carries) unchanged."""
    chunk = ChunkRange(no, lower, upper, nulls)
    assert ChunkRange.from_message(json.loads(json.dumps(chunk.to_message()))) == chunk


def windows_for(columns):
    """Windows on the checkpoint column ``c`` (or none): incremental, full, backfill."""
    return st.one_of(
        st.just(Window()),
        st.builds(Window, st.just(columns), OPTIONAL, SMALL, st.sampled_from([None, True, False])),
    )


def assert_exactly_one_chunk(source: Source, window: Window, split, bounds) -> None:
    everything = ChunkRange(0)
    in_window = Counter(source.ids(window, split, everything))
    ranges = ranges_from_bounds(bounds)
    taken = Counter()
    for chunk in ranges:
        taken.update(source.ids(window, split, chunk))
    twice = {i: n for i, n in taken.items() if n > 1}
    assert not twice, f"rows in more than one chunk: {twice}"
    assert taken == in_window, "every row of the window is in a chunk"


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(OPTIONAL, OPTIONAL), max_size=25),
    st.lists(SMALL, unique=True, max_size=6).map(sorted),
    windows_for("c"),
)
def test_every_row_of_the_window_is_in_exactly_one_chunk_single_column_split(rows, bounds, window):
    """One split column: every window row, NULL keys included, is in exactly one chunk."""
    source = Source([(k, None, c) for k, c in rows])
    try:
        assert_exactly_one_chunk(source, window, "k1", bounds)
    finally:
        source.close()


# the breach this guards (fixed in ChunkRange.predicate): key (1, NULL) was in chunk 0 (a NULL
# key part) and in chunk 1 too, since (1, NULL) > (0, 0) is true by its first part
@example(rows=[(1, None, None)], bounds=[(0, 0)], window=Window())
@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(OPTIONAL, OPTIONAL, OPTIONAL), max_size=25),
    st.lists(st.tuples(SMALL, SMALL), unique=True, max_size=6).map(sorted),
    windows_for("c"),
)
def test_every_row_is_in_exactly_one_chunk_offset_split_with_nulls_anywhere(rows, bounds, window):
    """Offset split, NULLs in any key part: every window row is in exactly one chunk."""
    source = Source(rows)
    try:
        assert_exactly_one_chunk(source, window, ["k1", "k2"], bounds)
    finally:
        source.close()


def test_chunk_select_orders_by_the_key_and_binds_window_and_range():
    """chunk_select reads the window's rows of one chunk, ordered by the business key."""
    source = Source([(3, None, 1), (1, None, 2), (2, None, 9), (None, None, 1)])
    try:
        window = Window("c", 1, 5)
        sql, params = chunk_select(
            source.adapter,
            "SELECT * FROM src_t",
            ["id", "k1"],
            window,
            "k1",
            ChunkRange(1, 0, 3, False),
            order_by=["k1"],
        )
        assert sql.endswith('ORDER BY src."k1"')
        assert params == {"cl_from": 1, "cl_hwm": 5, "cl_lo": 0, "cl_hi": 3}
        assert list(source.conn.execute(text(sql), params)) == [(1, 1), (0, 3)]
    finally:
        source.close()
