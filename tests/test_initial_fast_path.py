"""A first pass over a key range in which the target has no current row inserts without
comparing (``Pass.INITIAL``); a range that has current rows compares as before. One run
over a target that already holds part of the keys takes both paths, chunk by chunk, and
stays exact: new keys inserted, changed keys versioned, equal keys untouched, one current
version per key."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from coordinator.launch import launch
from coordinator.watch import wait
from shared.run.statuses import RunStatus
from tests.pgdata import BUSINESS_COLUMNS, create_customers, diff_count, scalar, scd2_mapping

pytestmark = pytest.mark.e2e

ROWS = 60_000
HELD = (30_000, 40_000)  # keys (30000, 40000]: in the target before the run


def test_one_run_inserts_empty_ranges_and_compares_held_ones(workers, make_settings, wh, schema):
    source = create_customers(wh, schema, ROWS)
    low, high = HELD
    chunking = {"rows_per_chunk": 10_000, "min_rows_for_parallel": 20_000, "exact_count": True}
    part = scd2_mapping(schema, target="dim_mixed", chunking=chunking)
    part["source"]["query"] = (
        f"SELECT {BUSINESS_COLUMNS} FROM {source} WHERE id > {low} AND id <= {high}"
    )
    whole = scd2_mapping(schema, target="dim_mixed", chunking=chunking)
    settings = make_settings({"part": part, "whole": whole})

    first = wait(launch("part", settings=settings), settings=settings, timeout_s=120, poll_s=0.2)
    assert first.status is RunStatus.SUCCESS, first.message
    assert first.rows_inserted == high - low
    with wh.begin() as conn:  # every 100th held key changes, and one key outside the held range
        changed = conn.execute(
            text(
                f"UPDATE {source} SET city = 'Reykjavik' "
                f"WHERE (id > {low} AND id <= {high} AND id % 100 = 0) OR id = 7"
            )
        ).rowcount
    held_changed = changed - 1

    run = wait(launch("whole", settings=settings), settings=settings, timeout_s=120, poll_s=0.2)
    assert run.status is RunStatus.SUCCESS, run.message
    assert run.chunks_total == 6, run.plan_note
    assert (run.rows_read, run.rows_inserted, run.rows_changed, run.rows_unchanged) == (
        ROWS,
        ROWS - (high - low),
        held_changed,
        high - low - held_changed,
    )
    dim = f'"{schema}"."dim_mixed"'
    assert scalar(wh, f"SELECT count(*) FROM {dim}") == ROWS + held_changed
    assert (
        scalar(
            wh,
            f"SELECT count(*) FROM (SELECT id FROM {dim} WHERE dw_is_current GROUP BY id "
            f"HAVING count(*) <> 1) d",
        )
        == 0
    )
    assert (
        diff_count(
            wh,
            f"SELECT {BUSINESS_COLUMNS} FROM {dim} WHERE dw_is_current",
            f"SELECT {BUSINESS_COLUMNS} FROM {source}",
        )
        == 0
    )
    # the key-7 row came in new (its range was empty) as it is now, not as a change
    assert scalar(wh, f"SELECT count(*) FROM {dim} WHERE id = 7") == 1
