"""Relaying a query's rows from one PostgreSQL database to another as COPY text.

Between two PostgreSQL databases the text ``COPY (query) TO STDOUT`` prints is exactly what
``COPY stage FROM STDIN`` parses, so a chunk can move its rows without making a Python
object of any value: parsing values and printing them again was most of a worker's CPU.
The source's COPY runs in a thread that writes its output into a pipe; the loader reads it
in pieces of whole lines (text format is one row a line: newlines inside values are
escaped) and cuts those into batches (``shared/chunk/batches.py``), which it can send on
while they arrive. Memory stays at a batch plus the pipe, and the loader keeps its
one-transaction-per-batch rhythm.

The relay is an optional capability of a pair of dialects, stated here as two protocols: a
``RelaySource`` prints a query's rows as bulk text, a ``RelayTarget`` stages that text and
describes the staged batch. ``relay_between`` gives the pair when both sides have it
(PostgreSQL to PostgreSQL today), else None, and the loader takes the typed path.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from shared.dialects.base import dbapi_connection

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from shared.config.mapping import TargetSpec
    from shared.dialects.base import DialectAdapter

PIPE_BYTES = 1 << 20  # the pipe's buffer: how far the source's COPY reads ahead
WRITE_BUFFER_BYTES = 1 << 16  # the thread's buffer in front of the pipe
PIECE_BYTES = 1 << 18  # the most one read of the pipe takes
JOIN_TIMEOUT_S = 30
DRAIN_POLL_S = 0.1


class CopyRelay:
    """``COPY (sql) TO STDOUT`` on ``dbapi_conn`` (psycopg2), in a thread, handed out as
    pieces of whole lines as they arrive (``pieces``). A relay closed before its end
    (``close``) cancels its COPY; its connection should then be discarded.

    The thread writes into an OS pipe. psycopg2 hands over one row per ``write`` call; a
    pipe's file takes that call in C, where a Python ``write`` cost a function call per row,
    and hands the rows on in large reads. The pipe's buffer bounds how far the source reads
    ahead of the loader."""

    def __init__(self, dbapi_conn: Any, sql: str):
        self._conn = dbapi_conn
        self._sql = sql
        read_fd, write_fd = os.pipe()
        with contextlib.suppress(OSError, AttributeError):  # Linux: a larger pipe buffer
            fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        self._reader = os.fdopen(read_fd, "rb", buffering=0)
        self._writer = os.fdopen(write_fd, "wb", buffering=WRITE_BUFFER_BYTES)
        self._abandoned = threading.Event()
        self._failure: list[BaseException] = []
        self.finished = False  # the whole output was read
        self._thread = threading.Thread(
            target=self._produce, name="chordload-copy-relay", daemon=True
        )

    # -- consumer ---------------------------------------------------------------------------
    def pieces(self) -> Iterator[bytes]:
        """The output as it arrives, in pieces of whole lines (up to ``PIECE_BYTES`` or one
        line); an error of the source's COPY is raised after the lines it printed."""
        self._thread.start()
        rest = b""
        while block := self._reader.read(PIECE_BYTES):
            end = block.rfind(b"\n") + 1
            if not end:
                rest += block
                continue
            piece = block if end == len(block) else block[:end]  # one copy at most
            yield rest + piece if rest else piece
            rest = block[end:]
        self._thread.join()  # the pipe's end: the thread closed it on its way out
        self._reader.close()
        if self._failure:
            raise self._failure[0]
        if rest:
            raise RuntimeError("the COPY output ended inside a line")
        self.finished = True

    @property
    def running(self) -> bool:
        """Whether the COPY thread is still going."""
        return self._thread.is_alive()

    def close(self) -> None:
        """Stop the COPY if it is still running: cancel it on the server and read the pipe
        dry until the thread ends (closing the pipe under a writing thread would not end it
        sooner, and raises in it)."""
        if not self._thread.is_alive():
            if self._thread.ident is None:  # never started
                self._writer.close()
            self._reader.close()
            return
        self._abandoned.set()
        with contextlib.suppress(Exception):  # a broken connection is discarded anyway
            self._conn.cancel()
        deadline = time.monotonic() + JOIN_TIMEOUT_S
        while self._thread.is_alive() and time.monotonic() < deadline:
            ready, _, _ = select.select([self._reader], [], [], DRAIN_POLL_S)
            if ready and not self._reader.read(PIECE_BYTES):
                break
        self._thread.join(max(0.0, deadline - time.monotonic()))
        self._reader.close()

    # -- producer (the thread) ----------------------------------------------------------------
    def _produce(self) -> None:
        try:
            cursor = self._conn.cursor()
            try:
                cursor.copy_expert(self._sql, self._writer)
            finally:
                cursor.close()
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            if not self._abandoned.is_set():
                self._failure.append(exc)
        finally:
            with contextlib.suppress(OSError):
                self._writer.close()  # flushes what was printed, then ends the consumer's read


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
    def relay(self, conn: Connection, sql: str, params: dict[str, Any]) -> CopyRelay:
        """The rows of ``sql`` as bulk text, in pieces of whole lines."""


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
