"""No row lost, doubled or altered, history exact: duplicate business keys and the counts
around them, with real worker processes, on the PostgreSQL relay path (PG to PG, COPY text),
the typed path (PostgreSQL with two checkpoint columns or a PYTHON checkpoint), MariaDB and
SQLite.

- Duplicate keys resolve by a rule that does not depend on arrival order: the highest
  checkpoint value wins (NULL lowest), ties go to the row whose values sort last in a
  canonical order. Same winners for any batch size and chunk count; a rerun changes nothing.
- A losing row is never written: a key whose winner equals its current version keeps that
  version untouched (SCD2 and SCD1), however the rows fall into batches; a replay that finds
  the run's version equal to the one it replaced undoes the replacement.
- Counts: rows_read = inserted + changed + unchanged + errored + duplicate for every chunk and
  run, and ``changed`` is the number of versions this run expired; a chunk that restarts or
  is replayed around a bad row counts every row once.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import update

from shared.chunk.load import load_chunk
from shared.engines import get_engine
from shared.fence import claim_target
from shared.metadata import store
from shared.metadata.models import ChunkLog, ProcessLog
from shared.run.chord import chunk_range
from shared.run.plan import RunPlan
from shared.run.statuses import ChunkStatus, RunStatus
from tests.optdata import T0, Db, chunks, mapping, row, run

pytestmark = pytest.mark.e2e

KEY = {"strategy": "KEY", "column": "updated_at"}
COLUMNS = {"strategy": "KEY", "columns": ["updated_at", "id"]}
PYTHON = {"strategy": "PYTHON", "function": "tests.checkpoint_functions:version_then_id"}
NONE = {"strategy": "NONE"}
# (database, checkpoint): PostgreSQL to PostgreSQL relays COPY text unless a PYTHON function
# or several columns make the checkpoint; MariaDB and SQLite always load typed rows
VARIANTS = {
    "pg-relay-none": ("pg", NONE),
    "pg-relay-key": ("pg", KEY),
    "pg-typed-columns": ("pg", COLUMNS),
    "pg-typed-python": ("pg", PYTHON),
    "mdb-key": ("mdb", KEY),
    "lite-none": ("lite", NONE),
}
VERSION_COLUMNS = [
    "id",
    "name",
    "city",
    "dw_run_id",
    "dw_is_current",
    "dw_valid_from",
    "dw_valid_to",
]
SCD1 = {"type": 1, "audit_columns": {"updated_at": "dw_updated_at"}}


@pytest.fixture(params=list(VARIANTS))
def variant(request, pg_urls, mariadb_url, sqlite_url):
    kind, checkpoint = VARIANTS[request.param]
    if kind == "pg":
        db = Db("pg", "wh", pg_urls["wh"], request.getfixturevalue("schema"))
    elif kind == "mdb":
        db = Db("mdb", "mdb", mariadb_url)
    else:
        db = Db("lite", "lite", sqlite_url)
    yield db, checkpoint
    db.drop_tables()


def when(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def launch_all(settings, checkpoint: dict, *maprefs: str) -> list[ProcessLog]:
    """Run each mapping, reading the whole source (a full reload where there is a checkpoint)."""
    full = checkpoint is not NONE
    return [run(settings, m, full=full) for m in maprefs]


def counts(log: Any) -> tuple[int, ...]:
    """(read, inserted, changed, unchanged, errored, duplicate) of a run or a chunk."""
    return (
        log.rows_read,
        log.rows_inserted,
        log.rows_changed,
        log.rows_unchanged,
        log.rows_errored,
        log.rows_duplicate or 0,
    )


def balanced(log: Any) -> bool:
    read, *parts = counts(log)
    return read == sum(parts)


def check_run(settings, result: ProcessLog, want: tuple[int, ...]) -> None:
    """The run succeeded with these counts, and the identity holds for it and every chunk."""
    assert result.status is RunStatus.SUCCESS, result.message
    assert counts(result) == want, result.run_id
    assert balanced(result)
    got = chunks(settings, result.run_id)
    assert all(balanced(c) for c in got), [counts(c) for c in got]
    assert tuple(map(sum, zip(*(counts(c) for c in got)))) == want


def versions(db: Db, table: str) -> list[dict]:
    """Every version of the target, in key then version order."""
    return db.rows(table, ["dw_sk", *VERSION_COLUMNS], order=f"id, {db.adapter.q('dw_sk')}")


def expired_by(all_versions: list[dict], run_id: str) -> int:
    """The versions that run ``run_id`` expired: those ending where one of its versions of
    the same key starts."""
    starts = {(v["id"], v["dw_valid_from"]) for v in all_versions if v["dw_run_id"] == run_id}
    return sum(
        1 for v in all_versions if not v["dw_is_current"] and (v["id"], v["dw_valid_to"]) in starts
    )


def current(db: Db, table: str, columns: list[str], scd2: bool = True) -> dict[Any, dict]:
    """key -> its current version (SCD1: its row)."""
    flag = "1 = 1" if not scd2 else "dw_is_current" if db.kind == "pg" else "dw_is_current = 1"
    return {r["id"]: r for r in db.rows(table, columns, flag)}


def replay_chunks(settings, run_id: str) -> list[ChunkLog]:
    """Load every chunk of a finished run again in this process, as a redelivered task
    would (the attempt counts as a replay); returns the chunks as recorded after it."""
    metadata = get_engine(settings.metadata)
    # the run's end closed the target's fence: reopen it for the run, as a resume does
    claim_target(settings, RunPlan.from_row(store.get_run(metadata, run_id)))
    for chunk in store.get_chunks(metadata, run_id):
        with metadata.begin() as conn:
            conn.execute(
                update(ChunkLog)
                .where(ChunkLog.run_id == run_id, ChunkLog.chunk_no == chunk.chunk_no)
                .values(status=ChunkStatus.PENDING)
            )
        result = load_chunk(settings, run_id, chunk_range(chunk), "replay")
        assert result.status is ChunkStatus.SUCCESS, result.error
    return store.get_chunks(metadata, run_id)


# -- (4) duplicate keys: one well-defined winner ------------------------------------------------
def duplicate_rows() -> list[dict]:
    """Keys 1..40 with one to three rows each. The rows of a key share id and code, so their
    names decide a tie; the winner is inserted first, where 'the last in source order' would
    pick another row. ``version`` follows ``updated_at`` (the PYTHON checkpoint reads it)."""
    rows = []
    for k in range(1, 41):
        pattern = k % 5
        if pattern == 0:
            rows.append(row(k))
        elif pattern == 1:  # tied checkpoints: the greater name wins
            rows += [row(k, name=f"y {k}", city="Quito"), row(k, name=f"x {k}")]
        elif pattern == 2:  # the higher checkpoint wins, even with a smaller name
            late = {"updated_at": when(k + 1000), "version": 2}
            rows += [row(k, name=f"m {k}"), row(k, name=f"b {k}", **late), row(k, name=f"z {k}")]
        elif pattern == 3:  # three tied rows
            rows += [row(k, name=f"q {k}", city="Zurich"), row(k, name=f"p {k}"), row(k)]
        else:  # exact duplicates
            rows += [row(k), row(k)]
    return rows


def rule_winners(rows: list[dict], checkpoint: dict) -> dict[int, dict]:
    tied = checkpoint is NONE

    def order(r: dict) -> tuple:
        return (() if tied else (r["updated_at"],)) + (r["name"],)

    winners: dict[int, dict] = {}
    for r in rows:
        if r["id"] not in winners or order(r) > order(winners[r["id"]]):
            winners[r["id"]] = r
    return winners


def test_duplicate_keys_resolve_to_one_winner_for_any_batching(variant, workers, make_settings):
    """The same winners whatever the batch size and chunk count (1-row batches put every
    duplicate in another batch than its key's first row); a rerun reports 0 changed and
    writes nothing."""
    db, checkpoint = variant
    rows = duplicate_rows()
    source = db.create_source("src", rows)
    shapes = {
        "b1": {"batch_rows": 1, "chunking": {"rows_per_chunk": 12, "max_chunks": 4}},
        "b3": {"batch_rows": 3, "chunking": {"rows_per_chunk": 30, "max_chunks": 2}},
        "b100": {"batch_rows": 100, "chunking": {"min_rows_for_parallel": 1000}},
    }
    maprefs = {name: db.name(name) for name in shapes}
    settings = make_settings(
        {
            maprefs[name]: mapping(db, source, f"dim_{name}", checkpoint=checkpoint, **shape)
            for name, shape in shapes.items()
        }
    )
    winners = rule_winners(rows, checkpoint)
    want_names = {k: (w["name"], w["city"]) for k, w in winners.items()}
    dups = len(rows) - len(winners)

    first = launch_all(settings, checkpoint, *maprefs.values())
    for result in first:
        check_run(settings, result, (len(rows), len(winners), 0, 0, 0, dups))
    if checkpoint is not PYTHON:
        assert first[0].chunks_total > 1, first[0].plan_note
    before = {}
    for name in shapes:
        table = f"dim_{name}"
        got = current(db, table, ["id", "name", "city"])
        assert {k: (r["name"], r["city"]) for k, r in got.items()} == want_names, name
        before[name] = versions(db, table)
        assert len(before[name]) == len(winners), f"{name}: one version a key"

    again = launch_all(settings, checkpoint, *maprefs.values())
    for result in again:
        check_run(settings, result, (len(rows), 0, 0, len(winners), 0, dups))
    for name in shapes:
        assert versions(db, f"dim_{name}") == before[name], f"{name}: the rerun wrote nothing"


# -- (5) a losing row is never written -----------------------------------------------------------
def test_a_winner_equal_to_the_current_version_writes_nothing(variant, workers, make_settings):
    """Key 5 gets a losing row that arrives before its winner, and the winner equals the
    current version: SCD2 and SCD1 keep the current version untouched (valid_to, run_id,
    updated_at) and count it unchanged plus one duplicate. Key 7 gets a loser and a new
    winner: one new version. 1-row batches put the losers in an earlier batch."""
    db, checkpoint = variant
    base = [row(i) for i in range(1, 13)]
    source = db.create_source("src", base)
    maprefs = {"scd2": db.name("scd2"), "scd1": db.name("scd1")}
    settings = make_settings(
        {
            maprefs["scd2"]: mapping(db, source, "dim2", checkpoint=checkpoint, batch_rows=1),
            maprefs["scd1"]: mapping(
                db, source, "dim1", checkpoint=checkpoint, batch_rows=1, scd=SCD1
            ),
        }
    )
    first = launch_all(settings, checkpoint, *maprefs.values())
    for result in first:
        check_run(settings, result, (12, 12, 0, 0, 0, 0))
    scd1_columns = ["id", "name", "city", "dw_run_id", "dw_updated_at", "dw_inserted_at"]
    scd1_before = current(db, "dim1", scd1_columns, scd2=False)
    scd2_before = versions(db, "dim2")

    # losers sort below their winners by checkpoint and by values; they come first in the
    # source (key 5's winner, its old row unchanged, is inserted again after its loser)
    src = db.ident("src")
    early = {"updated_at": when(-100), "version": 0}
    db.execute(f"DELETE FROM {src} WHERE id = 5")
    db.insert("src", [row(5, name="a loser 5", city="Lima", **early), row(5)])
    db.execute(f"DELETE FROM {src} WHERE id = 7")
    db.insert(
        "src",
        [
            row(7, name="a loser 7", **early),
            row(7, name="new 7", updated_at=when(500), version=2),
        ],
    )
    second = launch_all(settings, checkpoint, *maprefs.values())
    for result in second:
        check_run(settings, result, (14, 0, 1, 11, 0, 2))
    scd2_run, scd1_run = (r.run_id for r in second)

    after = versions(db, "dim2")
    untouched = [v for v in after if v["id"] != 7]
    assert untouched == [v for v in scd2_before if v["id"] != 7], "key 5 and the rest as before"
    old7, new7 = (v for v in after if v["id"] == 7)
    assert (old7["dw_sk"], old7["dw_is_current"], old7["dw_valid_to"]) == (
        next(v["dw_sk"] for v in scd2_before if v["id"] == 7),
        False,
        new7["dw_valid_from"],
    )
    assert (new7["name"], new7["dw_run_id"], new7["dw_is_current"]) == ("new 7", scd2_run, True)
    assert expired_by(after, scd2_run) == second[0].rows_changed == 1

    scd1_after = current(db, "dim1", scd1_columns, scd2=False)
    assert {k: v for k, v in scd1_after.items() if k != 7} == {
        k: v for k, v in scd1_before.items() if k != 7
    }, "key 5's row keeps its values, updated_at and run_id"
    assert (scd1_after[7]["name"], scd1_after[7]["dw_run_id"]) == ("new 7", scd1_run)

    third = launch_all(settings, checkpoint, *maprefs.values())
    for result in third:
        check_run(settings, result, (14, 0, 0, 12, 0, 2))
    assert versions(db, "dim2") == after
    assert current(db, "dim1", scd1_columns, scd2=False) == scd1_after


def test_a_replay_that_finds_the_replaced_version_undoes_the_replacement(
    variant, workers, make_settings
):
    """A redelivered chunk reads other rows than its first attempt: key 3 went back to the
    row its version replaced. The replay deletes the run's version of key 3 and makes the
    old one current again (valid_to as before), and counts the chunk as one clean pass over
    what it read: nothing changed."""
    db, checkpoint = variant
    source = db.create_source("src", [row(i) for i in range(1, 9)])
    mapref = db.name("m")
    settings = make_settings({mapref: mapping(db, source, "dim", checkpoint=checkpoint)})
    check_run(settings, launch_all(settings, checkpoint, mapref)[0], (8, 8, 0, 0, 0, 0))
    before = versions(db, "dim")

    src = db.ident("src")
    db.execute(f"UPDATE {src} SET name = 'changed 3', version = 2 WHERE id = 3")
    second = launch_all(settings, checkpoint, mapref)[0]
    check_run(settings, second, (8, 0, 1, 7, 0, 0))
    assert len(versions(db, "dim")) == 9

    db.execute(f"UPDATE {src} SET name = 'name 3 a', version = 1 WHERE id = 3")
    replayed = replay_chunks(settings, second.run_id)
    assert all(c.attempts == 2 for c in replayed)
    assert tuple(map(sum, zip(*(counts(c) for c in replayed)))) == (8, 0, 0, 8, 0, 0)
    assert all(balanced(c) for c in replayed)
    assert versions(db, "dim") == before, "key 3's first version is current again, untouched"


# -- (9) counts around a bad row ----------------------------------------------------------------
def forbid_bad_names(db: Db, table: str) -> None:
    """Make the target refuse rows whose name starts with 'bad' (a CHECK constraint; on
    SQLite a trigger that fails like one)."""
    target = db.ident(table)
    if db.kind == "lite":
        db.execute(
            f"CREATE TRIGGER {db.adapter.q(db.name('no_bad'))} BEFORE INSERT ON {target} "
            f"WHEN NEW.name LIKE 'bad%' BEGIN SELECT RAISE(ABORT, 'CHECK failed: bad name'); END"
        )
    else:
        db.execute(
            f"ALTER TABLE {target} ADD CONSTRAINT {db.name('no_bad')} CHECK (name NOT LIKE 'bad%')"
        )


def test_counts_around_a_bad_row_are_exact(variant, workers, make_settings):
    """60 keys, 20 of them changed, one changed row the target refuses, batches of 7: on the
    relay path the batch with the bad row restarts the chunk typed (a replay of what was
    relayed), on the typed path it is bisected. Every row is counted once and ``changed`` is
    the number of versions the run expired. A replay of the chunks (a redelivery) after 10
    more keys changed counts as one clean pass, and a rerun reports 0 changed."""
    db, checkpoint = variant
    source = db.create_source("src", [row(i) for i in range(1, 61)])
    mapref = db.name("m")
    spec = mapping(
        db,
        source,
        "dim",
        checkpoint=checkpoint,
        batch_rows=7,
        errors={"max_rows": 5},
        chunking={"rows_per_chunk": 30, "max_chunks": 2},
    )
    settings = make_settings({mapref: spec})
    check_run(settings, launch_all(settings, checkpoint, mapref)[0], (60, 60, 0, 0, 0, 0))
    forbid_bad_names(db, "dim")

    src = db.ident("src")
    db.execute(f"UPDATE {src} SET name = 'v2', version = 2 WHERE id % 3 = 0")
    db.execute(f"UPDATE {src} SET name = 'bad 33' WHERE id = 33")
    second = launch_all(settings, checkpoint, mapref)[0]
    check_run(settings, second, (60, 0, 19, 40, 1, 0))
    after = versions(db, "dim")
    assert expired_by(after, second.run_id) == 19
    assert len(after) == 60 + 19
    assert [v["name"] for v in after if v["id"] == 33] == ["name 33 a"]
    assert [
        e.row_key["id"] for e in store.error_rows(get_engine(settings.metadata), second.run_id)
    ] == [33]

    # a redelivery of every chunk, after 10 more keys changed: the replay writes those itself
    db.execute(f"UPDATE {src} SET name = 'v3' WHERE id % 6 = 1")  # in the run's frozen window
    replayed = replay_chunks(settings, second.run_id)
    assert tuple(map(sum, zip(*(counts(c) for c in replayed)))) == (60, 0, 29, 30, 1, 0)
    assert all(balanced(c) for c in replayed)
    after = versions(db, "dim")
    assert expired_by(after, second.run_id) == 29 and len(after) == 60 + 29

    third = launch_all(settings, checkpoint, mapref)[0]
    check_run(settings, third, (60, 0, 0, 59, 1, 0))
    assert versions(db, "dim") == after
