"""Failure semantics with real services: retries, quarantine, redelivery after a killed
worker, one active run per mapping under races, bounded connections, faults, secrets."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import socket
import subprocess
import threading
import time
import uuid

import pytest
import redis
import yaml
from sqlalchemy import text

from coordinator.launch import launch
from coordinator.watch import wait
from shared.config.settings import settings_from_dict
from shared.engines import POOL_SIZE, get_engine
from shared.errors import RunRefusedError
from shared.lifecycle.finalize import finalize_run
from shared.lifecycle.reconcile import reconcile
from shared.metadata import store
from shared.metadata.models import ChunkLog, ProcessLog
from shared.metadata.schema import upgrade
from shared.run.statuses import ChunkStatus, RunStatus
from shared.timeutil import utcnow
from tests.conftest import PG_HOST, REPO, SECRET_PASSWORD, TOKEN
from tests.pgdata import (
    BUSINESS_COLUMNS,
    change_every_tenth,
    create_customers,
    diff_count,
    paced_customers_query,
    plan_document,
    scd2_mapping,
)
from tests.test_lifecycle import wait_until
from tests.worker_process import WorkerProcess

pytestmark = pytest.mark.e2e


def _admin(sql: str) -> None:
    engine = get_engine(f"{PG_HOST}/postgres")
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(sql))


def _kill_backends(database: str, application_like: str = "chordload/%") -> int:
    engine = get_engine(f"{PG_HOST}/postgres")
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        return len(
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :d "
                    "AND application_name LIKE :a AND pid <> pg_backend_pid()"
                ),
                {"d": database, "a": application_like},
            ).all()
        )


def _history(wh, table: str) -> str:
    """A target's versions without the columns that name the run (sk, valid_from, run_id)."""
    return (
        f"SELECT {BUSINESS_COLUMNS}, dw_row_hash, dw_is_current, dw_valid_to IS NULL AS open "
        f"FROM {table}"
    )


def _same_history(wh, left: str, right: str) -> None:
    with wh.connect() as conn:
        diff = conn.execute(
            text(
                f"SELECT (SELECT count(*) FROM ({_history(wh, left)} EXCEPT ALL {_history(wh, right)}) a)"
                f" + (SELECT count(*) FROM ({_history(wh, right)} EXCEPT ALL {_history(wh, left)}) b)"
            )
        ).scalar_one()
        dup = conn.execute(
            text(
                f"SELECT count(*) FROM (SELECT id FROM {left} WHERE dw_is_current "
                f"GROUP BY id HAVING count(*) > 1) d"
            )
        ).scalar_one()
    assert diff == 0, f"{left} and {right} differ in {diff} versions"
    assert dup == 0


# -- retries -------------------------------------------------------------------------------
def test_transient_errors_retry_and_complete(workers, make_settings, wh, schema, pg_urls):
    """Connections to the warehouse are cut mid-run (as a database restart does): chunks retry
    with backoff as Celery retries of the same task and the run completes exactly."""
    create_customers(wh, schema, 120_000)
    mapping = scd2_mapping(
        schema,
        batch_rows=1_000,
        retries={"max": 5, "backoff_s": 0.2},
        chunking={"rows_per_chunk": 20_000, "min_rows_for_parallel": 1},
    )
    settings = make_settings({schema: mapping})
    metadata = get_engine(settings.metadata)
    run_id = launch(schema, settings=settings)
    wait_until(
        lambda: store.progress_totals(metadata, run_id)["rows_read"] >= 10_000,
        what="the run to be under way",
    )
    database = pg_urls["wh"].rsplit("/", 1)[1]
    assert _kill_backends(database) >= 1
    run = wait(run_id, settings=settings, timeout_s=120)
    assert run.status is RunStatus.SUCCESS, run.message
    chunks = store.get_chunks(metadata, run_id)
    assert any(c.attempts > 1 for c in chunks), "some chunk was retried"
    assert run.chunks_total == len(chunks) == run.chunks_done
    assert run.rows_inserted == 120_000
    with wh.connect() as conn:
        assert (
            conn.execute(text(f'SELECT count(*) FROM "{schema}".dim_customer')).scalar_one()
            == 120_000
        )


def _aux_load(pg_urls, retries: dict):
    """A 2,000-row load from and into the aux database (tests cut that one off): its engine,
    database name, schema and mapping."""
    aux = get_engine(pg_urls["aux"])
    database = pg_urls["aux"].rsplit("/", 1)[1]
    schema = "t_" + uuid.uuid4().hex[:10]
    with aux.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    create_customers(aux, schema, 2_000)
    mapping = scd2_mapping(schema, retries=retries)
    mapping["source"]["connection"] = mapping["target"]["connection"] = "aux"
    return aux, database, schema, mapping


