"""An initial load between PostgreSQL databases COPYs its batches straight into the target
(``shared/chunk/direct.py``): the source prints each row with its row hash and audit values.

What must hold, whichever way a batch went:
- the target holds the source's values exactly, and the row hash is the one the target
  computes itself: a full rerun finds every row unchanged;
- the stored checkpoint is the window's maximum, though no stage saw the direct batches;
- a column whose type the target holds differently takes the stage, and stays exact;
- a key twice in a batch, here with two texts (numeric ``4`` and ``4.00``), is refused by
  the unique index, and the batch takes the stage, where the later checkpoint wins;
- a batch's COPY reads the source while it prints: a source failing in the middle of a batch
  leaves nothing of that batch, and the run fails with the source's own error.

Duplicate keys within a batch and NULL key parts on this path are covered by the property
tests in test_differential.py (PG->PG), whose initial loads take it.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from decimal import Decimal

import pytest
from sqlalchemy import text

from coordinator.launch import launch
from coordinator.watch import wait
from shared.run.statuses import RunStatus
from shared.run.values import decode_value
from tests.optdata import checkpoint as stored_checkpoint
from tests.pgdata import diff_count, scalar, scd2_mapping

pytestmark = pytest.mark.e2e

ROWS = 3_000
COLUMNS = (
    "id bigint PRIMARY KEY, i int, s smallint, t text, v varchar(12), n numeric(12,2), "
    "u numeric, f double precision, b boolean, d date, ts timestamp(3), tz timestamptz, "
    "tm time, by bytea, j jsonb, id2 uuid, chg_at timestamp NOT NULL"
)
NAMES = "id, i, s, t, v, n, u, f, b, d, ts, tz, tm, by, j, id2, chg_at"
# every 7th value NULL; text with tabs, newlines, backslashes, quotes and unicode; floats
# NaN and infinities; dates infinity and BC; numbers with trailing zeros
ROWS_SQL = (
    "SELECT g, CASE WHEN g % 7 = 1 THEN NULL ELSE g * 3 END, (g % 300)::smallint, "
    "CASE WHEN g % 7 = 2 THEN NULL ELSE E'tab\\there\\nline\\\\back \"q\" ' || g || ' ü€' END, "
    "CASE WHEN g % 7 = 3 THEN NULL ELSE 'v' || g END, round(g * 1.25, 2), "
    "CASE g % 4 WHEN 0 THEN 1.500 WHEN 1 THEN 0.10 ELSE g / 7.0 END, "
    "CASE g % 9 WHEN 0 THEN 'NaN'::float8 WHEN 1 THEN 'Infinity' ELSE g / 3.0 END, "
    "CASE WHEN g % 7 = 4 THEN NULL ELSE g % 2 = 0 END, "
    "CASE g % 11 WHEN 0 THEN 'infinity'::date WHEN 1 THEN '0044-03-15 BC' "
    "ELSE DATE '2020-01-01' + g END, TIMESTAMP '2026-01-01 10:00:00.123' + g * INTERVAL '1 s', "
    "TIMESTAMPTZ '2026-01-01 10:00:00+05' + g * INTERVAL '1 min', TIME '08:00' + g * "
    "INTERVAL '1 s', decode(lpad(to_hex(g), 8, '0'), 'hex'), "
    "jsonb_build_object('k', g, 'x', 1.50, 'l', jsonb_build_array(1, 'a')), md5(g::text)::uuid, "
    "TIMESTAMP '2026-02-01' + g * INTERVAL '1 s' FROM generate_series(1, :n) g"
)


def _mapping(schema: str, table: str, target: str, **overrides) -> dict:
    return scd2_mapping(
        schema,
        target=target,
        **{
            "source": {"connection": "wh", "query": f'SELECT {NAMES} FROM "{schema}".{table}'},
            "checkpoint": {"strategy": "KEY", "column": "chg_at"},
            "chunking": {"rows_per_chunk": 1_000, "min_rows_for_parallel": 0, "exact_count": True},
            "batch_rows": 500,
            **overrides,
        },
    )


def _run(settings, mapref: str, chunks: int | None = None):
    run_id = launch(mapref, settings=settings, chunks_override=chunks)
    run = wait(run_id, settings=settings, timeout_s=120, poll_s=0.2)
    assert run.status is RunStatus.SUCCESS, run.message
    return run


def _log_lines(workers, run_id: str, needle: str, at_least: int = 0) -> list[str]:
    """The worker log's lines about ``run_id`` that contain ``needle``; waits (up to 10 s)
    for ``at_least`` of them: a chunk logs its end after the run may have finished."""
    deadline = time.monotonic() + 10
    while True:
        lines = [
            line
            for line in workers.log_path.read_text(errors="replace").splitlines()
            if f"run {run_id}" in line and needle in line
        ]
        if len(lines) >= at_least or time.monotonic() > deadline:
            return lines
        time.sleep(0.1)


@pytest.mark.parametrize("scd_type", [1, 2])
def test_an_initial_load_copied_straight_in_is_exact_and_hashed_as_the_target_would(
    workers, make_settings, wh, schema, scd_type
):
    with wh.begin() as conn:
        conn.execute(text(f'CREATE TABLE "{schema}".src ({COLUMNS})'))
        conn.execute(text(f'INSERT INTO "{schema}".src {ROWS_SQL}'), {"n": ROWS})
        conn.execute(text(f'ANALYZE "{schema}".src'))
    first = _mapping(schema, "src", "dim", scd={"type": scd_type})
    again = {**first, "checkpoint": {"strategy": "NONE"}}
    settings = make_settings({f"first_{schema}": first, f"again_{schema}": again})

    run = _run(settings, f"first_{schema}")
    assert run.chunks_total == 3, run.plan_note
    assert (run.rows_read, run.rows_inserted) == (ROWS, ROWS)
    straight = _log_lines(workers, run.run_id, "COPYed straight into the target", at_least=3)
    assert len(straight) == 3, workers.log_tail()
    dim = f'"{schema}".dim'
    current = " WHERE dw_is_current" if scd_type == 2 else ""
    assert diff_count(wh, f"SELECT {NAMES} FROM {dim}{current}", f"SELECT {NAMES} FROM {dim}") == 0
    assert diff_count(wh, f"SELECT {NAMES} FROM {dim}", f'SELECT {NAMES} FROM "{schema}".src') == 0
    # the checkpoint is the window's maximum, read back from the target
    stored = decode_value(stored_checkpoint(settings, f"first_{schema}"))
    assert stored == dt.datetime(2026, 2, 1) + dt.timedelta(seconds=ROWS)

    rerun = _run(settings, f"again_{schema}")  # every row again, compared by the target's own hash
    assert (rerun.rows_read, rerun.rows_inserted, rerun.rows_changed) == (ROWS, 0, 0)
    assert rerun.rows_unchanged == ROWS
    assert scalar(wh, f"SELECT count(*) FROM {dim}") == ROWS


def test_a_column_the_target_holds_otherwise_takes_the_stage(workers, make_settings, wh, schema):
    """``real`` becomes ``double precision`` in a target chordload creates: the source's text
    of a real is not the target's, so the row hash must come from the target."""
    with wh.begin() as conn:
        conn.execute(text(f'CREATE TABLE "{schema}".src ({COLUMNS}, r real)'))
        conn.execute(
            text(f'INSERT INTO "{schema}".src SELECT *, (id / 3.0)::real FROM ({ROWS_SQL}) x(id)'),
            {"n": ROWS},
        )
    query = f'SELECT {NAMES}, r FROM "{schema}".src'
    first = _mapping(schema, "src", "dim")
    first["source"]["query"] = query
    again = {**first, "checkpoint": {"strategy": "NONE"}}
    settings = make_settings({f"first_{schema}": first, f"again_{schema}": again})

    run = _run(settings, f"first_{schema}")
    ended = _log_lines(workers, run.run_id, "ended SUCCESS", at_least=run.chunks_total)
    assert len(ended) == run.chunks_total, workers.log_tail()
    assert not [line for line in ended if "COPYed straight into the target" in line]
    refused = _log_lines(workers, run.run_id, "initial batches take the stage")
    assert refused and "column 'r' is real in the source" in refused[0], refused
    rerun = _run(settings, f"again_{schema}")
    assert (rerun.rows_inserted, rerun.rows_changed, rerun.rows_unchanged) == (0, 0, ROWS)


