"""The value contract per pairing and path: every value arrives exactly as the source holds
it, or its row is quarantined with a message naming the column, and a no-op rerun reports 0
changed (docs/databases.md, "Values per pairing").

One source table per source database, one row per value (the other columns NULL), loaded
through the real path (planner, chord, a worker) by every path there is: PostgreSQL to
PostgreSQL relayed, typed (several checkpoint columns) and with a PYTHON checkpoint;
PostgreSQL to MariaDB and to SQLite; MariaDB and SQLite to PostgreSQL."""

from __future__ import annotations

import datetime as dt
import math
import uuid
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import text

from coordinator.launch import launch
from coordinator.watch import wait
from shared.engines import get_engine
from shared.metadata import store
from shared.run.statuses import RunStatus

pytestmark = pytest.mark.e2e

PG_DDL = (
    "CREATE TABLE {t} (id int PRIMARY KEY, v int NOT NULL, w int NOT NULL, ia int[], "
    "ta text[], iv interval, ttz timetz, js json, jb jsonb, n numeric, n2 numeric(12, 2), "
    "f float8, ts timestamp(6), tz timestamptz, d date, t time, b bytea, s text, u uuid)"
)
Q = "QUARANTINED"  # the row is kept in error_row, naming the column
UTC = dt.UTC

# id: (column, PostgreSQL literal, MariaDB holds, SQLite holds) — the value read back from
# the target by its driver, or Q. PostgreSQL targets hold every value: compared as text.
PG_CASES: dict[int, tuple[str, str, Any, Any]] = {
    1: ("ia", "'{1,2,NULL}'", "{1,2,NULL}", "{1,2,NULL}"),
    2: ("ta", """'{"a,b",NULL,"q\\"t"}'""", '{"a,b",NULL,"q\\"t"}', '{"a,b",NULL,"q\\"t"}'),
    3: ("iv", "'1 year 2 mons 3 days 04:05:06.5'", "1 year 2 mons 3 days 04:05:06.5", ...),
    4: ("iv", "'-00:00:01'", "-00:00:01", "-00:00:01"),
    5: ("ttz", "'10:00:00.5+02'", "10:00:00.5+02", "10:00:00.5+02"),
    6: ("js", """'{"b": 2.50,  "a": [1.0, 1e2]}'""", '{"b": 2.50,  "a": [1.0, 1e2]}', ...),
    7: ("jb", """'{"z": 2.50, "a": 1.00000000000000000001}'""", ..., ...),
    8: ("n", "'1.00000000000000000001'", Decimal("1.00000000000000000001"), Q),
    9: ("n", "'123456789012345678901234567890.5'", Decimal("123456789012345678901234567890.5"), Q),
    10: ("n", "'NaN'", Q, "NaN"),
    11: ("n2", "'2.50'", Decimal("2.50"), 2.5),
    12: ("n", "'0.000000000000000000000000000001'", Decimal("1E-30"), 1e-30),
    13: ("n", "'0.0000000000000000000000000000001'", Q, 1e-31),
    14: ("f", "'0.1'", 0.1, 0.1),
    15: ("f", "'NaN'", Q, Q),
    16: ("f", "'Infinity'", Q, math.inf),
    17: ("f", "'-1.5e-300'", -1.5e-300, -1.5e-300),
    18: ("ts", "'infinity'", Q, "infinity"),
    19: ("ts", "'-infinity'", Q, "-infinity"),
    20: ("ts", "'2024-02-29 12:34:56.789012'", dt.datetime(2024, 2, 29, 12, 34, 56, 789012), ...),
    21: ("tz", "'2024-05-01 10:00:00.5+02'", dt.datetime(2024, 5, 1, 8, 0, 0, 500000), ...),
    22: ("tz", "'infinity'", Q, "infinity"),
    23: ("d", "'0044-03-15 BC'", Q, "0044-03-15 BC"),
    24: ("d", "'10000-01-01'", Q, "10000-01-01"),
    25: ("d", "'0001-01-01'", dt.date(1, 1, 1), "0001-01-01"),
    26: ("t", "'24:00:00'", Q, "24:00:00"),
    27: (
        "t",
        "'23:59:59.999999'",
        dt.timedelta(seconds=86399, microseconds=999999),
        "23:59:59.999999",
    ),
    28: ("b", "'\\x00ff5c0a'", b"\x00\xff\\\n", b"\x00\xff\\\n"),
    29: ("s", "''", "", ""),
    30: ("s", "E'tab\\t nl\\n \\\\ 🎉 '", "tab\t nl\n \\ 🎉 ", "tab\t nl\n \\ 🎉 "),
    31: ("u", "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'", ..., ...),
    32: ("s", "NULL", None, None),
}
SQLITE_AS_ISO = {  # what SQLite holds where it keeps Python's ISO text
    20: "2024-02-29 12:34:56.789012",
    21: "2024-05-01 08:00:00.500000+00:00",
}


