"""Every pairing of source and target among PostgreSQL, MariaDB and SQLite, through the real
path (planner, chord, worker processes, finalize): an SCD2 initial load in several chunks, an
incremental load, and a round-trip of types — integers, numerics with scale, unicode text,
dates, timestamps with and without time zone, booleans and NULLs. Plus MariaDB specifics run
in-process: one current row per key, the LOAD DATA path, abandoning a stream."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from coordinator.launch import launch
from coordinator.watch import wait
from shared.config.mapping import AuditColumns, TargetSpec
from shared.dialects import adapter_for
from shared.dialects.types import ColumnType, SourceColumn, TypeKind
from shared.engines import get_engine
from shared.errors import LoadError
from shared.run.statuses import RunStatus
from shared.scd import apply as scd
from shared.scd.target import ScdTarget

UTC = dt.UTC
COLUMNS = [
    "id",
    "n_small",
    "n_int",
    "amount",
    "name",
    "code",
    "day",
    "at_local",
    "at_tz",
    "flag",
    "updated_at",
]
COLS = ", ".join(COLUMNS)
NAMES = [
    "Zoë",
    "Ångström",
    "日本語テキスト",
    "emoji 🎉🐘",
    "quote ' \" back\\slash",
    "tab\there",
    "line\nbreak\r\n",
    "Ελληνικά",
    "",
    "  padded  ",
    "Case",
    "case",
    "100%",
]
INTS = {TypeKind.SMALLINT, TypeKind.INTEGER, TypeKind.BIGINT}
INITIAL, NEW_IDS = range(1, 41), range(41, 46)
CHANGED = [i for i in INITIAL if i % 5 == 0 and i != 40]  # 40 is the re-read boundary row

DDL = {
    "pg": (
        "CREATE TABLE {t} (id bigint PRIMARY KEY, n_small smallint, n_int integer, "
        "amount numeric(12,3), name text, code varchar(20), day date, at_local timestamp(6), "
        "at_tz timestamptz, flag boolean, updated_at timestamp NOT NULL)"
    ),
    "mdb": (
        "CREATE TABLE {t} (id BIGINT PRIMARY KEY, n_small SMALLINT, n_int INT, "
        "amount DECIMAL(12,3), name TEXT, code VARCHAR(20), day DATE, at_local DATETIME(6), "
        "at_tz TIMESTAMP(6) NULL, flag BOOLEAN, updated_at DATETIME(6) NOT NULL) "
        "CHARACTER SET utf8mb4"
    ),
    "lite": (
        "CREATE TABLE {t} (id INTEGER PRIMARY KEY, n_small SMALLINT, n_int INTEGER, "
        "amount NUMERIC(12,3), name TEXT, code VARCHAR(20), day DATE, at_local TIMESTAMP, "
        "at_tz TIMESTAMPTZ, flag BOOLEAN, updated_at TIMESTAMP NOT NULL)"
    ),
}


def source_row(i: int) -> dict[str, Any]:
    offset = dt.timezone(dt.timedelta(hours=(i % 5) - 2, minutes=30 * (i % 2)))
    return {
        "id": i,
        "n_small": None if i % 7 == 0 else (i * 997) % 32_000 - 16_000,
        "n_int": None if i % 11 == 0 else i * 50_000_017 - 1_000_000_000,
        "amount": None if i % 6 == 0 else Decimal(i * 12_345 - 100_000) / 1000,
        "name": None if i % 9 == 0 else f"{NAMES[i % len(NAMES)]}",
        "code": f"C-{i:03d}",
        "day": None if i % 8 == 0 else dt.date(2020, 1, 1) + dt.timedelta(days=i * 17),
        "at_local": None
        if i % 10 == 3
        else dt.datetime(2025, 6, 1, 8, 30) + dt.timedelta(hours=i, microseconds=i * 1_234),
        "at_tz": None
        if i % 4 == 0
        else dt.datetime(2025, 3, 1, 12, 0, tzinfo=offset)
        + dt.timedelta(minutes=i * 7, microseconds=i * 11),
        "flag": None if i % 13 == 0 else i % 2 == 0,
        "updated_at": dt.datetime(2026, 1, 1) + dt.timedelta(seconds=i),
    }


def changed_row(i: int) -> dict[str, Any]:
    row = source_row(i)
    row.update(
        name=f"neu ✓ {i}",
        amount=None if i == 10 else Decimal("1.001") * i,
        n_small=7 if row["n_small"] is None else None,
        flag=True if row["flag"] is None else not row["flag"],
        at_tz=dt.datetime(
            2025, 12, 31, 23, 59, 59, 999_999, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30))
        ),
        updated_at=dt.datetime(2026, 2, 1) + dt.timedelta(seconds=i),
    )
    return row


def new_row(i: int) -> dict[str, Any]:
    return {**source_row(i), "updated_at": dt.datetime(2026, 2, 2) + dt.timedelta(seconds=i)}


def normalize(column: str, value: Any) -> Any:
    """A value as read back from any of the three databases, in one comparable form."""
    if value is None:
        return None
    if column in ("id", "n_small", "n_int"):
        return int(value)
    if column == "amount":
        return Decimal(str(value)).quantize(Decimal("0.001"))
    if column in ("name", "code"):
        return str(value)
    if column == "flag":
        return bool(int(value))
    if column == "day":
        if isinstance(value, dt.datetime):
            return value.date()
        return value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value)[:10])
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if column == "at_tz":  # naive = UTC (MariaDB stores UTC in DATETIME)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    assert value.tzinfo is None, f"{column} should be a timestamp without time zone: {value!r}"
    return value


def expected(rows: dict[int, dict[str, Any]]) -> dict[int, tuple]:
    return {i: tuple(normalize(c, row[c]) for c in COLUMNS) for i, row in rows.items()}


class Db:
    """One database of the matrix: its connection name, how to name and fill tables."""

    def __init__(self, kind: str, connection: str, url: str, schema: str | None = None):
        self.kind, self.connection, self.schema = kind, connection, schema
        self.engine = get_engine(url)
        self.adapter = adapter_for(self.engine)
        self.tables: list[str] = []

    def ident(self, table: str) -> str:
        name = self.adapter.q(table)
        return f"{self.adapter.q(self.schema)}.{name}" if self.schema else name

    def target_name(self, table: str) -> str:
        self.tables.append(table)
        return f"{self.schema}.{table}" if self.schema else table

    def _bind(self, row: dict[str, Any]) -> dict[str, Any]:
        if self.kind != "lite":
            return row
        # SQLite has no types: store what a SQLite file typically holds (ISO text, 0/1)
        out = {}
        for key, value in row.items():
            if isinstance(value, dt.datetime):
                value = value.isoformat(" ")
            elif isinstance(value, (dt.date, Decimal)):
                value = str(value)
            elif isinstance(value, bool):
                value = int(value)
            out[key] = value
        return out

    def create_source(self, table: str, rows: list[dict[str, Any]]) -> str:
        self.tables.append(table)
        with self.engine.begin() as conn:
            conn.execute(text(DDL[self.kind].format(t=self.ident(table))))
        self.insert(table, rows)
        return f"SELECT {COLS} FROM {self.ident(table)}"

    def insert(self, table: str, rows: list[dict[str, Any]]) -> None:
        marks = ", ".join(f":{c}" for c in COLUMNS)
        with self.engine.begin() as conn:
            conn.execute(
                text(f"INSERT INTO {self.ident(table)} ({COLS}) VALUES ({marks})"),
                [self._bind(r) for r in rows],
            )

    def update(self, table: str, rows: list[dict[str, Any]]) -> None:
        sets = ", ".join(f"{c} = :{c}" for c in COLUMNS if c != "id")
        with self.engine.begin() as conn:
            conn.execute(
                text(f"UPDATE {self.ident(table)} SET {sets} WHERE id = :id"),
                [self._bind(r) for r in rows],
            )

    def all(self, sql: str, **params) -> list:
        with self.engine.connect() as conn:
            return conn.execute(text(sql), params).all()

    def scalar(self, sql: str, **params) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(text(sql), params).scalar_one()

    def drop_tables(self) -> None:
        if self.schema:  # the Postgres schema fixture drops everything
            return
        with self.engine.begin() as conn:
            for table in self.tables:
                conn.execute(text(f"DROP TABLE IF EXISTS {self.ident(table)}"))


@pytest.fixture
def dbs(pg_urls, mariadb_url, sqlite_url, schema):
    made = {
        "pg": Db("pg", "wh", pg_urls["wh"], schema),
        "mdb": Db("mdb", "mdb", mariadb_url),
        "lite": Db("lite", "lite", sqlite_url),
    }
    yield made
    for db in made.values():
        db.drop_tables()


def current_rows(db: Db, table: str) -> dict[int, tuple]:
    rows = db.all(f"SELECT {COLS} FROM {db.ident(table)} WHERE dw_is_current")
    return {int(r[0]): tuple(normalize(c, v) for c, v in zip(COLUMNS, r)) for r in rows}


def check_target_types(db: Db, table: str) -> None:
    """The target, read back as a source by its own adapter, has the source's types."""
    with db.engine.connect() as conn:
        types = {
            c.name: c.type
            for c in db.adapter.source_columns(conn, f"SELECT {COLS} FROM {db.ident(table)}")
        }
    assert {types[c].kind for c in ("id", "n_small", "n_int")} <= INTS
    assert (types["amount"].kind, types["amount"].scale) == (TypeKind.NUMERIC, 3)
    assert types["name"].kind is types["code"].kind is TypeKind.TEXT
    assert types["day"].kind is TypeKind.DATE
    assert types["at_local"].kind is types["updated_at"].kind is TypeKind.TIMESTAMP
    assert types["flag"].kind is TypeKind.BOOLEAN
    if db.kind == "mdb":  # DATETIME(6) in UTC, marked as having had a time zone
        assert types["at_tz"].kind is TypeKind.TIMESTAMP
        assert (
            db.scalar(
                "SELECT column_comment FROM information_schema.columns WHERE "
                "table_schema = DATABASE() AND table_name = :t AND column_name = "
                "'at_tz'",
                t=table,
            )
            == "chordload:timestamptz"
        )
    else:
        assert types["at_tz"].kind is TypeKind.TIMESTAMPTZ