def test_a_key_equal_in_value_but_printed_otherwise_is_one_key(workers, make_settings, wh, schema):
    """numeric keys 4 and 4.00 are one key with two texts, kept in one batch (the cutter
    compares numbers): the unique current-row index refuses that batch's COPY straight
    into the target, the batch takes the stage, and the row of the later checkpoint is
    kept, as on the stage path."""
    with wh.begin() as conn:
        conn.execute(
            text(f'CREATE TABLE "{schema}".src (k numeric, name text, chg_at timestamp NOT NULL)')
        )
        conn.execute(
            text(
                f"INSERT INTO \"{schema}\".src SELECT g, 'n' || g, TIMESTAMP '2026-01-01' + "
                f"g * INTERVAL '1 min' FROM generate_series(1, 40) g"
            )
        )
        conn.execute(
            text(
                f"INSERT INTO \"{schema}\".src VALUES (4.00, 'later', '2026-03-01'), "
                f"(20.0, 'later too', '2026-03-02')"
            )
        )
    mapping = {
        "source": {"connection": "wh", "query": f'SELECT k, name, chg_at FROM "{schema}".src'},
        "target": {"connection": "wh", "table": f"{schema}.dim"},
        "keys": ["k"],
        "scd": {"type": 2},
        "checkpoint": {"strategy": "KEY", "column": "chg_at"},
        "chunking": {"min_rows_for_parallel": 0, "rows_per_chunk": 100},
        "batch_rows": 1,
    }
    settings = make_settings({schema: mapping})
    run = _run(settings, schema)
    assert (run.rows_read, run.rows_inserted, run.rows_duplicate) == (42, 40, 2)
    # 38 keys went straight in; the two batches holding a key twice took the stage
    ended = _log_lines(workers, run.run_id, "ended SUCCESS", at_least=run.chunks_total)
    straight = [re.search(r"(\d+) COPYed straight", line) for line in ended]
    assert sum(int(m.group(1)) for m in straight if m) == 38, ended
    with wh.connect() as conn:
        found = conn.execute(
            text(f'SELECT k, name FROM "{schema}".dim WHERE dw_is_current AND k IN (4, 20)')
        )
        got = dict(found.all())
    assert got == {Decimal("4.00"): "later", Decimal("20.0"): "later too"}
    assert scalar(wh, f'SELECT count(*) FROM "{schema}".dim') == 40


