"""The row hash depends on the values alone: not on the worker's session settings, and
without ambiguity between rows of values; a changed definition rehashes existing targets
once instead of making every row a change."""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from pathlib import Path

import pytest
import yaml
from sqlalchemy import text

from coordinator.launch import launch
from coordinator.watch import wait
from shared.dialects.base import MARKER_TABLE
from shared.engines import get_engine
from shared.run.statuses import RunStatus
from tests.conftest import TOKEN
from tests.worker_process import WorkerProcess


def _load(settings, mapref: str):
    run = wait(launch(mapref, settings=settings), settings=settings, timeout_s=120)
    assert run.status is RunStatus.SUCCESS, run.message
    return run


def _stamped_source(wh, schema: str) -> str:
    """A source whose text form depends on session settings: timestamptz, date, interval,
    float, bytea."""
    table = f'"{schema}".stamped'
    with wh.begin() as conn:
        conn.execute(
            text(
                f"CREATE TABLE {table} (id int PRIMARY KEY, at timestamptz, day date, "
                f"span interval, x float8, blob bytea)"
            )
        )
        conn.execute(
            text(
                f"INSERT INTO {table} SELECT g, TIMESTAMPTZ '2026-03-01 12:00:00+00' + "
                f"g * INTERVAL '37 minutes', DATE '2026-01-01' + g, g * INTERVAL '1 day 3 hours', "
                f"g / 3.0, decode(lpad(to_hex(g), 8, '0'), 'hex') FROM generate_series(1, 500) g"
            )
        )
    return f"SELECT id, at, day, span, x, blob FROM {table}"


@pytest.mark.e2e
def test_a_rerun_by_workers_in_another_time_zone_changes_nothing(
    workers, make_settings, base_config, wh, schema, tmp_path: Path
):
    """Load with workers whose libpq sessions run in Tokyo with a day-first DateStyle, rerun
    with the session's workers (UTC): nothing changed, and the other way round."""
    query = _stamped_source(wh, schema)
    mapping = {
        "source": {"connection": "wh", "query": query},
        "target": {"connection": "wh", "table": f"{schema}.dim_stamped"},
        "keys": ["id"],
        "scd": {"type": 2},
        "chunking": {"min_rows_for_parallel": 1, "rows_per_chunk": 200},
        "batch_rows": 100,
    }
    settings = make_settings({"stamped": mapping})
    queue = f"cl-{TOKEN}-tokyo"
    tokyo_settings = settings.model_copy(
        update={"celery": settings.celery.model_copy(update={"queue": queue})}
    )
    config = tmp_path / "tokyo.yaml"
    config.write_text(yaml.safe_dump(base_config))
    tokyo = WorkerProcess(
        config,
        queue=queue,
        name=f"tokyo-{TOKEN}",
        concurrency=2,
        log_path=tmp_path / "tokyo.log",
        extra_env={"PGTZ": "Asia/Tokyo", "TZ": "Asia/Tokyo", "PGDATESTYLE": "SQL, DMY"},
    )
    tokyo.start()
    try:
        first = _load(tokyo_settings, "stamped")
        assert first.rows_inserted == 500
        utc = _load(settings, "stamped")
        assert (utc.rows_changed, utc.rows_inserted, utc.rows_unchanged) == (0, 0, 500)
        back = _load(tokyo_settings, "stamped")
        assert (back.rows_changed, back.rows_inserted, back.rows_unchanged) == (0, 0, 500)
    finally:
        tokyo.stop()
    with wh.connect() as conn:
        versions = conn.execute(text(f'SELECT count(*) FROM "{schema}".dim_stamped')).scalar()
    assert versions == 500


