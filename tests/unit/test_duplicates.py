"""Duplicate business keys: which row of a key wins, within a batch and across batches."""
from __future__ import annotations

from shared.chunk.duplicates import ERRORED, DuplicateResolver


def resolve(load: DuplicateResolver, rows, values):
    resolved = load.resolve(rows, values)
    return resolved.fresh, resolved.rewrites, resolved.dropped


def test_duplicate_resolution_order():
    """Highest checkpoint wins, NULL lowest, ties to the later row; across batches a later
    winner is returned as a repeat and a later loser is dropped; a key whose winning row was
    rejected starts over."""
    load = DuplicateResolver([0])
    rows = [(1, "a", 5), (1, "b", 7), (1, "c", 6), (2, "a", None), (2, "b", 1), (3, "a", 4),
            (3, "b", 4), (4, "a", 2)]
    fresh, repeat, dropped = resolve(load, rows, [r[2] for r in rows])
    assert (fresh, repeat, dropped) == ([(1, "b", 7), (2, "b", 1), (3, "b", 4), (4, "a", 2)],
                                        [], 4)
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
