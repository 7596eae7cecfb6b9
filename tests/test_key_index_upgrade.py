"""A target created before the NULL-safe unique key index (by an older chordload) gets that
index when the next run is planned, if no key has two current rows; otherwise the plan note
says how many keys to resolve, and the index stays until they are."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from coordinator.plan import plan_run
from shared.dialects import adapter_for
from shared.engines import get_engine


def _old_index(engine, adapter, table_ref: str, index: str, qualified_index: str) -> None:
    """The unique index as an older chordload made it: NULL key parts distinct."""
    with engine.begin() as conn:
        conn.execute(text(f"DROP INDEX {qualified_index}"))
        conn.execute(
            text(
                f"CREATE UNIQUE INDEX {adapter.q(index)} ON {table_ref} (a, b) WHERE dw_is_current"
            )
        )


def _current_row(engine, table_ref: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(
                f"INSERT INTO {table_ref} (a, b, name, dw_row_hash, dw_valid_from, dw_is_current, dw_run_id) "
                f"VALUES (1, NULL, 'again', 'h', '2026-01-01', true, 'r')"
            )
        )


@pytest.mark.parametrize("target", ["pg", "lite"])
def test_an_old_key_index_is_rebuilt_null_safe_at_plan_time(
    target, wh, schema, sqlite_url, make_settings
):
    with wh.begin() as conn:
        conn.execute(text(f'CREATE TABLE "{schema}".pairs (a int, b int, name text)'))
        conn.execute(text(f"INSERT INTO \"{schema}\".pairs VALUES (1, NULL, 'x'), (2, 1, 'y')"))
    table = f"dim_{uuid.uuid4().hex[:8]}"
    engine = wh if target == "pg" else get_engine(sqlite_url)
    adapter = adapter_for(engine)
    table_ref = f'"{schema}".{table}' if target == "pg" else table
    settings = make_settings(
        {
            "pairs": {
                "source": {
                    "connection": "wh",
                    "query": f'SELECT a, b, name FROM "{schema}".pairs',
                },
                "target": {
                    "connection": "wh" if target == "pg" else "lite",
                    "table": f"{schema}.{table}" if target == "pg" else table,
                },
                "keys": ["a", "b"],
                "scd": {"type": 2},
            }
        }
    )
    spec, metadata = settings.mappings["pairs"], get_engine(settings.metadata)
    index = adapter.index_name(table, "current")
    qualified = f'"{schema}".{adapter.q(index)}' if target == "pg" else adapter.q(index)
    try:
        first = plan_run(settings, "pairs", spec, metadata)  # creates the target
        assert "unique key index" not in first.note
        _current_row(engine, table_ref)
        with pytest.raises(IntegrityError):  # the new index refuses a second one ...
            _current_row(engine, table_ref)
        _old_index(engine, adapter, table_ref, index, qualified)
        _current_row(engine, table_ref)  # ... the old one lets it in
        blocked = plan_run(settings, "pairs", spec, metadata)
        assert "1 keys have several" in blocked.note, blocked.note
        with engine.connect() as conn:
            assert adapter.null_safe_key_index(conn, spec.target, index) is False
        with engine.begin() as conn:
            conn.execute(text(f"DELETE FROM {table_ref} WHERE name = 'again'"))
        upgraded = plan_run(settings, "pairs", spec, metadata)
        assert "unique key index rebuilt" in upgraded.note, upgraded.note
        with engine.connect() as conn:
            assert adapter.null_safe_key_index(conn, spec.target, index) is True
        _current_row(engine, table_ref)
        with pytest.raises(IntegrityError):
            _current_row(engine, table_ref)
        assert "unique key index" not in plan_run(settings, "pairs", spec, metadata).note
    finally:
        if target == "lite":
            with engine.begin() as conn:
                conn.execute(text(f"DROP TABLE IF EXISTS {table}"))
