"""Duplicate business keys: which row of a key wins, within a batch and across batches.

The rule: the highest checkpoint value wins (NULL lowest), ties go to the row whose values
sort last in the canonical order (``row_order``), whatever order the rows arrive in and
however the chunk is cut into batches. The loader cuts batches so that no key's rows are
split (``whole_keys``); a key longer than a batch is held back by the resolver until it ends,
so every key is written once, by its winner."""

from __future__ import annotations

import datetime as dt
import math
import random
import uuid
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.chunk.batches import LineCutter, RowCutter, whole_keys
from shared.chunk.duplicates import (
    NO_KEY,
    DuplicateResolver,
    checkpoint_order,
    row_order,
    value_order,
)
from shared.run.values import rank


def resolve(load: DuplicateResolver, rows, values, hold=NO_KEY):
    resolved = load.resolve(rows, values, hold)
    return resolved.rows, resolved.dropped, resolved.read


def test_duplicate_resolution_order():
    """Highest checkpoint wins, NULL lowest; ties go to the row that sorts last (here the
    later letter, wherever it arrives); a held key meets its next rows before it is written."""
    load = DuplicateResolver([0])
    rows = [
        (1, "a", 5),
        (1, "b", 7),
        (1, "c", 6),
        (2, "a", None),
        (2, "b", 1),
        (3, "b", 4),
        (3, "a", 4),
        (4, "a", 2),
    ]
    winners, dropped, read = resolve(load, rows, [r[2] for r in rows], hold=4)
    assert (winners, dropped, read) == ([(1, "b", 7), (2, "b", 1), (3, "b", 4)], 4, 7)
    assert load.pending is not None and load.pending.row == (4, "a", 2)
    # key 4 goes on: the held row meets it first, ties go to the row that sorts last
    later = [(4, "b", 2), (5, "a", 1), (5, "a", 0), (6, "z", None)]
    winners, dropped, read = resolve(load, later, [r[2] for r in later])
    assert (winners, dropped, read) == ([(4, "b", 2), (5, "a", 1), (6, "z", None)], 2, 5)
    assert load.pending is None
    # a key that fills whole batches is carried from batch to batch, losers and all
    for batch in ([(7, "c", -1)], [(7, "d", 9)], [(7, "a", 9)]):
        assert resolve(load, batch, [batch[0][2]], hold=7) == ([], 0, 0)
    winners, dropped, read = resolve(load, [(8, "a", 1)], [1])
    assert (winners, dropped, read) == ([(7, "d", 9), (8, "a", 1)], 2, 4)


def test_a_held_key_with_no_rows_in_the_next_batch_stays_held():
    """A batch whose rows all leave the window (PYTHON checkpoint) keeps the held key."""
    load = DuplicateResolver([0])
    resolve(load, [(1, "a", 1)], [1], hold=1)
    assert resolve(load, [], [], hold=1) == ([], 0, 0)
    assert resolve(load, [(1, "b", 0)], [0]) == ([(1, "a", 1)], 1, 2)


# -- the model ----------------------------------------------------------------------------------
# A chunk's rows as the loader reads them: grouped by business key (ORDER BY the key), each
# row (key, arrival number, checkpoint value), cut into batches at arbitrary points.
keys_strategy = st.one_of(
    st.lists(st.one_of(st.none(), st.integers(0, 30)), unique=True, min_size=1, max_size=8).map(
        lambda ks: [(k,) for k in ks]
    ),
    st.lists(
        st.tuples(st.one_of(st.none(), st.integers(0, 4)), st.one_of(st.none(), st.integers(0, 4))),
        unique=True,
        min_size=1,
        max_size=8,
    ),
)


@st.composite
def chunks(draw, checkpoint=True):
    """(key width, rows in key order, the same rows cut into batches)."""
    keys = draw(keys_strategy)
    values = st.one_of(st.none(), st.integers(0, 3)) if checkpoint else st.none()
    rows = []
    for key in sorted(keys, key=lambda k: tuple(rank(p) for p in k)):
        for _ in range(draw(st.integers(1, 5))):
            rows.append((*key, len(rows), draw(values)))
    cuts = sorted(draw(st.sets(st.integers(1, max(len(rows) - 1, 1)), max_size=len(rows))))
    cuts = [c for c in cuts if c < len(rows)]
    edges = [0, *cuts, len(rows)]
    return len(keys[0]), rows, [rows[a:b] for a, b in zip(edges, edges[1:])]


