"""Duplicate business keys: which row of a key wins, within a batch and across batches."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.chunk.duplicates import ERRORED, DuplicateResolver
from shared.run.values import rank


def resolve(load: DuplicateResolver, rows, values):
    resolved = load.resolve(rows, values)
    return resolved.fresh, resolved.rewrites, resolved.dropped


def test_duplicate_resolution_order():
    """Highest checkpoint wins, NULL lowest, ties to the later row; across batches a later
    winner is returned as a repeat and a later loser is dropped; a key whose winning row was
    rejected starts over."""
    load = DuplicateResolver([0])
    rows = [
        (1, "a", 5),
        (1, "b", 7),
        (1, "c", 6),
        (2, "a", None),
        (2, "b", 1),
        (3, "a", 4),
        (3, "b", 4),
        (4, "a", 2),
    ]
    fresh, repeat, dropped = resolve(load, rows, [r[2] for r in rows])
    assert (fresh, repeat, dropped) == ([(1, "b", 7), (2, "b", 1), (3, "b", 4), (4, "a", 2)], [], 4)
    later = [(1, "d", 6), (2, "c", 3), (4, "b", 2), (5, "a", 1)]
    fresh, repeat, dropped = resolve(load, later, [r[2] for r in later])
    assert (fresh, repeat, dropped) == ([(5, "a", 1)], [(2, "c", 3), (4, "b", 2)], 1)
    load.winners[5] = ERRORED
    fresh, repeat, dropped = resolve(load, [(5, "b", 0)], [0])
    assert (fresh, repeat, dropped) == ([(5, "b", 0)], [], 0)
    # a key that fills whole batches is carried from batch to batch, losers and all
    for batch in ([(5, "c", -1)], [(5, "d", 9)]):
        fresh, repeat, dropped = resolve(load, batch, [batch[0][2]])
    assert (fresh, repeat, dropped) == ([], [(5, "d", 9)], 0)
    # rows arrive in key order, so only the latest batch's keys are remembered: memory
    # follows batch_rows, not the chunk's size
    fresh, repeat, dropped = resolve(load, [(6, "a", 1)], [1])
    assert load.winners == {6: load.winners[6]}


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
    later row."""
    winners: dict = {}
    for row in rows:
        key = row[0] if width == 1 else row[:width]
        best = winners.get(key)
        if best is None or rank(row[-1]) >= rank(best[-1]):
            winners[key] = row
    return winners


def feed(width: int, batches: list[list[tuple]]):
    """Run the batches through a resolver as the loader does: fresh rows are inserted,
    rewrites overwrite the key's earlier write. Returns (target, dropped, rewritten)."""
    resolver = DuplicateResolver(list(range(width)))
    target: dict = {}
    dropped = rewritten = 0
    for batch in batches:
        resolved = resolver.resolve(batch, [row[-1] for row in batch])
        for row in resolved.fresh:
            key = resolver.key(row)
            assert key not in target, f"fresh row {row} for a key already written"
            target[key] = row
        for row in resolved.rewrites:
            key = resolver.key(row)
            assert key in target, f"rewrite {row} of a key never written"
            target[key] = row
        written = resolved.fresh + resolved.rewrites
        assert len({resolver.key(r) for r in written}) == len(written), "one row per key"
        assert all(r in batch for r in written), "only rows of this batch are written"
        dropped += resolved.dropped
        rewritten += len(resolved.rewrites)
    return target, dropped, rewritten


@settings(max_examples=200)
@given(chunks())
def test_resolution_matches_the_model_across_any_batch_boundaries(chunk):
    """Any batching: per key the last write is the model's winner; duplicates = rows - keys."""
    width, rows, batches = chunk
    target, dropped, rewritten = feed(width, batches)
    assert target == model_winners(width, rows)
    assert dropped + rewritten == len(rows) - len(target)


@settings(max_examples=50)
@given(chunks(checkpoint=False))
def test_without_a_checkpoint_the_last_row_of_a_key_wins(chunk):
    """With no checkpoint every row ties, so the last row of each key in arrival order wins."""
    width, rows, batches = chunk
    target, dropped, rewritten = feed(width, batches)
    last = {}
    for row in rows:
        last[row[0] if width == 1 else row[:width]] = row
    assert target == last
    assert dropped + rewritten == len(rows) - len(last)


