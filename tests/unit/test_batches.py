"""Batches cut while they are sent (``streamed_batches``, the direct COPY of an initial
chunk): whatever pieces the source's output arrives in and however far the COPY reads
before it is refused, every line is in exactly one batch, in order, and a key's lines are
split between two batches only when they go on past a whole batch, which the batch then
reports (``whole`` False, ``KeyContinues`` out of ``read``)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.chunk.batches import KeyContinues, LineCutter, streamed_batches

CUTTER = LineCutter([0])


def _key(line: bytes) -> bytes:
    return line.split(b"\t")[0]


@st.composite
def streams(draw):
    """(lines in key order, the same lines cut into pieces of whole lines)."""
    lines = []
    for key in range(draw(st.integers(0, 12))):
        for _ in range(draw(st.integers(1, 9))):
            lines.append(b"%d\tv%d\n" % (key, len(lines)))
    cuts = sorted(draw(st.sets(st.integers(1, max(len(lines) - 1, 1)), max_size=len(lines))))
    edges = [0, *[c for c in cuts if c < len(lines)], len(lines)]
    return lines, [b"".join(lines[a:b]) for a, b in zip(edges, edges[1:])]


def _send(batch, stop_after: int | None) -> bytes:
    """What a COPY reads of the batch before it stops: all of it, or ``stop_after`` reads
    (a COPY the target refused); then ``lines()``, as the loader does on a refusal."""
    sent = 0
    try:
        while stop_after is None or sent < stop_after:
            if not batch.read(1 << 16):
                break
            sent += 1
    except KeyContinues:
        assert not batch.whole
    return batch.lines()


@settings(max_examples=300)
@given(streams(), st.integers(1, 5), st.lists(st.one_of(st.none(), st.integers(0, 3))))
def test_streamed_batches_keep_every_line_once_and_keys_whole(stream, limit, stops):
    lines, pieces = stream
    out = []
    for i, batch in enumerate(streamed_batches(iter(pieces), CUTTER, limit)):
        text = _send(batch, stops[i] if i < len(stops) else None)
        assert batch.done and batch.rows == text.count(b"\n")
        out.append((text.splitlines(keepends=True), batch.whole))
    assert [line for batch, _ in out for line in batch] == lines, "every line once, in order"
    biggest_piece = max((p.count(b"\n") for p in pieces), default=0)
    for (batch, whole), (following, _) in zip(out, out[1:]):
        assert len(batch) >= limit, "only the last batch is short"
        assert {_key(line) for line in batch[limit - 1 :]} == {_key(batch[-1])}, (
            "a batch ends at the first key change after its first limit lines"
        )
        if whole:
            assert _key(batch[-1]) != _key(following[0])
        else:
            assert _key(batch[-1]) == _key(following[0])
            assert all(_key(line) == _key(batch[-1]) for line in batch[-limit:])
    assert not out or out[-1][1], "the last batch is whole"
    assert all(len(batch) < 2 * (limit + biggest_piece) for batch, _ in out)


def test_a_key_going_on_past_a_whole_batch_stops_the_copy():
    pieces = [b"1\ta\n2\ta\n", b"2\tb\n2\tc\n", b"2\td\n2\te\n", b"2\tf\n3\ta\n"]
    batches = streamed_batches(iter(pieces), CUTTER, 2)
    first = next(batches)
    assert first.read(8192) == pieces[0]
    assert first.read(8192) == pieces[1]  # 2 lines reached: only key 2's lines follow
    with pytest.raises(KeyContinues):
        first.read(8192)
    assert isinstance(first.failure, KeyContinues) and not first.whole
    assert first.lines() == pieces[0] + pieces[1]
    second = next(batches)
    assert second.lines() == pieces[2] + b"2\tf\n" and second.whole
    assert next(batches).lines() == b"3\ta\n"
    assert next(batches, None) is None


def test_a_batch_left_unread_still_ends_where_it_ends():
    """A consumer that skips a batch (say it stops reading) does not shift the next one."""
    pieces = [b"1\ta\n1\tb\n1\tc\n2\ta\n", b"2\tb\n3\ta\n"]
    batches = streamed_batches(iter(pieces), CUTTER, 2)
    next(batches)  # 1a 1b, and 1c: a batch ends after 2 lines and its last key
    assert next(batches).lines() == b"2\ta\n2\tb\n"
    assert next(batches).lines() == b"3\ta\n"
