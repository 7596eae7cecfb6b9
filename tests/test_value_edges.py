"""Values an independent audit found altered on some paths (1 December 2026), each loaded
through the real path (planner, chord, a worker): every value arrives exactly as the source
holds it, or its row is quarantined with a message naming the column; a no-op rerun reports
0 changed, and a real change is a change.

- PostgreSQL to PostgreSQL, typed path: ``char(n)`` lost its padding and ``inet`` gained a
  ``/32`` (a cast to text is not the value's text for those types).
- MariaDB ``FLOAT``: the text protocol prints six significant digits (1.23457).
- MariaDB ``TINYINT(1)`` (its ``BOOLEAN``): 2 and -1 became true.
- float8 ``-0`` into MariaDB or SQLite: stored as 0.
- A source column named like one of chordload's own (``cl_hash``): taken for the row hash.
- SQLite text read by PostgreSQL in the target database's ``TimeZone``, a time of day in a
  date column and a zone in a timestamp column dropped.
- A MariaDB ``TIME`` beyond a day into SQLite failed the chunk; a value COPY refused was
  quarantined without its column.
"""

from __future__ import annotations

import math
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import text

from coordinator.launch import launch
from coordinator.verify import exit_code, verify
from shared.engines import get_engine
from shared.errors import ConfigError
from shared.metadata import store
from tests.conftest import TOKEN
from tests.test_value_matrix import _quarantined, _run
from tests.worker_process import WorkerProcess

pytestmark = pytest.mark.e2e

SHOWN = (
    "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; SET IntervalStyle = 'postgres'; "
    "SET extra_float_digits = 3"
)


def _pg_source(wh, schema: str, columns: str, rows: str) -> str:
    """A PostgreSQL source table ``src`` in the test's schema; its qualified name."""
    src = f'"{schema}".src'
    with wh.begin() as conn:
        conn.execute(text(f"CREATE TABLE {src} ({columns})"))
        conn.execute(text(f"INSERT INTO {src} VALUES {rows}"))
    return src


def _rows(engine, sql: str) -> dict[int, Any]:
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text(SHOWN))
        return {row[0]: tuple(row[1:]) for row in conn.execute(text(sql))}


def _mapping(query: str, connection: str, target: str, table: str, **extra) -> dict:
    return {
        "source": {"connection": connection, "query": query},
        "target": {"connection": target, "table": table},
        "keys": ["id"],
        "scd": {"type": 2},
        "errors": {"max_rows": 10},
        **extra,
    }


@pytest.fixture
def mdb(mariadb_url):
    """A MariaDB source table maker; the tables are dropped after the test."""
    engine, made = get_engine(mariadb_url), []

    def make(ddl: str, *rows: str, sql_mode: str | None = None) -> str:
        name = f"src_{uuid.uuid4().hex[:8]}"
        made.append(name)
        with engine.begin() as conn:
            kept = conn.exec_driver_sql("SELECT @@SESSION.sql_mode").scalar()
            if sql_mode is not None:  # for this connection of the pool: put back below
                conn.exec_driver_sql(f"SET SESSION sql_mode = '{sql_mode}'")
            conn.exec_driver_sql(f"CREATE TABLE {name} ({ddl})")
            for row in rows:
                conn.exec_driver_sql(f"INSERT INTO {name} VALUES {row}")
            conn.exec_driver_sql("SET SESSION sql_mode = %s", (kept,))
        return name

    yield make
    with engine.begin() as conn:
        for name in made:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {name}")