@settings(max_examples=50)
@given(chunks())
def test_one_batch_needs_no_rewrites(chunk):
    """A chunk read in one batch writes each key once: no rewrites, every loser dropped."""
    width, rows, _ = chunk
    resolver = DuplicateResolver(list(range(width)))
    resolved = resolver.resolve(rows, [r[-1] for r in rows])
    assert resolved.rewrites == []
    winners = model_winners(width, rows)
    assert resolved.fresh == sorted(winners.values(), key=lambda r: r[width])
    assert resolved.dropped == len(rows) - len(winners)


@settings(max_examples=100)
@given(chunks(), st.data())
def test_a_rejected_fresh_winner_lets_the_key_start_over(chunk, data):
    """After a fresh winner is rejected, its key starts over: later rows resolve as a new key."""
    width, _, batches = chunk
    resolver = DuplicateResolver(list(range(width)))
    target: dict = {}
    since_rejection: dict = {}  # key -> its rows since its winner was last rejected
    for batch in batches:
        resolved = resolver.resolve(batch, [row[-1] for row in batch])
        for row in batch:
            since_rejection.setdefault(resolver.key(row), []).append(row)
        for row in resolved.rewrites:
            assert resolver.key(row) in target
            target[resolver.key(row)] = row
        rejected = [r for r in resolved.fresh if data.draw(st.booleans())]
        for row in resolved.fresh:
            key = resolver.key(row)
            assert key not in target
            if row in rejected:
                since_rejection[key] = []
            else:
                target[key] = row
        resolver.reject(rejected)
    expected = {}
    for key, key_rows in since_rejection.items():
        if key_rows:
            expected[key] = model_winners(width, key_rows)[key]
    assert target == expected


def test_a_rejected_rewrite_leaves_the_earlier_write_in_charge():
    """After a rejected rewrite the key's next row is compared with the write still in place."""
    # The rewrite's savepoint rolled back, so (1, "a", 1) is still this run's write. Resolving
    # (1, "c", 0) as fresh makes the loader apply it as a first pass: on SCD2 it expires this
    # run's own version and inserts another (two versions of key 1 for one run, the current one
    # with a lower checkpoint value than the row it replaced); the duplicate is not counted.
    load = DuplicateResolver([0])
    assert resolve(load, [(1, "a", 1)], [1]) == ([(1, "a", 1)], [], 0)
    assert resolve(load, [(1, "b", 2)], [2]) == ([], [(1, "b", 2)], 0)
    load.reject([(1, "b", 2)])  # the rewrite failed: (1, "a", 1) is still written
    assert resolve(load, [(1, "c", 0)], [0]) == ([], [], 1)


def test_values_that_do_not_compare_are_decided_by_arrival_order():
    """Checkpoint values of types that cannot be ordered: the later row wins."""
    load = DuplicateResolver([0])
    assert resolve(load, [(1, 5), (1, "x")], [5, "x"]) == ([(1, "x")], [], 1)
    assert resolve(load, [(1, 0)], [0]) == ([], [(1, 0)], 0)


def test_unhashable_keys_are_compared_by_their_text():
    """A key of an unhashable type (a JSON column) is still recognised as one key."""
    load = DuplicateResolver([0])
    rows = [({"a": 1}, 1), ({"a": 1}, 2), ({"a": 2}, 0)]
    fresh, rewrites, dropped = resolve(load, rows, [1, 2, 0])
    assert (fresh, rewrites, dropped) == ([({"a": 1}, 2), ({"a": 2}, 0)], [], 1)
    assert load.seen(({"a": 1},)) and load.seen(({"a": 2},)) and not load.seen(({"a": 3},))


def test_remember_only_continues_the_last_key_of_a_relayed_batch():
    """After remember_only only that last key continues (rewrite or loser); others are fresh."""
    load = DuplicateResolver([0])
    load.remember_only((7,), 5)
    assert load.seen((7,)) and not load.seen((6,))
    assert resolve(load, [(7, 4), (8, 1)], [4, 1]) == ([(8, 1)], [], 1)
    load.remember_only((8,), 1)
    assert resolve(load, [(8, 2)], [2]) == ([], [(8, 2)], 0)
    load.reset()
    assert resolve(load, [(8, 0)], [0]) == ([(8, 0)], [], 0)
