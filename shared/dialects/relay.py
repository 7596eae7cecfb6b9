"""Relaying a query's rows from one PostgreSQL database to another as COPY text.

Between two PostgreSQL databases the text ``COPY (query) TO STDOUT`` prints is exactly what
``COPY stage FROM STDIN`` parses, so a chunk can move its rows without making a Python
object of any value: parsing values and printing them again was most of a worker's CPU.
The source's COPY runs in a thread that cuts its output into batches of whole lines (text
format is one row a line: newlines inside values are escaped); the chunk loader takes the
batches one at a time, so memory stays at a couple of batches and the loader keeps its
one-transaction-per-batch rhythm.

The relay is an optional capability of a pair of dialects, stated here as two protocols: a
``RelaySource`` prints a query's rows as bulk text, a ``RelayTarget`` stages that text and
describes the staged batch. ``relay_between`` gives the pair when both sides have it
(PostgreSQL to PostgreSQL today), else None, and the loader takes the typed path.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from shared.dialects.base import dbapi_connection

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from shared.config.mapping import TargetSpec
    from shared.dialects.base import DialectAdapter

_END = object()
PUT_POLL_S = 0.1  # how often a producer blocked on a full queue checks for abandonment
JOIN_TIMEOUT_S = 30


class _Abandoned(Exception):
    """Raised inside the producer when the consumer stopped reading."""


class CopyRelay:
    """``COPY (sql) TO STDOUT`` on ``dbapi_conn`` (psycopg2), in a thread, handed out as
    batches of about ``batch_rows`` lines (bytes). Iterate it, then ``close()`` it; a relay
    closed early cancels the COPY, and its connection should then be discarded."""

    def __init__(self, dbapi_conn: Any, sql: str, batch_rows: int, queued_batches: int = 2):
        self._conn = dbapi_conn
        self._sql = sql
        self._batch_rows = batch_rows
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queued_batches)
        self._abandoned = threading.Event()
        self._parts: list[bytes] = []
        self.finished = False  # the whole output was read
        self._thread = threading.Thread(
            target=self._produce, name="chordload-copy-relay", daemon=True
        )

    # -- consumer ---------------------------------------------------------------------------
    def __iter__(self) -> Iterator[bytes]:
        self._thread.start()
        while True:
            try:
                item = self._queue.get(timeout=1.0)
            except queue.Empty:
                if not self._thread.is_alive() and self._queue.empty():
                    raise RuntimeError("the COPY relay thread ended without a result") from None
                continue
            if item is _END:
                self.finished = True
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    @property
    def running(self) -> bool:
        """Whether the COPY thread is still going."""
        return self._thread.is_alive()

    def close(self) -> None:
        """Stop the producer if it is still running (cancelling the COPY on the server)."""
        if not self.running:
            return
        self._abandoned.set()
        try:
            self._conn.cancel()
        except Exception:  # noqa: BLE001 - a broken connection is discarded anyway
            pass
        self._thread.join(JOIN_TIMEOUT_S)

    # -- producer (the thread) ----------------------------------------------------------------
    def write(self, data: bytes) -> None:
        """psycopg2 calls this once per row of the COPY output."""
        if self._abandoned.is_set():
            raise _Abandoned()
        parts = self._parts
        parts.append(data)
        if len(parts) >= self._batch_rows:
            self._parts = []
            self._put(b"".join(parts))

    def _put(self, item: Any) -> None:
        while True:
            try:
                self._queue.put(item, timeout=PUT_POLL_S)
                return
            except queue.Full:
                if self._abandoned.is_set():
                    raise _Abandoned() from None

    def _produce(self) -> None:
        try:
            cursor = self._conn.cursor()
            try:
                cursor.copy_expert(self._sql, self)
            finally:
                cursor.close()
            if self._parts:
                self._put(b"".join(self._parts))
            self._put(_END)
        except _Abandoned:
            return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            if self._abandoned.is_set():
                return
            try:
                self._put(exc)
            except _Abandoned:
                return


@dataclass(frozen=True)
class RelayedShape:
    """A relayed batch as the loader needs to know it (``RelayTarget.relayed_shape``)."""

    rows: int
    null_keys: int
    distinct_keys: int
    max_checkpoint: Any
    last_checkpoint: Any  # of the last row (the last key's, when the batch has no duplicates)
    first_key: tuple
    last_key: tuple


@runtime_checkable
class RelaySource(Protocol):
    def relay(
        self, conn: Connection, sql: str, params: dict[str, Any], batch_rows: int
    ) -> CopyRelay:
        """The rows of ``sql`` as bulk text, in batches of whole lines."""


@runtime_checkable
class RelayTarget(Protocol):
    def relay_stage(self, conn: Connection, target: TargetSpec, columns: Sequence[str]) -> str:
        """A stage for relayed text that numbers its rows in arrival order."""

    def load_relayed(
        self, conn: Connection, stage: str, columns: Sequence[str], lines: bytes
    ) -> None:
        """Bulk-load one batch of relayed text into the stage."""

    def relayed_shape(
        self, conn: Connection, stage: str, keys: Sequence[str], checkpoint: str | None
    ) -> RelayedShape:
        """Counts, key facts and checkpoint maximum of the staged batch, in one query."""

    def relayed_rows(
        self, conn: Connection, stage: str, columns: Sequence[str], typed: Sequence[str] = ()
    ) -> list[tuple]:
        """The staged batch as rows in arrival order: ``typed`` columns as Python values,
        the others as text the stage's COPY parses back exactly."""


@dataclass(frozen=True)
class Relay:
    """A source and a target that can relay bulk text between them."""

    source: RelaySource
    target: RelayTarget

    @staticmethod
    def same_encoding(source_conn: Connection, target_conn: Connection) -> bool:
        """Text passes unchanged only between connections with one client encoding."""
        return bool(
            dbapi_connection(source_conn).encoding == dbapi_connection(target_conn).encoding
        )


def relay_between(source: DialectAdapter, target: DialectAdapter) -> Relay | None:
    """The relay from ``source`` to ``target``, if the two dialects have one."""
    if (
        isinstance(source, RelaySource)
        and isinstance(target, RelayTarget)
        and source.relays_to(target)
    ):
        return Relay(source, target)
    return None
