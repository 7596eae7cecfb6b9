"""End to end with real worker processes on Redis and Postgres: initial, incremental and
no-change runs for SCD2 and SCD1; the target is compared with the source in SQL."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from coordinator.launch import launch
from coordinator.watch import wait
from shared.engines import get_engine
from shared.metadata import store
from shared.run.statuses import ChunkStatus, RunStatus
from tests.pgdata import (
    BUSINESS_COLUMNS,
    add_customers,
    change_every_tenth,
    create_customers,
    diff_count,
    scalar,
    scd2_mapping,
)

pytestmark = pytest.mark.e2e


def _run(settings, mapref: str):
    run_id = launch(mapref, settings=settings)
    return wait(run_id, settings=settings, timeout_s=300)


def test_scd2_initial_incremental_and_rerun(workers, make_settings, wh, schema):
    source = create_customers(wh, schema, 300_000)
    settings = make_settings({schema: scd2_mapping(schema)})
    target = f'"{schema}"."dim_customer"'
    current = f"SELECT {BUSINESS_COLUMNS} FROM {target} WHERE dw_is_current"
    src = f"SELECT {BUSINESS_COLUMNS} FROM {source}"

    first = _run(settings, schema)
    assert first.status is RunStatus.SUCCESS, first.message
    assert first.chunks_total >= 8
    chunks = store.get_chunks(get_engine(settings.metadata), first.run_id)
    assert all(c.status is ChunkStatus.SUCCESS for c in chunks)
    assert len({c.worker for c in chunks}) == 2, "both worker processes took chunks"
    assert first.rows_read == first.rows_inserted == 300_000
    assert diff_count(wh, current, src) == 0
    assert scalar(wh, f"SELECT count(*) FROM {target}") == 300_000
    assert (
        scalar(
            wh,
            f"SELECT count(*) FROM (SELECT id FROM {target} WHERE dw_is_current "
            f"GROUP BY id HAVING count(*) > 1) d",
        )
        == 0
    )
    max_source = scalar(wh, f"SELECT max(updated_at) FROM {source}")
    stored = store.get_checkpoint(get_engine(settings.metadata), schema)
    assert stored.value == {"type": "datetime", "value": max_source.isoformat()}

    changed = change_every_tenth(wh, source)
    add_customers(wh, source, 300_001, 5_000)
    in_window = scalar(wh, f"SELECT count(*) FROM {source} WHERE updated_at >= :cp", cp=max_source)
    second = _run(settings, schema)
    assert second.status is RunStatus.SUCCESS, second.message
    # only the window is read: the changed and new rows (the boundary row, id 300000, is
    # one of the changed ones)
    assert second.rows_read == in_window == changed + 5_000
    assert second.rows_changed == changed == 30_000
    assert second.rows_inserted == 5_000
    assert second.rows_unchanged == 0
    assert diff_count(wh, current, src) == 0
    # a changed key: the old version expired exactly at the new version's valid_from
    versions = []
    with wh.connect() as conn:
        versions = conn.execute(
            text(
                f"SELECT city, dw_valid_from AS valid_from, dw_valid_to AS valid_to, "
                f"dw_is_current AS is_current, dw_run_id AS run_id FROM {target} "
                f"WHERE id = 10 ORDER BY dw_valid_from"
            )
        ).all()
    assert [v.city for v in versions] == ["Berlin", "Reykjavik"]
    old, new = versions
    assert (old.is_current, new.is_current) == (False, True)
    assert old.valid_to == new.valid_from and new.valid_to is None
    assert (old.run_id, new.run_id) == (first.run_id, second.run_id)
    # unchanged keys untouched: one version, written by the first run
    assert (
        scalar(
            wh,
            f"SELECT count(*) FROM {target} WHERE id % 10 <> 0 AND id <= 300000 "
            f"AND (dw_run_id <> :r OR NOT dw_is_current)",
            r=first.run_id,
        )
        == 0
    )

    third = _run(settings, schema)
    assert third.status is RunStatus.SUCCESS
    assert (third.rows_inserted, third.rows_changed) == (0, 0)
    assert scalar(wh, f"SELECT count(*) FROM {target}") == 300_000 + 30_000 + 5_000


def test_scd1_initial_incremental_and_rerun(workers, make_settings, wh, schema):
    source = create_customers(wh, schema, 120_000)
    mapping = scd2_mapping(
        schema,
        target="cust",
        scd={"type": 1},  # the source's updated_at does not clash with the audit names
        chunking={"rows_per_chunk": 30_000},
    )
    settings = make_settings({schema: mapping})
    target = f'"{schema}"."cust"'
    tgt = f"SELECT {BUSINESS_COLUMNS} FROM {target}"
    src = f"SELECT {BUSINESS_COLUMNS} FROM {source}"

    first = _run(settings, schema)
    assert first.status is RunStatus.SUCCESS, first.message
    assert first.chunks_total >= 4
    assert first.rows_inserted == 120_000
    assert diff_count(wh, tgt, src) == 0

    max_before = scalar(wh, f"SELECT max(updated_at) FROM {source}")
    changed = change_every_tenth(wh, source)
    add_customers(wh, source, 120_001, 2_000)
    second = _run(settings, schema)
    assert second.status is RunStatus.SUCCESS, second.message
    assert second.rows_changed == changed == 12_000
    assert second.rows_inserted == 2_000
    assert second.rows_read == scalar(
        wh, f"SELECT count(*) FROM {source} WHERE updated_at >= :c", c=max_before
    )
    assert diff_count(wh, tgt, src) == 0
    with wh.connect() as conn:
        row = conn.execute(
            text(
                f"SELECT city, dw_run_id AS run_id, dw_inserted_at < dw_updated_at AS moved "
                f"FROM {target} WHERE id = 10"
            )
        ).one()
    assert (row.city, row.run_id, row.moved) == ("Reykjavik", second.run_id, True)
    assert (
        scalar(
            wh,
            f"SELECT count(*) FROM {target} WHERE id % 10 <> 0 AND id <= 120000 AND dw_run_id <> :r",
            r=first.run_id,
        )
        == 0
    )

    third = _run(settings, schema)
    assert (third.status, third.rows_inserted, third.rows_changed) == (RunStatus.SUCCESS, 0, 0)


def test_a_successful_cli_run_prints_its_summary_and_nothing_on_stderr(
    workers, base_config, wh, schema, tmp_path
):
    """`chordload run --wait`, as its own process: exit 0, the summary on stdout, and not a
    byte on stderr (redis-py 8 printed a traceback at the exit of every such process)."""
    from tests.cliutil import run_subprocess, write_config

    create_customers(wh, schema, 3_000)
    config = write_config(
        tmp_path / "chordload.yaml", base_config, {"quiet": scd2_mapping(schema, target="dim_q")}
    )
    result = run_subprocess("run", "quiet", "--wait", "--config", config, timeout_s=180)
    assert result.code == 0, result
    assert "SUCCESS" in result.out, result.out
    assert result.err == "", result.err
    listed = run_subprocess("status", "--config", config)
    assert (listed.code, listed.err) == (0, "")
