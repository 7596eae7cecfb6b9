"""Source data for tests, made set-based in Postgres (generate_series), so large sources are
cheap to build."""

from __future__ import annotations

from sqlalchemy import Engine, text

BASE_TS = "2026-01-01 00:00:00"


def create_customers(wh: Engine, schema: str, rows: int, table: str = "customers") -> str:
    """``rows`` customers with ids 1..rows and strictly increasing updated_at."""
    qualified = f'"{schema}"."{table}"'
    with wh.begin() as conn:
        conn.execute(
            text(
                f"CREATE TABLE {qualified} (id bigint PRIMARY KEY, name text NOT NULL, email text, "
                f"city text, balance numeric(12,2), signup date, active boolean, "
                f"updated_at timestamp NOT NULL)"
            )
        )
        conn.execute(
            text(
                f"INSERT INTO {qualified} SELECT g, 'Customer ' || g, 'c' || g || '@example.com', "
                f"(ARRAY['Berlin','Lisbon','Oslo','Turin','Gdansk'])[1 + g % 5], "
                f"round((g % 1000) * 1.25, 2), DATE '2020-01-01' + (g % 2000), g % 3 <> 0, "
                f"TIMESTAMP '{BASE_TS}' + g * INTERVAL '1 second' "
                f"FROM generate_series(1, :n) g"
            ),
            {"n": rows},
        )
        conn.execute(text(f"CREATE INDEX ON {qualified} (updated_at)"))
        conn.execute(text(f"ANALYZE {qualified}"))
    return qualified


def change_every_tenth(wh: Engine, qualified: str, stamp: str = "2026-06-01 00:00:00") -> int:
    with wh.begin() as conn:
        changed = conn.execute(
            text(
                f"UPDATE {qualified} SET city = 'Reykjavik', balance = balance + 1, "
                f"updated_at = TIMESTAMP '{stamp}' + id * INTERVAL '1 millisecond' "
                f"WHERE id % 10 = 0"
            )
        ).rowcount
        conn.execute(text(f"ANALYZE {qualified}"))
    return changed


def add_customers(
    wh: Engine, qualified: str, first_id: int, count: int, stamp: str = "2026-06-02 00:00:00"
) -> None:
    with wh.begin() as conn:
        conn.execute(
            text(
                f"INSERT INTO {qualified} SELECT g, 'New ' || g, NULL, 'Cork', 1.50, NULL, true, "
                f"TIMESTAMP '{stamp}' + g * INTERVAL '1 millisecond' "
                f"FROM generate_series(:a, :b) g"
            ),
            {"a": first_id, "b": first_id + count - 1},
        )
        conn.execute(text(f"ANALYZE {qualified}"))


BUSINESS_COLUMNS = "id, name, email, city, balance, signup, active, updated_at"


def paced_customers_query(wh: Engine, schema: str, every: int) -> str:
    """A source query over ``customers`` whose COPY reads (the workers' loads; planning reads
    at full speed) take 1 ms every ``every``-th row: a run that lasts long enough for what a
    test does mid-run. Its ``name`` column is an expression, so batches take the stage."""
    with wh.begin() as conn:
        conn.execute(
            text(
                f'CREATE FUNCTION "{schema}".paced(id bigint, name text) RETURNS text '
                f"LANGUAGE plpgsql VOLATILE AS $$ BEGIN IF id % {int(every)} = 0 AND "
                "current_query() LIKE 'COPY (%' THEN PERFORM pg_sleep(0.001); END IF; "
                "RETURN name; END $$"
            )
        )
    return (
        f'SELECT id, "{schema}".paced(id, name) AS name, email, city, balance, signup, active, '
        f'updated_at FROM "{schema}"."customers"'
    )


def scd2_mapping(
    schema: str, table: str = "customers", target: str = "dim_customer", **overrides
) -> dict:
    mapping = {
        "source": {
            "connection": "wh",
            "query": f'SELECT {BUSINESS_COLUMNS} FROM "{schema}"."{table}"',
        },
        "target": {"connection": "wh", "table": f"{schema}.{target}"},
        "keys": ["id"],
        "scd": {"type": 2},
        "checkpoint": {"strategy": "KEY", "column": "updated_at"},
        "chunking": {"column": "id", "rows_per_chunk": 30_000, "min_rows_for_parallel": 100_000},
        "batch_rows": 10_000,
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(mapping.get(key), dict):
            mapping[key] = {**mapping[key], **value}
        else:
            mapping[key] = value
    return mapping


def scalar(wh: Engine, sql: str, **params):
    """One value from the warehouse."""
    with wh.connect() as conn:
        return conn.execute(text(sql), params).scalar_one()


def diff_count(wh: Engine, left: str, right: str) -> int:
    """Rows in one query's result and not the other's, both ways (0 = equal as multisets;
    EXCEPT ALL treats NULLs as equal)."""
    return scalar(
        wh,
        f"SELECT (SELECT count(*) FROM ({left} EXCEPT ALL {right}) a) + "
        f"(SELECT count(*) FROM ({right} EXCEPT ALL {left}) b)",
    )


def plan_document(checkpoint_column: str = "id") -> dict:
    """A stored run-plan document (process_log.mapping) for runs a test writes by hand: a
    mapping with a KEY checkpoint on ``checkpoint_column``."""
    return {
        "spec": {
            "source": {"connection": "x", "query": f"SELECT 1 AS {checkpoint_column}"},
            "target": {"connection": "x", "table": "t"},
            "keys": [checkpoint_column],
            "checkpoint": {"strategy": "KEY", "column": checkpoint_column},
        },
        "columns": [checkpoint_column],
    }