def model_winners(width: int, rows: list[tuple]) -> dict:
    """Per key: the row with the highest checkpoint value by rank (NULL lowest), ties to the
    later row (the arrival number is in the row, so the later row also sorts last)."""
    winners: dict = {}
    for row in rows:
        key = row[0] if width == 1 else row[:width]
        best = winners.get(key)
        if best is None or rank(row[-1]) >= rank(best[-1]):
            winners[key] = row
    return winners


def rule_winners(width: int, rows: list[tuple]) -> dict:
    """The documented rule: the greatest (checkpoint order, row order)."""
    winners: dict = {}
    for row in rows:
        key = row[0] if width == 1 else row[:width]
        best = winners.get(key)
        if best is None or (checkpoint_order(row[-1]), row_order(row)) > (
            checkpoint_order(best[-1]),
            row_order(best),
        ):
            winners[key] = row
    return winners


def feed(width: int, batches: list[list[tuple]], limit: int | None = None):
    """Run the batches through ``whole_keys`` and a resolver as the loader does: every
    winner is written once. Returns (target, dropped, read)."""
    resolver = DuplicateResolver(list(range(width)))
    limit = limit or max(len(b) for b in batches)
    target: dict = {}
    dropped = read = 0
    for batch, whole in whole_keys(iter(batches), RowCutter(resolver.key), limit):
        hold = NO_KEY if whole else resolver.key(batch[-1])
        resolved = resolver.resolve(batch, [row[-1] for row in batch], hold)
        for row in resolved.rows:
            key = resolver.key(row)
            assert key not in target, f"{row}: its key was written before"
            target[key] = row
        assert all(r in batch or r == resolved.rows[0] for r in resolved.rows)
        dropped += resolved.dropped
        read += resolved.read
    assert resolver.pending is None
    return target, dropped, read


@settings(max_examples=200)
@given(chunks())
def test_resolution_matches_the_model_across_any_batch_boundaries(chunk):
    """Any batching: per key the one write is the model's winner; duplicates = rows - keys."""
    width, rows, batches = chunk
    target, dropped, read = feed(width, batches)
    assert target == model_winners(width, rows) == rule_winners(width, rows)
    assert dropped == len(rows) - len(target)
    assert read == len(rows)


@settings(max_examples=200)
@given(chunks(), st.integers(1, 6), st.randoms(use_true_random=False))
def test_the_winner_does_not_depend_on_arrival_order_or_batch_size(chunk, size, rnd):
    """Rows of a key in any order, batches of any size: the same winners."""
    width, rows, _ = chunk
    rows = [r[:width] + (0,) + r[width + 1 :] for r in rows]  # no arrival number: true ties
    groups: dict = {}
    for row in rows:
        groups.setdefault(row[:width], []).append(row)
    shuffled = []
    for group in groups.values():
        rnd.shuffle(group)
        shuffled += group
    batches = [shuffled[i : i + size] for i in range(0, len(shuffled), size)]
    target, dropped, read = feed(width, batches, limit=size)
    assert target == rule_winners(width, rows)
    assert dropped == len(rows) - len(target) and read == len(rows)


@settings(max_examples=50)
@given(chunks(checkpoint=False))
def test_without_a_checkpoint_the_row_that_sorts_last_wins(chunk):
    """With no checkpoint every row ties: the row with the greatest values wins (here the
    last to arrive, as the arrival number is part of the row)."""
    width, rows, batches = chunk
    target, dropped, _ = feed(width, batches)
    last = {}
    for row in rows:
        last[row[0] if width == 1 else row[:width]] = row
    assert target == last
    assert dropped == len(rows) - len(last)


@settings(max_examples=50)
@given(chunks())
def test_one_batch_writes_every_key_once(chunk):
    """A chunk read in one batch writes each key once, every loser dropped."""
    width, rows, _ = chunk
    resolver = DuplicateResolver(list(range(width)))
    resolved = resolver.resolve(rows, [r[-1] for r in rows])
    winners = model_winners(width, rows)
    assert sorted(resolved.rows, key=lambda r: r[width]) == sorted(
        winners.values(), key=lambda r: r[width]
    )
    assert resolved.dropped == len(rows) - len(winners)
    assert resolved.read == len(rows)


def test_values_that_do_not_compare_are_ordered_by_kind():
    """Checkpoint values of types Python cannot order: text sorts above numbers, whichever
    arrives last."""
    for rows in ([(1, 5), (1, "x")], [(1, "x"), (1, 5)]):
        load = DuplicateResolver([0])
        assert resolve(load, rows, [r[1] for r in rows]) == ([(1, "x")], 1, 2)


