"""``chordload verify`` with real workers on PostgreSQL → PostgreSQL, PostgreSQL → MariaDB
and SQLite → PostgreSQL: equal after a clean load; then, after deleting target rows,
altering target values (NULL ↔ value, one byte of a long text, two columns of one key),
adding keys the source lacks and changing the source, it lists exactly those keys and
columns, at one key range (split again until small) and at four. Plus: refused while a run
is active, bad input, and --window."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import text

from coordinator.launch import launch
from coordinator.schedule import dispatch_due
from coordinator.verify import wait_verify
from coordinator.watch import wait
from shared.config.settings import load_settings
from shared.dialects import adapter_for
from shared.engines import get_engine
from shared.metadata import store, verifies
from shared.metadata.models import ProcessLog
from shared.run.statuses import ACTIVE_RUN_STATUSES, RunStatus
from shared.timeutil import utcnow
from tests.cliutil import run_cli, write_config
from tests.opsutil import wait_for

pytestmark = pytest.mark.e2e

ROWS = 2400  # one range of 2400 rows is split again (leaf: 1000 rows); four of 600 are not
COLUMNS = ["id", "name", "note", "amount", "flag", "day", "updated_at"]
COLS = ", ".join(COLUMNS)
LONG = "lorem ipsum dolor sit amet " * 80  # ~2 KB
DDL = {
    "pg": (
        "CREATE TABLE {t} (id bigint PRIMARY KEY, name varchar(40), note text, "
        "amount numeric(12,3), flag boolean, day date, updated_at timestamp NOT NULL)"
    ),
    "lite": (
        "CREATE TABLE {t} (id INTEGER PRIMARY KEY, name VARCHAR(40), note TEXT, "
        "amount NUMERIC(12,3), flag BOOLEAN, day DATE, updated_at TIMESTAMP NOT NULL)"
    ),
}
T0 = dt.datetime(2026, 1, 1)


def source_row(i: int) -> dict[str, Any]:
    return {
        "id": i,
        "name": None if i % 7 == 0 else f"name {i}",
        "note": f"{LONG}{i}" if i % 3 == 0 else f"short {i}",
        "amount": None if i % 5 == 0 else Decimal(i * 1237) / 1000,
        "flag": None if i % 11 == 0 else i % 2 == 0,
        "day": dt.date(2025, 1, 1) + dt.timedelta(days=i % 400),
        "updated_at": T0 + dt.timedelta(seconds=i),
    }


class Side:
    """A database of one pairing: where a table lives and how to write to it."""

    def __init__(self, kind: str, connection: str, url: str, schema: str | None = None):
        self.kind, self.connection, self.schema = kind, connection, schema
        self.engine = get_engine(url)
        self.adapter = adapter_for(self.engine)

    def ident(self, table: str) -> str:
        name = self.adapter.q(table)
        return f"{self.adapter.q(self.schema)}.{name}" if self.schema else name

    def config_name(self, table: str) -> str:
        return f"{self.schema}.{table}" if self.schema else table

    def bind(self, row: dict[str, Any]) -> dict[str, Any]:
        if self.kind != "lite":
            return row
        out = {}
        for key, value in row.items():  # what a SQLite file holds: ISO text, 0/1
            if isinstance(value, (dt.date, Decimal)):
                value = value.isoformat(" ") if isinstance(value, dt.datetime) else str(value)
            elif isinstance(value, bool):
                value = int(value)
            out[key] = value
        return out

    def execute(self, sql: str, rows: list[dict[str, Any]] | dict[str, Any] | None = None) -> int:
        with self.engine.begin() as conn:
            if isinstance(rows, list):
                return conn.execute(text(sql), [self.bind(r) for r in rows]).rowcount
            return conn.execute(text(sql), self.bind(rows or {})).rowcount

    def drop(self, table: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(text(f"DROP TABLE IF EXISTS {self.ident(table)}"))


PAIRS = [("pg", "pg"), ("pg", "mdb"), ("lite", "pg")]


@pytest.fixture
def sides(pg_urls, mariadb_url, sqlite_url, schema):
    return {
        "pg": Side("pg", "wh", pg_urls["wh"], schema),
        "mdb": Side("mdb", "mdb", mariadb_url),
        "lite": Side("lite", "lite", sqlite_url),
    }


def _verify(capsys, path, mapref: str, *argv: str) -> tuple[int, dict[str, Any]]:
    result = run_cli(
        capsys, "verify", mapref, "--config", path, "--json", "--timeout-s", 120, *argv
    )
    assert result.code in (0, 1), result
    return result.code, json.loads(result.out)


def _found(report: dict[str, Any]) -> dict[str, Any]:
    first = report["first"]
    return {
        "missing": sorted(k["id"] for k in first["missing"]),
        "extra": sorted(k["id"] for k in first["extra"]),
        "different": {d["key"]["id"]: sorted(d["columns"]) for d in first["different"]},
    }


def _stored(metadata_url: str, verify_id: str) -> dict[str, Any]:
    with get_engine(metadata_url).connect() as conn:
        rows = conn.execute(
            text("SELECT kind, row_key, columns FROM verify_diff WHERE verify_id = :v"),
            {"v": verify_id},
        ).all()
    found: dict[str, Any] = {"missing": [], "extra": [], "different": {}}
    for kind, key, columns in rows:
        key = json.loads(key) if isinstance(key, str) else key
        if kind == "different":
            columns = json.loads(columns) if isinstance(columns, str) else columns
            found[kind][key["id"]] = sorted(columns)
        else:
            found[kind].append(key["id"])
    found["missing"].sort()
    found["extra"].sort()
    return found


@pytest.mark.parametrize(("source", "target"), PAIRS, ids=[f"{s}-to-{t}" for s, t in PAIRS])
def test_verify_lists_exactly_the_keys_and_columns_that_differ(
    source, target, sides, workers, base_config, tmp_path, capsys
):
    src, tgt = sides[source], sides[target]
    suffix = uuid.uuid4().hex[:8]
    src_table, tgt_table = f"vsrc_{suffix}", f"vdim_{suffix}"
    mapref = f"verify_{source}_{target}_{suffix}"
    with src.engine.begin() as conn:
        conn.execute(text(DDL[src.kind].format(t=src.ident(src_table))))
    marks = ", ".join(f":{c}" for c in COLUMNS)
    insert = f"INSERT INTO {src.ident(src_table)} ({COLS}) VALUES ({marks})"
    src.execute(insert, [source_row(i) for i in range(1, ROWS + 1)])
    mapping = {
        "source": {
            "connection": src.connection,
            "query": f"SELECT {COLS} FROM {src.ident(src_table)}",
        },
        "target": {"connection": tgt.connection, "table": tgt.config_name(tgt_table)},
        "keys": ["id"],
        "scd": {"type": 2},
        "chunking": {"min_rows_for_parallel": 0, "rows_per_chunk": 600, "max_chunks": 4},
        "batch_rows": 500,
    }
    path = write_config(tmp_path / "chordload.yaml", base_config, {mapref: mapping})
    settings = load_settings(path)
    loaded = wait(launch(mapref, settings=settings), settings=settings, timeout_s=120, poll_s=0.1)
    assert loaded.status is RunStatus.SUCCESS, loaded.message
    try:
        code, equal = _verify(capsys, path, mapref, "--chunks", 3)
        assert (code, equal["status"]) == (0, "EQUAL"), equal
        assert (equal["rows_source"], equal["rows_target"], equal["ranges_total"]) == (
            ROWS,
            ROWS,
            3,
        )
        assert equal["counts"] == {"missing": 0, "extra": 0, "different": 0}

        t = tgt.ident(tgt_table)
        current = "dw_is_current"
        # the target loses two keys, and gains two the source never had
        tgt.execute(f"DELETE FROM {t} WHERE id IN (10, 1500)")
        business = ", ".join(c for c in COLUMNS if c != "id")
        audit = "dw_row_hash, dw_valid_from, dw_valid_to, dw_is_current, dw_run_id"
        for new_id in (5001, 5002):
            tgt.execute(
                f"INSERT INTO {t} (id, {business}, {audit}) SELECT {new_id}, {business}, "
                f"{audit} FROM {t} WHERE id = 100 AND {current}"
            )
        # values change: value -> NULL, NULL -> value, one byte of a long text, two columns
        tgt.execute(f"UPDATE {t} SET name = NULL WHERE id = 22 AND {current}")
        tgt.execute(f"UPDATE {t} SET name = 'was null' WHERE id = 35 AND {current}")
        tgt.execute(
            f"UPDATE {t} SET note = :note WHERE id = 33 AND {current}",
            {"note": f"{LONG[:1000]}X{LONG[1001:]}33"},
        )
        tgt.execute(
            f"UPDATE {t} SET amount = amount + 1, flag = NOT flag WHERE id = 46 AND {current}"
        )
        # an old, expired version that differs is not the current row: not a difference
        tgt.execute(f"UPDATE {t} SET name = 'old' WHERE id = 47")
        tgt.execute(f"UPDATE {t} SET dw_is_current = :no WHERE id = 47", {"no": False})
        tgt.execute(
            f"INSERT INTO {t} (id, {business}, {audit}) SELECT 47, :name, note, amount, flag, "
            f"day, updated_at, dw_row_hash, dw_valid_from, dw_valid_to, :yes, dw_run_id FROM {t} "
            "WHERE id = 47",
            {"name": "name 47", "yes": True},
        )
        # the source changes after the load
        s = src.ident(src_table)
        src.execute(f"UPDATE {s} SET name = 'changed' WHERE id = 60")
        src.execute(f"DELETE FROM {s} WHERE id = 70")
        src.execute(insert, [source_row(6000)])

        expected = {
            "missing": [10, 1500, 6000],
            "extra": [70, 5001, 5002],
            "different": {
                22: ["name"],
                33: ["note"],
                35: ["name"],
                46: ["amount", "flag"],
                60: ["name"],
            },
        }
        for chunks in (1, 4):
            code, report = _verify(capsys, path, mapref, "--chunks", chunks, "--show", 50)
            assert (code, report["status"]) == (1, "DIFFERENT"), report
            assert report["ranges_total"] == chunks
            # the differing keys lie in three parts of the key space: one range of 2400 rows
            # is split until those parts are small, four ranges of 600 are compared as they are
            assert report["ranges_compared"] == 3
            assert _found(report) == expected, chunks
            assert _stored(base_config["metadata"], report["verify_id"]) == expected
            assert report["counts"] == {"missing": 3, "extra": 3, "different": 5}
            assert (report["rows_source"], report["rows_target"]) == (ROWS, ROWS)
            assert report["extra_explained_by_deletes"] is True  # scd.deletes: ignore

        human = run_cli(capsys, "verify", mapref, "--config", path, "--show", 2)
        assert human.code == 1, human
        assert "DIFFERENT" in human.out
        assert "keys missing from the target: 3, the first 2" in human.out
        assert "  id=10" in human.out and "id=1500" in human.out and "id=6000" not in human.out
        assert "explained by scd.deletes: ignore" in human.out
        assert "keys whose values differ: 5, the first 2" in human.out
    finally:
        src.drop(src_table)
        tgt.drop(tgt_table)


def _small_pg_mapping(side: Side, src_table: str, tgt_table: str, **overrides: Any) -> dict:
    mapping = {
        "source": {
            "connection": side.connection,
            "query": f"SELECT {COLS} FROM {side.ident(src_table)}",
        },
        "target": {"connection": side.connection, "table": side.config_name(tgt_table)},
        "keys": ["id"],
        "scd": {"type": 2},
        "chunking": {"min_rows_for_parallel": 0, "rows_per_chunk": 10, "max_chunks": 4},
        "batch_rows": 7,
    }
    mapping.update(overrides)
    return mapping


def _pg_source(side: Side, table: str, ids: range) -> str:
    with side.engine.begin() as conn:
        conn.execute(text(DDL["pg"].format(t=side.ident(table))))
    marks = ", ".join(f":{c}" for c in COLUMNS)
    insert = f"INSERT INTO {side.ident(table)} ({COLS}) VALUES ({marks})"
    side.execute(insert, [source_row(i) for i in ids])
    return insert


def test_verify_refused_while_a_run_is_active_and_bad_input(
    sides, session_settings, base_config, tmp_path, capsys
):
    """Refused before anything is sent: exit 4 while a run is active, exit 2 for an unknown
    mapping, a target not created yet, --window without a checkpoint, a bad --sample."""
    pg = sides["pg"]
    _pg_source(pg, "src", range(1, 6))
    mapref = f"vbad_{pg.schema}"
    path = write_config(
        tmp_path / "chordload.yaml", base_config, {mapref: _small_pg_mapping(pg, "src", "dim")}
    )

    def verify(*argv: Any):
        return run_cli(capsys, "verify", *argv, "--config", path)

    unknown = verify("nope")
    assert unknown.code == 2 and "unknown mapping 'nope'" in unknown.err, unknown
    no_target = verify(mapref)
    assert no_target.code == 2, no_target
    assert f"the target table {pg.schema}.dim does not exist yet" in no_target.err
    no_window = verify(mapref, "--window")
    assert no_window.code == 2 and "has no KEY checkpoint column" in no_window.err, no_window
    bad_sample = verify(mapref, "--sample", "0")
    assert bad_sample.code == 2 and "--sample takes a percentage" in bad_sample.err

    metadata = get_engine(base_config["metadata"])
    active = ProcessLog(
        run_id=uuid.uuid4().hex[:12],
        mapref=mapref,
        status=RunStatus.RUNNING,
        created_at=utcnow(),
        load_kind="full",
        mapping={"spec": {}, "columns": []},
    )
    store.create_run(metadata, active, [])
    try:
        refused = verify(mapref)
        assert refused.code == 4, refused
        assert f"has an active run {active.run_id} (RUNNING): its target is moving" in refused.err
        assert "Traceback" not in refused.err
    finally:
        store.set_run_status(
            metadata, active.run_id, RunStatus.FAILED, only_from=set(ACTIVE_RUN_STATUSES)
        )
    with metadata.connect() as conn:
        assert (
            conn.execute(
                text("SELECT count(*) FROM verify_log WHERE mapref = :m"), {"m": mapref}
            ).scalar_one()
            == 0
        )


def test_verify_window_and_sample(sides, workers, base_config, tmp_path, capsys):
    """--window verifies only the last successful run's checkpoint window; --all every key;
    --sample P verifies P% of the ranges, and says so."""
    pg = sides["pg"]
    insert = _pg_source(pg, "src", range(1, 31))
    mapref = f"vwin_{pg.schema}"
    spec = _small_pg_mapping(
        pg, "src", "dim", checkpoint={"strategy": "KEY", "column": "updated_at"}
    )
    path = write_config(tmp_path / "chordload.yaml", base_config, {mapref: spec})
    settings = load_settings(path)
    for new_ids in (None, range(31, 41)):
        if new_ids:
            pg.execute(insert, [source_row(i) for i in new_ids])
        run = wait(launch(mapref, settings=settings), settings=settings, timeout_s=120)
        assert run.status is RunStatus.SUCCESS, run.message
    # the last window is 30 (the re-read boundary) .. 40
    dim = pg.ident("dim")
    pg.execute(f"UPDATE {dim} SET name = 'x' WHERE id IN (5, 35) AND dw_is_current")

    code, window = _verify(capsys, path, mapref, "--window", "--show", 50)
    assert (code, window["scope"], window["rows_source"]) == (1, "window", 11), window
    assert window["window"]["columns"] == ["updated_at"]
    assert _found(window) == {"missing": [], "extra": [], "different": {35: ["name"]}}

    code, everything = _verify(capsys, path, mapref, "--all", "--show", 50)
    assert (code, everything["scope"], everything["rows_source"]) == (1, "all", 40)
    assert _found(everything)["different"] == {5: ["name"], 35: ["name"]}

    pg.execute(f"UPDATE {dim} SET name = 'name 5' WHERE id = 5 AND dw_is_current")
    pg.execute(f"UPDATE {dim} SET name = NULL WHERE id = 35 AND dw_is_current")  # 35: NULL name
    code, sampled = _verify(capsys, path, mapref, "--chunks", 4, "--sample", 50)
    assert (code, sampled["status"]) == (0, "EQUAL"), sampled
    assert (sampled["sample_pct"], sampled["ranges_verified"], sampled["ranges_total"]) == (
        50,
        2,
        4,
    )
    assert 0 < sampled["rows_source"] == sampled["rows_target"] < 40
    human = run_cli(capsys, "verify", mapref, "--config", path, "--chunks", 4, "--sample", 50)
    assert human.code == 0 and "a 50% sample: 2 of 4 ranges): EQUAL" in human.out, human


def test_verify_after_run_marks_the_run_and_verify_schedule_dispatches(
    sides, workers, base_config, tmp_path, capsys
):
    """verify: {after_run: true} verifies each successful run on the workers and marks it
    VERIFIED or DIFFERENT (shown by status); verify.schedule starts verifies from beat's
    dispatch, claimed once per slot."""
    pg = sides["pg"]
    _pg_source(pg, "src", range(1, 21))
    mapref = f"vafter_{pg.schema}"
    spec = _small_pg_mapping(
        pg, "src", "dim", verify={"after_run": True, "schedule": "*/5 * * * *"}
    )
    path = write_config(tmp_path / "chordload.yaml", base_config, {mapref: spec})
    settings = load_settings(path)
    metadata = get_engine(settings.metadata)

    def verified(run_id: str) -> str | None:
        found = verifies.run_verification(metadata, run_id)
        return None if found is None or found[0] == "VERIFYING" else found[0]

    first = wait(launch(mapref, settings=settings), settings=settings, timeout_s=120)
    assert first.status is RunStatus.SUCCESS, first.message
    assert wait_for(lambda: verified(first.run_id), timeout_s=60, what="first verify") == (
        "VERIFIED"
    )
    shown = run_cli(capsys, "status", first.run_id, "--config", path)
    assert shown.code == 0 and "verified    VERIFIED (chordload verify " in shown.out, shown

    pg.execute(f"UPDATE {pg.ident('dim')} SET name = 'x' WHERE id = 3 AND dw_is_current")
    second = wait(launch(mapref, settings=settings), settings=settings, timeout_s=120)
    assert second.status is RunStatus.SUCCESS, second.message
    assert wait_for(lambda: verified(second.run_id), timeout_s=60, what="second verify") == (
        "DIFFERENT"
    )
    listed = run_cli(capsys, "status", second.run_id, "--config", path, "--json")
    assert json.loads(listed.out)["verified"] == "DIFFERENT"

    slot_time = dt.datetime(2026, 1, 5, 10, 5, 1, tzinfo=dt.UTC)
    outcomes = dispatch_due(settings, now=slot_time, claimed_by="test")
    assert [(o.mapref, o.status) for o in outcomes] == [(f"verify:{mapref}", "LAUNCHED")]
    assert dispatch_due(settings, now=slot_time, claimed_by="other") == []  # claimed once
    scheduled = wait_verify(settings, outcomes[0].run_id, timeout_s=60)
    assert (scheduled.status.value, scheduled.different, scheduled.run_id) == (
        "DIFFERENT",
        1,
        None,
    )


def test_a_range_that_cannot_be_read_fails_the_verify_naming_it(
    sides, workers, base_config, tmp_path, capsys
):
    """A source row the query cannot read any more (a cast that now fails) fails its range:
    the verify is FAILED (exit 1), naming the range and the database's error, and proves
    nothing, whatever the other ranges found."""
    pg = sides["pg"]
    _pg_source(pg, "src", range(1, 41))
    mapref = f"vfail_{pg.schema}"
    query = (
        f"SELECT id, CAST(name AS varchar(40)) AS name, note, amount, flag, day, updated_at, "
        f"CAST(substr(name, 6) AS integer) AS num FROM {pg.ident('src')} WHERE id % 7 <> 0"
    )
    spec = _small_pg_mapping(pg, "src", "dim")
    spec["source"]["query"] = query
    path = write_config(tmp_path / "chordload.yaml", base_config, {mapref: spec})
    settings = load_settings(path)
    run = wait(launch(mapref, settings=settings), settings=settings, timeout_s=120)
    assert run.status is RunStatus.SUCCESS, run.message
    pg.execute(f"UPDATE {pg.ident('src')} SET name = 'name x' WHERE id = 38")

    result = run_cli(capsys, "verify", mapref, "--config", path, "--json", "--chunks", 4)
    assert result.code == 1, result
    report = json.loads(result.out)
    assert (report["status"], report["ranges_total"], report["ranges_verified"]) == (
        "FAILED",
        4,
        3,
    )
    assert report["message"].startswith("1 of 4 ranges failed: range 3: ")
    assert 'invalid input syntax for type integer: "x"' in report["message"]


def test_migration_0007_up_and_down(tmp_path):
    """0007 adds verify_log and verify_diff; down drops them, up makes them again."""
    from alembic import command
    from sqlalchemy import inspect

    from shared.metadata.schema import _alembic_config, current_revision, upgrade

    engine = get_engine(f"sqlite:///{tmp_path / 'meta.db'}")
    upgrade(engine)
    assert {"verify_log", "verify_diff"} <= set(inspect(engine).get_table_names())
    cfg = _alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0006")
    assert current_revision(engine) == "0006"
    assert not {"verify_log", "verify_diff"} & set(inspect(engine).get_table_names())
    upgrade(engine)
    assert {"verify_log", "verify_diff"} <= set(inspect(engine).get_table_names())


def test_verify_scd1_targets_and_new_record_tombstones(
    sides, workers, base_config, tmp_path, capsys
):
    """SCD1: every target row stands for a source row. SCD2 with deletes: new_record: the
    'deleted' versions of keys the source dropped are not rows of the source, so a target
    whose deletes were loaded is equal; extra keys are then not explained by deletes."""
    pg = sides["pg"]
    _pg_source(pg, "src", range(1, 31))
    scd1, tomb = f"vscd1_{pg.schema}", f"vtomb_{pg.schema}"
    mappings = {
        scd1: _small_pg_mapping(
            pg, "src", "dim1", scd={"type": 1, "audit_columns": {"updated_at": "dw_updated_at"}}
        ),
        tomb: _small_pg_mapping(pg, "src", "dim2", scd={"type": 2, "deletes": "new_record"}),
    }
    path = write_config(tmp_path / "chordload.yaml", base_config, mappings)
    settings = load_settings(path)
    for mapref in mappings:
        run = wait(launch(mapref, settings=settings), settings=settings, timeout_s=120)
        assert run.status is RunStatus.SUCCESS, run.message
    pg.execute(f"DELETE FROM {pg.ident('src')} WHERE id IN (4, 5)")
    run = wait(launch(tomb, settings=settings), settings=settings, timeout_s=120)
    assert (run.status, run.rows_deleted) == (RunStatus.SUCCESS, 2), run.message

    code, equal = _verify(capsys, path, tomb)
    assert (code, equal["rows_source"], equal["rows_target"]) == (0, 28, 28), equal

    dim1, dim2 = pg.ident("dim1"), pg.ident("dim2")
    pg.execute(f"UPDATE {dim1} SET day = day + 1 WHERE id = 9")
    code, report = _verify(capsys, path, scd1, "--chunks", 2)
    assert code == 1 and _found(report) == {
        "missing": [],
        "extra": [4, 5],  # SCD1, deletes: ignore keeps them
        "different": {9: ["day"]},
    }, report
    assert report["extra_explained_by_deletes"] is True

    pg.execute(
        f"UPDATE {dim2} SET dw_is_deleted = :no WHERE id = 4 AND dw_is_current", {"no": False}
    )  # a tombstone that lost its mark: a live row the source does not have
    code, report = _verify(capsys, path, tomb)
    assert code == 1 and _found(report) == {"missing": [], "extra": [4], "different": {}}
    assert report["extra_explained_by_deletes"] is False
    assert "not explained by scd.deletes: new_record" in report["extra_note"]
