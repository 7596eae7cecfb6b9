"""Planning with real runs on real workers: balanced chunks on skewed keys, NULL split values
(loaded by chunk 0, matched null-safe), one chunk below min_rows_for_parallel on the same
chord path, the ``--chunks`` override, ``exact_count`` and ``parallelism``."""

from __future__ import annotations

import json

import pytest
from celery.result import AsyncResult
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from coordinator.launch import launch
from coordinator.plan import plan_run
from coordinator.watch import wait
from shared.engines import get_engine
from shared.errors import ConfigError
from shared.metadata import store
from shared.run.statuses import ChunkStatus, RunStatus
from tests.cliutil import run_cli, write_config
from tests.pgdata import BASE_TS, create_customers, diff_count, scalar, scd2_mapping

pytestmark = pytest.mark.e2e


def _run(settings, mapref: str, **kwargs):
    run_id = launch(mapref, settings=settings, **kwargs)
    run = wait(run_id, settings=settings, timeout_s=120, poll_s=0.2)
    assert run.status is RunStatus.SUCCESS, run.message
    return run, store.get_chunks(get_engine(settings.metadata), run_id)


def _mapping(schema: str, table: str, columns: str, target: str, **overrides) -> dict:
    mapping = scd2_mapping(schema, target=target, **overrides)
    mapping["source"]["query"] = f'SELECT {columns} FROM "{schema}"."{table}"'
    return mapping


def test_skewed_keys_give_balanced_chunks(workers, make_settings, wh, schema):
    """90% of the ids are 1..90000, the rest spread up to 10^9: quantile boundaries still
    give chunks within 2x of each other (equal-width ranges would put 90% in one chunk)."""
    table = f'"{schema}"."skewed"'
    with wh.begin() as conn:
        conn.execute(
            text(
                f"CREATE TABLE {table} (id bigint PRIMARY KEY, name text, "
                f"updated_at timestamp NOT NULL)"
            )
        )
        conn.execute(
            text(
                f"INSERT INTO {table} SELECT g, 'dense ' || g, TIMESTAMP '{BASE_TS}' "
                f"+ g * INTERVAL '1 second' FROM generate_series(1, 90000) g"
            )
        )
        conn.execute(
            text(
                f"INSERT INTO {table} SELECT 100000 + g::bigint * 99990, 'sparse ' || g, "
                f"TIMESTAMP '{BASE_TS}' + g * INTERVAL '1 second' "
                f"FROM generate_series(1, 10000) g"
            )
        )
        conn.execute(text(f"ANALYZE {table}"))
    assert scalar(wh, f"SELECT max(id) FROM {table}") == 1_000_000_000
    mapping = _mapping(
        schema,
        "skewed",
        "id, name, updated_at",
        "dim_skewed",
        chunking={"rows_per_chunk": 12_500, "min_rows_for_parallel": 50_000, "exact_count": True},
    )
    settings = make_settings({"skewed": mapping})

    run, chunks = _run(settings, "skewed")
    assert run.chunks_total == len(chunks) == 8
    sizes = [c.rows_read for c in chunks]
    assert sum(sizes) == run.rows_read == 100_000
    assert min(sizes) > 0 and max(sizes) <= 2 * min(sizes), sizes
    # the planner's boundaries, counted in SQL, agree with what the chunks read
    for chunk in chunks:
        lower = chunk.lower_bound["value"] if chunk.lower_bound else None
        upper = chunk.upper_bound["value"] if chunk.upper_bound else None
        counted = scalar(
            wh,
            f"SELECT count(*) FROM {table} WHERE (CAST(:lo AS bigint) IS NULL "
            f"OR id > :lo) AND (CAST(:hi AS bigint) IS NULL OR id <= :hi)",
            lo=lower,
            hi=upper,
        )
        assert counted == chunk.rows_read, (chunk.chunk_no, lower, upper)
    assert (
        diff_count(
            wh,
            f'SELECT id, name, updated_at FROM "{schema}"."dim_skewed" WHERE dw_is_current',
            f"SELECT id, name, updated_at FROM {table}",
        )
        == 0
    )