def _run(settings, mapref: str):
    run_id = launch(mapref, settings=settings)
    return wait(run_id, settings=settings, timeout_s=120)


PAIRS = [(s, t) for s in ("pg", "mdb", "lite") for t in ("pg", "mdb", "lite")]


@pytest.mark.e2e
@pytest.mark.parametrize(("source", "target"), PAIRS, ids=[f"{s}-to-{t}" for s, t in PAIRS])
def test_scd2_pairing_initial_incremental_and_types(source, target, dbs, workers, make_settings):
    src, tgt = dbs[source], dbs[target]
    suffix = uuid.uuid4().hex[:8]
    src_table, tgt_table = f"src_{suffix}", f"dim_{suffix}"
    rows = {i: source_row(i) for i in INITIAL}
    query = src.create_source(src_table, list(rows.values()))
    mapref = f"pair_{source}_{target}_{suffix}"  # checkpoints are per mapping name
    settings = make_settings(
        {
            mapref: {
                "source": {"connection": src.connection, "query": query},
                "target": {"connection": tgt.connection, "table": tgt.target_name(tgt_table)},
                "keys": ["id"],
                "scd": {"type": 2},
                "checkpoint": {"strategy": "KEY", "column": "updated_at"},
                "chunking": {
                    "column": "id",
                    "rows_per_chunk": 10,
                    "min_rows_for_parallel": 0,
                    "max_chunks": 4,
                },
                "batch_rows": 7,
            }
        }
    )
    target_sql = tgt.ident(tgt_table)

    first = _run(settings, mapref)
    assert first.status is RunStatus.SUCCESS, first.message
    assert first.chunks_total >= 2, (first.estimated_rows, first.plan_note)
    assert (first.rows_read, first.rows_inserted) == (40, 40)
    assert current_rows(tgt, tgt_table) == expected(rows)
    check_target_types(tgt, tgt_table)

    src.update(src_table, [changed_row(i) for i in CHANGED])
    src.insert(src_table, [new_row(i) for i in NEW_IDS])
    rows.update({i: changed_row(i) for i in CHANGED})
    rows.update({i: new_row(i) for i in NEW_IDS})

    second = _run(settings, mapref)
    assert second.status is RunStatus.SUCCESS, second.message
    # the window re-reads the boundary row (id 40, unchanged: equal hash, not written)
    assert (second.rows_read, second.rows_changed, second.rows_inserted, second.rows_unchanged) == (
        len(CHANGED) + len(NEW_IDS) + 1,
        len(CHANGED),
        len(NEW_IDS),
        1,
    )
    assert current_rows(tgt, tgt_table) == expected(rows)
    assert tgt.scalar(f"SELECT count(*) FROM {target_sql}") == 45 + len(CHANGED)
    assert (
        tgt.scalar(
            f"SELECT count(*) FROM (SELECT id FROM {target_sql} WHERE dw_is_current "
            f"GROUP BY id HAVING count(*) > 1) d"
        )
        == 0
    )
    old, new = tgt.all(
        f"SELECT dw_valid_from AS valid_from, dw_valid_to AS valid_to, dw_is_current AS "
        f"is_current, dw_run_id AS run_id FROM {target_sql} WHERE id = 10 ORDER BY dw_sk"
    )
    assert (bool(old.is_current), bool(new.is_current)) == (False, True)
    assert old.valid_to == new.valid_from and new.valid_to is None
    assert (old.run_id, new.run_id) == (first.run_id, second.run_id)


