"""Cutting a chunk's stream into batches that never split a business key's rows.

A chunk is read in key order, so all rows of a key arrive together. Every key must be
resolved (``duplicates.py``) and written within one batch; the stream is therefore cut at
key changes only: ``whole_keys`` over batches that are already whole (typed rows, or the
relay's batches of COPY text), ``streamed_batches`` over COPY text pieces while each batch
is being sent (an initial chunk's direct COPY, ``direct.py``). A key with more rows than a
batch is handed on unfinished (``whole`` False), and the resolver holds it back.

Pure logic, no database.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from decimal import Decimal
from typing import Any, Protocol, TypeVar

B = TypeVar("B")


class Cutter(Protocol[B]):
    """What ``whole_keys`` needs of a batch type (a sequence: empty is false)."""

    def last_key(self, batch: B) -> Any:
        """The key of the batch's last row."""

    def split_leading(self, batch: B, key: Any) -> tuple[B, B]:
        """The batch's leading rows of ``key``, and the rest."""

    def size(self, batch: B) -> int:
        """Its rows (asked only while one key fills whole batches)."""

    def join(self, first: B, second: B) -> B: ...


def whole_keys(batches: Iterable[B], cutter: Cutter[B], limit: int) -> Iterator[tuple[B, bool]]:
    """The batches again, cut so that no key's rows are split between two of them, as
    (batch, whole). Looks one batch ahead: the next batch's leading rows of the current
    batch's last key move into the current batch. A key that goes on for a whole batch
    makes a batch of at least ``limit`` rows; if the key goes on in the batch after that,
    it is handed on with ``whole`` False: its last key continues in the next batch (the
    resolver holds that key back)."""
    held: B | None = None
    full = False  # held ends with a key that filled a whole batch and reached the limit
    for batch in batches:
        if not batch:
            continue
        if held is None:
            held = batch
            continue
        head, rest = cutter.split_leading(batch, cutter.last_key(held))
        if full:
            yield held, not head
            held, full = batch, False
            continue
        if head:
            held = cutter.join(held, head)
        if not rest:  # the whole batch continued the key
            full = cutter.size(held) >= limit
            continue
        yield held, True
        held = rest
    if held is not None:
        yield held, True


class RowCutter:
    """``whole_keys`` over lists of rows, keys compared as the resolver compares them."""

    def __init__(self, key: Callable[[Sequence[Any]], Any]):
        self.key = key

    def last_key(self, batch: list[tuple]) -> Any:
        return self.key(batch[-1])

    def split_leading(self, batch: list[tuple], key: Any) -> tuple[list[tuple], list[tuple]]:
        n = 0
        while n < len(batch) and self.key(batch[n]) == key:
            n += 1
        return (batch[:n], batch[n:]) if n else ([], batch)

    def size(self, batch: list[tuple]) -> int:
        return len(batch)

    def join(self, first: list[tuple], second: list[tuple]) -> list[tuple]:
        return first + second


def _same_field(a: bytes, b: bytes) -> bool:
    """Two key fields of COPY text hold the same key: the same text, or the same number
    (numeric 1.0 and 1.00 are one key). Treating two keys as one only makes a batch longer."""
    if a == b:
        return True
    try:
        x, y = Decimal(a.decode("ascii")), Decimal(b.decode("ascii"))
    except (ArithmeticError, ValueError):  # not numbers (UnicodeDecodeError is a ValueError)
        return False
    return x.is_finite() and y.is_finite() and x == y


class LineCutter:
    """``whole_keys`` over batches of COPY text lines (``shared/dialects/relay.py``): one row
    a line, fields separated by tabs (tabs and newlines inside values are escaped), so a key
    is read from its fields' text without parsing a value."""

    def __init__(self, key_fields: Sequence[int]):
        self.key_fields = list(key_fields)

    def _key(self, line: bytes) -> list[bytes]:
        fields = line.split(b"\t")
        return [fields[i] for i in self.key_fields]

    def last_key(self, batch: bytes) -> list[bytes]:
        start = batch.rfind(b"\n", 0, len(batch) - 1) + 1
        return self._key(batch[start : len(batch) - 1])

    def split_leading(self, batch: bytes, key: list[bytes]) -> tuple[bytes, bytes]:
        pos = 0
        while pos < len(batch):
            end = batch.find(b"\n", pos)
            if end < 0:
                end = len(batch)
            if not all(map(_same_field, key, self._key(batch[pos:end]))):
                break
            pos = end + 1
        return batch[:pos], batch[pos:]

    def size(self, batch: bytes) -> int:
        return batch.count(b"\n")

    def join(self, first: bytes, second: bytes) -> bytes:
        return first + second