def _pg_text(wh, literal: str, column: str) -> str | None:
    """The value as PostgreSQL prints it (the text every target of text receives)."""
    with wh.connect() as conn:
        conn.execute(text("SET TimeZone = 'UTC'; SET IntervalStyle = 'postgres'"))
        pg_type = {"ia": "int[]", "ta": "text[]", "iv": "interval", "ttz": "timetz"}.get(column)
        cast = {"js": "json", "jb": "jsonb", "u": "uuid"}.get(column, pg_type)
        return conn.execute(text(f"SELECT ({literal}::{cast})::text")).scalar()


def expected_at(wh, target: str, case: int) -> Any:
    column, literal, mdb, lite = PG_CASES[case]
    value = mdb if target == "mdb" else lite
    if value is ...:
        if target == "lite" and case in SQLITE_AS_ISO:
            return SQLITE_AS_ISO[case]
        return _pg_text(wh, literal.replace(":", "\\:"), column)
    return value


def _insert_pg_source(wh, schema: str, table: str) -> str:
    ref = f'"{schema}".{table}'
    with wh.begin() as conn:
        conn.execute(text(PG_DDL.format(t=ref)))
        for case, (column, literal, _mdb, _lite) in PG_CASES.items():
            conn.execute(
                text(
                    f"INSERT INTO {ref} (id, v, w, {column}) VALUES ({case}, {case}, 1, "
                    f"{literal.replace(':', chr(92) + ':')})"
                )
            )
    return f"SELECT * FROM {ref}"


def _run(settings, mapref: str, full: bool = False):
    run = wait(launch(mapref, settings=settings, full=full), settings=settings, timeout_s=120)
    assert run.status is RunStatus.SUCCESS, run.message
    return run


def _quarantined(settings, run) -> dict[int, str]:
    rows = store.error_rows(get_engine(settings.metadata), run.run_id)
    return {int(e.row_key["id"]): e.message for e in rows}


def _check_counts_and_rerun(settings, mapref: str, first, bad: set[int], total: int) -> None:
    assert (first.rows_read, first.rows_inserted, first.rows_errored) == (
        total,
        total - len(bad),
        len(bad),
    ), first.message
    again = _run(settings, mapref, full=True)
    assert (again.rows_changed, again.rows_inserted, again.rows_unchanged) == (
        0,
        0,
        total - len(bad),
    ), again.message
    assert set(_quarantined(settings, again)) == bad


PG_PATHS = {
    "relay": {},
    "typed": {"checkpoint": {"strategy": "KEY", "columns": ["v", "w"]}},
    "python": {
        "checkpoint": {"strategy": "PYTHON", "function": "tests.checkpoint_functions:row_id"}
    },
}

HASH_SETTINGS = (
    "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; SET IntervalStyle = 'postgres'; "
    "SET extra_float_digits = 3; SET bytea_output = 'hex'"
)