ODD_DDL = (
    "CREATE TABLE {t} (id bigint PRIMARY KEY, amount numeric, big numeric(30, 10), "
    "day date, clock time(6), at_local timestamp(6), at_tz timestamptz, doc json, "
    "docb jsonb, uid uuid, blob bytea, fixed char(6), score double precision)"
)
ODD_ROWS = (
    "(1, 'NaN', 12345678901234567890.0123456789, '0001-01-01', '23:59:59.999999', "
    "'1999-12-31 23:59:59.123456', '2026-03-29 01:30:00.5+05:45', "
    '\'{"a": "t\\tb\\\\n", "x": [1, 2.50]}\', \'{"k": "\u00fc\\"q"}\', '
    "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '\\x00015c0a09'::bytea, 'ab', 0.1)",
    "(2, '-1E+3', -0.0000000001, '9999-12-31', '00:00', '2026-01-01', '1970-01-01 00:00+00', "
    "'  { \"spaced\" : true }  ', '[]', NULL, '\\x'::bytea, '      ', -0.0)",
    "(3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)",
    "(4, '0.000001000', 1, '2024-02-29', '12:00:00.000001', '2024-02-29 12:00:00.000001', "
    "'2024-02-29 12:00:00.000001-09:30', 'null', '\"s\\\\t\"', "
    "'00000000-0000-0000-0000-000000000000', '\\x5c5c4e'::bytea, 'x\ty', 1e300)",
)


