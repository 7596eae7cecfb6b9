"""A PostgreSQL SCD2 target chordload creates has no primary key while its first run loads;
the primary key on the surrogate key is built when that run ends
(``shared/scd/late_indexes.py``), whatever its status, before the status is written. What
must hold:

- ``chordload plan`` shows which statements come at the end of the first run;
- after the first run, SUCCESS or FAILED, the target has its primary key;
- a run whose end cannot build them (a writer's lock held past the wait) still ends by
  itself, and the next plan builds them and says so;
- a table chordload did not create (its own primary key, or without chordload's index) is
  never given indexes.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
from sqlalchemy import text

from coordinator.launch import launch
from coordinator.plan import plan_run
from coordinator.watch import wait
from shared.dialects import adapter_for
from shared.engines import get_engine
from shared.lifecycle.reconcile import reconcile
from shared.metadata import store
from shared.run.statuses import RunStatus
from shared.scd import late_indexes
from tests.cliutil import run_cli, table_exists, write_config
from tests.pgdata import BUSINESS_COLUMNS, create_customers, scd2_mapping
from tests.test_lifecycle import wait_until
from tests.worker_process import WorkerProcess

pytestmark = pytest.mark.e2e


def _indexes(wh, schema: str, table: str) -> tuple[bool, set[str]]:
    """Whether the table has a primary key (on dw_sk), and the suffixes of chordload's names
    of its other indexes (``current``, ``key``, ``sk``)."""
    adapter = adapter_for(wh)
    with wh.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT c.relname, i.indisprimary, "
                "(SELECT array_agg(a.attname::text) FROM pg_attribute a WHERE "
                "a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)) FROM pg_index i "
                "JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = to_regclass(:t)"
            ),
            {"t": f'"{schema}".{table}'},
        ).all()
    primary = [columns for _, is_primary, columns in rows if is_primary]
    assert primary in ([], [["dw_sk"]]), primary
    names = {name for name, _, _ in rows}
    suffixes = {s for s in ("current", "key", "sk") if adapter.index_name(table, s) in names}
    return bool(primary), suffixes


def _mapping(schema: str, **overrides) -> dict:
    return scd2_mapping(
        schema,
        chunking={"rows_per_chunk": 400, "min_rows_for_parallel": 0, "exact_count": True},
        batch_rows=200,
        **overrides,
    )


def _settings(make_settings, schema: str, **overrides):
    return make_settings({schema: _mapping(schema, **overrides)})


def test_plan_shows_the_indexes_built_at_the_end_of_the_first_run(
    clean_cli_env, capsys, base_config, tmp_path, wh, schema
):
    create_customers(wh, schema, rows=50)
    path = write_config(tmp_path / "chordload.yml", base_config, {schema: _mapping(schema)})
    out = run_cli(capsys, "plan", schema, "--config", path)
    assert out.code == 0, out
    created, _, after = out.out.partition("and at the end of its first run")
    assert "CREATE UNIQUE INDEX" in created and 'WHERE "dw_is_current"' in created, out.out
    assert "PRIMARY KEY" not in created, out.out
    assert "PRIMARY KEY USING INDEX" in after and 'WHERE "dw_is_current"' not in after, out.out
    assert not table_exists(wh, schema, "dim_customer")  # a dry run writes nothing


@pytest.mark.parametrize("outcome", [RunStatus.SUCCESS, RunStatus.FAILED])
def test_the_first_run_ends_with_every_index_of_the_target(
    workers, make_settings, wh, schema, outcome
):
    create_customers(wh, schema, rows=2_000)
    query = f'SELECT {BUSINESS_COLUMNS} FROM "{schema}".customers'
    if outcome is RunStatus.FAILED:  # a chunk's read fails at one row (planning reads on)
        with wh.begin() as conn:
            conn.execute(
                text(
                    f'CREATE FUNCTION "{schema}".gate(k bigint) RETURNS boolean LANGUAGE plpgsql '
                    f"AS $$ BEGIN IF k = 1500 AND current_query() LIKE 'COPY (%' THEN "
                    f"RAISE EXCEPTION 'source row % is unreadable', k; END IF; RETURN true; END $$"
                )
            )
        query += f' WHERE "{schema}".gate(id)'
    settings = _settings(make_settings, schema, source={"connection": "wh", "query": query})
    run_id = launch(schema, settings=settings)
    run = wait(run_id, settings=settings, timeout_s=120, poll_s=0.2)
    assert run.status is outcome, run.message
    assert run.chunks_total == 5, run.plan_note
    assert _indexes(wh, schema, "dim_customer") == (True, {"current", "key", "sk"})
    wait_until(  # the operator sees it in the worker's log, with its time
        lambda: any(
            f"run {run_id}: built" in line and "dim_customer's primary key in" in line
            for line in workers.log_path.read_text(errors="replace").splitlines()
        ),
        timeout_s=10,
        what="the build's log line",
    )
    # the unique current-row index held all along: one current version per key
    with wh.connect() as conn:
        twice = conn.execute(
            text(
                f'SELECT count(*) FROM (SELECT id FROM "{schema}".dim_customer '
                f"WHERE dw_is_current GROUP BY id HAVING count(*) > 1) d"
            )
        ).scalar_one()
    assert twice == 0


def test_a_run_whose_end_cannot_build_them_still_ends_and_the_next_plan_builds_them(
    workers, make_settings, wh, schema
):
    create_customers(wh, schema, rows=1_000)
    settings = _settings(make_settings, schema)
    spec, metadata = settings.mappings[schema], get_engine(settings.metadata)
    plan_run(settings, schema, spec, metadata)  # creates the target, as a launch would
    assert _indexes(wh, schema, "dim_customer") == (False, {"current", "key"})
    # a writer's open transaction on the target: chunks write beside it, an index build
    # must wait for it (the run's end waits 10 s, then leaves the build to the next plan)
    holder = wh.connect()
    try:
        holder.begin()
        holder.execute(text(f'LOCK TABLE "{schema}".dim_customer IN ROW EXCLUSIVE MODE'))
        started = time.monotonic()
        run_id = launch(schema, settings=settings)
        run = wait(run_id, settings=settings, timeout_s=120, poll_s=0.2)
        assert run.status is RunStatus.SUCCESS, run.message
        assert time.monotonic() - started < 60
        assert _indexes(wh, schema, "dim_customer") == (False, {"current", "key"})
        lines = workers.log_path.read_text(errors="replace").splitlines()
        assert any(
            f"run {run_id}" in line and "not built" in line and "lock timeout" in line
            for line in lines
        ), workers.log_tail()
    finally:
        holder.rollback()
        holder.close()
    again = plan_run(settings, schema, spec, metadata)
    assert "indexes its first run's end did not: primary key" in again.note, again.note
    assert _indexes(wh, schema, "dim_customer") == (True, {"current", "key", "sk"})
    assert "did not" not in plan_run(settings, schema, spec, metadata).note


@pytest.mark.parametrize("made", ["own primary key", "no chordload index"])
def test_a_table_chordload_did_not_create_is_never_given_indexes(make_settings, wh, schema, made):
    create_customers(wh, schema, rows=10)
    key = "PRIMARY KEY" if made == "own primary key" else ""
    with wh.begin() as conn:
        conn.execute(
            text(
                f'CREATE TABLE "{schema}".dim_customer (dw_sk bigint GENERATED BY DEFAULT AS '
                f"IDENTITY {key}, id bigint NOT NULL, name text, email text, city text, "
                f"balance numeric(12,2), signup date, active boolean, updated_at timestamp, "
                f"dw_row_hash varchar(32) NOT NULL, "
                f"dw_valid_from timestamptz NOT NULL, dw_valid_to timestamptz, dw_is_current "
                f"boolean NOT NULL, dw_run_id varchar(32) NOT NULL)"
            )
        )
    before = _indexes(wh, schema, "dim_customer")
    settings = _settings(make_settings, schema)
    plan = plan_run(settings, schema, settings.mappings[schema], get_engine(settings.metadata))
    assert "first run's end" not in plan.note, plan.note
    assert _indexes(wh, schema, "dim_customer") == before


def test_two_finalizers_build_once_and_the_second_waits_for_the_first(make_settings, wh, schema):
    """The chord body and the last chunk's end may both finalize a run: the second builder
    waits for the first (however long its build takes), then finds nothing to build, and
    neither fails, so the run's end is written only once the target is whole."""
    create_customers(wh, schema, rows=10)
    settings = _settings(make_settings, schema)
    spec = settings.mappings[schema]
    plan = plan_run(settings, schema, spec, get_engine(settings.metadata))  # creates it
    target = plan.run.scd_target(adapter_for(wh))
    first = wh.connect()
    try:
        first.begin()
        assert late_indexes.build(first, target, spec.target) == ["primary key"]
        second: list[list[str]] = []
        waiter = threading.Thread(
            target=lambda: second.append(_build_in_own_transaction(wh, target, spec.target))
        )
        waiter.start()
        deadline = time.monotonic() + 10
        while not _advisory_lock_waiters(wh):  # the second is waiting for the first
            assert time.monotonic() < deadline, "the second builder never waited"
            time.sleep(0.05)
        assert waiter.is_alive() and not second
        first.commit()
    finally:
        first.close()
    waiter.join(timeout=30)
    assert second == [[]]
    assert _indexes(wh, schema, "dim_customer") == (True, {"current", "key", "sk"})


