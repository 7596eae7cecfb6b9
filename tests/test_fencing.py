"""Fencing (shared/fence.py): only the chunk attempt that owns a chunk writes to the target.

The fence's rules on every target database; a claim that waits for the batch in flight; a
worker frozen (SIGSTOP) past the visibility timeout while its chunk is delivered again, the
run finished by another worker and a newer run loads newer data, then woken: the target
still equals the source and every run's counts are exact; a resume refused once a newer
run of the mapping exists."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
import yaml
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from coordinator.launch import launch
from coordinator.watch import wait
from shared.broker import client_app
from shared.dialects import adapter_for
from shared.dialects.base import dbapi_connection
from shared.engines import get_engine, writer_metadata
from shared.fence import FENCE_TABLE, TargetFence
from shared.metadata import store
from shared.run.statuses import ChunkStatus, RunStatus
from tests.cliutil import run_cli, write_config
from tests.conftest import TOKEN
from tests.pgdata import BUSINESS_COLUMNS, create_customers, diff_count, scd2_mapping
from tests.test_lifecycle import wait_until
from tests.worker_process import WorkerProcess

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("connection", ["wh", "mdb", "lite"])
def test_fence_rules(session_settings, connection):
    """Attempts only grow; a claim takes every chunk from older runs and launches; a close
    ends the run's writes; a resume's claim opens them again."""
    engine = get_engine(session_settings.connection_url(connection))
    dialect = adapter_for(engine)
    table = f"rules_{TOKEN}"
    fence = TargetFence(dialect, dialect.q(FENCE_TABLE), table, f"m_{connection}")

    def step(action, *args):
        with engine.begin() as conn:
            return getattr(fence, action)(conn, *args)

    step("ensure")
    step("claim", "r1")
    assert step("enter", "r1", 0, 1) and step("hold", "r1", 0, 1)
    assert step("enter", "r1", 0, 2), "a newer attempt takes the chunk"
    assert not step("hold", "r1", 0, 1), "the older attempt lost it"
    assert not step("enter", "r1", 0, 2), "an attempt enters once"
    assert not step("enter", "r1", 0, 1), "an older attempt never takes it back"
    assert step("enter", "r1", 1, 1) and step("hold", "r1", 1, 1)
    step("claim", "r2")  # a newer run
    assert not step("hold", "r1", 0, 2) and not step("hold", "r1", 1, 1)
    assert not step("enter", "r1", 7, 9), "an attempt of the older run cannot even enter"
    assert not step("hold_run", "r1") and step("hold_run", "r2")
    assert step("enter", "r2", 0, 1) and step("hold", "r2", 0, 1)
    step("close", "r2")  # the run ended
    assert not step("hold", "r2", 0, 1) and not step("enter", "r2", 3, 5)
    assert not step("hold_run", "r2")
    step("claim", "r2")  # resumed: a new launch, new attempts
    assert not step("hold", "r2", 0, 1), "an attempt of the earlier launch stays out"
    assert step("enter", "r2", 0, 2) and step("hold", "r2", 0, 2) and step("hold_run", "r2")


def test_a_claim_waits_for_the_batch_in_flight(session_settings, wh):
    """The claim takes the rows' locks: it waits for a batch that holds its chunk, and the
    batch after it finds the fence moved."""
    dialect = adapter_for(wh)
    fence = TargetFence(dialect, dialect.q(FENCE_TABLE), f"wait_{TOKEN}", "m")
    with wh.begin() as conn:
        fence.ensure(conn)
        fence.claim(conn, "r1")
        assert fence.enter(conn, "r1", 0, 1)
    claimed = threading.Event()

    def claim() -> None:
        with get_engine(session_settings.connection_url("wh"), pre_ping=False).begin() as conn:
            conn.execute(text("SET application_name = 'fence-claimer'"))
            fence.claim(conn, "r2")
        claimed.set()

    with wh.connect() as batch:
        with batch.begin():
            assert fence.hold(batch, "r1", 0, 1)
            claimer = threading.Thread(target=claim)
            claimer.start()
            # autocommit: pg_stat_activity is read once per transaction
            with wh.connect().execution_options(isolation_level="AUTOCOMMIT") as probe:
                wait_until(
                    lambda: probe.execute(
                        text(
                            "SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                            "'fence-claimer' AND wait_event_type = 'Lock'"
                        )
                    ).scalar_one(),
                    timeout_s=20,
                    what="the claim waiting on the batch's lock",
                )
            assert not claimed.is_set()
        claimer.join(20)
        assert claimed.is_set()
        with batch.begin():
            assert not fence.hold(batch, "r1", 0, 1)


def test_an_entry_ends_a_batch_frozen_while_sending_its_copy(session_settings, wh):
    """A batch whose worker froze while it sent its COPY holds its chunk's fence row, and
    PostgreSQL waits for COPY data without a limit (no statement or idle timeout applies).
    The next attempt's entry ends that session once it has waited ``stalled_copy_s``, takes
    the chunk, and the frozen batch wrote nothing."""
    dialect = adapter_for(wh)
    table = f"stalled_{TOKEN}"
    fence = TargetFence(dialect, dialect.q(FENCE_TABLE), table, "m", stalled_copy_s=1)
    with wh.begin() as conn:
        fence.ensure(conn)
        fence.claim(conn, "r1")
        assert fence.enter(conn, "r1", 0, 1)
        conn.execute(text(f"CREATE TABLE {table} (x int)"))
    gate = threading.Event()

    class FrozenWorker:
        """The batch's COPY data as a frozen worker sends it: a row, then nothing."""

        sent = False

        def read(self, size: int) -> bytes:
            if not self.sent:
                self.sent = True
                return b"1\n"
            gate.wait(60)
            return b""

    outcome: list[object] = []

    def batch() -> None:
        engine = get_engine(session_settings.connection_url("wh"), pre_ping=False)
        try:
            with engine.connect() as conn, conn.begin():
                assert fence.hold(conn, "r1", 0, 1)
                dbapi_connection(conn).cursor().copy_expert(
                    f"COPY {table} FROM STDIN", FrozenWorker()
                )
            outcome.append("committed")
        except Exception as exc:  # the outcome is asserted below
            outcome.append(exc)

    writer = threading.Thread(target=batch)
    writer.start()
    try:
        with wh.connect().execution_options(isolation_level="AUTOCOMMIT") as probe:
            wait_until(
                lambda: probe.execute(
                    text(
                        "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND "
                        "wait_event = 'ClientRead' AND query LIKE :q"
                    ),
                    {"q": f"COPY {table}%"},
                ).scalar_one(),
                timeout_s=20,
                what="the batch's COPY waiting for its data",
            )
        started = time.monotonic()
        with wh.begin() as conn:
            assert fence.enter(conn, "r1", 0, 2), "the next attempt takes the chunk"
        waited_s = time.monotonic() - started
    finally:
        gate.set()
        writer.join(30)
    assert waited_s < 15, waited_s
    assert outcome and outcome[0] != "committed", outcome
    with wh.begin() as conn:
        assert conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one() == 0
        assert not fence.hold(conn, "r1", 0, 1), "the frozen attempt lost the chunk"
        conn.execute(text(f"DROP TABLE {table}"))