def test_unhashable_keys_are_compared_by_their_text():
    """A key of an unhashable type (a JSON column) is still recognised as one key."""
    load = DuplicateResolver([0])
    rows = [({"a": 1}, 1), ({"a": 1}, 2), ({"a": 2}, 0)]
    assert resolve(load, rows, [1, 2, 0]) == ([({"a": 1}, 2), ({"a": 2}, 0)], 1, 3)


def test_dropped_max_and_read_count_the_settled_rows():
    load = DuplicateResolver([0])
    resolved = load.resolve([(1, 5), (1, 9), (2, 1), (2, 3)], [5, 9, 1, 3], hold=2)
    assert (resolved.rows, resolved.dropped, resolved.dropped_max, resolved.read) == (
        [(1, 9)],
        1,
        5,
        2,
    )
    resolved = load.resolve([(3, 0)], [0])
    assert (resolved.rows, resolved.dropped, resolved.dropped_max, resolved.read) == (
        [(2, 3), (3, 0)],
        1,
        1,
        3,
    )


# -- the canonical order ----------------------------------------------------------------------
UTC, CET = dt.UTC, dt.timezone(dt.timedelta(hours=1))
SAMPLES = [
    None,
    True,
    False,
    0,
    -1,
    1,
    1.0,
    -0.0,
    0.0,
    1.5,
    math.inf,
    -math.inf,
    math.nan,
    Decimal("1"),
    Decimal("1.0"),
    Decimal("1.00"),
    Decimal("NaN"),
    Decimal("-Infinity"),
    "",
    "a",
    "B",
    "ä",
    b"",
    b"\x00",
    memoryview(b"\x01"),
    bytearray(b"\x02"),
    dt.date(2024, 1, 1),
    dt.datetime(2024, 1, 1),
    dt.datetime(2024, 1, 1, fold=1),
    dt.datetime(2024, 1, 1, tzinfo=UTC),
    dt.datetime(2024, 1, 1, 1, tzinfo=CET),
    dt.datetime.min,
    dt.datetime.max.replace(tzinfo=CET),
    dt.time(12),
    dt.time(12, tzinfo=UTC),
    dt.time(13, tzinfo=CET),
    dt.timedelta(days=-1),
    dt.timedelta(0),
    uuid.UUID(int=0),
    uuid.UUID(int=2**128 - 1),
    {"a": 1, "b": [1, 2]},
    {"b": [1, 2], "a": 1},
    [1, "x", None],
    [Decimal("1.5"), dt.date(2024, 1, 1), b"x"],
    (1, 2),
    {1: "a", "1": "b"},
    complex(1, 2),
]


def test_every_kind_of_value_is_ordered_without_error():
    """Any two values a driver returns compare; the sorted order is the same whatever the
    input order; only the very same values get equal keys."""
    expected = sorted(SAMPLES, key=value_order)
    for seed in range(20):
        shuffled = list(SAMPLES)
        random.Random(seed).shuffle(shuffled)
        assert [value_order(v) for v in sorted(shuffled, key=value_order)] == [
            value_order(v) for v in expected
        ]
    keys = [value_order(v) for v in SAMPLES]
    equal = {(i, j) for i, a in enumerate(keys) for j, b in enumerate(keys) if i < j and a == b}
    named = {(repr(SAMPLES[i]), repr(SAMPLES[j])) for i, j in equal}
    # the same JSON document with its keys in another order is the same value
    assert named == {("{'a': 1, 'b': [1, 2]}", "{'b': [1, 2], 'a': 1}")}


def test_the_order_within_each_kind():
    order = value_order
    assert order(None) < order(False) < order(True) < order(-math.inf) < order(-1)
    assert order(-1) < order(0) < order(Decimal("0.5")) < order(1) < order(math.inf)
    assert order(math.inf) < order(math.nan) < order("")  # NaN above every number
    assert order(1) != order(1.0) != order(Decimal("1.00"))  # equal, not the same
    assert order(-0.0) != order(0.0)
    assert order("a") < order("b") < order(b"")
    assert order(b"ab") == order(memoryview(b"ab")) == order(bytearray(b"ab"))
    aware = dt.datetime(2024, 1, 1, 12, tzinfo=UTC)
    assert order(dt.datetime(2024, 1, 1, 13, tzinfo=CET)) != order(aware)  # one instant
    assert order(dt.datetime(2024, 1, 1, 12, 30, tzinfo=CET)) < order(aware)  # by instant
    assert order(dt.date(2024, 1, 2)) < order(dt.datetime(2024, 1, 1)) < order(aware)
    assert order(dt.timedelta(seconds=-1)) < order(dt.timedelta(0))
    assert order(uuid.UUID(int=1)) < order(uuid.UUID(int=2))