def test_postgres_typed_path_keeps_char_padding_and_host_addresses(
    wh, schema, workers, make_settings
):
    """Relayed first, then the same rows by the typed path (two checkpoint columns): the
    values are the source's text on both, and the switch changes nothing."""
    src = _pg_source(
        wh,
        schema,
        "id int, v int, w int, c char(6), ip inet",
        "(1, 1, 1, 'ab', '10.0.0.1'), (2, 2, 1, 'x y', '::1'), (3, 3, 1, NULL, '10.0.0.0/8'), "
        "(4, 4, 1, '', NULL)",
    )
    # key 1 twice: a relayed batch with a duplicate key is read back from the stage as
    # rows (the relay's slow path), which also printed the values with a cast to text
    query = f"SELECT id, v, w, c, ip FROM {src} UNION ALL SELECT 1, 0, 0, 'lost', '10.9.9.9'"
    table = f"{schema}.dim"
    relayed = make_settings(
        {"bp": _mapping(query, "wh", "wh", table, checkpoint={"strategy": "KEY", "column": "v"})}
    )
    _run(relayed, "bp")
    typed = make_settings(
        {
            "bp": _mapping(
                query, "wh", "wh", table, checkpoint={"strategy": "KEY", "columns": ["v", "w"]}
            )
        }
    )
    again = _run(typed, "bp", full=True)
    assert (again.rows_changed, again.rows_unchanged, again.rows_errored) == (0, 4, 0)
    assert again.rows_duplicate == 1
    shown = "format('%s', c) || '|', format('%s', ip)"  # a cast to text would trim c
    assert _rows(wh, f'SELECT id, {shown} FROM "{schema}".dim WHERE dw_is_current') == _rows(
        wh, f"SELECT id, {shown} FROM {src}"
    )
    # and a first load by the typed path alone
    first = make_settings(
        {
            "bp2": _mapping(
                query,
                "wh",
                "wh",
                f"{schema}.dim2",
                checkpoint={"strategy": "KEY", "columns": ["v", "w"]},
            )
        }
    )
    _run(first, "bp2")
    assert _rows(wh, f'SELECT id, {shown} FROM "{schema}".dim2') == _rows(
        wh, f"SELECT id, {shown} FROM {src}"
    )


@pytest.mark.parametrize("target", ["wh", "lite"])
def test_mariadb_float_arrives_as_its_exact_value(
    target, wh, schema, mdb, mariadb_url, sqlite_url, workers, make_settings
):
    """A FLOAT arrives as the shortest decimal that is the same FLOAT (as MySQL and
    PostgreSQL print one), not MariaDB's six digits; a change in its eighth digit is a
    change, and verify finds source and target equal."""
    src = mdb("id INT PRIMARY KEY, f FLOAT", "(1, 16777216)", "(2, 1.2345678)", "(3, NULL)")
    exact = {1: 16777216.0, 2: 1.2345678, 3: None}
    table = f"{schema}.dim" if target == "wh" else f"fl_{uuid.uuid4().hex[:8]}"
    settings = make_settings({"fl": _mapping(f"SELECT * FROM {src}", "mdb", target, table)})
    first = _run(settings, "fl")
    assert (first.rows_inserted, first.rows_errored) == (3, 0)
    engine = wh if target == "wh" else get_engine(sqlite_url)
    ref = f'"{schema}".dim' if target == "wh" else f'"{table}"'
    got = {
        k: v[0] for k, v in _rows(engine, f"SELECT id, f FROM {ref} WHERE dw_is_current").items()
    }
    assert got == exact
    report = verify(settings, "fl", timeout_s=120)
    assert exit_code(report) == 0, report
    with get_engine(mariadb_url).begin() as conn:
        conn.exec_driver_sql(f"UPDATE {src} SET f = 1.2345679 WHERE id = 2")
    again = _run(settings, "fl", full=True)
    assert (again.rows_changed, again.rows_unchanged) == (1, 2)
    assert _run(settings, "fl", full=True).rows_changed == 0


def test_mariadb_tinyint1_beyond_0_and_1(wh, schema, mdb, mariadb_url, workers, make_settings):
    """TINYINT(1) is MariaDB's BOOLEAN: 0 and 1 arrive as booleans in PostgreSQL, another
    number is quarantined naming the column; a MariaDB target keeps the number, and a change
    from 2 to 1 is a change."""
    src = mdb("id INT PRIMARY KEY, t TINYINT(1)", "(1, 0)", "(2, 1)", "(3, 2)", "(4, -1)")
    query = f"SELECT * FROM {src}"
    into_pg = make_settings({"ti": _mapping(query, "mdb", "wh", f"{schema}.dim")})
    first = _run(into_pg, "ti")
    errors = _quarantined(into_pg, first)
    assert set(errors) == {3, 4}
    assert all(m.startswith("column 't': ") and "not a boolean" in m for m in errors.values())
    assert _rows(wh, f'SELECT id, t FROM "{schema}".dim') == {1: (False,), 2: (True,)}

    table = f"ti_{uuid.uuid4().hex[:8]}"
    into_mdb = make_settings({"ti2": _mapping(query, "mdb", "mdb", table)})
    _run(into_mdb, "ti2")
    target = get_engine(mariadb_url)
    try:
        assert _rows(target, f"SELECT id, t FROM {table} WHERE dw_is_current") == {
            1: (0,),
            2: (1,),
            3: (2,),
            4: (-1,),
        }
        with target.begin() as conn:
            conn.exec_driver_sql(f"UPDATE {src} SET t = 1 WHERE id = 3")
        again = _run(into_mdb, "ti2", full=True)
        assert (again.rows_changed, again.rows_unchanged) == (1, 3)
    finally:
        with target.begin() as conn:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")


