"""Planning a large window from a sample (PostgreSQL ``TABLESAMPLE``) instead of a sort of
the whole window: on skewed keys stored in key order (the hard case for a page sample, whose
pages hold neighbouring keys) every row still lands in exactly one chunk and the chunks stay
within 2x of each other, from a page sample for a few chunks and a row sample for many; a
query that is not one plain table falls back to the exact quantiles; the plan note says
which method ran and what it cost."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from coordinator.plan import plan_run
from shared.engines import get_engine
from tests.pgdata import BASE_TS, scalar, scd2_mapping

pytestmark = pytest.mark.e2e

DENSE, SPARSE = 270_000, 30_000


def _skewed(wh, schema: str) -> str:
    """90% of the ids are 1..270000, the rest spread up to about 3 * 10^9, in key order."""
    table = f'"{schema}"."skewed_large"'
    with wh.begin() as conn:
        conn.execute(
            text(f"CREATE TABLE {table} (id bigint PRIMARY KEY, updated_at timestamp NOT NULL)")
        )
        conn.execute(
            text(
                f"INSERT INTO {table} SELECT g, TIMESTAMP '{BASE_TS}' + g * INTERVAL '1 second' "
                f"FROM generate_series(1, {DENSE}) g UNION ALL SELECT 300000 + g::bigint * "
                f"99990, TIMESTAMP '{BASE_TS}' + g * INTERVAL '1 second' "
                f"FROM generate_series(1, {SPARSE}) g ORDER BY 1"
            )
        )
    with wh.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(
            text(f"VACUUM ANALYZE {table}")
        )
    return table


def _plan(make_settings, schema, query: str, target: str, rows_per_chunk: int = 50_000):
    mapping = scd2_mapping(
        schema,
        target=target,
        chunking={
            "rows_per_chunk": rows_per_chunk,
            "min_rows_for_parallel": 50_000,
            "max_chunks": 1_000,
        },
    )
    mapping["source"]["query"] = query
    settings = make_settings({"m": mapping})
    return plan_run(settings, "m", settings.mapping("m"), get_engine(settings.metadata))


def _chunk_counts(wh, table: str, plan) -> tuple[list[int], int]:
    """Rows in each planned range, and rows that no range or several ranges hold."""
    cases, params = [], {}
    for chunk in plan.ranges:
        terms = []
        if chunk.lower is not None:
            terms.append(f"id > :lo{chunk.chunk_no}")
            params[f"lo{chunk.chunk_no}"] = chunk.lower
        if chunk.upper is not None:
            terms.append(f"id <= :hi{chunk.chunk_no}")
            params[f"hi{chunk.chunk_no}"] = chunk.upper
        cases.append(f"(CASE WHEN {' AND '.join(terms) or 'true'} THEN 1 ELSE 0 END)")
    sums = ", ".join(f"sum({case})" for case in cases)
    membership = " + ".join(cases)
    sql = f"SELECT {sums}, count(*) FILTER (WHERE {membership} <> 1) FROM {table}"
    with wh.connect() as conn:
        row = conn.execute(text(sql), params).one()
    return list(row[:-1]), row[-1]


def test_large_skewed_window_is_planned_from_a_sample(make_settings, wh, schema):
    skewed = _skewed(wh, schema)
    plan = _plan(make_settings, schema, f"SELECT id, updated_at FROM {skewed}", "dim_sampled")
    assert "page sample" in plan.note, plan.note
    assert plan.note.rstrip().endswith(" s"), plan.note  # the method's cost, in seconds
    assert len(plan.ranges) == 6, plan.note
    sizes, misplaced = _chunk_counts(wh, skewed, plan)
    assert misplaced == 0  # every row in exactly one chunk
    assert sum(sizes) == DENSE + SPARSE == scalar(wh, f"SELECT count(*) FROM {skewed}")
    assert min(sizes) > 0 and max(sizes) <= 2 * min(sizes), sizes

    # 60 chunks: a page sample would need more pages than the table has, a row sample
    # reads the table once and sorts a fifth of it
    plan = _plan(make_settings, schema, f"SELECT id, updated_at FROM {skewed}", "dim_rows", 5_000)
    assert "row sample" in plan.note, plan.note
    assert len(plan.ranges) == 60, plan.note
    sizes, misplaced = _chunk_counts(wh, skewed, plan)
    assert misplaced == 0 and sum(sizes) == DENSE + SPARSE
    assert min(sizes) > 0 and max(sizes) <= 2 * min(sizes), sizes

    # 300 chunks: even a row sample would sort most of the window, the exact sort is taken
    plan = _plan(make_settings, schema, f"SELECT id, updated_at FROM {skewed}", "dim_many", 1_000)
    assert "exact quantiles of the window" in plan.note, plan.note
    assert len(plan.ranges) == 300, plan.note

    # a query that is not one plain table: the exact quantiles, as before
    plan = _plan(
        make_settings, schema, f"SELECT id, updated_at FROM {skewed} WHERE id > 0", "dim_exact"
    )
    assert "exact quantiles of the window" in plan.note, plan.note
    sizes, misplaced = _chunk_counts(wh, skewed, plan)
    assert misplaced == 0 and sum(sizes) == DENSE + SPARSE
    assert max(sizes) - min(sizes) <= 1, sizes  # exact: equal counts