ROWS = 8_000


@pytest.mark.parametrize("pre_ping", [False, True])
def test_a_worker_metadata_writer_frozen_in_a_transaction_lets_go(session_settings, pre_ping):
    """Every metadata writer a worker runs (chunk attempts and finalizers without pre-ping;
    reconcile and the verify tasks with it) ends a session idle inside a transaction after
    ``target_sessions.idle_in_transaction_timeout_s``: a worker frozen between an UPDATE of
    a row (a chunk's, a run's) and its COMMIT releases the row, and the others go on."""
    limits = session_settings.target_sessions.model_copy(
        update={"idle_in_transaction_timeout_s": 1}
    )
    settings = session_settings.model_copy(update={"target_sessions": limits})
    engine = writer_metadata(settings, pre_ping=pre_ping)
    observer = get_engine(settings.metadata)
    # a lock as a row's: held until the transaction ends (the key is this test's own)
    lock = text("SELECT pg_advisory_xact_lock(:k)")
    key = {"k": int(TOKEN, 16) % (1 << 62) + int(pre_ping)}
    frozen = engine.connect()
    try:
        frozen.begin()
        frozen.execute(lock, key)
        pid = frozen.execute(text("SELECT pg_backend_pid()")).scalar_one()
        with observer.begin() as conn:  # the row is free again within the limit and a margin
            conn.execute(text("SET LOCAL lock_timeout = '10s'"))
            conn.execute(lock, key)
        with observer.connect() as conn:
            wait_until(
                lambda: conn.execute(
                    text("SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = :p"), {"p": pid}
                ).scalar_one(),
                timeout_s=10,
                what="the server to end the frozen writer's session",
            )
        with pytest.raises(OperationalError):
            frozen.execute(text("SELECT 1"))
    finally:
        frozen.invalidate()
        frozen.close()