@pytest.mark.parametrize("target", ["mdb", "lite"])
def test_negative_zero_where_the_target_stores_zero_is_quarantined(
    target, wh, schema, mariadb_url, sqlite_url, workers, make_settings
):
    src = _pg_source(wh, schema, "id int PRIMARY KEY, f float8", "(1, '-0'), (2, 0), (3, 1.5)")
    table = f"nz_{uuid.uuid4().hex[:8]}"
    settings = make_settings({"nz": _mapping(f"SELECT * FROM {src}", "wh", target, table)})
    run = _run(settings, "nz")
    errors = _quarantined(settings, run)
    assert set(errors) == {1}
    assert errors[1].startswith("column 'f': -0.0 cannot be held by")
    engine = get_engine(mariadb_url if target == "mdb" else sqlite_url)
    ref = f"`{table}`" if target == "mdb" else f'"{table}"'
    try:
        got = _rows(engine, f"SELECT id, f FROM {ref}")
        assert got == {2: (0.0,), 3: (1.5,)}
        assert math.copysign(1.0, got[2][0]) == 1.0
    finally:
        if target == "mdb":
            with engine.begin() as conn:
                conn.exec_driver_sql(f"DROP TABLE IF EXISTS {ref}")


@pytest.mark.parametrize("name", ["cl_hash", "CL_SEQ", "cl_sk"])
def test_a_source_column_named_like_chordloads_own_is_refused(
    name, wh, schema, workers, make_settings
):
    """Refused when the run is planned, naming the column and the fix; nothing written."""
    src = _pg_source(wh, schema, f'id int PRIMARY KEY, "{name}" text, v int', "(1, 'same', 1)")
    settings = make_settings(
        {"al": _mapping(f'SELECT id, "{name}", v FROM {src}', "wh", "wh", f"{schema}.dim")}
    )
    with pytest.raises(ConfigError) as refused:
        launch("al", settings=settings)
    assert f"column '{name}'" in str(refused.value)
    assert f"{name} AS {name}_" in str(refused.value)
    assert store.latest_run(get_engine(settings.metadata), "al") is None
    with wh.connect() as conn:
        assert (
            conn.execute(text("SELECT to_regclass(:t)"), {"t": f'"{schema}".dim'}).scalar() is None
        )


def test_sqlite_text_into_postgres_is_read_in_utc_and_never_cut(
    wh, schema, sqlite_url, workers, make_settings, base_config, tmp_path: Path
):
    """SQLite holds dates and timestamps as text. Loaded by workers whose PostgreSQL
    sessions run in Kathmandu with a day-first DateStyle: a naive timestamp for a
    timestamptz column is UTC; a time of day for a date column and a zone for a timestamp
    column are quarantined (PostgreSQL would drop them), naming the column."""
    lite = get_engine(sqlite_url)
    table = f"tx_{uuid.uuid4().hex[:8]}"
    with lite.begin() as conn:
        conn.exec_driver_sql(
            f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, tz TIMESTAMPTZ, ts TIMESTAMP, d DATE)"
        )
        conn.exec_driver_sql(
            f"INSERT INTO {table} VALUES "
            "(1, '2024-01-01 10:00:00', '2024-01-02 10:00:00', '2024-01-03'), "
            "(2, '2024-01-01 10:00:00+05:00', '2024-01-02 10:00:00+05:00', '2024-01-03'), "
            "(3, NULL, '2024-01-02 10:00:00Z', '2024-01-03 10:00:00'), "
            "(4, NULL, NULL, '2024-01-03 00:00:00')"
        )
    queue = f"cl-{TOKEN}-kathmandu"
    settings = make_settings(
        {"tx": _mapping(f"SELECT * FROM {table}", "lite", "wh", f"{schema}.dim")}
    )
    settings = settings.model_copy(
        update={"celery": settings.celery.model_copy(update={"queue": queue})}
    )
    config = tmp_path / "kathmandu.yaml"
    config.write_text(yaml.safe_dump(base_config))
    kathmandu = WorkerProcess(
        config,
        queue=queue,
        name=f"kathmandu-{TOKEN}",
        concurrency=1,
        log_path=tmp_path / "kathmandu.log",
        extra_env={"PGTZ": "Asia/Kathmandu", "PGDATESTYLE": "SQL, DMY"},
    )
    kathmandu.start()
    try:
        run = _run(settings, "tx")
        errors = _quarantined(settings, run)
        assert set(errors) == {2, 3}
        assert errors[2].startswith("column 'ts': ") and "time zone (+05:00)" in errors[2]
        assert errors[3].startswith("column 'd': ") and "time of day" in errors[3]
        got = _rows(wh, f'SELECT id, tz::text, ts::text, d::text FROM "{schema}".dim')
        assert got == {
            1: ("2024-01-01 10:00:00+00", "2024-01-02 10:00:00", "2024-01-03"),
            4: (None, None, "2024-01-03"),
        }
        assert _run(settings, "tx", full=True).rows_changed == 0
    finally:
        kathmandu.stop()