def test_null_split_values_are_loaded_by_chunk_0(workers, make_settings, wh, schema):
    """Keys (id, part), split on id: rows whose id is NULL are loaded by chunk 0, and a NULL
    key is one key (a re-run matches them null-safe: nothing inserted or changed)."""
    table = f'"{schema}"."with_nulls"'
    with wh.begin() as conn:
        conn.execute(
            text(f"CREATE TABLE {table} (id bigint, part text, name text, updated_at timestamp)")
        )
        conn.execute(
            text(
                f"INSERT INTO {table} SELECT g, 'a', 'n' || g, TIMESTAMP '{BASE_TS}' "
                f"FROM generate_series(1, 40000) g"
            )
        )
        conn.execute(
            text(
                f"INSERT INTO {table} VALUES (NULL, 'x', 'null x', NULL), "
                f"(NULL, 'y', 'null y', TIMESTAMP '{BASE_TS}'), "
                f"(NULL, NULL, 'null null', NULL), (7, NULL, 'seven null', NULL)"
            )
        )
        conn.execute(text(f"ANALYZE {table}"))
    mapping = _mapping(
        schema,
        "with_nulls",
        "id, part, name, updated_at",
        "dim_nulls",
        keys=["id", "part"],
        checkpoint={"strategy": "NONE", "column": None},
        chunking={"rows_per_chunk": 10_000, "min_rows_for_parallel": 1_000},
    )
    settings = make_settings({"nulls": mapping})
    target = f'"{schema}"."dim_nulls"'
    current = f"SELECT id, part, name, updated_at FROM {target} WHERE dw_is_current"
    source = f"SELECT id, part, name, updated_at FROM {table}"

    first, chunks = _run(settings, "nulls")
    assert len(chunks) >= 4
    assert [c.includes_nulls for c in chunks] == [True] + [False] * (len(chunks) - 1)
    upper0 = chunks[0].upper_bound["value"]
    assert chunks[0].rows_read == scalar(
        wh, f"SELECT count(*) FROM {table} WHERE id <= :u OR id IS NULL", u=upper0
    )
    assert first.rows_read == first.rows_inserted == 40_004
    assert diff_count(wh, current, source) == 0

    second, _ = _run(settings, "nulls")
    assert (second.rows_inserted, second.rows_changed, second.rows_unchanged) == (0, 0, 40_004)
    assert scalar(wh, f"SELECT count(*) FROM {target}") == 40_004

    with wh.begin() as conn:
        conn.execute(
            text(
                f"UPDATE {table} SET name = name || ' v2' WHERE id IS NULL "
                f"AND part IS DISTINCT FROM 'y'"
            )
        )
    third, _ = _run(settings, "nulls")
    assert (third.rows_inserted, third.rows_changed) == (0, 2)
    assert diff_count(wh, current, source) == 0
    assert (
        scalar(
            wh,
            f"SELECT count(*) FROM (SELECT id, part FROM {target} WHERE dw_is_current "
            f"GROUP BY id, part HAVING count(*) > 1) d",
        )
        == 0
    )
    with wh.connect() as conn:
        versions = conn.execute(
            text(
                f"SELECT name, dw_is_current AS is_current FROM {target} WHERE id IS NULL "
                f"AND part IS NULL ORDER BY dw_sk"
            )
        ).all()
    assert [tuple(v) for v in versions] == [("null null", False), ("null null v2", True)]


def test_one_chunk_below_min_rows_uses_the_same_chord(workers, make_settings, wh, schema):
    source = create_customers(wh, schema, 5_000)
    settings = make_settings({"small": scd2_mapping(schema, target="dim_small")})
    run, chunks = _run(settings, "small")
    assert run.chunks_total == 1 and "below min_rows_for_parallel (100000)" in run.plan_note
    [chunk] = chunks
    assert (chunk.chunk_no, chunk.lower_bound, chunk.upper_bound, chunk.includes_nulls) == (
        0,
        None,
        None,
        True,
    )
    assert chunk.task_id == f"{run.run_id}.0" and chunk.status is ChunkStatus.SUCCESS
    assert run.rows_inserted == 5_000
    # the chunk ran as the chord's header task <run_id>.0, its JSON result in the backend
    from shared.broker import client_app

    header = AsyncResult(f"{run.run_id}.0", app=client_app(settings)).get(timeout=10)
    assert (header["chunk_no"], header["status"], header["counts"]["rows_read"]) == (
        0,
        "SUCCESS",
        5_000,
    )
    assert scalar(wh, f'SELECT count(*) FROM "{schema}"."dim_small" WHERE dw_is_current') == 5_000
    assert scalar(wh, f"SELECT count(*) FROM {source}") == 5_000