def _comparable(value: Any) -> Any:
    if isinstance(value, memoryview):
        return bytes(value)
    if isinstance(value, Decimal):
        return str(value)  # NaN is not equal to itself
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value.astimezone(UTC)
    return value


@pytest.mark.e2e
def test_pg_to_pg_relay_loads_the_same_values(dbs, workers, make_settings):
    """Between two PostgreSQL databases chunks relay COPY text without parsing it in Python
    (shared/dialects/relay.py): the target holds exactly the source's values (NaN, 30
    digits, microseconds, odd offsets, escapes in JSON and bytea, char(n) padding, float
    edge cases), and a reload finds every row unchanged."""
    pg = dbs["pg"]
    src, tgt = f"odd_{uuid.uuid4().hex[:8]}", f"odd_dim_{uuid.uuid4().hex[:8]}"
    pg.tables.append(src)
    with pg.engine.begin() as conn:
        conn.execute(text(ODD_DDL.format(t=pg.ident(src))))
        conn.exec_driver_sql(f"INSERT INTO {pg.ident(src)} VALUES {', '.join(ODD_ROWS)}")
    columns = [
        "id",
        "amount",
        "big",
        "day",
        "clock",
        "at_local",
        "at_tz",
        "doc",
        "docb",
        "uid",
        "blob",
        "fixed",
        "score",
    ]
    mapref = f"odd_{uuid.uuid4().hex[:8]}"
    settings = make_settings(
        {
            mapref: {
                "source": {"connection": "wh", "query": f"SELECT * FROM {pg.ident(src)}"},
                "target": {"connection": "wh", "table": pg.target_name(tgt)},
                "keys": ["id"],
                "scd": {"type": 1},
                "chunking": {"column": "id", "rows_per_chunk": 2, "min_rows_for_parallel": 0},
                "batch_rows": 3,
            }
        }
    )
    cols = ", ".join(columns)

    def values(table: str) -> list[tuple]:
        rows = pg.all(f"SELECT {cols} FROM {pg.ident(table)} ORDER BY id")
        return [tuple(map(_comparable, r)) for r in rows]

    first = _run(settings, mapref)
    assert first.status is RunStatus.SUCCESS, first.message
    assert first.chunks_total >= 2 and first.rows_inserted == len(ODD_ROWS)
    assert values(tgt) == values(src)
    assert values(tgt)[1][11] == "      " and values(tgt)[3][10] == b"\\\\N"
    second = _run(settings, mapref)
    assert second.status is RunStatus.SUCCESS, second.message
    assert (second.rows_unchanged, second.rows_changed) == (len(ODD_ROWS), 0)