def test_mariadb_values_other_targets_cannot_hold_are_quarantined_by_column(
    wh, schema, mdb, sqlite_url, workers, make_settings
):
    """A TIME beyond a day into SQLite (the driver cannot bind it), and a zero date that
    PostgreSQL's COPY refuses: quarantined, the message naming the column."""
    src = mdb(
        "id INT PRIMARY KEY, tm TIME, d DATE",
        "(1, '25:00:00', '2024-01-01')",
        "(2, '01:00:00', '0000-00-00')",
        "(3, '02:00:00', '2024-01-02')",
        sql_mode="",
    )
    query = f"SELECT * FROM {src}"
    into_lite = make_settings({"tl": _mapping(query, "mdb", "lite", f"tm_{uuid.uuid4().hex[:8]}")})
    run = _run(into_lite, "tl")
    errors = _quarantined(into_lite, run)
    assert 1 in errors and errors[1].startswith("column 'tm': TIME 25:00:00 is beyond")
    assert run.rows_inserted == 3 - len(errors)

    into_pg = make_settings({"tp": _mapping(query, "mdb", "wh", f"{schema}.dim")})
    run = _run(into_pg, "tp")
    errors = _quarantined(into_pg, run)
    assert set(errors) == {1, 2}
    assert errors[2].startswith("column 'd': "), errors[2]


def test_sqlite_values_postgres_would_read_otherwise_are_quarantined(
    wh, schema, sqlite_url, workers, make_settings
):
    """SQLite columns hold any value: the ones a PostgreSQL column would round, read its
    own way or reinterpret are quarantined naming the column; the rest arrive exactly."""
    table = f"sq_{uuid.uuid4().hex[:8]}"
    with get_engine(sqlite_url).begin() as conn:
        conn.exec_driver_sql(
            f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, n NUMERIC(10, 2), ts TIMESTAMP, "
            "d DATE, t TEXT, b BLOB)"
        )
        conn.exec_driver_sql(
            f"INSERT INTO {table} VALUES "
            "(1, 1.5, '2024-01-01 10:00:00.123456', '2024-01-03', 'hi', X'6869'), "
            "(2, 1.005, NULL, NULL, NULL, NULL), "
            "(3, NULL, '2024-01-01 10:00:00.1234567', NULL, NULL, NULL), "
            "(4, NULL, NULL, 'today', NULL, NULL), "
            "(5, NULL, NULL, NULL, X'6869', NULL), "
            "(6, NULL, NULL, NULL, NULL, '\\x41'), "
            "(7, NULL, NULL, NULL, NULL, 'plain')"
        )
    settings = make_settings(
        {"sq": _mapping(f"SELECT * FROM {table}", "lite", "wh", f"{schema}.dim")}
    )
    run = _run(settings, "sq")
    errors = _quarantined(settings, run)
    expected = {2: "column 'n': ", 3: "column 'ts': ", 4: "column 'd': ", 5: "column 't': "}
    expected[6] = "column 'b': "
    assert {k: v[: len(expected.get(k, ""))] for k, v in errors.items()} == expected, errors
    assert "it would be rounded" in errors[2] and "7 digits of a second" in errors[3]
    assert "not an ISO date" in errors[4] and "backslashes" in errors[6]
    got = _rows(wh, f'SELECT id, n::text, ts::text, d::text, t, b FROM "{schema}".dim')
    assert {k: v[:4] + (bytes(v[4]) if v[4] is not None else None,) for k, v in got.items()} == {
        1: ("1.50", "2024-01-01 10:00:00.123456", "2024-01-03", "hi", b"hi"),
        7: (None, None, None, None, b"plain"),
    }
    assert _run(settings, "sq", full=True).rows_changed == 0


