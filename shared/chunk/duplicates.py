"""Duplicate business keys in one extract: one row per key wins.

The row with the highest checkpoint value wins (NULL lowest; with no checkpoint every row
ties), then the last in the order the rows arrive; every other row of the key is counted
as a duplicate. All rows of a key are in one chunk (chunks split on key columns) and arrive
together (key order), but they can straddle a batch boundary: a later winner then
overwrites, in place, the version this attempt wrote for the key (SCD2 keeps one version
per key per run), and a later loser is not written.

Pure logic, no database: the resolver remembers the keys of the latest batch only, so its
memory is one batch whatever the size of the chunk.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from shared.run.values import Value, rank

ERRORED = object()  # a key whose winning row was rejected: the next row of it starts over


def key_of(parts: tuple) -> Any:
    """A business key as a dict key: the value of a one-column key, else the tuple."""
    key = parts[0] if len(parts) == 1 else parts
    try:
        hash(key)
    except TypeError:  # e.g. a JSON key: compare its text
        key = repr(key)
    return key


@dataclass(frozen=True)
class Resolved:
    """A batch after resolution: the winners whose key is new to this attempt, the winners
    of keys an earlier batch of it already wrote (they overwrite that write), and how many
    rows lost."""

    fresh: list[tuple]
    rewrites: list[tuple]
    dropped: int


class DuplicateResolver:
    def __init__(self, key_positions: Sequence[int]):
        self.key_positions = list(key_positions)
        # key -> rank of the checkpoint value of the row that wins it so far, for the keys of
        # the latest batch only: rows arrive in key order, so no older key can come back
        self.winners: dict[Any, Any] = {}
        # key -> the rank this attempt had already written for it, for the keys the latest
        # batch rewrites: a rejected rewrite leaves that write in place
        self.rewritten_from: dict[Any, Any] = {}

    def key(self, row: tuple) -> Any:
        return key_of(tuple(row[p] for p in self.key_positions))

    def seen(self, parts: tuple) -> bool:
        """Whether the previous batch had this key (a relayed batch continues it)."""
        return key_of(parts) in self.winners

    def remember_only(self, parts: tuple, value: Value) -> None:
        """After a batch applied without resolution: only its last key can continue."""
        self.winners = {key_of(parts): rank(value)}

    def reject(self, rows: Sequence[tuple]) -> None:
        """These winners were quarantined. A key nothing was written for starts over with its
        next row; a rejected rewrite leaves the version this attempt wrote before in place,
        so the key's next row is compared with that one."""
        for row in rows:
            key = self.key(row)
            self.winners[key] = self.rewritten_from.get(key, ERRORED)

    def reset(self) -> None:
        self.winners = {}
        self.rewritten_from = {}

    def resolve(self, rows: list[tuple], values: list[Value]) -> Resolved:
        """One row per business key (see the module docstring)."""
        earlier = self.winners  # the previous batch's keys
        current: dict[Any, Any] = {}  # this batch's
        best: dict[Any, int] = {}  # key -> index of its winning row in this batch
        repeated: dict[Any, Any] = {}  # key -> the rank written for it by an earlier batch
        dropped = 0
        for i, row in enumerate(rows):
            key = self.key(row)
            ranked = rank(values[i])
            previous = current.get(key)
            if previous is None:  # the key's first row in this batch
                previous = earlier.get(key)
                if previous is None or previous is ERRORED:
                    current[key] = ranked
                    best[key] = i
                    continue
                repeated[key] = previous  # the previous batch wrote (or dropped a loser of) it
                current[key] = previous
            try:
                loses = ranked < previous
            except TypeError:  # values that do not compare: arrival order decides
                loses = False
            if loses:
                dropped += 1
                continue
            current[key] = ranked
            if key in best:
                dropped += 1  # the earlier row of this batch is displaced
            best[key] = i
        self.winners = current
        self.rewritten_from = repeated
        if not repeated and len(best) == len(rows):
            return Resolved(rows, [], 0)
        fresh: list[tuple] = []
        rewrites: list[tuple] = []
        for key, i in sorted(best.items(), key=lambda item: item[1]):
            (rewrites if key in repeated else fresh).append(rows[i])
        return Resolved(fresh, rewrites, dropped)
