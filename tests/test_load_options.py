"""Loading options against the real servers: every test runs on PostgreSQL, MariaDB and a
SQLite file (source and target in the same database; test_dialects covers the pairings), with
real worker processes unless it only plans.

Chunking strategies (quantile, range, offset) on numeric, date and timestamp split columns and
a composite key with NULLs; checkpoints (several KEY columns as a row value, lag, --full,
--from/--to, PYTHON, AUTO); SCD2 valid_from from a column, a current valid_to sentinel,
tracked columns; hard deletes (invalidate, new_record, SCD1); duplicate business keys in
one extract, within one batch and across batches."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from coordinator.plan import plan_run
from shared.engines import get_engine
from shared.errors import ConfigError
from shared.metadata.models import Checkpoint
from shared.metadata.store import session
from shared.run.statuses import RunStatus
from shared.run.values import decode_value, encode_value
from shared.run.window import chunk_select
from shared.timeutil import utcnow
from tests.cliutil import (
    process_log_count,
    run_cli,
    table_exists,
    write_config,
)
from tests.optdata import (
    KINDS,
    T0,
    Db,
    checkpoint,
    chunks,
    expected,
    mapping,
    normal,
    row,
    run,
    run_all,
)

BUSINESS = ["id", "code", "name", "email", "city", "day", "ts", "version", "updated_at"]


@pytest.fixture(params=KINDS)
def db(request, pg_urls, mariadb_url, sqlite_url):
    kind = request.param
    if kind == "pg":
        made = Db("pg", "wh", pg_urls["wh"], request.getfixturevalue("schema"))
    elif kind == "mdb":
        made = Db("mdb", "mdb", mariadb_url)
    else:
        made = Db("lite", "lite", sqlite_url)
    yield made
    made.drop_tables()


def current(db: Db, table: str, columns: list[str] = BUSINESS) -> list[dict]:
    return sorted(
        db.rows(table, columns, "dw_is_current = 1" if db.kind != "pg" else "dw_is_current"),
        key=lambda r: (r["id"] is None, r["id"] or 0, r.get("code") or ""),
    )


def ordered(rows: list[dict]) -> list[dict]:
    return sorted(rows, key=lambda r: (r["id"] is None, r["id"] or 0, r.get("code") or ""))


def ok(result) -> None:
    assert result.status is RunStatus.SUCCESS, result.message


def when(seconds: int) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def ts_text(db: Db, value: dt.datetime) -> str:
    """A timestamp as typed on the command line (SQLite compares its ISO text)."""
    return value.isoformat(" ")


# -- chunking ----------------------------------------------------------------------------------
@pytest.mark.e2e
@pytest.mark.parametrize("strategy", ["quantile", "range", "offset"])
def test_chunking_strategies_cover_every_row_once(strategy, db, workers, make_settings):
    """Composite key (id, code), split on id (offset: on the whole key); rows whose id is NULL
    are loaded by chunk 0; every row is read by exactly one chunk."""
    rows = [row(i) for i in range(1, 61)] + [row(None, c) for c in ("n1", "n2", "n3")]
    rows += [row(7, "b"), row(7, "c")]  # one id, several keys: offset bounds fall inside it
    source = db.create_source("src", rows)
    spec = mapping(
        db,
        source,
        "dim",
        keys=["id", "code"],
        chunking={"strategy": strategy, "column": "id", "rows_per_chunk": 11, "max_chunks": 6},
    )
    settings = make_settings({db.name("m"): spec})

    first = run(settings, db.name("m"))
    ok(first)
    got = chunks(settings, first.run_id)
    assert len(got) == first.chunks_total >= 5, first.plan_note
    if strategy != "quantile":
        assert f"{strategy} split on" in first.plan_note
    sizes = [c.rows_read for c in got]
    assert sum(sizes) == first.rows_read == first.rows_inserted == len(rows)
    assert min(sizes) >= 5, sizes  # balanced enough: no empty or tiny chunk
    assert [c.includes_nulls for c in got] == [True] + [False] * (len(got) - 1)
    if strategy == "offset":
        assert all(c.upper_bound["type"] == "row" for c in got[:-1])
    else:
        assert all(c.upper_bound["type"] == "int" for c in got[:-1])
    assert current(db, "dim") == ordered(expected(rows, BUSINESS))

    again = run(settings, db.name("m"))
    ok(again)
    assert (again.rows_inserted, again.rows_changed, again.rows_unchanged) == (0, 0, len(rows))


def _plan_counts(db: Db, settings, mapref: str):
    """Plan only, then count each planned range in SQL: (ranges, their counts, the total)."""
    plan = plan_run(settings, mapref, settings.mapping(mapref), get_engine(settings.metadata))
    counts = []
    for chunk in plan.ranges:
        sql, params = chunk_select(
            db.adapter,
            plan.run.spec.source.query,
            ["id"],
            plan.run.window,
            plan.run.spec.split_columns,
            chunk,
        )
        counts.append(db.scalar(f"SELECT count(*) FROM ({sql}) c", **params))
    return plan, counts


def test_range_and_quantile_on_date_and_timestamp_split_columns(db, make_settings, metadata_ready):
    rows = [row(i) for i in range(1, 41)] + [row(41, day=None, ts=None)]
    source = db.create_source("src", rows)
    maps = {}
    for split in ("day", "ts"):
        for strategy in ("range", "quantile"):
            maps[db.name(f"{split}_{strategy}")] = mapping(
                db,
                source,
                f"dim_{split}_{strategy}",
                keys=[split, "id"],
                chunking={"strategy": strategy, "column": split, "max_chunks": 5},
            )
    maps[db.name("text")] = mapping(
        db,
        source,
        "dim_text",
        keys=["code", "id"],
        chunking={"strategy": "range", "column": "code"},
    )
    settings = make_settings(maps)
    for split in ("day", "ts"):
        for strategy in ("range", "quantile"):
            plan, counts = _plan_counts(db, settings, db.name(f"{split}_{strategy}"))
            assert len(plan.ranges) == 5, (split, strategy, plan.note)
            assert sum(counts) == len(rows) and min(counts) >= 6, (split, strategy, counts)
            bounds = [r.upper for r in plan.ranges[:-1]]
            kind = dt.date if split == "day" else dt.datetime
            if db.kind == "lite":  # ISO text in SQLite; range keeps its format
                assert all(isinstance(b, str) for b in bounds), bounds
                bounds = [normal(split, b) for b in bounds]
            assert all(isinstance(b, kind) for b in bounds) and bounds == sorted(set(bounds))
            if strategy == "range":  # equal strides between min and max
                steps = {(b - a) for a, b in zip(bounds, bounds[1:])}
                assert max(steps) - min(steps) <= dt.timedelta(days=1), steps
    with pytest.raises(ConfigError, match="range needs a numeric, date or timestamp split column"):
        plan_run(
            settings,
            db.name("text"),
            settings.mapping(db.name("text")),
            get_engine(settings.metadata),
        )


# -- checkpoints -------------------------------------------------------------------------------
def _window_count(rows: list[dict], low: tuple, high: tuple) -> list[dict]:
    return [r for r in rows if low <= (r["updated_at"], r["id"]) <= high]


@pytest.mark.e2e
def test_key_checkpoint_on_two_columns_with_lag_full_and_backfill(db, workers, make_settings):
    """checkpoint columns [updated_at, id] compared as a row value, lag 2 (seconds): a tie on
    updated_at with a higher id is read, a late row 1 s below the checkpoint is read thanks to
    the lag; --full reads everything and still sets the checkpoint; --from/--to re-reads an
    explicit window and never moves it."""
    rows = [row(i, updated_at=when(i // 3)) for i in range(1, 31)]  # three rows per second
    source = db.create_source("src", rows)
    mapref = db.name("m")
    settings = make_settings(
        {
            mapref: mapping(
                db,
                source,
                "dim",
                checkpoint={"strategy": "KEY", "columns": ["updated_at", "id"], "lag": 2},
            )
        }
    )

    first = run(settings, mapref)
    ok(first)
    assert (first.load_kind, first.rows_read, first.rows_inserted) == ("initial", 30, 30)
    assert checkpoint(settings, mapref) == encode_value((_cp(db, when(10)), 30))

    by_id = {r["id"]: r for r in rows}
    for i in (5, 6):  # changed
        by_id[i] = {**by_id[i], "name": f"changed {i}", "updated_at": when(20)}
        db.execute(
            f"UPDATE {db.ident('src')} SET name = :n, updated_at = :u WHERE id = :i",
            n=f"changed {i}",
            u=when(20),
            i=i,
        )
    late = [row(31, updated_at=when(10)), row(32, updated_at=when(9))]  # a tie and a late row
    db.insert("src", late)
    by_id.update({r["id"]: r for r in late})
    second = run(settings, mapref)
    ok(second)
    window = _window_count(list(by_id.values()), (when(8), 30), (when(20), 6))
    assert {r["id"] for r in window} == {27, 28, 29, 30, 31, 32, 5, 6}
    assert (
        second.load_kind,
        second.rows_read,
        second.rows_changed,
        second.rows_inserted,
        second.rows_unchanged,
    ) == ("incremental", 8, 2, 2, 4)
    assert "lag 2" in second.plan_note
    assert second.checkpoint_from == encode_value((_cp(db, when(10)), 30))
    assert checkpoint(settings, mapref) == encode_value((_cp(db, when(20)), 6))
    assert current(db, "dim") == ordered(expected(list(by_id.values()), BUSINESS))

    full = run(settings, mapref, full=True)
    ok(full)
    assert (full.load_kind, full.rows_read, full.rows_unchanged) == ("full", 32, 32)
    assert "full reload" in full.plan_note
    assert checkpoint(settings, mapref) == encode_value((_cp(db, when(20)), 6))

    # a correction that did not touch updated_at: only a backfill of its window sees it
    db.execute(f"UPDATE {db.ident('src')} SET city = 'Fixed' WHERE id = 4")
    by_id[4] = {**by_id[4], "city": "Fixed"}
    backfill = run(
        settings,
        mapref,
        window_from=f"{ts_text(db, when(1))},0",
        window_to=f"{ts_text(db, when(3))},99",
    )
    ok(backfill)
    assert backfill.load_kind == "backfill" and "does not move" in backfill.plan_note
    assert (backfill.rows_read, backfill.rows_changed) == (7, 1)  # ids 3..11 but 5 and 6
    assert backfill.checkpoint_to is None
    assert checkpoint(settings, mapref) == encode_value((_cp(db, when(20)), 6))
    assert current(db, "dim") == ordered(expected(list(by_id.values()), BUSINESS))


def _cp(db: Db, value: dt.datetime):
    """A timestamp as a checkpoint value from this database (SQLite keeps ISO text)."""
    return value.isoformat(" ") if db.kind == "lite" else value


def test_lag_moves_the_window_of_dates_and_numbers(db, make_settings, metadata_ready):
    """lag is days for a date checkpoint and units for a number; the plan's window starts that
    far below the stored checkpoint, which the summary still shows as checkpoint_from."""
    source = db.create_source("src", [row(i) for i in range(1, 11)])
    maps = {
        db.name("by_day"): mapping(
            db,
            source,
            "dim_day",
            checkpoint={"strategy": "KEY", "column": "day", "lag": 2},
            chunking={"exact_count": True},
        ),
        db.name("by_version"): mapping(
            db, source, "dim_v", checkpoint={"strategy": "AUTO", "column": "id", "lag": 3}
        ),
    }
    settings = make_settings(maps)
    metadata = get_engine(settings.metadata)
    stored_day = "2025-01-06" if db.kind == "lite" else dt.date(2025, 1, 6)
    with session(metadata) as s, s.begin():
        for mapref, value in ((db.name("by_day"), stored_day), (db.name("by_version"), 7)):
            s.merge(
                Checkpoint(
                    mapref=mapref,
                    value=encode_value(value),
                    value_type="x",
                    run_id="seeded",
                    updated_at=utcnow(),
                )
            )
    by_day = plan_run(settings, db.name("by_day"), settings.mapping(db.name("by_day")), metadata)
    assert normal("day", by_day.run.window.lower) == dt.date(2025, 1, 4)
    assert by_day.run.checkpoint_from == stored_day and by_day.run.load_kind == "incremental"
    assert by_day.estimated_rows == 8  # days 2025-01-04 .. 2025-01-11
    by_version = plan_run(
        settings,
        db.name("by_version"),  # AUTO with a column: KEY
        settings.mapping(db.name("by_version")),
        metadata,
    ).run
    assert (by_version.window.lower, by_version.window.upper, by_version.load_kind) == (
        4,
        10,
        "incremental",
    )


@pytest.mark.e2e
def test_python_checkpoint(db, workers, make_settings):
    """A function computes each row's checkpoint (version * 1000 + id): one chunk whatever
    --chunks says, rows not above the stored checkpoint are skipped, a backfill window of
    function values never moves it."""
    rows = [row(i) for i in range(1, 31)]
    source = db.create_source("src", rows)
    mapref = db.name("m")
    spec = mapping(
        db,
        source,
        "dim",
        checkpoint={"strategy": "PYTHON", "function": "tests.checkpoint_functions:version_then_id"},
    )
    settings = make_settings({mapref: spec})

    first = run(settings, mapref, chunks_override=4)
    ok(first)
    assert first.chunks_total == 1
    assert "PYTHON" in first.plan_note and "--chunks 4 ignored" in first.plan_note
    assert (first.rows_read, first.rows_inserted) == (30, 30)
    assert checkpoint(settings, mapref) == {"type": "int", "value": 1030}
    lagged = make_settings({mapref: {**spec, "checkpoint": {**spec["checkpoint"], "lag": 5}}})
    python_filter = plan_run(
        lagged, mapref, lagged.mapping(mapref), get_engine(settings.metadata)
    ).run.python_filter
    assert (python_filter.lower, python_filter.lower_inclusive) == (1025, False)
    assert [python_filter.keeps(v) for v in (1025, 1026, None)] == [False, True, False]
    settings = make_settings({mapref: spec})

    db.execute(f"UPDATE {db.ident('src')} SET version = 2, name = 'v2' WHERE id IN (3, 7)")
    second = run(settings, mapref)
    ok(second)
    assert (second.rows_read, second.rows_changed, second.rows_unchanged) == (2, 2, 0)
    assert checkpoint(settings, mapref) == {"type": "int", "value": 2007}
    nothing = run(settings, mapref)
    ok(nothing)
    assert nothing.rows_read == 0 and checkpoint(settings, mapref)["value"] == 2007

    backfill = run(settings, mapref, window_from="1010", window_to="1012")
    ok(backfill)
    assert (backfill.rows_read, backfill.rows_unchanged, backfill.checkpoint_to) == (3, 3, None)
    assert checkpoint(settings, mapref)["value"] == 2007
    full = run(settings, mapref, full=True)
    ok(full)
    assert (full.rows_read, full.checkpoint_to) == (30, {"type": "int", "value": 2007})
    names = {r["id"]: r["name"] for r in current(db, "dim")}
    assert names[3] == names[7] == "v2" and len(names) == 30


# -- SCD options -------------------------------------------------------------------------------
def _versions(db: Db, table: str, key: int, columns: list[str]) -> list[dict]:
    return db.rows(table, columns, f"id = {key}", order=db.adapter.q("dw_sk"))


@pytest.mark.e2e
@pytest.mark.parametrize("db", ["pg", "mdb"], indirect=True)  # SQLite: no typed NULL by query
def test_a_null_valid_from_is_an_error_row_also_when_only_untracked_columns_change(
    db, workers, make_settings
):
    """README: a row whose valid_from is NULL is an error row. With the valid_from column
    untracked, a change of only untracked columns is applied in place, and the NULL was
    written into the current version (found by an audit); it is quarantined now, and the
    version keeps its values."""
    source = db.create_source("src", [row(i) for i in range(1, 5)])
    mapref = db.name("m")
    settings = make_settings(
        {
            mapref: mapping(
                db, source, "dim", scd={"type": 2, "valid_from": "updated_at", "tracked": ["name"]}
            )
        }
    )
    ok(run(settings, mapref))
    before = current(db, "dim")
    db.execute(f"UPDATE {db.ident('src')} SET city = 'Kyiv' WHERE id IN (1, 2)")
    columns = ", ".join(c for c in BUSINESS if c != "updated_at")
    nulled = (  # the source column is NOT NULL: the query makes key 1's NULL
        f"SELECT {columns}, CASE WHEN id = 1 THEN NULL ELSE updated_at END AS updated_at "
        f"FROM {db.ident('src')}"
    )
    scd = {"type": 2, "valid_from": "updated_at", "tracked": ["name"]}
    settings = make_settings({mapref: mapping(db, nulled, "dim", scd=scd)})
    second = run(settings, mapref)
    ok_with_errors = second.status is RunStatus.FAILED and second.rows_errored == 1
    assert ok_with_errors, second.message  # errors.max_rows 0: one error row fails the run
    assert (second.rows_changed, second.rows_unchanged) == (1, 2)
    after = {r["id"]: r for r in current(db, "dim")}
    assert after[1] == before[0]
    assert after[2]["city"] == "Kyiv"
    assert db.scalar(f"SELECT count(*) FROM {db.ident('dim')}") == 4


@pytest.mark.e2e
def test_scd2_valid_from_column_and_current_valid_to_sentinel(db, workers, make_settings):
    rows = [row(i) for i in range(1, 21)]
    source = db.create_source("src", rows)
    mapref = db.name("m")
    settings = make_settings(
        {
            mapref: mapping(
                db,
                source,
                "dim",
                scd={"type": 2, "valid_from": "updated_at", "current_valid_to": "9999-12-31"},
                checkpoint={"strategy": "KEY", "column": "updated_at"},
            )
        }
    )
    sentinel = dt.datetime(9999, 12, 31)
    audit = ["id", "name", "updated_at", "dw_valid_from", "dw_valid_to", "dw_is_current"]

    ok(run(settings, mapref))
    for r in current(db, "dim", audit):
        assert (r["dw_valid_from"], r["dw_valid_to"]) == (r["updated_at"], sentinel), r
    with db.engine.connect() as conn:  # validity columns typed like the source column
        types = {
            c.name: c.type.kind.value
            for c in db.adapter.source_columns(
                conn, f"SELECT dw_valid_from, dw_valid_to FROM {db.ident('dim')}"
            )
        }
    assert types == {"dw_valid_from": "timestamp", "dw_valid_to": "timestamp"}

    db.execute(
        f"UPDATE {db.ident('src')} SET city = 'Kyiv', updated_at = :u WHERE id IN (4, 9)",
        u=when(100),
    )
    second = run(settings, mapref)
    ok(second)
    assert (second.rows_changed, second.rows_inserted) == (2, 0)
    old, new = _versions(db, "dim", 4, audit)
    assert (old["dw_is_current"], new["dw_is_current"]) == (False, True)
    assert old["dw_valid_from"] == when(4) and old["dw_valid_to"] == new["dw_valid_from"] == when(
        100
    )
    assert new["dw_valid_to"] == sentinel
    assert db.scalar(f"SELECT count(*) FROM {db.ident('dim')}") == 22


@pytest.mark.e2e
def test_scd2_tracked_columns_version_others_update_in_place(db, workers, make_settings):
    rows = [row(i) for i in range(1, 13)]
    source = db.create_source("src", rows)
    mapref = db.name("m")
    settings = make_settings(
        {mapref: mapping(db, source, "dim", scd={"type": 2, "tracked": ["name", "city"]})}
    )
    first = run(settings, mapref)
    ok(first)

    db.execute(f"UPDATE {db.ident('src')} SET email = 'new@x.org', version = 2 WHERE id IN (1, 2)")
    db.execute(f"UPDATE {db.ident('src')} SET city = 'Kyiv' WHERE id = 3")
    db.execute(f"UPDATE {db.ident('src')} SET city = 'Baku', email = 'b@x.org' WHERE id = 4")
    second = run(settings, mapref)
    ok(second)
    assert (second.rows_changed, second.rows_inserted, second.rows_unchanged) == (4, 0, 8)
    cols = ["id", "email", "city", "version", "dw_is_current", "dw_run_id"]
    for key in (1, 2):  # type 1 inside type 2: one version, updated in place
        [only] = _versions(db, "dim", key, cols)
        assert (only["email"], only["version"], only["dw_is_current"]) == ("new@x.org", 2, True)
        assert only["dw_run_id"] == first.run_id  # the run that made the version
    for key, city, email in ((3, "Kyiv", "e3@x.org"), (4, "Baku", "b@x.org")):
        old, new = _versions(db, "dim", key, cols)
        assert (old["city"], old["dw_is_current"], new["city"], new["email"]) == (
            rows[key - 1]["city"],
            False,
            city,
            email,
        )
    third = run(settings, mapref)
    ok(third)
    assert (third.rows_changed, third.rows_unchanged) == (0, 12)
    assert db.scalar(f"SELECT count(*) FROM {db.ident('dim')}") == 14


@pytest.mark.e2e
def test_hard_deletes_on_full_loads(db, workers, make_settings):
    """Keys current in the target and gone from the source are retired in finalize, after
    every chunk succeeded: SCD2 invalidate expires them, new_record adds a 'deleted'
    version, SCD1 deletes the row. A NULL key is a key. A key that comes back is a new
    version; a second run retires nothing again."""
    rows = [row(i) for i in range(1, 13)] + [row(None, "nul")]
    source = db.create_source("src", rows)
    names = {"inv": db.name("inv"), "new": db.name("new"), "s1": db.name("s1")}
    settings = make_settings(
        {
            names["inv"]: mapping(db, source, "dim_inv", scd={"type": 2, "deletes": "invalidate"}),
            names["new"]: mapping(
                db,
                source,
                "dim_new",
                scd={"type": 2, "deletes": "new_record", "current_valid_to": "9999-12-31 23:59:59"},
            ),
            names["s1"]: mapping(
                db,
                source,
                "dim_s1",
                scd={
                    "type": 1,
                    "deletes": "invalidate",
                    "audit_columns": {"updated_at": "dw_updated_at"},
                },
            ),
        }
    )
    maprefs = list(names.values())
    for result in run_all(settings, *maprefs):
        ok(result)
        assert (result.rows_inserted, result.rows_deleted) == (13, 0)
        assert result.chunks_total >= 2

    db.execute(f"DELETE FROM {db.ident('src')} WHERE id IN (2, 5) OR id IS NULL")
    inv, new, s1 = run_all(settings, *maprefs)
    for result in (inv, new, s1):
        ok(result)
        assert (result.rows_read, result.rows_unchanged, result.rows_deleted) == (10, 10, 3)
    cols = ["id", "name", "dw_valid_from", "dw_valid_to", "dw_is_current", "dw_run_id"]
    gone = "id IN (2, 5) OR id IS NULL"
    expired = db.rows("dim_inv", cols, gone)
    assert len(expired) == 3 and not any(r["dw_is_current"] for r in expired)
    assert {r["dw_valid_to"] for r in expired} == {normal("dw_valid_to", inv.created_at)}
    history = db.rows("dim_new", cols + ["dw_is_deleted", "dw_row_hash"], gone, order="dw_sk")
    assert len(history) == 6
    tombstones = [r for r in history if r["dw_is_current"]]
    assert len(tombstones) == 3 and all(
        r["dw_is_deleted"] and r["dw_row_hash"] == "deleted" and r["dw_run_id"] == new.run_id
        for r in tombstones
    )
    assert {r["dw_valid_to"] for r in tombstones} == {dt.datetime(9999, 12, 31, 23, 59, 59)}
    assert all(r["dw_valid_from"] == normal("dw_valid_from", new.created_at) for r in tombstones)
    assert db.scalar(f"SELECT count(*) FROM {db.ident('dim_s1')}") == 10
    assert db.scalar(f"SELECT count(*) FROM {db.ident('dim_s1')} WHERE {gone}") == 0

    db.insert("src", [row(2, name="back")])
    results = run_all(settings, *maprefs)
    assert [
        (r.status.value, r.rows_inserted, r.rows_changed, r.rows_deleted, r.message)
        for r in results
    ] == [("SUCCESS", 1, 0, 0, None), ("SUCCESS", 0, 1, 0, None), ("SUCCESS", 1, 0, 0, None)]
    for table in ("dim_inv", "dim_new", "dim_s1"):
        where = "id = 2" + (
            " AND dw_is_current"
            if table != "dim_s1" and db.kind == "pg"
            else " AND dw_is_current = 1"
            if table != "dim_s1"
            else ""
        )
        assert db.all(f"SELECT name FROM {db.ident(table)} WHERE {where}")[0][0] == "back"
    assert db.scalar(f"SELECT count(*) FROM {db.ident('dim_new')} WHERE id = 2") == 3


# -- duplicate business keys -------------------------------------------------------------------
@pytest.mark.e2e
def test_duplicate_keys_highest_checkpoint_wins(db, workers, make_settings):
    """Keys that occur several times in one extract: the row with the highest updated_at is
    loaded, the others are counted as rows_duplicate. batch_rows 1 puts every duplicate in a
    later batch than its first row (a later winner overwrites the version this run wrote,
    moving its predecessor's valid_to along); batch_rows 100 resolves them in one batch."""
    rows = [row(i) for i in range(1, 11)]
    rows += [
        row(11, name="loser", updated_at=when(50)),
        row(11, name="winner", updated_at=when(60)),
    ]
    rows += [
        row(12, name="winner", updated_at=when(70)),
        row(12, name="loser", updated_at=when(65)),
    ]
    rows += [
        row(13, name="first", updated_at=when(40)),
        row(13, name="winner", updated_at=when(80)),
        row(13, name="third", updated_at=when(45)),
    ]
    rows += [row(14), row(14)]  # exact duplicates
    source = db.create_source("src", rows)
    scd2 = {"type": 2, "valid_from": "updated_at"}
    cp = {"strategy": "KEY", "column": "updated_at"}
    names = {"one": db.name("one"), "many": db.name("many"), "s1": db.name("s1")}
    settings = make_settings(
        {
            names["one"]: mapping(db, source, "dim_one", scd=scd2, checkpoint=cp, batch_rows=1),
            names["many"]: mapping(db, source, "dim_many", scd=scd2, checkpoint=cp, batch_rows=100),
            names["s1"]: mapping(
                db,
                source,
                "dim_s1",
                checkpoint=cp,
                batch_rows=1,
                scd={"type": 1, "audit_columns": {"updated_at": "dw_updated_at"}},
            ),
        }
    )
    winners = {r["id"]: r for r in sorted(rows, key=lambda r: r["updated_at"])}
    want = ordered(expected(list(winners.values()), BUSINESS))
    for result in run_all(settings, *names.values()):
        ok(result)
        assert (
            result.rows_read,
            result.rows_inserted,
            result.rows_changed,
            result.rows_unchanged,
            result.rows_duplicate,
        ) == (19, 14, 0, 0, 5), result.run_id
    for table in ("dim_one", "dim_many"):
        assert current(db, table) == want, table
        assert db.scalar(f"SELECT count(*) FROM {db.ident(table)}") == 14, "one version a key"
        for r in db.rows(table, ["id", "updated_at", "dw_valid_from"]):
            assert r["dw_valid_from"] == r["updated_at"]
    assert ordered(db.rows("dim_s1", BUSINESS)) == want

    # a replay of every chunk (as after a redelivery): same target, same counts
    first_runs = {}
    for mapref in (names["one"], names["s1"]):
        first_runs[mapref] = _replay_chunks(settings, mapref)
    for table in ("dim_one",):
        assert current(db, table) == want
        assert db.scalar(f"SELECT count(*) FROM {db.ident(table)}") == 14
    assert ordered(db.rows("dim_s1", BUSINESS)) == want

    # an incremental run that changes key 3 twice: one new version, from the later row (the
    # window re-reads key 13's winner at the checkpoint: unchanged)
    db.insert(
        "src",
        [row(3, name="v2 early", updated_at=when(90)), row(3, name="v2 late", updated_at=when(95))],
    )
    for result in run_all(settings, *names.values()):
        ok(result)
        assert (
            result.rows_read,
            result.rows_changed,
            result.rows_unchanged,
            result.rows_duplicate,
        ) == (3, 1, 1, 1)
    cols = ["id", "name", "dw_valid_from", "dw_valid_to", "dw_is_current"]
    for table in ("dim_one", "dim_many"):
        old, new = _versions(db, table, 3, cols)
        assert (old["name"], new["name"], new["dw_is_current"]) == ("name 3 a", "v2 late", True)
        assert old["dw_valid_to"] == new["dw_valid_from"] == when(95), table
    assert db.rows("dim_s1", ["name"], "id = 3") == [{"name": "v2 late"}]


def _replay_chunks(settings, mapref: str) -> None:
    """Load every chunk of the mapping's last run again in this process, as a redelivered
    task would (its attempt counts as a replay), and check the counts come out the same."""
    from sqlalchemy import update

    from shared.chunk.load import load_chunk
    from shared.fence import claim_target
    from shared.metadata import store
    from shared.metadata.models import ChunkLog
    from shared.run.chord import chunk_range
    from shared.run.plan import RunPlan
    from shared.run.statuses import ChunkStatus

    metadata = get_engine(settings.metadata)
    last = store.latest_run(metadata, mapref)
    before = [
        (c.rows_read, c.rows_inserted, c.rows_changed, c.rows_unchanged, c.rows_duplicate)
        for c in store.get_chunks(metadata, last.run_id)
    ]
    # the run's end closed the target's fence: reopen it for the run, as a resume does
    claim_target(settings, RunPlan.from_row(last))
    for chunk in store.get_chunks(metadata, last.run_id):
        with metadata.begin() as conn:
            conn.execute(
                update(ChunkLog)
                .where(ChunkLog.run_id == last.run_id, ChunkLog.chunk_no == chunk.chunk_no)
                .values(status=ChunkStatus.PENDING)
            )
        result = load_chunk(settings, last.run_id, chunk_range(chunk), "replay")
        assert result.status is ChunkStatus.SUCCESS, result.error
    after = [
        (c.rows_read, c.rows_inserted, c.rows_changed, c.rows_unchanged, c.rows_duplicate)
        for c in store.get_chunks(metadata, last.run_id)
    ]
    assert [c.attempts for c in store.get_chunks(metadata, last.run_id)] == [2] * len(after)
    assert after == before


# -- what is refused, with exit 2 and nothing written --------------------------------------------
def _refusal_deletes_on_incremental(m):
    m["checkpoint"] = {"strategy": "KEY", "column": "updated_at"}
    m["scd"] = {"type": 2, "deletes": "invalidate"}
    return [], ["scd.deletes: invalidate needs full loads", "strategy NONE"]


def _refusal_new_record_on_scd1(m):
    m["scd"] = {"type": 1, "deletes": "new_record"}
    return [], ["new_record needs SCD type 2"]


def _refusal_tracked_on_scd1(m):
    m["scd"] = {"type": 1, "tracked": ["name"]}
    return [], ["tracked only apply to SCD type 2"]


def _refusal_tracked_column_missing(m):
    m["scd"] = {"type": 2, "tracked": ["nmae"]}
    return [], ["scd.tracked 'nmae' is not a column of the source query"]


def _refusal_valid_from_not_a_timestamp(m):
    m["scd"] = {"type": 2, "valid_from": "version"}
    return [], ["scd.valid_from 'version' is a", "must be a date or timestamp"]


def _refusal_bad_sentinel(m):
    m["scd"] = {"type": 2, "current_valid_to": "someday"}
    return [], ["current_valid_to", "'someday' is not an ISO date or timestamp"]


def _refusal_column_and_columns(m):
    m["checkpoint"] = {"strategy": "KEY", "column": "id", "columns": ["updated_at", "id"]}
    return [], ["either 'column' or 'columns'"]


def _refusal_python_without_function(m):
    m["checkpoint"] = {"strategy": "PYTHON"}
    return [], ["strategy PYTHON needs 'function'"]


def _refusal_python_function_missing(m):
    m["checkpoint"] = {"strategy": "PYTHON", "function": "tests.checkpoint_functions:nope"}
    return [], ["checkpoint.function 'tests.checkpoint_functions:nope'", "has no function 'nope'"]


def _refusal_python_module_missing(m):
    m["checkpoint"] = {"strategy": "PYTHON", "function": "tests.no_such_module:f"}
    return [], ["cannot import module 'tests.no_such_module'"]


def _refusal_python_not_callable(m):
    m["checkpoint"] = {"strategy": "PYTHON", "function": "tests.checkpoint_functions:NOT_CALLABLE"}
    return [], ["has no function 'NOT_CALLABLE'"]


def _refusal_lag_without_checkpoint(m):
    m["checkpoint"] = {"strategy": "AUTO", "lag": 5}
    return [], ["lag needs a checkpoint"]


def _refusal_lag_on_text(m):
    m["checkpoint"] = {"strategy": "KEY", "column": "code", "lag": 5}
    return [], ["checkpoint.lag", "no lag arithmetic"]


def _refusal_range_on_text(m):
    m["keys"] = ["code", "id"]
    m["chunking"] = {"strategy": "range", "min_rows_for_parallel": 0, "rows_per_chunk": 2}
    return [], [
        "chunking.strategy range needs a numeric, date or timestamp split column",
        "'code' holds str values",
    ]


def _refusal_backfill_without_checkpoint(m):
    return ["--from", "1"], ["has no checkpoint (strategy NONE)", "--from/--to"]


def _refusal_full_and_backfill(m):
    m["checkpoint"] = {"strategy": "KEY", "column": "updated_at"}
    return ["--full", "--from", "2026-01-01"], ["--full reloads everything"]


def _refusal_to_without_from(m):
    m["checkpoint"] = {"strategy": "KEY", "column": "updated_at"}
    return ["--to", "2026-01-01"], ["--to needs --from"]


def _refusal_from_not_a_timestamp(m):
    m["checkpoint"] = {"strategy": "KEY", "column": "updated_at"}
    return ["--from", "yesterday"], ["--from 'yesterday' is not a datetime"]


def _refusal_from_wrong_arity(m):
    m["checkpoint"] = {"strategy": "KEY", "columns": ["updated_at", "id"]}
    return ["--from", "2026-01-01 00:00:00"], ["expected 2 comma-separated values"]


REFUSALS = {
    name.removeprefix("_refusal_"): fn
    for name, fn in globals().items()
    if name.startswith("_refusal_")
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_refused_options_exit_2_and_write_nothing(
    case, clean_cli_env, base_config, wh, schema, tmp_path, capsys
):
    db = Db("pg", "wh", base_config["connections"]["wh"], schema)
    source = db.create_source("src", [row(i) for i in range(1, 6)])
    spec = mapping(db, source, "dim", chunking={"min_rows_for_parallel": 10**6})
    argv, fragments = REFUSALS[case](spec)
    mapref = f"refuse_{case}"
    path = write_config(tmp_path / "chordload.yaml", base_config, {mapref: spec})
    result = run_cli(capsys, "run", mapref, *argv, "--config", path)
    assert result.code == 2, result
    for fragment in fragments:
        assert fragment in result.err, (fragment, result.err)
    assert "Traceback" not in result.err
    assert process_log_count(base_config["metadata"], mapref) == 0
    assert not table_exists(wh, schema, db.name("dim"))


# -- the command line: --full, --from/--to and the new counters in the JSON summary -----------------
@pytest.mark.e2e
def test_cli_full_backfill_and_summary_counters(
    workers, clean_cli_env, base_config, wh, schema, tmp_path, capsys
):
    db = Db("pg", "wh", base_config["connections"]["wh"], schema)
    rows = [row(i) for i in range(1, 9)] + [row(8, name="dup", updated_at=when(1))]
    source = db.create_source("src", rows)
    keyed = mapping(db, source, "dim_k", checkpoint={"strategy": "KEY", "column": "updated_at"})
    full = mapping(db, source, "dim_f", scd={"type": 2, "deletes": "invalidate"})
    path = write_config(tmp_path / "chordload.yaml", base_config, {"k": keyed, "f": full})

    def cli(*argv: str) -> dict:
        result = run_cli(
            capsys, "run", *argv, "--wait", "--json", "--timeout-s", "60", "--config", path
        )
        assert result.code == 0, result
        return json.loads(result.out)

    first = cli("k")
    assert (
        first["rows_read"],
        first["rows_inserted"],
        first["rows_duplicate"],
        first["rows_deleted"],
        first["load_kind"],
    ) == (9, 8, 1, 0, "initial")
    assert first["checkpoint_to"] == when(8).isoformat()
    again = cli("k", "--full")
    assert (again["load_kind"], again["rows_read"], again["checkpoint_to"]) == (
        "full",
        9,
        when(8).isoformat(),
    )
    back = cli("k", "--from", "2026-01-01 00:00:02", "--to", "2026-01-01 00:00:04")
    assert (back["load_kind"], back["rows_read"], back["checkpoint_to"]) == ("backfill", 3, None)
    assert back["checkpoint_from"] == when(8).isoformat()

    assert cli("f")["rows_inserted"] == 8
    db.execute(f"DELETE FROM {db.ident('src')} WHERE id > 6")
    gone = cli("f")
    assert (gone["rows_read"], gone["rows_deleted"], gone["status"]) == (6, 2, "SUCCESS")
    status = run_cli(capsys, "status", gone["run_id"], "--config", path)
    assert status.code == 0 and "2 deleted keys retired" in " ".join(status.out.split()), status


# -- the metadata migration ------------------------------------------------------------------------
def test_migrations_0004_0005_add_and_remove_counters_and_index(tmp_path):
    from alembic import command
    from sqlalchemy import inspect

    from shared.metadata.schema import _alembic_config, current_revision, head_revision, upgrade

    engine = get_engine(f"sqlite:///{tmp_path / 'meta.db'}")
    upgrade(engine)
    assert current_revision(engine) == head_revision()

    def columns(table: str) -> set[str]:
        with engine.connect() as conn:
            return {c["name"] for c in inspect(conn).get_columns(table)}

    def indexes(table: str) -> set[str]:
        with engine.connect() as conn:
            return {i["name"] for i in inspect(conn).get_indexes(table)}

    new = {"rows_deleted", "rows_duplicate", "deletes_started_at"}
    assert new <= columns("process_log") and "rows_duplicate" in columns("chunk_log")
    assert "ix_error_row_run_chunk" in indexes("error_row")
    cfg = _alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0004")
    assert "ix_error_row_run_chunk" not in indexes("error_row")
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0003")
    assert not new & columns("process_log") and "rows_duplicate" not in columns("chunk_log")
    upgrade(engine)
    assert new <= columns("process_log") and "ix_error_row_run_chunk" in indexes("error_row")


# -- the pieces, without servers ------------------------------------------------------------------
def test_lag_stride_and_command_line_values():
    from decimal import Decimal

    from shared.run.values import coerce_like, minus_lag, stride_bounds

    assert minus_lag(dt.datetime(2026, 1, 1, 0, 0, 10), 4) == dt.datetime(2026, 1, 1, 0, 0, 6)
    assert minus_lag(dt.date(2026, 1, 10), 1.5) == dt.date(2026, 1, 8)  # days, rounded up
    assert minus_lag(100, 7) == 93 and minus_lag(Decimal("1.50"), 0.25) == Decimal("1.25")
    assert minus_lag("2026-01-01 00:00:10", 10) == "2026-01-01 00:00:00"  # SQLite's ISO text
    assert minus_lag("2026-01-10", 2) == "2026-01-08"
    assert minus_lag((dt.date(2026, 1, 10), 5), 1) == (dt.date(2026, 1, 9), 5)
    with pytest.raises(TypeError):
        minus_lag("abc", 1)
    assert stride_bounds(1, 100, 4) == [25, 50, 75]
    assert stride_bounds(dt.date(2026, 1, 1), dt.date(2026, 1, 9), 4) == [
        dt.date(2026, 1, 3),
        dt.date(2026, 1, 5),
        dt.date(2026, 1, 7),
    ]
    assert stride_bounds("2026-01-01T00:00:00", "2026-01-01T00:00:09", 3) == [
        "2026-01-01T00:00:03",
        "2026-01-01T00:00:06",
    ]
    assert stride_bounds(1, 3, 8) == [1, 2]  # never more bounds than distinct values
    with pytest.raises(TypeError):
        stride_bounds("apple", "pear", 2)
    assert coerce_like("2026-01-01 10:00", dt.datetime(2025, 1, 1, tzinfo=dt.UTC)) == dt.datetime(
        2026, 1, 1, 10, tzinfo=dt.UTC
    )
    assert coerce_like("2026-01-01 10:00, 7", (dt.datetime(2025, 1, 1), 1)) == (
        dt.datetime(2026, 1, 1, 10),
        7,
    )
    row_value = (dt.datetime(2026, 1, 1), "x", None)
    assert decode_value(encode_value(row_value)) == row_value


def test_query_with_colon_words_in_literals_and_a_trailing_comment(db, workers, make_settings):
    """The query is taken literally: ':word' inside a string literal is no bind parameter,
    and a query ending in a '-- comment' still loads (planning, chunking and loading)."""
    rows = [row(i) for i in range(1, 31)]
    source = db.create_source("src", rows)
    query = (
        f"SELECT {source.removeprefix('SELECT ').split(' FROM ')[0]}, 'at :noon or 10:30' AS note FROM {db.ident('src')} "
        f"WHERE name <> ':missing' -- not :a parameter"
    )
    spec = mapping(db, query, "dim", chunking={"rows_per_chunk": 10, "min_rows_for_parallel": 0})
    settings = make_settings({db.name("m"): spec})
    first = run(settings, db.name("m"))
    ok(first)
    assert first.chunks_total >= 2 and first.rows_inserted == 30
    notes = {r["note"] for r in db.rows("dim", ["note"])}
    assert notes == {"at :noon or 10:30"}
    again = run(settings, db.name("m"))
    assert (again.rows_unchanged, again.rows_changed) == (30, 0)