@pytest.mark.e2e
def test_an_old_postgres_target_is_rehashed_once_not_reloaded(workers, make_settings, wh, schema):
    """A target whose hashes were computed under another session time zone (as version 1
    did) and that has no marker: the next run rehashes its current rows once, in place, and
    finds every row unchanged; the marker then says version 2 and no run rehashes again."""
    query = _stamped_source(wh, schema)
    mapping = {
        "source": {"connection": "wh", "query": query},
        "target": {"connection": "wh", "table": f"{schema}.dim_old"},
        "keys": ["id"],
        "scd": {"type": 2},
    }
    settings = make_settings({"old": mapping})
    _load(settings, "old")
    with wh.begin() as conn:  # what version 1 stored on a server in Tokyo
        conn.execute(text("SET LOCAL TimeZone = 'Asia/Tokyo'"))
        conn.execute(
            text(
                f'UPDATE "{schema}".dim_old t SET dw_row_hash = md5(ROW(t.id, t.at, t.day, t.span, '
                f"t.x, t.blob)::text)"
            )
        )
        conn.execute(text(f'DELETE FROM "{schema}".{MARKER_TABLE}'))
    rerun = _load(settings, "old")
    assert (rerun.rows_changed, rerun.rows_inserted, rerun.rows_unchanged) == (0, 0, 500)
    assert "500 current rows" in rerun.plan_note and "rehashed" in rerun.plan_note
    with wh.connect() as conn:
        assert conn.execute(text(f'SELECT count(*) FROM "{schema}".dim_old')).scalar() == 500
        marker = conn.execute(
            text(f'SELECT row_hash_version FROM "{schema}".{MARKER_TABLE}')
        ).scalar()
    assert marker == 2
    again = _load(settings, "old")
    assert "rehashed" not in again.plan_note and again.rows_unchanged == 500


def test_sqlite_row_hash_is_unambiguous(tmp_path):
    """Values that joined with U+001F read the same, NULL vs '\\x00', 1 vs '1' vs 1.0 and
    text vs bytes: each pair hashes differently."""
    engine = get_engine(f"sqlite:///{tmp_path / 'h.db'}")
    pairs = [
        (("p\x1fq", "r"), ("p", "q\x1fr")),
        ((None,), ("\x00",)),
        ((None, "a"), ("a", None)),
        ((1,), ("1",)),
        ((1,), (1.0,)),
        (("ab",), (b"ab",)),
        (("", ""), ("",)),
    ]
    with engine.connect() as conn:
        for left, right in pairs:
            hashes = [
                conn.execute(
                    text(
                        f"SELECT chordload_row_hash({', '.join(f':v{i}' for i in range(len(v)))})"
                    ),
                    {f"v{i}": x for i, x in enumerate(v)},
                ).scalar()
                for v in (left, right)
            ]
            assert hashes[0] != hashes[1], (left, right)


@pytest.mark.e2e
def test_an_old_sqlite_target_is_rehashed_once(workers, make_settings, sqlite_url):
    """A SQLite target written with version 1's hash (values joined with U+001F) and no
    marker: the next run rehashes it once and changes nothing."""
    suffix = uuid.uuid4().hex[:8]
    source, dim = f"s_{suffix}", f"dim_{suffix}"
    engine = get_engine(sqlite_url)
    with engine.begin() as conn:
        conn.execute(text(f"CREATE TABLE {source} (id INTEGER PRIMARY KEY, name TEXT, at TEXT)"))
        conn.execute(
            text(f"INSERT INTO {source} VALUES (:id, :name, :at)"),
            [
                {
                    "id": i,
                    "name": f"n{i}",
                    "at": str(dt.datetime(2026, 1, 1) + dt.timedelta(hours=i)),
                }
                for i in range(50)
            ],
        )
    mapping = {
        "source": {"connection": "lite", "query": f"SELECT id, name, at FROM {source}"},
        "target": {"connection": "lite", "table": dim},
        "keys": ["id"],
        "scd": {"type": 1},
    }
    settings = make_settings({"lite_old": mapping})
    _load(settings, "lite_old")

    def v1(*values):
        joined = "\x1f".join("\x00" if v is None else str(v) for v in values)
        return hashlib.md5(joined.encode()).hexdigest()

    with engine.begin() as conn:
        for row in conn.execute(text(f"SELECT id, name, at FROM {dim}")).all():
            conn.execute(
                text(f"UPDATE {dim} SET dw_row_hash = :h WHERE id = :id"),
                {"h": v1(*row), "id": row[0]},
            )
        conn.execute(text(f"DELETE FROM {MARKER_TABLE} WHERE table_name = :t"), {"t": dim})
    rerun = _load(settings, "lite_old")
    assert (rerun.rows_changed, rerun.rows_unchanged) == (0, 50), rerun.plan_note
    assert "rehashed" in rerun.plan_note