def _paced_mapping(schema: str) -> dict:
    """One chunk read at about 1 ms a row, so a worker can be frozen in the middle of it."""
    mapping = scd2_mapping(schema, batch_rows=400)
    mapping["source"]["query"] = (
        f'SELECT {BUSINESS_COLUMNS} FROM "{schema}"."customers" WHERE "{schema}".paced()'
    )
    return mapping


HOLD_S = 0.5  # how long a batch's UPDATE of chunk_log holds the row before it returns


def _hold_trigger(run_id: str) -> str:
    return f"cl_hold_{run_id}"


def _stop_while_recording_a_batch(pgid: int, metadata, run_id: str, chunk_no: int) -> None:
    """SIGSTOP the worker's processes while its metadata session holds the chunk's
    chunk_log row: between a batch's UPDATE and its COMMIT.

    That window is one round trip wide, too narrow to hit by polling: a freeze that missed
    it every batch once let the chunk end and then stopped the worker in a later, unrelated
    transaction. So an AFTER UPDATE trigger on this attempt's row (``_hold_trigger``,
    dropped by ``_drop_hold``) makes each batch's UPDATE sleep ``HOLD_S`` after changing the
    row. The worker is stopped while it waits for that UPDATE's reply; the UPDATE then
    completes, and the stopped worker never sends its COMMIT. A row lock that cannot be
    taken proves it."""
    name = _hold_trigger(run_id)
    with metadata.begin() as conn:
        conn.execute(
            text(
                f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS "
                f"$$ BEGIN PERFORM pg_sleep({HOLD_S}); RETURN NULL; END $$"
            )
        )
        conn.execute(
            text(
                f"CREATE TRIGGER {name} AFTER UPDATE ON chunk_log FOR EACH ROW WHEN "
                f"(NEW.run_id = '{run_id}' AND NEW.chunk_no = {int(chunk_no)} AND "
                f"NEW.attempts = 1 AND NEW.status = '{ChunkStatus.RUNNING.value}' AND "
                f"NEW.batches_done > OLD.batches_done) EXECUTE FUNCTION {name}()"
            )
        )
    recording = text(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND state = 'active' AND wait_event = 'PgSleep' AND query LIKE 'UPDATE chunk_log %' "
        "AND pid <> pg_backend_pid()"
    )
    row = text("SELECT 1 FROM chunk_log WHERE run_id = :r AND chunk_no = :c FOR UPDATE")
    with metadata.connect().execution_options(isolation_level="AUTOCOMMIT") as probe:
        wait_until(
            lambda: probe.execute(recording).scalar_one() > 0,
            timeout_s=60,
            interval_s=0.01,
            what="a batch's UPDATE of chunk_log, held by the trigger",
        )
    os.killpg(pgid, signal.SIGSTOP)
    try:
        with metadata.begin() as conn:
            conn.execute(text(f"SET LOCAL lock_timeout = '{HOLD_S + 1}s'"))
            conn.execute(row, {"r": run_id, "c": chunk_no})
    except OperationalError as exc:
        if getattr(exc.orig, "pgcode", None) == "55P03":  # lock_not_available
            return  # the stopped worker holds the row
        raise
    raise AssertionError("the worker, stopped in a batch's UPDATE, did not hold the row")


