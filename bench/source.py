"""The benchmark's source: N deterministic rows made set-based in Postgres (generate_series;
no random(), so every run with the same N has the same data), and the 10% change."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg2

SOURCE_TABLE = "public.bench_source"
BASE_TS = "2026-01-01 00:00:00"
CHANGE_TS = "2026-07-01 00:00:00"

# name, Postgres type; the types chordload's target DDL makes of them are the same
COLUMNS: list[tuple[str, str]] = [
    ("id", "bigint"),
    ("account_id", "integer"),
    ("name", "text"),
    ("email", "text"),
    ("city", "text"),
    ("amount", "numeric(12,2)"),
    ("score", "double precision"),
    ("created_at", "timestamp"),
    ("updated_at", "timestamp"),
]
COLUMN_NAMES = [name for name, _ in COLUMNS]
SOURCE_QUERY = f"SELECT {', '.join(COLUMN_NAMES)} FROM {SOURCE_TABLE}"


@contextmanager
def pg(dsn: str, autocommit: bool = False) -> Iterator[psycopg2.extensions.connection]:
    """A psycopg2 connection that is committed (unless autocommit) and always closed."""
    conn = psycopg2.connect(dsn)
    conn.autocommit = autocommit
    try:
        yield conn
        if not autocommit:
            conn.commit()
    except BaseException:
        if not autocommit:
            conn.rollback()
        raise
    finally:
        conn.close()


def create_source(source_dsn: str, rows: int) -> None:
    """``rows`` rows with ids 1..rows; ``updated_at`` grows with id (the KEY checkpoint)."""
    with pg(source_dsn) as conn, conn.cursor() as cur:
        ddl = ", ".join(f"{name} {kind}" for name, kind in COLUMNS)
        cur.execute(f"CREATE TABLE {SOURCE_TABLE} ({ddl}, PRIMARY KEY (id))")
        cur.execute(
            f"INSERT INTO {SOURCE_TABLE} SELECT g, (g * 7919) %% 50000, "
            f"'Customer ' || g || ' ' || substr(md5(g::text), 1, 10), "
            f"CASE WHEN g %% 17 = 0 THEN NULL ELSE 'c' || g || '@example.com' END, "
            f"(ARRAY['Berlin','Lisbon','Oslo','Turin','Gdansk','Porto','Lyon'])[1 + g %% 7], "
            f"round(((g * 104729) %% 10000000) / 100.0, 2), (g %% 9973) / 7.0, "
            f"TIMESTAMP '{BASE_TS}' - (g %% 1000) * INTERVAL '1 day', "
            f"TIMESTAMP '{BASE_TS}' + g * INTERVAL '1 second' "
            f"FROM generate_series(1::bigint, %s::bigint) g",
            (rows,),
        )
        cur.execute(f"CREATE INDEX ON {SOURCE_TABLE} (updated_at)")
    vacuum_analyze(source_dsn)


def change_tenth(source_dsn: str, round_no: int = 0) -> int:
    """Change every tenth row (new city and amount, an updated_at later than any before, also
    in a later round); returns the count."""
    with pg(source_dsn) as conn, conn.cursor() as cur:
        cur.execute(
            f"UPDATE {SOURCE_TABLE} SET city = 'Reykjavik', amount = amount + 1, "
            f"updated_at = TIMESTAMP '{CHANGE_TS}' + %s * INTERVAL '30 days' "
            f"+ id * INTERVAL '1 millisecond' WHERE id %% 10 = 0",
            (round_no,),
        )
        changed = cur.rowcount
    vacuum_analyze(source_dsn)
    return changed


def vacuum_analyze(any_dsn: str, table: str = SOURCE_TABLE) -> None:
    with pg(any_dsn, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(f"VACUUM (ANALYZE) {table}")


def max_updated_at(source_dsn: str):
    with pg(source_dsn) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT max(updated_at) FROM {SOURCE_TABLE}")
        return cur.fetchone()[0]