class KeyContinues(Exception):
    """A streamed batch's last key went on for another whole batch: the batch is not whole,
    so it cannot be written as it is (raised out of ``StreamedBatch.read``)."""


class _Pieces:
    """Pieces of whole COPY text lines, one of which can be put back."""

    def __init__(self, pieces: Iterable[bytes]):
        self._pieces = iter(pieces)
        self._back: bytes | None = None

    def next(self) -> bytes | None:
        """The next non-empty piece, or None at the stream's end."""
        if self._back is not None:
            piece, self._back = self._back, None
            return piece
        return next((p for p in self._pieces if p), None)

    def put_back(self, piece: bytes) -> None:
        self._back = piece


class StreamedBatch:
    """One batch of COPY text lines, cut from the stream while it is sent: ``read`` is the
    file protocol that psycopg2's ``COPY ... FROM STDIN`` reads, so the first lines reach
    the target while the source is still printing the rest.

    The batch ends where ``whole_keys`` would end it, at the first key change after
    ``limit`` lines, but it looks one piece ahead instead of one batch. Should the last key
    go on for another ``limit`` lines after that, the batch ends there with ``whole`` False
    and ``read`` raises ``KeyContinues``. ``lines()`` gives the whole batch (reading the rest
    of it if a refused COPY stopped reading early): every piece sent is kept for that until
    the batch is done, so memory stays about one batch."""

    def __init__(self, pieces: _Pieces, cutter: LineCutter, limit: int):
        self._pieces, self._cutter, self._limit = pieces, cutter, limit
        self._sent: list[bytes] = []
        self.rows = 0
        self._full_at: int | None = None  # the rows when the batch had reached ``limit``
        self.whole = True
        self.done = False
        self.last = False  # the stream ended with this batch
        self.failure: BaseException | None = None  # what ``read`` raised (psycopg2 hides it)

    def read(self, size: int = -1) -> bytes:
        """The next piece, whatever ``size`` asks (psycopg2 sends what it is given)."""
        try:
            return self._next()
        except BaseException as exc:
            self.failure = exc
            raise

    def lines(self) -> bytes:
        """The whole batch."""
        while not self.done:
            try:
                self._next()
            except KeyContinues:
                break
        return b"".join(self._sent)

    def _next(self) -> bytes:
        if self.done:
            return b""
        piece = self._pieces.next()
        if piece is None:
            self.done = self.last = True
            return b""
        if self.rows < self._limit:
            lines, room = self._cutter.size(piece), self._limit - self.rows
            if lines > room:  # the batch's first ``limit`` lines end in this piece
                cut = _after_lines(piece, room)
                self._pieces.put_back(piece[cut:])
                piece, lines = piece[:cut], room
        else:
            if self._full_at is None:
                self._full_at = self.rows
            head, rest = self._cutter.split_leading(piece, self._cutter.last_key(self._sent[-1]))
            if rest:
                self._pieces.put_back(rest)
                self.done = True
            elif self.rows - self._full_at >= self._limit:
                self._pieces.put_back(piece)
                self.done, self.whole = True, False
                raise KeyContinues(f"a key goes on past {self.rows} lines")
            piece = head
            if not piece:
                return b""
            lines = self._cutter.size(piece)
        self._sent.append(piece)
        self.rows += lines
        return piece


def _after_lines(text: bytes, lines: int) -> int:
    """The position just after the first ``lines`` lines of ``text``."""
    pos = 0
    for _ in range(lines):
        pos = text.index(b"\n", pos) + 1
    return pos


def streamed_batches(
    pieces: Iterable[bytes], cutter: LineCutter, limit: int
) -> Iterator[StreamedBatch]:
    """The stream of COPY text pieces (whole lines) as ``StreamedBatch`` es, one at a time:
    each is read to its end (sent, or ``lines()``) before the next begins."""
    stream = _Pieces(pieces)
    while (first := stream.next()) is not None:
        stream.put_back(first)
        batch = StreamedBatch(stream, cutter, limit)
        yield batch
        batch.lines()  # a batch the consumer left unread still ends where it ends