def _drop_hold(metadata, run_id: str) -> None:
    """Drop ``_stop_while_recording_a_batch``'s trigger (after the run: its table lock
    waits for the frozen worker's transaction, which the server ends)."""
    name = _hold_trigger(run_id)
    with metadata.begin() as conn:
        conn.execute(text(f"DROP TRIGGER IF EXISTS {name} ON chunk_log"))
        conn.execute(text(f"DROP FUNCTION IF EXISTS {name}()"))


@pytest.mark.parametrize("freeze_at", ["a random moment", "recording a batch"])
def test_a_frozen_worker_never_overwrites_newer_data(
    base_config, session_settings, make_settings, wh, schema, tmp_path, freeze_at
):
    """Worker A is frozen (SIGSTOP) mid-chunk. Past the visibility timeout the chunk is
    delivered to worker B, which finishes the run; a newer run loads newer values; then A
    wakes, with its old snapshot of the source still open. A writes nothing: the target
    equals the source, two versions per key, and each run counts its rows once. Frozen
    while it records a batch, A holds its chunk's chunk_log row: its metadata session ends
    after the idle-in-transaction timeout, so B can take the chunk over."""
    create_customers(wh, schema, ROWS)
    with wh.begin() as conn:
        conn.execute(
            text(
                f'CREATE FUNCTION "{schema}".paced() RETURNS boolean LANGUAGE plpgsql VOLATILE '
                "AS $$ BEGIN PERFORM pg_sleep(0.001); RETURN true; END $$"
            )
        )
    mapref = f"{schema}_fenced"
    queue = f"cl-{TOKEN}-fence"
    settings = make_settings({mapref: _paced_mapping(schema)})
    settings = settings.model_copy(
        update={"celery": settings.celery.model_copy(update={"queue": queue})}
    )
    celery_conf = dict(base_config["celery"])
    celery_conf["broker_transport_options"] = {
        **celery_conf["broker_transport_options"],
        # restore unacked messages every second (not every 100 s), so redelivery follows
        # the visibility timeout closely
        "unacked_restore_interval": 1,
        "unacked_restore_throttle": 1,
        "unacked_mutex_expire": 5,
    }
    config = tmp_path / "fence.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                **base_config,
                "celery": celery_conf,
                # A frozen inside a batch loses its session (and its locks) after 3 s
                "target_sessions": {"idle_in_transaction_timeout_s": 3},
            }
        )
    )
    env = {"CHORDLOAD_VISIBILITY_TIMEOUT_S": "8"}
    workers = {
        name: WorkerProcess(
            config,
            queue=queue,
            name=f"{name}-{TOKEN}",
            concurrency=1,
            log_path=tmp_path / f"{name}.log",
            extra_env=env,
        )
        for name in ("a", "b")
    }
    metadata = get_engine(settings.metadata)
    frozen = first = None
    try:
        workers["a"].start()
        first = launch(mapref, settings=settings, chunks_override=1)
        chunk = wait_until(
            lambda: next(
                (
                    c
                    for c in store.get_chunks(metadata, first)
                    if c.status is ChunkStatus.RUNNING and c.batches_done >= 3
                ),
                None,
            ),
            what="the chunk in the middle of its batches",
        )
        frozen = workers["a"].proc.pid
        if freeze_at == "recording a batch":
            _stop_while_recording_a_batch(frozen, metadata, first, chunk.chunk_no)
        else:
            os.killpg(frozen, signal.SIGSTOP)
        with wh.begin() as conn:  # the pace was for freezing A mid-chunk; B reads at full speed
            conn.execute(
                text(
                    f'CREATE OR REPLACE FUNCTION "{schema}".paced() RETURNS boolean '
                    "LANGUAGE plpgsql VOLATILE AS $$ BEGIN RETURN true; END $$"
                )
            )
        workers["b"].start()
        run = wait(first, settings=settings, timeout_s=120)
        assert run.status is RunStatus.SUCCESS, run.message
        assert store.get_chunk(metadata, first, chunk.chunk_no).attempts >= 2

        with wh.begin() as conn:  # newer data, then a newer run loads it
            conn.execute(
                text(
                    f"UPDATE \"{schema}\".customers SET name = name || ' v2', "
                    "updated_at = updated_at + INTERVAL '1 day'"
                )
            )
        second = wait(launch(mapref, settings=settings), settings=settings, timeout_s=120)
        assert second.status is RunStatus.SUCCESS, second.message

        os.killpg(frozen, signal.SIGCONT)
        frozen = None
        inspect = client_app(settings).control.inspect(
            destination=[workers["a"].hostname], timeout=2
        )
        wait_until(
            lambda: (inspect.active() or {}).get(workers["a"].hostname) == [],
            timeout_s=60,
            what="the woken worker to end its attempt",
        )
    finally:
        if frozen is not None:
            os.killpg(frozen, signal.SIGCONT)
        for worker in workers.values():
            worker.stop()
        if first is not None:
            _drop_hold(metadata, first)

    target, source = f'"{schema}".dim_customer', f'"{schema}".customers'
    current = f"SELECT {BUSINESS_COLUMNS} FROM {target} WHERE dw_is_current"
    assert diff_count(wh, current, f"SELECT {BUSINESS_COLUMNS} FROM {source}") == 0
    with wh.connect() as conn:
        versions = conn.execute(text(f"SELECT count(*), count(DISTINCT id) FROM {target}")).one()
    assert tuple(versions) == (2 * ROWS, ROWS), "exactly one version per key and run"
    first_run, second_run = (store.get_run(metadata, r) for r in (first, second.run_id))
    assert (first_run.rows_read, first_run.rows_inserted, first_run.rows_changed) == (ROWS, ROWS, 0)
    assert (second_run.rows_read, second_run.rows_inserted, second_run.rows_changed) == (
        ROWS,
        0,
        ROWS,
    )


def test_a_run_is_not_resumed_over_a_newer_run(
    workers, base_config, make_settings, wh, schema, tmp_path, capsys, clean_cli_env
):
    """Resuming an older run after a newer one loaded would write older values over newer:
    refused (exit 4), with what to do instead."""
    create_customers(wh, schema, 50)
    settings = make_settings({schema: scd2_mapping(schema)})
    metadata = get_engine(settings.metadata)
    older = wait(launch(schema, settings=settings), settings=settings, timeout_s=60)
    store.set_run_status(
        metadata, older.run_id, RunStatus.FAILED, only_from={RunStatus.SUCCESS}, message="say"
    )
    newer = wait(launch(schema, settings=settings), settings=settings, timeout_s=60)
    assert newer.status is RunStatus.SUCCESS
    config = write_config(tmp_path / "resume.yaml", base_config)
    result = run_cli(capsys, "--config", config, "resume", older.run_id)
    code, err = result.code, result.err
    assert code == 4, result
    assert newer.run_id in err and f"chordload run {schema}" in err
    assert store.get_run(metadata, older.run_id).status is RunStatus.FAILED
