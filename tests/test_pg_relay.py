"""The COPY relay on its own (shared/dialects/relay.py), against the real PostgreSQL:
pieces of whole lines equal to COPY's own output, an error of the source query raised to
the consumer after the lines before it, and a relay abandoned mid-stream that cancels its
COPY promptly."""

from __future__ import annotations

import time

import psycopg2
import pytest

from shared.dialects.relay import CopyRelay


@pytest.fixture
def dbapi(pg_urls):
    dsn = pg_urls["wh"].replace("postgresql+psycopg2://", "postgresql://")
    conn = psycopg2.connect(dsn)
    yield conn
    conn.close()


def _copy_output(conn, sql: str) -> bytes:
    parts: list[bytes] = []

    class Sink:
        def write(self, data: bytes) -> None:
            parts.append(data)

    with conn.cursor() as cur:
        cur.copy_expert(sql, Sink())
    conn.rollback()
    return b"".join(parts)


def test_pieces_are_whole_lines_of_copy_output(dbapi):
    sql = (
        "COPY (SELECT g, 'line ' || g || E'\\n\\ttab\\\\', g * 0.5 FROM generate_series(1, 60000) g) "
        "TO STDOUT"
    )
    relay = CopyRelay(dbapi, sql)
    pieces = list(relay.pieces())
    assert relay.finished and not relay.running
    assert len(pieces) > 1, "the output arrives in more than one piece"
    assert all(p.endswith(b"\n") for p in pieces)
    assert b"".join(pieces) == _copy_output(dbapi, sql)
    assert b"line 1\\n\\ttab\\\\" in pieces[0]  # escapes stay inside their line


def test_an_error_of_the_source_query_reaches_the_consumer(dbapi):
    relay = CopyRelay(
        dbapi, "COPY (SELECT 1 / (g - 1500) FROM generate_series(1, 3000) g) TO STDOUT"
    )
    seen = 0
    with pytest.raises(psycopg2.errors.DivisionByZero):
        for piece in relay.pieces():
            seen += piece.count(b"\n")
    assert seen == 1_499  # every line printed before the failing row was handed out
    relay.close()
    dbapi.rollback()


def test_an_abandoned_relay_cancels_its_copy(dbapi):
    relay = CopyRelay(
        dbapi, "COPY (SELECT g, repeat('x', 100) FROM generate_series(1, 50000000) g) TO STDOUT"
    )
    first = next(relay.pieces())
    assert first.endswith(b"\n")
    started = time.monotonic()
    relay.close()
    assert time.monotonic() - started < 10
    assert not relay.running
    assert not relay.finished