# -- MariaDB specifics, in-process ------------------------------------------------------------
KEY_COLUMNS = [
    SourceColumn("id", ColumnType(TypeKind.BIGINT)),
    SourceColumn("code", ColumnType(TypeKind.TEXT)),
    SourceColumn("note", ColumnType(TypeKind.TEXT, length=5)),
]


@pytest.fixture
def mdb(mariadb_url):
    engine = get_engine(mariadb_url)
    table = f"t_{uuid.uuid4().hex[:8]}"
    yield engine, adapter_for(engine), TargetSpec(connection="mdb", table=table)
    with engine.begin() as conn:
        conn.execute(text(f"DROP TABLE IF EXISTS `{table}`"))


def _scd_target(adapter, target, scd_type: int, run_id: str) -> ScdTarget:
    return ScdTarget(
        adapter,
        adapter.table_ref(target),
        tuple(c.name for c in KEY_COLUMNS),
        ("id", "code"),
        AuditColumns(),
        scd_type,
        run_id,
    )


def _apply_scd2(engine, adapter, target, rows, run_id: str, at: dt.datetime):
    names = [c.name for c in KEY_COLUMNS]
    with engine.connect() as conn:
        with conn.begin():
            stage = adapter.create_stage(conn, target, names)
        try:
            with conn.begin():
                adapter.clear_stage(conn, stage)
                adapter.load_stage(conn, stage, names, rows)
                return scd.apply_scd2(
                    conn, _scd_target(adapter, target, 2, run_id), stage, len(rows), True, at
                )
        finally:
            with conn.begin():
                adapter.drop_stage(conn, stage)


def test_mariadb_scd2_one_current_row_per_key(mdb):
    engine, adapter, target = mdb
    with engine.begin() as conn:  # a composite key with an unbounded text column
        adapter.create_target(conn, target, KEY_COLUMNS, ["id", "code"], 2, AuditColumns())
    at = dt.datetime(2026, 1, 1, tzinfo=UTC)
    # binary, no-pad collation: 'Case', 'case' and 'case ' are three keys; NULL is one key
    rows = [
        (1, "Case", "a"),
        (1, "case", "b"),
        (1, "case ", "c"),
        (None, "x", "d"),
        (2, "k" * 500, "e"),
    ]
    counts = _apply_scd2(engine, adapter, target, rows, "r1", at)
    assert (counts.inserted, counts.changed, counts.unchanged) == (5, 0, 0)
    again = _apply_scd2(engine, adapter, target, rows, "r1", at)  # redelivery: nothing written
    assert (again.inserted, again.changed, again.unchanged) == (0, 0, 5)
    changed = [(None, "x", "D"), (1, "case ", "C")]
    # an aware, non-UTC valid_from is bound as UTC (PyMySQL on its own drops the offset)
    later = (at + dt.timedelta(hours=1)).astimezone(dt.timezone(dt.timedelta(hours=5, minutes=30)))
    counts = _apply_scd2(engine, adapter, target, changed, "r2", later)
    assert (counts.inserted, counts.changed) == (0, 2)
    table = adapter.table_ref(target)
    with engine.connect() as conn:

        def query(sql: str) -> list:
            return conn.execute(text(sql)).scalars().all()

        assert query(f"SELECT count(*) FROM {table}") == [7]
        assert query(f"SELECT count(*) FROM {table} WHERE dw_is_current") == [5]
        expired = query(f"SELECT dw_valid_to FROM {table} WHERE NOT dw_is_current")
        assert expired == [dt.datetime(2026, 1, 1, 1, 0)] * 2
    insert = (
        f"INSERT INTO {table} (id, code, note, dw_row_hash, dw_valid_from, dw_valid_to, "
        f"dw_is_current, dw_run_id) VALUES (:id, 'Case', 'z', 'h', '2026-01-01', NULL, :cur, 'manual')"
    )
    with engine.begin() as conn:  # another expired version of a key is fine ...
        conn.execute(text(insert), {"id": 1, "cur": False})
    with pytest.raises(IntegrityError, match="Duplicate entry"):  # ... a second current one is not
        with engine.begin() as conn:
            conn.execute(text(insert), {"id": 1, "cur": True})


