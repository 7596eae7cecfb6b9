"""The COPY relay on its own (shared/dialects/relay.py), against the real PostgreSQL:
batches of whole lines equal to COPY's own output, an error of the source query raised to
the consumer, and a relay abandoned mid-stream that cancels its COPY promptly."""

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


def test_batches_are_whole_lines_of_copy_output(dbapi):
    sql = (
        "COPY (SELECT g, 'line ' || g || E'\\n\\ttab\\\\', g * 0.5 FROM generate_series(1, 2500) g) "
        "TO STDOUT"
    )
    relay = CopyRelay(dbapi, sql, batch_rows=1_000)
    batches = list(relay)
    assert relay.finished
    assert [b.count(b"\n") for b in batches] == [1_000, 1_000, 500]
    assert all(b.endswith(b"\n") for b in batches)
    assert b"".join(batches) == _copy_output(dbapi, sql)
    assert b"line 1\\n\\ttab\\\\" in batches[0]  # escapes stay inside their line


def test_an_error_of_the_source_query_reaches_the_consumer(dbapi):
    relay = CopyRelay(
        dbapi,
        "COPY (SELECT 1 / (g - 1500) FROM generate_series(1, 3000) g) TO STDOUT",
        batch_rows=1_000,
    )
    seen = 0
    with pytest.raises(psycopg2.errors.DivisionByZero):
        for batch in relay:
            seen += batch.count(b"\n")
    assert seen == 1_000  # the batch before the failing row was handed out whole
    relay.close()
    dbapi.rollback()


def test_an_abandoned_relay_cancels_its_copy(dbapi):
    relay = CopyRelay(
        dbapi,
        "COPY (SELECT g, repeat('x', 100) FROM generate_series(1, 50000000) g) TO STDOUT",
        batch_rows=1_000,
    )
    first = next(iter(relay))
    assert first.count(b"\n") == 1_000
    started = time.monotonic()
    relay.close()
    assert time.monotonic() - started < 10
    assert not relay.running
    assert not relay.finished