@pytest.mark.parametrize("path", list(PG_PATHS))
def test_postgres_to_postgres_every_value_exactly(path, wh, schema, workers, make_settings):
    source = _insert_pg_source(wh, schema, "vals")
    mapref = f"vals_pg_{path}_{uuid.uuid4().hex[:6]}"
    settings = make_settings(
        {
            mapref: {
                "source": {"connection": "wh", "query": source},
                "target": {"connection": "wh", "table": f"{schema}.dim_{path}"},
                "keys": ["id"],
                "scd": {"type": 2},
                "errors": {"max_rows": 100},
                **PG_PATHS[path],
            }
        }
    )
    first = _run(settings, mapref)
    columns = [c for c, *_ in PG_CASES.values()]
    columns = list(dict.fromkeys(columns))
    as_text = ", ".join(f"{c}::text" for c in columns)
    with wh.connect() as conn:
        conn.execute(text(HASH_SETTINGS))
        # a json source column becomes jsonb in a target chordload creates: compared as jsonb
        src = conn.execute(
            text(
                f'SELECT id, {as_text.replace("js::text", "js::jsonb::text")} FROM "{schema}".vals'
            )
        ).all()
        dim = conn.execute(
            text(f'SELECT id, {as_text} FROM "{schema}".dim_{path} WHERE dw_is_current')
        ).all()
    assert sorted(map(tuple, dim)) == sorted(map(tuple, src))
    _check_counts_and_rerun(settings, mapref, first, set(), len(PG_CASES))


@pytest.mark.parametrize("target", ["mdb", "lite"])
def test_postgres_to_other_targets_exactly_or_quarantined(
    target, wh, schema, mariadb_url, sqlite_url, workers, make_settings
):
    source = _insert_pg_source(wh, schema, "vals")
    table = f"vals_{uuid.uuid4().hex[:8]}"
    mapref = f"vals_{target}_{uuid.uuid4().hex[:6]}"
    settings = make_settings(
        {
            mapref: {
                "source": {"connection": "wh", "query": source},
                "target": {"connection": target, "table": table},
                "keys": ["id"],
                "scd": {"type": 2},
                "errors": {"max_rows": 100},
            }
        }
    )
    first = _run(settings, mapref)
    expected = {case: expected_at(wh, target, case) for case in PG_CASES}
    bad = {case for case, value in expected.items() if value is Q}
    messages = _quarantined(settings, first)
    assert set(messages) == bad
    for case in bad:  # the message names the column and shows the value
        column = PG_CASES[case][0]
        assert f"column '{column}'" in messages[case], messages[case]
    engine = get_engine(mariadb_url if target == "mdb" else sqlite_url)
    q = "`" if target == "mdb" else '"'
    if target == "mdb":  # whatever the server's mode, a session never clamps or cuts a value
        with engine.connect() as conn:
            assert "STRICT_ALL_TABLES" in conn.exec_driver_sql("SELECT @@SESSION.sql_mode").scalar()
    try:
        with engine.connect() as conn:
            for case, value in expected.items():
                if value is Q:
                    continue
                column = PG_CASES[case][0]
                stored = conn.execute(
                    text(f"SELECT {q}{column}{q} FROM {q}{table}{q} WHERE id = {case}")
                ).scalar_one()
                if isinstance(value, float) and isinstance(stored, (float, Decimal)):
                    stored = float(stored)
                if isinstance(stored, (bytes, bytearray, memoryview)):
                    stored = bytes(stored)
                assert (stored, type(stored)) == (value, type(value)), (case, column)
        _check_counts_and_rerun(settings, mapref, first, bad, len(PG_CASES))
    finally:
        with engine.begin() as conn:
            conn.execute(text(f"DROP TABLE IF EXISTS {q}{table}{q}"))