def test_mariadb_scd1_updates_in_place(mdb):
    engine, adapter, target = mdb
    names = [c.name for c in KEY_COLUMNS]
    with engine.begin() as conn:
        adapter.create_target(conn, target, KEY_COLUMNS, ["id", "code"], 1, AuditColumns())

    def apply(rows, run_id):
        with engine.connect() as conn:
            with conn.begin():
                stage = adapter.create_stage(conn, target, names)
            with conn.begin():
                adapter.load_stage(conn, stage, names, rows)
                counts = scd.apply_scd1(
                    conn,
                    _scd_target(adapter, target, 1, run_id),
                    stage,
                    len(rows),
                    True,
                    dt.datetime.now(UTC),
                )
                adapter.drop_stage(conn, stage)
            return counts.inserted, counts.changed, counts.unchanged

    assert apply([(1, "a", "x"), (None, "b", "y"), (2, "c", None)], "r1") == (3, 0, 0)
    assert apply([(1, "a", "X"), (None, "b", "y"), (2, "c", "z"), (3, "d", "w")], "r2") == (1, 2, 1)
    with engine.connect() as conn:
        rows = conn.execute(
            text(f"SELECT id, code, note, dw_run_id FROM {adapter.table_ref(target)} ORDER BY code")
        ).all()
    assert [tuple(r) for r in rows] == [
        (1, "a", "X", "r2"),
        (None, "b", "y", "r1"),
        (2, "c", "z", "r2"),
        (3, "d", "w", "r2"),
    ]
    with pytest.raises(IntegrityError, match="Duplicate entry"):  # one row per key
        with engine.begin() as conn:
            conn.execute(
                text(
                    f"INSERT INTO {adapter.table_ref(target)} (id, code, dw_row_hash, "
                    f"dw_inserted_at, dw_updated_at, dw_run_id) VALUES (NULL, 'b', 'h', "
                    f"'2026-01-01', '2026-01-01', 'manual')"
                )
            )


def test_mariadb_load_data_local_infile(mdb, mariadb_url):
    """With local_infile=1 in the URL the stage is filled by LOAD DATA LOCAL INFILE; data
    errors (downgraded to warnings by the server in LOCAL mode) still fail the batch."""
    _, _, target = mdb
    engine = get_engine(f"{mariadb_url}&local_infile=1")
    adapter = adapter_for(engine)
    with engine.begin() as conn:
        adapter.create_target(conn, target, KEY_COLUMNS, ["id"], 1, AuditColumns())
    names = [c.name for c in KEY_COLUMNS]
    rows = [
        (1, "tab\tnew\nline\r\\back \\N", "Zoë"),
        (2, None, None),
        (3, "🎉 日本", ""),
        (4, "", "  x  "),
    ]
    with engine.connect() as conn:
        with conn.begin():
            stage = adapter.create_stage(conn, target, names)
        with conn.begin():
            loads = int(conn.exec_driver_sql("SHOW SESSION STATUS LIKE 'Com_load'").one()[1])
            adapter.load_stage(conn, stage, names, rows)
            assert conn.exec_driver_sql(f"SELECT * FROM {stage} ORDER BY id").all() == rows
            assert (
                int(conn.exec_driver_sql("SHOW SESSION STATUS LIKE 'Com_load'").one()[1])
                == loads + 1
            )
        with pytest.raises(LoadError, match="Data (too long|truncated)"):
            with conn.begin():
                adapter.load_stage(conn, stage, names, [(5, "ok", "too long")])
        with conn.begin():
            adapter.drop_stage(conn, stage)