def test_chunks_override_on_the_command_line(
    workers, clean_cli_env, base_config, wh, schema, tmp_path, capsys
):
    create_customers(wh, schema, 5_000)
    path = write_config(
        tmp_path / "chordload.yaml", base_config, {"over": scd2_mapping(schema, target="dim_over")}
    )
    result = run_cli(
        capsys,
        "run",
        "over",
        "--chunks",
        "3",
        "--wait",
        "--json",
        "--timeout-s",
        "120",
        "--config",
        path,
    )
    assert result.code == 0, result
    summary = json.loads(result.out)
    assert (summary["status"], summary["chunks"], summary["rows_read"]) == ("SUCCESS", 3, 5_000)
    assert summary["plan"].startswith("3 chunks requested")
    chunks = store.get_chunks(get_engine(base_config["metadata"]), summary["run_id"])
    assert len(chunks) == 3 and all(c.rows_read > 1_000 for c in chunks), chunks


def test_exact_count(make_settings, wh, schema):
    """Postgres estimates ``id % 2 = 0`` at 0.5% of the rows; exact_count counts them, and
    without it the low estimate is confirmed by a count that stops past the threshold."""
    table = create_customers(wh, schema, 20_000)
    mapping = scd2_mapping(
        schema,
        target="dim_exact",
        chunking={"rows_per_chunk": 2_500, "min_rows_for_parallel": 5_000},
    )
    mapping["source"]["query"] = f"SELECT id, name, updated_at FROM {table} WHERE id % 2 = 0"
    exact = dict(mapping, chunking={**mapping["chunking"], "exact_count": True})
    settings = make_settings({"estimated": mapping, "exact": exact})
    metadata = get_engine(settings.metadata)

    counted = plan_run(settings, "exact", settings.mapping("exact"), metadata)
    assert counted.estimated_rows == 10_000
    assert len(counted.ranges) == 4
    assert counted.counted_rows is None  # an exact figure needs no confirming
    estimated = plan_run(settings, "estimated", settings.mapping("estimated"), metadata)
    assert estimated.estimated_rows < 5_000  # the planner's guess, far from the truth
    assert estimated.counted_rows == 5_001  # counting stopped one past the threshold
    assert len(estimated.ranges) == 3  # ceil(5,001 / 2,500): parallel after all
    assert "statistics are stale" in estimated.note


def test_parallelism_rounds_the_chunk_count_up(make_settings, wh, schema):
    """10,500 rows at 2,500 a chunk want 5 chunks; on 2 worker slots that leaves one slot idle
    for the last round, so parallelism 2 plans 6 (the note says why), max_chunks still caps,
    and one chunk stays one."""
    table = create_customers(wh, schema, 10_500)

    def chunking(**extra) -> dict:
        mapping = scd2_mapping(
            schema,
            target="dim_par",
            chunking={
                "rows_per_chunk": 2_500,
                "min_rows_for_parallel": 0,
                "exact_count": True,
                **extra,
            },
        )
        mapping["source"]["query"] = f"SELECT id, name, updated_at FROM {table}"
        return mapping

    settings = make_settings(
        {
            "plain": chunking(),
            "two": chunking(parallelism=2),
            "capped": chunking(parallelism=4, max_chunks=7),
            "small": chunking(parallelism=4, rows_per_chunk=20_000),
        }
    )
    metadata = get_engine(settings.metadata)
    plans = {
        name: plan_run(settings, name, spec, metadata) for name, spec in settings.mappings.items()
    }
    counts = {name: len(plan.ranges) for name, plan in plans.items()}
    assert counts == {"plain": 5, "two": 6, "capped": 7, "small": 1}, counts
    assert "rounded up to a multiple of parallelism 2" in plans["two"].note
    assert "capped by max_chunks" in plans["capped"].note