def _build_in_own_transaction(wh, target, spec_target) -> list[str]:
    with wh.begin() as conn:
        return late_indexes.build(conn, target, spec_target)


def _advisory_lock_waiters(wh) -> int:
    with wh.connect() as conn:
        return conn.execute(
            text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
        ).scalar_one()


def test_a_finalizer_killed_while_it_builds_leaves_reconcile_to_end_the_run_whole(
    config_path, make_settings, wh, schema, tmp_path, workers
):
    """The worst moment for the build: the worker finalizing the run is SIGKILLed while its
    build waits for the table. The run's end is not written (it stays RUNNING, all chunks
    done), and reconcile ends it: the target gets its primary key, the run its status."""
    create_customers(wh, schema, rows=1_000)
    settings = _settings(make_settings, schema)
    queue = f"cl-late-{schema}"
    own = settings.model_copy(
        update={"celery": settings.celery.model_copy(update={"queue": queue})}
    )
    spec, metadata = settings.mappings[schema], get_engine(settings.metadata)
    plan_run(settings, schema, spec, metadata)  # creates the target, as a launch would
    worker = WorkerProcess(
        config_path, queue=queue, name=f"late-{schema}", concurrency=1, log_path=tmp_path / "w.log"
    )
    holder = wh.connect()
    try:
        holder.begin()  # a writer's open transaction: the build waits for it (10 s at most)
        holder.execute(text(f'LOCK TABLE "{schema}".dim_customer IN ROW EXCLUSIVE MODE'))
        worker.start()
        run_id = launch(schema, settings=own)
        wait_until(lambda: _builder_waiting(wh, schema), timeout_s=60, what="the build waiting")
        os.killpg(worker.proc.pid, signal.SIGKILL)
        worker.proc.wait(10)
        assert store.get_run(metadata, run_id).status is RunStatus.RUNNING
        assert all(c.status.is_terminal for c in store.get_chunks(metadata, run_id))
    finally:
        holder.rollback()
        holder.close()
        worker.stop()
    actions = reconcile(settings)
    assert [(a.run_id, a.action) for a in actions if a.run_id == run_id] == [(run_id, "finalized")]
    run = store.get_run(metadata, run_id)
    assert (run.status, run.rows_read, run.rows_inserted) == (RunStatus.SUCCESS, 1_000, 1_000)
    assert _indexes(wh, schema, "dim_customer") == (True, {"current", "key", "sk"})


def _builder_waiting(wh, schema: str) -> bool:
    with wh.connect() as conn:
        return bool(
            conn.execute(
                text(
                    "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
                    "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE NOT l.granted AND "
                    "l.mode = 'ShareRowExclusiveLock' AND c.relname = 'dim_customer' "
                    "AND n.nspname = :schema"
                ),
                {"schema": schema},
            ).scalar_one()
        )