def test_mariadb_abandoned_stream_does_not_read_the_rest(mariadb_url):
    """A chunk that stops after one batch must not wait for the server to send every row."""
    engine = get_engine(mariadb_url)
    adapter = adapter_for(engine)

    class Stop(Exception):
        pass

    def read_one_batch() -> None:
        with engine.connect() as conn:
            for _rows in adapter.stream(
                conn, "SELECT seq, repeat('x', 200) AS pad FROM seq_1_to_5000000", {}, 1000
            ):
                raise Stop  # like a stop request between batches

    started = time.monotonic()
    with pytest.raises(Stop):
        read_one_batch()
    assert time.monotonic() - started < 2
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT 1").scalar_one() == 1


@pytest.mark.e2e
def test_bytea_arrives_in_mariadb_as_its_bytes(workers, make_settings, wh, schema, mariadb_url):
    """psycopg2 hands bytea over as memoryview, which PyMySQL bound as the text
    '<memory at 0x...>': the bytes must arrive as they are, and a rerun finds them unchanged."""
    blobs = {1: b"\x00\x01\\\n\t\xff", 2: b"", 3: None, 4: bytes(range(256)) * 40}
    with wh.begin() as conn:
        conn.execute(text(f'CREATE TABLE "{schema}".blobs (id int PRIMARY KEY, payload bytea)'))
        conn.execute(
            text(f'INSERT INTO "{schema}".blobs VALUES (:id, :payload)'),
            [{"id": k, "payload": v} for k, v in blobs.items()],
        )
    table = f"blobs_{uuid.uuid4().hex[:8]}"
    settings = make_settings(
        {
            "blobs": {
                "source": {
                    "connection": "wh",
                    "query": f'SELECT id, payload FROM "{schema}".blobs',
                },
                "target": {"connection": "mdb", "table": table},
                "keys": ["id"],
                "scd": {"type": 2},
            }
        }
    )
    first = _run(settings, "blobs")
    assert (first.status, first.rows_inserted) == (RunStatus.SUCCESS, 4), first.message
    mdb = get_engine(mariadb_url)
    try:
        with mdb.connect() as conn:
            stored = dict(conn.execute(text(f"SELECT id, payload FROM `{table}`")).all())
        assert {k: None if v is None else bytes(v) for k, v in stored.items()} == blobs
        again = _run(settings, "blobs")
        assert (again.rows_unchanged, again.rows_changed, again.rows_inserted) == (4, 0, 0)
    finally:
        with mdb.begin() as conn:
            conn.execute(text(f"DROP TABLE IF EXISTS `{table}`"))


def test_a_transaction_the_database_ended_surfaces_its_own_error(mariadb_url):
    """InnoDB ends the whole transaction of a deadlock victim, savepoints and all, and the
    rollback to the batch's savepoint then failed with 'SAVEPOINT sa_savepoint_1 does not
    exist': that error hid the deadlock (transient, so the chunk would have retried) and
    failed the chunk. Here the transaction ends inside the savepoint as a deadlock ends it,
    and the statement's own error must be what the batch raises."""
    from shared.scd.quarantine import bisect

    engine = get_engine(mariadb_url)
    with engine.connect() as conn, conn.begin():

        def attempt(rows):
            conn.exec_driver_sql("ROLLBACK")  # what InnoDB does to a deadlock victim
            conn.execute(text("SELECT * FROM cl_no_such_table"))
            return 0

        with pytest.raises(Exception) as raised:
            bisect(conn, [(1,)], attempt, lambda a, b: a + b, 0)
    err = raised.value
    assert getattr(err, "orig", err).args[0] == 1146, err  # the statement's, not 1305