# -- into PostgreSQL from MariaDB and SQLite --------------------------------------------------
MDB_DDL = (
    "CREATE TABLE {t} (id INT PRIMARY KEY, n DECIMAL(65, 30), f DOUBLE, s TEXT, b LONGBLOB, "
    "d DATE, ts DATETIME(6), t TIME(6)) CHARACTER SET utf8mb4"
)
# id: (column, MariaDB literal, value read back from PostgreSQL or Q)
MDB_CASES: dict[int, tuple[str, str, Any]] = {
    1: (
        "n",
        "'12345678901234567890123456789012345.123456789012345678901234567891'",
        Decimal("12345678901234567890123456789012345.123456789012345678901234567891"),
    ),
    2: ("n", "'-0.000000000000000000000000000001'", Decimal("-1E-30")),
    3: ("f", "0.1", 0.1),
    4: ("f", "1.7976931348623157e308", 1.7976931348623157e308),
    5: ("s", "''", ""),
    6: ("s", "'nul\\0inside'", Q),
    7: ("s", "'🎉 tab\\t'", "🎉 tab\t"),
    8: ("b", "x'00FF5C0A'", b"\x00\xff\\\n"),
    9: ("d", "'1000-01-01'", dt.date(1000, 1, 1)),
    10: ("ts", "'9999-12-31 23:59:59.999999'", dt.datetime(9999, 12, 31, 23, 59, 59, 999999)),
    11: ("t", "'-838:59:59'", Q),
    12: ("t", "'12:34:56.5'", dt.time(12, 34, 56, 500000)),
    13: ("s", "NULL", None),
}
LITE_DDL = (
    "CREATE TABLE {t} (id INTEGER PRIMARY KEY, i INTEGER, r REAL, s TEXT, b BLOB, "
    "d DATE, ts TIMESTAMP)"
)
LITE_CASES: dict[int, tuple[str, str, Any]] = {
    1: ("i", "9223372036854775807", 9223372036854775807),
    2: ("r", "0.1", 0.1),
    3: ("r", "-2.2250738585072014e-308", -2.2250738585072014e-308),
    4: ("s", "''", ""),
    5: ("s", "'nul' || char(0) || 'inside'", Q),
    6: ("s", "'🎉 tab' || char(9)", "🎉 tab\t"),
    7: ("b", "x'00FF5C0A'", b"\x00\xff\\\n"),
    8: ("d", "'2020-02-29'", dt.date(2020, 2, 29)),
    9: ("ts", "'2024-02-29 12:34:56.789012'", dt.datetime(2024, 2, 29, 12, 34, 56, 789012)),
    10: ("s", "NULL", None),
}


@pytest.mark.parametrize("source", ["mdb", "lite"])
def test_other_sources_into_postgres(
    source, wh, schema, mariadb_url, sqlite_url, workers, make_settings
):
    ddl, cases = (MDB_DDL, MDB_CASES) if source == "mdb" else (LITE_DDL, LITE_CASES)
    engine = get_engine(mariadb_url if source == "mdb" else sqlite_url)
    table = f"src_{uuid.uuid4().hex[:8]}"
    with engine.begin() as conn:
        conn.execute(text(ddl.format(t=table)))
        for case, (column, literal, _) in cases.items():
            conn.exec_driver_sql(f"INSERT INTO {table} (id, {column}) VALUES ({case}, {literal})")
    mapref = f"vals_from_{source}_{uuid.uuid4().hex[:6]}"
    settings = make_settings(
        {
            mapref: {
                "source": {"connection": source, "query": f"SELECT * FROM {table}"},
                "target": {"connection": "wh", "table": f"{schema}.dim_{source}"},
                "keys": ["id"],
                "scd": {"type": 2},
                "errors": {"max_rows": 100},
            }
        }
    )
    try:
        first = _run(settings, mapref)
        bad = {case for case, (_, _, value) in cases.items() if value is Q}
        messages = _quarantined(settings, first)
        assert set(messages) == bad
        for case in bad:
            assert f"column '{cases[case][0]}'" in messages[case], messages[case]
        with wh.connect() as conn:
            for case, (column, _, value) in cases.items():
                if value is Q:
                    continue
                stored = conn.execute(
                    text(f'SELECT "{column}" FROM "{schema}".dim_{source} WHERE id = {case}')
                ).scalar_one()
                if isinstance(stored, memoryview):
                    stored = bytes(stored)
                assert (stored, type(stored)) == (value, type(value)), (case, column)
        _check_counts_and_rerun(settings, mapref, first, bad, len(cases))
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")