def test_checkpoint_values_that_are_equal_tie():
    """Equal checkpoint values tie (the rows then decide), however they are spelled."""
    assert (
        checkpoint_order(Decimal("1.0"))
        == checkpoint_order(Decimal("1.00"))
        == (checkpoint_order(1))
    )
    noon = dt.datetime(2024, 1, 1, 12, tzinfo=UTC)
    assert checkpoint_order(noon) == checkpoint_order(noon.astimezone(CET))
    assert checkpoint_order(None) < checkpoint_order(-(10**30)) < checkpoint_order(math.nan)
    assert checkpoint_order((1, None)) < checkpoint_order((1, 0)) < checkpoint_order((2, None))
    load = DuplicateResolver([0])
    rows = [(1, "b", Decimal("1.0")), (1, "a", Decimal("1.00"))]
    assert resolve(load, rows, [r[2] for r in rows]) == ([(1, "b", Decimal("1.0"))], 1, 2)


values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True),
    st.decimals(allow_nan=True),
    st.text(max_size=3),
    st.binary(max_size=3),
    st.dates(),
    st.datetimes(),
    st.datetimes(timezones=st.sampled_from([UTC, CET])),
    st.times(),
    st.timedeltas(),
    st.uuids(),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
)


@settings(max_examples=300)
@given(st.lists(st.tuples(values, values), min_size=2, max_size=6), st.randoms())
def test_the_row_order_is_total_and_ignores_arrival(rows, rnd):
    """Rows of arbitrary values: sorting never fails and gives the same result for any
    input order, so the winner among tied rows never depends on arrival."""
    shuffled = list(rows)
    rnd.shuffle(shuffled)
    assert row_order(max(shuffled, key=row_order)) == row_order(max(rows, key=row_order))
    assert [row_order(r) for r in sorted(rows, key=row_order)] == [
        row_order(r) for r in sorted(shuffled, key=row_order)
    ]


# -- cutting batches on keys ----------------------------------------------------------------
@settings(max_examples=200)
@given(chunks(), st.integers(1, 4))
def test_whole_keys_never_split_a_key_unless_it_is_longer_than_the_limit(chunk, limit):
    width, rows, batches = chunk
    key = DuplicateResolver(list(range(width))).key
    out = list(whole_keys(iter(batches), RowCutter(key), limit))
    assert [r for batch, _ in out for r in batch] == rows, "every row once, in order"
    for (batch, whole), (following, _) in zip(out, out[1:]):
        if whole:
            assert key(batch[-1]) != key(following[0])
        else:
            assert len(batch) >= limit and key(batch[-1]) == key(following[0])
    assert not out or out[-1][1], "the last batch is whole"
    assert all(len(batch) <= limit + 2 * max(map(len, batches)) for batch, _ in out)


def test_line_cutter_reads_keys_from_copy_text():
    """Key fields are compared as text, numbers by value; NULL (\\N) is one key."""
    cutter = LineCutter([0, 2])
    batches = [
        b"1\tx\ta\n2\ty\tb\n2.0\tz\tb\n",
        b"2.00\tw\tb\n3\tv\tc\n\\N\tu\t\\N\n",
        b"\\N\tt\t\\N\n\\N\ts\t\\N\n",
        b"\\N\tr\td\n",
    ]
    out = list(whole_keys(iter(batches), cutter, 10))
    assert out == [
        (b"1\tx\ta\n2\ty\tb\n2.0\tz\tb\n2.00\tw\tb\n", True),
        (b"3\tv\tc\n\\N\tu\t\\N\n\\N\tt\t\\N\n\\N\ts\t\\N\n", True),
        (b"\\N\tr\td\n", True),
    ]
    assert cutter.last_key(b"1\tx\ta\n") == [b"1", b"a"]
    # a key longer than the limit is handed on unfinished
    long = [b"5\ta\tk\n5\tb\tk\n", b"5\tc\tk\n5\td\tk\n", b"5\te\tk\n6\tf\tk\n"]
    assert list(whole_keys(iter(long), cutter, 3)) == [
        (b"5\ta\tk\n5\tb\tk\n5\tc\tk\n5\td\tk\n", False),
        (b"5\te\tk\n6\tf\tk\n", True),
    ]
    # ... unless it ends with that batch
    assert list(whole_keys(iter([long[0], long[1], b"6\tf\tk\n"]), cutter, 3)) == [
        (b"5\ta\tk\n5\tb\tk\n5\tc\tk\n5\td\tk\n", True),
        (b"6\tf\tk\n", True),
    ]