def test_a_source_failing_while_a_batch_streams_in_leaves_nothing_of_that_batch(
    workers, make_settings, wh, schema
):
    """A batch's COPY into the target reads the source's rows as they arrive, so the source
    can fail in the middle of it. That batch must leave nothing behind: the run fails with
    the source's own error, the target holds exactly the batches committed before, and a
    rerun once the source is mended loads the rest exactly."""
    gate = f'"{schema}".gate'

    def source_fails_at(key: int | None) -> None:
        # only in a chunk's read (a COPY: planning reads the query too); the middle chunk's
        # key range is an index scan, so the rows before the failing one stream out first
        check = (
            f"IF k = {key} AND current_query() LIKE 'COPY (%' THEN "
            f"RAISE EXCEPTION 'source row % is unreadable', k; END IF;"
        )
        with wh.begin() as conn:
            conn.execute(
                text(
                    f"CREATE OR REPLACE FUNCTION {gate}(k bigint) RETURNS boolean "
                    f"LANGUAGE plpgsql VOLATILE AS $$ BEGIN {check if key else ''} "
                    f"RETURN true; END $$"
                )
            )

    rows = 30_000
    source_fails_at(15_000)
    with wh.begin() as conn:
        conn.execute(text(f'CREATE TABLE "{schema}".src (id bigint PRIMARY KEY, chg_at timestamp)'))
        conn.execute(
            text(
                f"INSERT INTO \"{schema}\".src SELECT g, TIMESTAMP '2026-01-01' + g * "
                f"INTERVAL '1 s' FROM generate_series(1, {rows}) g"
            )
        )
        conn.execute(text(f'ANALYZE "{schema}".src'))
    mapping = _mapping(
        schema,
        "src",
        "dim",
        source={
            "connection": "wh",
            "query": f'SELECT id, chg_at FROM "{schema}".src WHERE {gate}(id)',
        },
        chunking={"rows_per_chunk": 10_000, "min_rows_for_parallel": 0, "exact_count": True},
        batch_rows=2_000,
    )
    settings = make_settings({schema: mapping})
    run_id = launch(schema, settings=settings)
    run = wait(run_id, settings=settings, timeout_s=120, poll_s=0.2)
    assert run.status is RunStatus.FAILED, run.message
    assert "source row 15000 is unreadable" in run.message, run.message
    assert "read() call" not in run.message, "the source's error, not the COPY's echo of it"
    straight = _log_lines(workers, run_id, "COPYed straight into the target", at_least=3)
    assert len(straight) == 3, workers.log_tail()  # the failed chunk's 2 batches too
    # the chunk (10000, 20000] committed its batches up to key 14000 before the batch
    # holding key 15000 began; nothing of that batch is in the target
    dim = f'"{schema}".dim'
    assert scalar(wh, f"SELECT count(*) FROM {dim}") == rows - 6_000, workers.log_tail()
    assert scalar(wh, f"SELECT count(*) FROM {dim} WHERE id > 14000 AND id <= 20000") == 0
    assert run.rows_inserted == rows - 6_000

    source_fails_at(None)
    rerun = _run(settings, schema)
    assert (rerun.rows_inserted, rerun.rows_unchanged) == (6_000, rows - 6_000)
    expected = f'SELECT id, chg_at FROM "{schema}".src'
    assert diff_count(wh, f"SELECT id, chg_at FROM {dim} WHERE dw_is_current", expected) == 0
    assert scalar(wh, f"SELECT count(*) FROM {dim}") == rows
