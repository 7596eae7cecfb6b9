"""Audit column names that do not collide: a new target gets the ``dw_`` names, so a source
with its own ``updated_at`` loads on the first try with the defaults; a target created with
the earlier, unprefixed names keeps them and goes on loading incrementally."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect, text

from coordinator.launch import launch
from coordinator.watch import wait
from shared.config.mapping import LEGACY_AUDIT_NAMES
from shared.run.statuses import RunStatus
from tests.pgdata import add_customers, change_every_tenth, create_customers, scalar, scd2_mapping

pytestmark = pytest.mark.e2e


def _run(settings, mapref: str):
    run = wait(launch(mapref, settings=settings), settings=settings, timeout_s=60, poll_s=0.2)
    assert run.status is RunStatus.SUCCESS, run.message
    return run


def _columns(wh, schema: str, table: str) -> list[str]:
    with wh.connect() as conn:
        return [c["name"] for c in inspect(conn).get_columns(table, schema=schema)]


def test_a_source_with_updated_at_loads_scd1_with_the_defaults(workers, make_settings, wh, schema):
    create_customers(wh, schema, 500)  # its columns include updated_at
    settings = make_settings({"s1": scd2_mapping(schema, target="dim_s1", scd={"type": 1})})
    run = _run(settings, "s1")
    assert run.rows_inserted == 500
    columns = _columns(wh, schema, "dim_s1")
    assert "updated_at" in columns  # the source's own column, loaded as business data
    assert {"dw_row_hash", "dw_inserted_at", "dw_updated_at", "dw_run_id"} <= set(columns)


def test_a_target_with_the_old_names_keeps_loading_incrementally(
    workers, make_settings, wh, schema
):
    source = create_customers(wh, schema, 1_000)
    old = scd2_mapping(schema, target="dim_old", scd={"audit_columns": LEGACY_AUDIT_NAMES})
    first = _run(make_settings({"legacy": old}), "legacy")  # as an earlier version created it
    assert first.rows_inserted == 1_000
    created = set(_columns(wh, schema, "dim_old"))
    assert {"sk", "row_hash", "valid_from", "valid_to", "is_current", "run_id"} <= created

    change_every_tenth(wh, source)
    add_customers(wh, source, 1_001, 50)
    settings = make_settings({"legacy": scd2_mapping(schema, target="dim_old")})  # defaults
    second = _run(settings, "legacy")
    assert (second.rows_changed, second.rows_inserted) == (100, 50)
    assert set(_columns(wh, schema, "dim_old")) == created  # no dw_ column was added
    target = f'"{schema}"."dim_old"'
    assert scalar(wh, f"SELECT count(*) FROM {target} WHERE is_current") == 1_050
    assert scalar(wh, f"SELECT count(*) FROM {target} WHERE NOT is_current") == 100
    assert scalar(wh, f"SELECT count(*) FROM {target} WHERE run_id = :r", r=second.run_id) == 150
    with wh.connect() as conn:  # the expired version ends where the new one starts
        ends = conn.execute(
            text(
                f"SELECT o.valid_to = n.valid_from FROM {target} o JOIN {target} n "
                f"ON o.id = n.id AND NOT o.is_current AND n.is_current WHERE o.id = 10"
            )
        ).scalar_one()
    assert ends