@pytest.mark.parametrize("target", ["mdb", "lite"])
def test_decimals_are_checked_at_their_full_length(
    target, wh, schema, mariadb_url, sqlite_url, workers, make_settings
):
    """A numeric with more digits than Python's default 28 is checked at its full length
    (it was rounded to 28 first, and passed); a SQLite REAL cannot hold 1e-400 or 1e400."""
    src = _pg_source(
        wh,
        schema,
        "id int PRIMARY KEY, n numeric",
        "(1, 1.0000000000000000000000000000001), (2, 1.5), (3, 1e-400), (4, 1e400)",
    )
    table = f"dc_{uuid.uuid4().hex[:8]}"
    settings = make_settings({"dc": _mapping(f"SELECT * FROM {src}", "wh", target, table)})
    run = _run(settings, "dc")
    errors = _quarantined(settings, run)
    engine = get_engine(mariadb_url if target == "mdb" else sqlite_url)
    ref = f"`{table}`" if target == "mdb" else f'"{table}"'
    try:
        loaded = _rows(engine, f"SELECT id, n FROM {ref}")
        if target == "mdb":  # DECIMAL(65, 30): 1e-400 is 31+ digits after the point too
            assert set(errors) == {1, 3, 4} and set(loaded) == {2}
        else:
            assert set(errors) == {1, 3, 4} and set(loaded) == {2}
            assert "beyond the range of a SQLite REAL" in errors[3]
        assert all(m.startswith("column 'n': ") for m in errors.values())
    finally:
        if target == "mdb":
            with engine.begin() as conn:
                conn.exec_driver_sql(f"DROP TABLE IF EXISTS {ref}")


def test_mariadb_decimal_at_its_largest_is_held(mdb, mariadb_url, workers, make_settings):
    """DECIMAL(65, 30) at its largest magnitude is not taken for too many digits."""
    largest = "-" + "9" * 35 + "." + "9" * 30
    src = mdb("id INT PRIMARY KEY, n DECIMAL(65, 30)", f"(1, {largest})", "(2, 0.5)")
    table = f"mx_{uuid.uuid4().hex[:8]}"
    settings = make_settings({"mx": _mapping(f"SELECT * FROM {src}", "mdb", "mdb", table)})
    target = get_engine(mariadb_url)
    try:
        run = _run(settings, "mx")
        assert (run.rows_inserted, run.rows_errored) == (2, 0)
        assert str(_rows(target, f"SELECT id, n FROM {table}")[1][0]) == largest
    finally:
        with target.begin() as conn:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")


@pytest.mark.parametrize("target", ["wh", "mdb"])
def test_a_postgres_numeric_with_a_negative_scale_loads(
    target, wh, schema, mariadb_url, workers, make_settings
):
    """numeric(5, -2) holds integers of up to 7 digits (rounded to hundreds): its target
    column is numeric(7, 0)."""
    src = _pg_source(
        wh, schema, "id int PRIMARY KEY, n numeric(5, -2)", "(1, 12300), (2, 9999900), (3, NULL)"
    )
    table = f"{schema}.dim" if target == "wh" else f"ns_{uuid.uuid4().hex[:8]}"
    settings = make_settings({"ns": _mapping(f"SELECT * FROM {src}", "wh", target, table)})
    run = _run(settings, "ns")
    assert (run.rows_inserted, run.rows_errored) == (3, 0)
    engine = wh if target == "wh" else get_engine(mariadb_url)
    ref = f'"{schema}".dim' if target == "wh" else f"`{table}`"
    try:
        got = {k: v[0] for k, v in _rows(engine, f"SELECT id, n FROM {ref}").items()}
        assert got == {1: Decimal(12300), 2: Decimal(9999900), 3: None}
        assert _run(settings, "ns", full=True).rows_changed == 0
    finally:
        if target == "mdb":
            with engine.begin() as conn:
                conn.exec_driver_sql(f"DROP TABLE IF EXISTS {ref}")