def test_offset_chunks_load_a_row_with_a_null_later_key_part_once(
    workers, make_settings, wh, schema
):
    """Keys (a, b), offset chunking: 2,000 rows with b = 1 and 2,000 with b NULL, 4 chunks.
    A row comparison holds with a NULL part ((5, NULL) > (4, 1)), so such a row matched chunk
    0 and its own key range: every row must be read once, and each key has one current
    version (SCD2) or one row (SCD1); a re-run changes nothing."""
    table = f'"{schema}"."pairs"'
    with wh.begin() as conn:
        conn.execute(text(f"CREATE TABLE {table} (a bigint, b bigint, name text)"))
        conn.execute(
            text(
                f"INSERT INTO {table} SELECT g, 1, 'one ' || g FROM generate_series(1, 2000) g "
                f"UNION ALL SELECT g, NULL, 'null ' || g FROM generate_series(1, 2000) g"
            )
        )
    chunking = {"strategy": "offset", "exact_count": True, "min_rows_for_parallel": 1}
    mappings = {}
    for scd_type in (1, 2):
        mapping = _mapping(schema, "pairs", "a, b, name", f"dim_pairs{scd_type}", keys=["a", "b"])
        mapping["chunking"] = chunking
        mapping["scd"] = {"type": scd_type}
        mapping["checkpoint"] = {"strategy": "NONE"}
        mappings[f"pairs{scd_type}"] = mapping
    settings = make_settings(mappings)
    for scd_type in (1, 2):
        run, chunks = _run(settings, f"pairs{scd_type}", chunks_override=4)
        assert len(chunks) >= 2, "several chunks, so a row can land in two of them"
        assert (run.rows_read, run.rows_inserted, run.rows_duplicate) == (4000, 4000, 0)
        assert sum(c.rows_read for c in chunks) == 4000
        target = f'"{schema}"."dim_pairs{scd_type}"'
        current = " WHERE dw_is_current" if scd_type == 2 else ""
        assert scalar(wh, f"SELECT count(*) FROM {target}{current}") == 4000
        assert (
            diff_count(wh, f"SELECT a, b, name FROM {target}{current}", f"SELECT * FROM {table}")
            == 0
        )
        again, _ = _run(settings, f"pairs{scd_type}", chunks_override=4)
        assert (again.rows_read, again.rows_unchanged, again.rows_inserted) == (4000, 4000, 0)
        # the target itself refuses a second current row of a key with a NULL part
        audit = (
            "dw_row_hash, dw_valid_from, dw_is_current, dw_run_id) "
            "VALUES (1, NULL, 'x', 'h', now(), true, 'r')"
            if scd_type == 2
            else "dw_row_hash, dw_inserted_at, dw_updated_at, dw_run_id) VALUES (1, NULL, 'x', "
            "'h', now(), "
            "now(), 'r')"
        )
        with pytest.raises(IntegrityError):
            with wh.begin() as conn:
                conn.execute(text(f"INSERT INTO {target} (a, b, name, {audit}"))


def test_an_infinite_high_water_mark_is_refused(make_settings, wh, schema):
    """A KEY checkpoint column whose maximum is 'infinity': no window can bound it (read as
    year 9999, the window would leave those rows out of every run, silently). Planning
    refuses it, naming the column and what to do, and writes nothing."""
    create_customers(wh, schema, 20)
    with wh.begin() as conn:
        conn.execute(
            text(f"UPDATE \"{schema}\".customers SET updated_at = 'infinity' WHERE id = 7")
        )
    settings = make_settings({schema: scd2_mapping(schema)})
    with pytest.raises(ConfigError) as refused:
        launch(schema, settings=settings)
    assert (
        f"mapping '{schema}': the source's maximum of checkpoint column(s) updated_at is "
        "'infinity'" in str(refused.value)
    )
    assert "WHERE updated_at < 'infinity'" in str(refused.value)
    assert store.latest_run(get_engine(settings.metadata), schema) is None
    with wh.connect() as conn:
        assert not conn.execute(
            text("SELECT to_regclass(:t)"), {"t": f'"{schema}".dim_customer'}
        ).scalar()