def test_retries_exhausted_fail_with_the_reason(workers, make_settings, pg_urls):
    """The target database refuses connections for good: the chunk retries max times, then
    ends FAILED naming the database's message; the checkpoint does not move."""
    _aux, database, schema, mapping = _aux_load(
        pg_urls, {"max": 2, "backoff_s": 0.1, "backoff_max_s": 0.5, "window_s": 0}
    )
    settings = make_settings({schema: mapping})
    metadata = get_engine(settings.metadata)
    try:
        # plan and claim the target first (they need the database), then cut it off before
        # the chunk starts
        from shared.run import chord

        original = chord.send_chord

        def cut_then_send(*args, **kwargs):
            _admin(f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS false')
            _kill_backends(database, "%")
            return original(*args, **kwargs)

        chord.send_chord = cut_then_send
        try:
            run_id = launch(schema, settings=settings)
        finally:
            chord.send_chord = original
        run = wait(run_id, settings=settings, timeout_s=60)
    finally:
        _admin(f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS true')
    assert run.status is RunStatus.FAILED
    chunk = store.get_chunks(metadata, run_id)[0]
    assert chunk.status is ChunkStatus.FAILED
    assert chunk.attempts == 0 or chunk.attempts <= 3
    assert "not currently accepting connections" in run.message
    assert "after 2 retries" in run.message
    assert store.get_checkpoint(metadata, schema) is None


# -- quarantine ------------------------------------------------------------------------------
def _strict_target(wh, schema: str) -> None:
    """A user-made SCD2 target that rejects some source rows."""
    with wh.begin() as conn:
        conn.execute(
            text(
                f'CREATE TABLE "{schema}".dim_customer (sk bigint GENERATED BY DEFAULT AS IDENTITY '
                f"PRIMARY KEY, id bigint NOT NULL, name varchar(14), email text NOT NULL, city text, "
                f"balance numeric(12,2) CHECK (balance >= 0), signup date, active boolean, "
                f"updated_at timestamp, row_hash varchar(32) NOT NULL, valid_from timestamptz NOT "
                f"NULL, valid_to timestamptz, is_current boolean NOT NULL, run_id varchar(32) NOT "
                f"NULL)"
            )
        )
        conn.execute(text(f'CREATE UNIQUE INDEX ON "{schema}".dim_customer (id) WHERE is_current'))


BAD_IDS = {17: "value too long", 4_321: "violates check constraint", 9_999: "null value"}


def _make_bad_rows(wh, schema: str) -> None:
    with wh.begin() as conn:
        conn.execute(
            text(f"UPDATE \"{schema}\".customers SET name = repeat('x', 40) WHERE id = 17")
        )
        conn.execute(text(f'UPDATE "{schema}".customers SET balance = -5 WHERE id = 4321'))
        conn.execute(text(f'UPDATE "{schema}".customers SET email = NULL WHERE id = 9999'))


@pytest.mark.parametrize("max_rows", [10, 0])
def test_bad_rows_are_quarantined_exactly(
    workers, make_settings, wh, schema, config_path, max_rows, tmp_path, base_config
):
    create_customers(wh, schema, 12_000)
    _make_bad_rows(wh, schema)
    _strict_target(wh, schema)
    mapping = scd2_mapping(
        schema,
        batch_rows=2_000,
        errors={"max_rows": max_rows},
        chunking={"rows_per_chunk": 4_000, "min_rows_for_parallel": 1},
    )
    settings = make_settings({schema: mapping})
    metadata = get_engine(settings.metadata)
    run = wait(launch(schema, settings=settings), settings=settings, timeout_s=60)
    assert run.rows_errored == 3
    assert run.rows_read == 12_000 and run.rows_inserted == 12_000 - 3
    errors = store.error_rows(metadata, run.run_id)
    assert {e.row_key["id"] for e in errors} == set(BAD_IDS)
    for e in errors:
        assert BAD_IDS[e.row_key["id"]] in e.message
        assert e.row_data["id"] == e.row_key["id"]
    with wh.connect() as conn:
        loaded = conn.execute(text(f'SELECT count(*) FROM "{schema}".dim_customer')).scalar_one()
        present = conn.execute(
            text(f'SELECT count(*) FROM "{schema}".dim_customer WHERE id IN (17, 4321, 9999)')
        ).scalar_one()
    assert (loaded, present) == (12_000 - 3, 0)
    if max_rows:
        assert run.status is RunStatus.SUCCESS, run.message
        assert store.get_checkpoint(metadata, schema) is not None
    else:
        assert run.status is RunStatus.FAILED
        assert "3 error rows exceed errors.max_rows=0" in run.message
        assert store.get_checkpoint(metadata, schema) is None
    # the CLI lists them
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({**base_config, "mappings": {schema: mapping}}))
    out = subprocess.run(
        [
            os.sys.executable,
            "-m",
            "coordinator.cli",
            "--config",
            str(path),
            "errors",
            run.run_id,
            "--json",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    listed = yaml.safe_load(out.stdout)
    assert sorted(e["key"]["id"] for e in listed) == sorted(BAD_IDS)


def test_bad_row_in_a_later_relayed_batch_restarts_the_chunk_typed(
    workers, make_settings, wh, schema
):
    """PostgreSQL to PostgreSQL, chunks relay COPY text; a row the target refuses in the
    second batch of a chunk sends that chunk back to the typed path, which bisects it. The
    batch relayed before is loaded again as a replay: counts are those of one clean pass."""
    create_customers(wh, schema, 8_000)
    with wh.begin() as conn:
        conn.execute(
            text(f"UPDATE \"{schema}\".customers SET name = repeat('x', 40) WHERE id = 3500")
        )
    _strict_target(wh, schema)
    mapping = scd2_mapping(
        schema,
        batch_rows=2_000,
        errors={"max_rows": 5},
        chunking={"rows_per_chunk": 4_000, "min_rows_for_parallel": 1, "exact_count": True},
    )
    settings = make_settings({schema: mapping})
    metadata = get_engine(settings.metadata)
    run = wait(launch(schema, settings=settings), settings=settings, timeout_s=60)
    assert run.status is RunStatus.SUCCESS, run.message
    assert (
        run.rows_read,
        run.rows_inserted,
        run.rows_changed,
        run.rows_unchanged,
        run.rows_errored,
    ) == (8_000, 7_999, 0, 0, 1)
    chunks = store.get_chunks(metadata, run.run_id)
    assert [c.rows_read for c in chunks] == [4_000, 4_000]
    assert [c.attempts for c in chunks] == [1, 1]
    assert [e.row_key["id"] for e in store.error_rows(metadata, run.run_id)] == [3_500]
    assert (
        diff_count(
            wh,
            f'SELECT {BUSINESS_COLUMNS} FROM "{schema}".customers WHERE id <> 3500',
            f'SELECT {BUSINESS_COLUMNS} FROM "{schema}".dim_customer WHERE is_current',
        )
        == 0
    )


# -- redelivery ------------------------------------------------------------------------------
def _twin_mapping(schema: str, target: str) -> dict:
    return scd2_mapping(
        schema,
        target=target,
        batch_rows=1_000,
        chunking={"rows_per_chunk": 20_000, "min_rows_for_parallel": 1},
    )


@pytest.mark.parametrize("kill", ["process_group", "pool_child"])
def test_killed_worker_redelivers_without_duplicates(
    kill, session_settings, base_config, make_settings, wh, schema, tmp_path, workers
):
    """SIGKILL mid-chunk: the chunk is delivered again and the target ends exactly as a clean
    run leaves it (same versions, one current row per key), SCD2 history included."""
    create_customers(wh, schema, 60_000)
    queue = f"cl-{TOKEN}-redeliver-{kill}"
    settings = make_settings(
        {
            f"{schema}_killed": _twin_mapping(schema, "dim_killed"),
            f"{schema}_clean": _twin_mapping(schema, "dim_clean"),
        }
    )
    killed_settings = settings.model_copy(
        update={"celery": settings.celery.model_copy(update={"queue": queue})}
    )
    metadata = get_engine(settings.metadata)
    # longer than a chunk takes here (a shorter one would redeliver chunks still running),
    # short enough to keep the test quick
    env = {"CHORDLOAD_VISIBILITY_TIMEOUT_S": "10"}
    # both twins in lockstep on the session workers: initial load, then a 10% change
    for step in ("initial", "ten percent"):
        if step == "ten percent":
            change_every_tenth(wh, f'"{schema}"."customers"')
        for mapref in (f"{schema}_killed", f"{schema}_clean"):
            assert (
                wait(launch(mapref, settings=settings), settings=settings, timeout_s=60).status
                is RunStatus.SUCCESS
            )
    with wh.begin() as conn:  # then every row changes: a run large enough to kill mid-chunk
        conn.execute(
            text(
                f'UPDATE "{schema}".customers SET updated_at = TIMESTAMP '
                f"'2026-07-01' + id * INTERVAL '1 millisecond', name = name || '!'"
            )
        )
        conn.execute(text(f'ANALYZE "{schema}".customers'))
    assert (
        wait(launch(f"{schema}_clean", settings=settings), settings=settings, timeout_s=60).status
        is RunStatus.SUCCESS
    )

    # kombu sweeps unacked messages back to the queue every interval * throttle seconds
    # (100 s by default); the test makes that 1 s so redelivery follows the 10 s timeout
    celery_conf = dict(base_config["celery"])
    celery_conf["broker_transport_options"] = {
        **celery_conf["broker_transport_options"],
        "unacked_restore_interval": 1,
        "unacked_restore_throttle": 1,
        # a worker SIGKILLed while it holds kombu's restore mutex would keep every worker
        # from restoring for the default 300 s: the chunk never came back within the test
        "unacked_mutex_expire": 5,
    }
    worker_config = tmp_path / "redeliver.yaml"
    worker_config.write_text(yaml.safe_dump({**base_config, "celery": celery_conf}))
    first = WorkerProcess(
        worker_config,
        queue=queue,
        name=f"first-{kill}-{TOKEN}",
        concurrency=1,
        log_path=tmp_path / "first.log",
        extra_env=env,
    )
    first.start()
    second = None
    try:
        run_id = launch(f"{schema}_killed", settings=killed_settings)
        chunk = wait_until(
            lambda: next(
                (
                    c
                    for c in store.get_chunks(metadata, run_id)
                    if c.batches_done >= 3 and c.status is ChunkStatus.RUNNING
                ),
                None,
            ),
            what="a chunk mid-way",
        )
        if kill == "process_group":
            os.killpg(first.proc.pid, signal.SIGKILL)
            first.proc.wait(10)
            second = WorkerProcess(
                worker_config,
                queue=queue,
                name=f"second-{kill}-{TOKEN}",
                concurrency=1,
                log_path=tmp_path / "second.log",
                extra_env=env,
            )
            second.start()
        else:
            os.kill(int(chunk.worker.rsplit("/", 1)[1]), signal.SIGKILL)
        run = wait(run_id, settings=settings, timeout_s=120)
    finally:
        first.stop()
        if second:
            second.stop()
    assert run.status is RunStatus.SUCCESS, run.message
    redone = store.get_chunk(metadata, run_id, chunk.chunk_no)
    assert redone.attempts >= 2, "the killed chunk was delivered again"
    _same_history(wh, f'"{schema}".dim_killed', f'"{schema}".dim_clean')


# -- one active run per mapping ----------------------------------------------------------------
def _racer(settings_json: str, mapref: str, barrier, results, rounds: int) -> None:
    from shared.config.settings import Settings

    settings = Settings.model_validate_json(settings_json)
    for _ in range(rounds):
        barrier.wait()
        try:
            results.put(("ok", launch(mapref, settings=settings)))
        except RunRefusedError as err:
            results.put(("refused", err.active_run_id))
        except Exception as err:
            results.put(("error", repr(err)))


def test_two_simultaneous_runs_one_is_refused(workers, make_settings, wh, schema):
    create_customers(wh, schema, 200)
    settings = make_settings({schema: scd2_mapping(schema)})
    ctx = multiprocessing.get_context("spawn")
    rounds = 12
    barrier, results = ctx.Barrier(3), ctx.Queue()
    racers = [
        ctx.Process(
            target=_racer, args=(settings.model_dump_json(), schema, barrier, results, rounds)
        )
        for _ in range(2)
    ]
    for p in racers:
        p.start()
    try:
        for _ in range(rounds):
            barrier.wait(timeout=60)
            outcome = sorted([results.get(timeout=60), results.get(timeout=60)])
            kinds = [kind for kind, _ in outcome]
            assert kinds == ["ok", "refused"], outcome
            winner = outcome[0][1]
            assert outcome[1][1] in (winner, None)  # the refusal names the active run
            assert wait(winner, settings=settings, timeout_s=60).status is RunStatus.SUCCESS
    finally:
        for p in racers:
            p.join(30)
            if p.is_alive():
                p.kill()
    runs = [r for r in store.recent_runs(get_engine(settings.metadata), 100) if r.mapref == schema]
    assert len(runs) == rounds


# -- connections -----------------------------------------------------------------------------
def test_worker_connections_stay_within_the_pool(workers, make_settings, wh, schema, pg_urls):
    create_customers(wh, schema, 80_000)
    mapping = scd2_mapping(
        schema,
        batch_rows=2_000,
        chunking={"rows_per_chunk": 2_000, "min_rows_for_parallel": 1, "max_chunks": 40},
    )
    settings = make_settings({schema: mapping})
    database = pg_urls["wh"].rsplit("/", 1)[1]
    peak: dict[str, int] = {}
    backends: dict[str, set[int]] = {}
    done = threading.Event()
    me = f"chordload/{os.getpid()}"

    def sample() -> None:
        engine = get_engine(f"{PG_HOST}/postgres")
        with engine.connect() as conn:
            while not done.is_set():
                rows = conn.execute(
                    text(
                        "SELECT application_name, pid FROM pg_stat_activity WHERE datname = :d "
                        "AND application_name LIKE 'chordload/%' AND application_name <> :me"
                    ),
                    {"d": database, "me": me},
                ).all()
                conn.rollback()
                counts: dict[str, int] = {}
                for app_name, pid in rows:
                    counts[app_name] = counts.get(app_name, 0) + 1
                    backends.setdefault(app_name, set()).add(pid)
                for app_name, n in counts.items():
                    peak[app_name] = max(peak.get(app_name, 0), n)
                time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        run = wait(launch(schema, settings=settings), settings=settings, timeout_s=120)
    finally:
        done.set()
        sampler.join(10)
    assert run.status is RunStatus.SUCCESS and run.chunks_total == 40
    worker_pids = {
        c.worker.rsplit("/", 1)[1]
        for c in store.get_chunks(get_engine(settings.metadata), run.run_id)
    }
    seen = {name: pids for name, pids in backends.items() if name.split("/")[1] in worker_pids}
    assert len(seen) == 2, backends
    for name, pids in seen.items():
        assert peak[name] <= POOL_SIZE
        assert len(pids) <= POOL_SIZE, f"{name} opened {len(pids)} connections for 20 chunks"


# -- faults ----------------------------------------------------------------------------------
def test_unreachable_source_at_plan_time_writes_nothing(base_config, metadata_ready, tmp_path):
    config = {
        **base_config,
        "connections": {
            **base_config["connections"],
            "gone": f"postgresql+psycopg2://root:{SECRET_PASSWORD}@127.0.0.1:1/nowhere",
        },
        "mappings": {
            "lost": {
                "source": {"connection": "gone", "query": "SELECT 1 AS id"},
                "target": {"connection": "wh", "table": "never_created"},
                "keys": ["id"],
            }
        },
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    out = subprocess.run(
        [os.sys.executable, "-m", "coordinator.cli", "--config", str(path), "run", "lost"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "mapping 'lost'" in out.stderr and "cannot reach the source" in out.stderr
    assert SECRET_PASSWORD not in out.stderr + out.stdout and "***" in out.stderr
    metadata = get_engine(base_config["metadata"])
    assert store.latest_run(metadata, "lost") is None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_redis(port: int, folder) -> subprocess.Popen:
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(folder),
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--save",
            "",
            "--maxmemory-policy",
            "noeviction",
            "--logfile",
            str(folder / "redis.log"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    wait_until(lambda: _pings(client), timeout_s=20, what="redis to start")
    return proc


def _pings(client) -> bool:
    try:
        return client.ping()
    except redis.RedisError:
        return False


def test_redis_restart_mid_run(base_config, metadata_ready, wh, schema, tmp_path):
    """A dedicated Redis (append-only) is restarted mid-run: workers reconnect and the run
    completes (reconcile, as beat would, finalizes it or resends messages lost meanwhile)."""
    port = _free_port()
    url = f"redis://127.0.0.1:{port}/0"
    proc = _start_redis(port, tmp_path)
    create_customers(wh, schema, 60_000)
    mapping = scd2_mapping(
        schema, batch_rows=1_000, chunking={"rows_per_chunk": 10_000, "min_rows_for_parallel": 1}
    )
    # about 3 s of loading on two processes, so Redis goes down mid-run (unpaced, the whole
    # run took 0.8 s and had ended before the shutdown)
    mapping["source"]["query"] = paced_customers_query(wh, schema, every=10)
    config = {
        **base_config,
        "broker": url,
        "result_backend": url,
        # A message the worker had reserved but not started when Redis went down stays in
        # Redis's unacked set until the visibility timeout (4 h by default) brings it back;
        # one kombu drops while restoring unacked messages is gone. Reconcile resends a run's
        # lost messages once nothing moved for lost_message_grace_s, the queue is empty and
        # no worker holds them; the broker's own restore is kept short too (either copy
        # of a chunk runs, the other is superseded).
        "celery": {
            "queue": f"cl-{TOKEN}-redis",
            "visibility_timeout_s": 30,
            "lost_message_grace_s": 3,
            "broker_transport_options": {
                "unacked_restore_interval": 1,
                "unacked_restore_throttle": 1,
                "unacked_mutex_expire": 5,
            },
        },
        "mappings": {schema: mapping},
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    from shared.config.settings import settings_from_dict

    settings = settings_from_dict(config)
    worker = WorkerProcess(
        path,
        queue=f"cl-{TOKEN}-redis",
        name=f"redis-{TOKEN}",
        concurrency=2,
        log_path=tmp_path / "w.log",
        broker_url=url,
    )
    metadata = get_engine(settings.metadata)
    try:
        worker.start()
        started = subprocess.run(
            [os.sys.executable, "-m", "coordinator.cli", "--config", str(path), "run", schema],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert started.returncode == 0, started.stderr
        run_id = started.stdout.strip()
        wait_until(
            lambda: store.progress_totals(metadata, run_id)["rows_read"] >= 5_000,
            what="the run to be under way",
        )
        redis.Redis(port=port).shutdown()  # append-only file is flushed; the queue survives
        proc.wait(20)
        # the restart is mid-run: the run has not ended and chunks are still to load
        assert not store.get_run(metadata, run_id).status.is_terminal
        ended = [c for c in store.get_chunks(metadata, run_id) if c.status.is_terminal]
        assert len(ended) < 6, "every chunk had ended before Redis went down"
        proc = _start_redis(port, tmp_path)

        def finished() -> bool:
            # kombu 5.7 can kill the worker when the connection drops while it holds unacked
            # messages ("Unrecoverable error: AttributeError ... 'hostname'" in
            # restore_unacked): restart it, as the compose stack's restart policy does, or
            # the chunks still queued would never run
            if worker.proc is not None and worker.proc.poll() is not None:
                worker.stop()
                worker.start()
            reconcile(settings)
            return store.get_run(metadata, run_id).status.is_terminal

        wait_until(finished, timeout_s=120, interval_s=0.5, what="the run to finish")
        run = store.get_run(metadata, run_id)
    finally:
        worker.stop()
        proc.terminate()
        proc.wait(20)
    assert run.status is RunStatus.SUCCESS, run.message
    with wh.connect() as conn:
        assert (
            conn.execute(text(f'SELECT count(*) FROM "{schema}".dim_customer')).scalar_one()
            == 60_000
        )


def test_metadata_briefly_unavailable_during_finalize(tmp_path):
    """finalize retries while the metadata database refuses connections for a moment."""
    name = f"cl_{TOKEN}_meta_flaky"
    _admin(f'CREATE DATABASE "{name}"')
    url = f"{PG_HOST}/{name}"
    try:
        engine = get_engine(url)
        upgrade(engine)
        run_id = uuid.uuid4().hex[:12]
        mapping = plan_document()
        store.create_run(
            engine,
            ProcessLog(
                run_id=run_id,
                mapref="m",
                status=RunStatus.RUNNING,
                created_at=utcnow(),
                load_kind="initial",
                chunks_total=1,
                chunks_done=0,
                chunks_failed=0,
                rows_read=5,
                rows_inserted=5,
                rows_changed=0,
                rows_unchanged=0,
                rows_errored=0,
                mapping=mapping,
            ),
            [
                ChunkLog(
                    run_id=run_id,
                    chunk_no=0,
                    includes_nulls=True,
                    task_id=f"{run_id}.0",
                    status=ChunkStatus.SUCCESS,
                    rows_read=5,
                    rows_inserted=5,
                    rows_changed=0,
                    rows_unchanged=0,
                    rows_errored=0,
                    batches_done=1,
                    attempts=1,
                    max_checkpoint={"type": "int", "value": 42},
                )
            ],
        )
        _admin(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
        _kill_backends(name, "%")
        outcome = {}
        thread = threading.Thread(
            target=lambda: outcome.update(
                result=finalize_run(settings_from_dict({"metadata": url}), run_id)
            )
        )
        thread.start()
        time.sleep(1.5)  # the outage being simulated: finalize must ride it out
        assert thread.is_alive(), "finalize should still be retrying"
        _admin(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
        thread.join(60)
        assert outcome["result"].status is RunStatus.SUCCESS
        assert store.get_checkpoint(engine, "m").value == {"type": "int", "value": 42}
    finally:
        _admin(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
        get_engine(url).dispose()
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -- security --------------------------------------------------------------------------------
def test_passwords_never_leak(
    workers, make_settings, wh, schema, redis_prefix, base_config, tmp_path
):
    create_customers(wh, schema, 3_000)
    mapping = scd2_mapping(schema)
    mapping["source"]["connection"] = mapping["target"]["connection"] = "secretwh"
    settings = make_settings({schema: mapping})
    run = wait(launch(schema, settings=settings), settings=settings, timeout_s=60)
    assert run.status is RunStatus.SUCCESS
    with get_engine(settings.metadata).connect() as conn:
        dumped = " ".join(
            str(row)
            for table in ("process_log", "chunk_log")
            for row in conn.execute(text(f"SELECT * FROM {table}")).all()
        )
    assert SECRET_PASSWORD not in dumped
    assert SECRET_PASSWORD not in workers.log_path.read_text(errors="replace")
    client = redis.Redis.from_url(base_config["broker"])
    for key in client.scan_iter(match=f"{redis_prefix}*"):
        if client.type(key) == b"string":
            assert SECRET_PASSWORD.encode() not in (client.get(key) or b"")
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({**base_config, "mappings": {schema: mapping}}))
    for args in (["status", run.run_id, "--json"], ["validate"], ["status"]):
        out = subprocess.run(
            [os.sys.executable, "-m", "coordinator.cli", "--config", str(path), *args],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert SECRET_PASSWORD not in out.stdout + out.stderr, args


def test_only_json_crosses_the_broker(session_settings):
    from shared.broker import client_app
    from workers.celery_app import build_app

    for app in (client_app(session_settings), build_app(session_settings)):
        assert app.conf.task_serializer == "json" and app.conf.result_serializer == "json"
        assert list(app.conf.accept_content) == ["json"]


def test_hostile_identifiers_are_taken_literally(workers, make_settings, wh, schema):
    with wh.begin() as conn:
        conn.execute(text(f'CREATE TABLE "{schema}".victim (x int)'))
        conn.execute(
            text(f'CREATE TABLE "{schema}".src (id int, "we""ird; DROP TABLE victim; --" text)')
        )
        conn.execute(text(f"INSERT INTO \"{schema}\".src VALUES (1, 'a'), (2, 'b')"))
    evil_table = 'evil"; DROP TABLE victim; --'
    mapping = {
        "source": {"connection": "wh", "query": f'SELECT * FROM "{schema}".src'},
        "target": {"connection": "wh", "table": f"{schema}.{evil_table}"},
        "keys": ["id"],
        "scd": {"type": 1},
    }
    settings = make_settings({schema: mapping})
    run = wait(launch(schema, settings=settings), settings=settings, timeout_s=60)
    assert run.status is RunStatus.SUCCESS, run.message
    with wh.connect() as conn:
        assert conn.execute(text(f'SELECT count(*) FROM "{schema}".victim')).scalar_one() == 0
        rows = (
            conn.execute(
                text(
                    f'SELECT "we""ird; DROP TABLE victim; --" FROM "{schema}"."evil""; DROP TABLE '
                    f'victim; --" ORDER BY id'
                )
            )
            .scalars()
            .all()
        )
    assert rows == ["a", "b"]


OUTAGE_S = 60


def test_a_minute_without_metadata_and_warehouse(base_config, metadata_ready, wh, schema, tmp_path):
    """Mid-run, the metadata database and the warehouse are both cut off for a minute (a TCP
    proxy drops every connection and refuses new ones), for the workers and for the
    `run --wait --json` that follows the run. Chunks retry within retries.window_s, tasks
    whose metadata writes fail are retried by Celery, the wait keeps polling: the CLI exits 0
    with its JSON, the run is SUCCESS, and the target equals the source."""
    from tests.cliutil import run_subprocess
    from tests.tcp_proxy import TcpProxy

    rows = 4_000
    create_customers(wh, schema, rows)
    with wh.begin() as conn:  # about 1 ms a row: the run is still loading when the cut comes
        conn.execute(
            text(
                f'CREATE FUNCTION "{schema}".paced() RETURNS boolean LANGUAGE plpgsql VOLATILE '
                "AS $$ BEGIN PERFORM pg_sleep(0.001); RETURN true; END $$"
            )
        )
    # retries back off up to 5 s (60 s by default), so the run goes on soon after the outage
    mapping = scd2_mapping(schema, batch_rows=400, retries={"backoff_max_s": 5})
    mapping["source"]["query"] = (
        f'SELECT {BUSINESS_COLUMNS} FROM "{schema}"."customers" WHERE "{schema}".paced()'
    )
    metadata_proxy, warehouse_proxy = TcpProxy("127.0.0.1", 5432), TcpProxy("127.0.0.1", 5432)
    host = PG_HOST.rsplit("@", 1)[1]  # 127.0.0.1:5432
    queue = f"cl-{TOKEN}-outage"
    config = {
        **base_config,
        "metadata": base_config["metadata"].replace(host, f"127.0.0.1:{metadata_proxy.port}"),
        "connections": {
            **base_config["connections"],
            "wh": base_config["connections"]["wh"].replace(
                host, f"127.0.0.1:{warehouse_proxy.port}"
            ),
        },
        "celery": {**base_config["celery"], "queue": queue},
        "mappings": {schema: mapping},
    }
    path = tmp_path / "outage.yaml"
    path.write_text(yaml.safe_dump(config))
    worker = WorkerProcess(
        path, queue=queue, name=f"outage-{TOKEN}", concurrency=2, log_path=tmp_path / "w.log"
    )
    worker.start()
    metadata = get_engine(base_config["metadata"])  # the test's own view, never cut
    outcome: dict = {}

    def run_and_wait() -> None:
        outcome["cli"] = run_subprocess(
            "--config", path, "run", schema, "--chunks", "2", "--wait", "--json", timeout_s=300
        )

    cli = threading.Thread(target=run_and_wait, daemon=True)
    try:
        cli.start()
        run = wait_until(
            lambda: next(
                (
                    r
                    for r in store.recent_runs(metadata)
                    if r.mapref == schema
                    and any(c.batches_done >= 2 for c in store.get_chunks(metadata, r.run_id))
                ),
                None,
            ),
            timeout_s=60,
            what="the run loading its chunks",
        )
        metadata_proxy.cut()
        warehouse_proxy.cut()
        cut_at = time.monotonic()
        # the outage is the scenario: it lasts OUTAGE_S, while both sides keep knocking
        wait_until(
            lambda: time.monotonic() - cut_at >= OUTAGE_S,
            timeout_s=OUTAGE_S + 5,
            interval_s=1,
            what="the outage to last its minute",
        )
        # the wait and the workers kept knocking on the metadata database (the warehouse
        # sees new connections only once a chunk gets past its metadata writes again)
        assert metadata_proxy.refused > 0
        assert not store.get_run(metadata, run.run_id).status.is_terminal
        metadata_proxy.restore()
        warehouse_proxy.restore()
        cli.join(240)
        assert not cli.is_alive(), "run --wait never returned"
    finally:
        metadata_proxy.close()
        warehouse_proxy.close()
        worker.stop()
    result = outcome["cli"]
    assert result.code == 0, (result, worker.log_tail())
    summary = json.loads(result.out)
    assert (summary["run_id"], summary["status"]) == (run.run_id, "SUCCESS"), summary
    assert (summary["rows_read"], summary["rows_inserted"]) == (rows, rows), summary
    current = f'SELECT {BUSINESS_COLUMNS} FROM "{schema}".dim_customer WHERE dw_is_current'
    assert diff_count(wh, current, f'SELECT {BUSINESS_COLUMNS} FROM "{schema}".customers') == 0
    with wh.connect() as conn:
        assert conn.execute(text(f'SELECT count(*) FROM "{schema}".dim_customer')).scalar() == rows


@pytest.mark.e2e
def test_retries_span_an_outage_longer_than_their_count(workers, make_settings, pg_urls):
    """The warehouse refuses connections from before the chunk starts until it has failed
    three times, longer than retries.max (1) would wait: the retries go on within
    retries.window_s and the run ends SUCCESS and exact (a count alone failed it)."""
    aux, database, schema, mapping = _aux_load(
        pg_urls, {"max": 1, "backoff_s": 0.2, "backoff_max_s": 0.5, "window_s": 120}
    )
    settings = make_settings({schema: mapping})
    metadata = get_engine(settings.metadata)
    from shared.run import chord

    original = chord.send_chord

    def cut_then_send(*args, **kwargs):
        # planned, and the target claimed for the run: now the warehouse goes away
        _admin(f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS false')
        _kill_backends(database, "%")
        return original(*args, **kwargs)

    try:
        chord.send_chord = cut_then_send
        try:
            run_id = launch(schema, settings=settings)
        finally:
            chord.send_chord = original
        wait_until(
            lambda: "retry 3 " in (store.get_chunks(metadata, run_id)[0].message or ""),
            timeout_s=60,
            what="the chunk to have failed three times",
        )
    finally:
        _admin(f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS true')
    run = wait(run_id, settings=settings, timeout_s=60)
    assert run.status is RunStatus.SUCCESS, run.message
    assert run.rows_inserted == 2_000
    with aux.connect() as conn:
        assert conn.execute(text(f'SELECT count(*) FROM "{schema}".dim_customer')).scalar() == 2_000
    with aux.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
