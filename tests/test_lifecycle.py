"""Run lifecycle with real workers: stop that revokes, resume, the paths that make every run
reach a terminal status, and the watch display."""

from __future__ import annotations

import os
import pty
import re
import signal
import subprocess
import sys
import time

import pytest
import redis
import yaml
from sqlalchemy import text

from coordinator.launch import launch
from coordinator.resume import resume
from coordinator.stop import stop
from coordinator.watch import wait
from shared.engines import get_engine
from shared.lifecycle.reconcile import reconcile
from shared.metadata import store
from shared.run.statuses import ChunkStatus, RunStatus
from tests.conftest import REDIS_URL, REPO, TOKEN
from tests.pgdata import (
    BUSINESS_COLUMNS,
    create_customers,
    paced_customers_query,
    plan_document,
    scd2_mapping,
)
from tests.worker_process import WorkerProcess

pytestmark = pytest.mark.e2e


def wait_until(condition, timeout_s: float = 60, interval_s: float = 0.05, what: str = ""):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what or condition}")


def _target_matches_source(wh, schema: str) -> None:
    target, source = f'"{schema}"."dim_customer"', f'"{schema}"."customers"'
    with wh.connect() as conn:
        diff = conn.execute(
            text(
                f"SELECT count(*) FROM ((SELECT {BUSINESS_COLUMNS} FROM {target} WHERE dw_is_current "
                f"EXCEPT ALL SELECT {BUSINESS_COLUMNS} FROM {source}) UNION ALL (SELECT "
                f"{BUSINESS_COLUMNS} FROM {source} EXCEPT ALL SELECT {BUSINESS_COLUMNS} FROM {target} "
                f"WHERE dw_is_current)) d"
            )
        ).scalar_one()
        versions = conn.execute(text(f"SELECT count(*) FROM {target}")).scalar_one()
        rows = conn.execute(text(f"SELECT count(*) FROM {source}")).scalar_one()
    assert diff == 0
    assert versions == rows, "a clean initial run writes exactly one version per key"


def test_stop_mid_run_then_resume(workers, make_settings, wh, schema):
    create_customers(wh, schema, 200_000)
    mapping = scd2_mapping(
        schema, batch_rows=2_000, chunking={"rows_per_chunk": 10_000, "min_rows_for_parallel": 1}
    )
    settings = make_settings({schema: mapping})
    metadata = get_engine(settings.metadata)
    run_id = launch(schema, settings=settings)
    wait_until(
        lambda: store.progress_totals(metadata, run_id)["chunks_done"] >= 2, what="two chunks done"
    )

    outcome = stop(run_id, settings=settings, reason="test")
    stopped_at = time.monotonic()
    assert outcome.new_request and outcome.revoked_task_ids
    again = stop(run_id, settings=settings)  # stopping twice is harmless
    assert not again.new_request and not again.revoked_task_ids
    run = wait(run_id, settings=settings, timeout_s=60, poll_s=0.05)
    assert time.monotonic() - stopped_at < 10, "STOPPED within about a batch's time"
    assert run.status is RunStatus.STOPPED
    assert run.checkpoint_to is None
    assert store.get_checkpoint(metadata, schema) is None, "a stopped run never moves it"
    chunks = store.get_chunks(metadata, run_id)
    by_status = {s: [c for c in chunks if c.status is s] for s in ChunkStatus}
    assert len(by_status[ChunkStatus.REVOKED]) == len(outcome.revoked_task_ids) >= 10
    assert all(c.attempts == 0 for c in by_status[ChunkStatus.REVOKED]), "none started after stop"
    assert not by_status[ChunkStatus.PENDING] and not by_status[ChunkStatus.RUNNING]
    assert len(by_status[ChunkStatus.SUCCESS]) >= 2
    # only whole committed batches: every chunk's rows are a whole number of batches unless
    # the chunk finished, and the target holds exactly what the chunks counted
    for c in by_status[ChunkStatus.STOPPED]:
        assert c.rows_read == c.batches_done * 2_000
    with wh.connect() as conn:
        in_target = conn.execute(text(f'SELECT count(*) FROM "{schema}".dim_customer')).scalar_one()
    assert in_target == sum(c.rows_inserted for c in chunks) == run.rows_inserted

    assert stop(run_id, settings=settings).status is RunStatus.STOPPED  # still harmless

    assert resume(run_id, settings=settings) == run_id
    run = wait(run_id, settings=settings, timeout_s=120)
    assert run.status is RunStatus.SUCCESS, run.message
    _target_matches_source(wh, schema)
    with wh.connect() as conn:
        max_ts = conn.execute(
            text(f'SELECT max(updated_at) FROM "{schema}".customers')
        ).scalar_one()
    assert store.get_checkpoint(metadata, schema).value["value"] == max_ts.isoformat()
    assert all(c.status is ChunkStatus.SUCCESS for c in store.get_chunks(metadata, run_id))


def test_revoked_header_task_finalizes_run(workers, make_settings, wh, schema):
    """A header task revoked behind chordload's back: Celery skips the chord body, the
    errback finalizes the run, and resume finishes it."""
    from shared.broker import client_app

    create_customers(wh, schema, 60_000)
    mapping = scd2_mapping(
        schema, batch_rows=2_000, chunking={"rows_per_chunk": 6_000, "min_rows_for_parallel": 1}
    )
    settings = make_settings({schema: mapping})
    metadata = get_engine(settings.metadata)
    run_id = launch(schema, settings=settings)
    last = store.get_chunks(metadata, run_id)[-1]
    client_app(settings).control.revoke(last.task_id)
    run = wait(run_id, settings=settings, timeout_s=60)
    assert run.status in (RunStatus.STOPPED, RunStatus.FAILED)
    assert store.get_chunk(metadata, run_id, last.chunk_no).status is ChunkStatus.REVOKED
    assert store.get_checkpoint(metadata, schema) is None
    resume(run_id, settings=settings)
    assert wait(run_id, settings=settings, timeout_s=60).status is RunStatus.SUCCESS
    _target_matches_source(wh, schema)


def test_lost_chord_callback_still_finishes_the_run(workers, make_settings, wh, schema):
    """The chord's size key vanishes from Redis, so the chord body never fires: the last
    chunk to end finalizes the run itself, and reconcile has nothing left to do."""
    from celery import states
    from celery.result import AsyncResult

    from shared.broker import client_app

    create_customers(wh, schema, 40_000)
    mapping = scd2_mapping(
        schema, batch_rows=1_000, chunking={"rows_per_chunk": 5_000, "min_rows_for_parallel": 1}
    )
    settings = make_settings({schema: mapping})
    metadata = get_engine(settings.metadata)
    client = redis.Redis.from_url(REDIS_URL)
    prefix = settings.celery.broker_transport_options["global_keyprefix"]
    before = set(client.scan_iter(match=f"{prefix}celery-taskset-meta-*.s"))
    run_id = launch(schema, settings=settings)
    keys = wait_until(
        lambda: set(client.scan_iter(match=f"{prefix}celery-taskset-meta-*.s")) - before,
        what="the chord's size key",
    )
    client.delete(*keys)
    run = wait(run_id, settings=settings, timeout_s=60)
    assert run.status is RunStatus.SUCCESS, run.message
    body = AsyncResult(f"{run_id}.0.finalize", app=client_app(settings))
    assert body.state == states.PENDING, "the chord body never ran"
    assert store.get_checkpoint(metadata, schema) is not None
    assert [a for a in reconcile(settings) if a.run_id == run_id] == []
    _target_matches_source(wh, schema)


def test_reconcile_finalizes_a_run_nobody_finalized(make_settings, session_settings):
    """All chunks ended but the run is still RUNNING (its finalizer died between the two
    writes): reconcile finalizes it, once."""
    import uuid

    from shared.metadata.models import ChunkLog, ProcessLog
    from shared.timeutil import utcnow

    metadata = get_engine(session_settings.metadata)
    run_id, mapref = uuid.uuid4().hex[:12], "orphan_" + uuid.uuid4().hex[:6]
    store.create_run(
        metadata,
        ProcessLog(
            run_id=run_id,
            mapref=mapref,
            status=RunStatus.RUNNING,
            created_at=utcnow(),
            started_at=utcnow(),
            load_kind="initial",
            chunks_total=2,
            chunks_done=0,
            chunks_failed=0,
            rows_read=0,
            rows_inserted=0,
            rows_changed=0,
            rows_unchanged=0,
            rows_errored=0,
            mapping=plan_document(),
        ),
        [
            ChunkLog(
                run_id=run_id,
                chunk_no=n,
                includes_nulls=n == 0,
                task_id=f"{run_id}.{n}",
                status=ChunkStatus.SUCCESS,
                rows_read=10,
                rows_inserted=10,
                rows_changed=0,
                rows_unchanged=0,
                rows_errored=0,
                batches_done=1,
                attempts=1,
                max_checkpoint={"type": "int", "value": 100 + n},
            )
            for n in range(2)
        ],
    )
    actions = [a for a in reconcile(session_settings) if a.run_id == run_id]
    assert [(a.action, a.status) for a in actions] == [("finalized", "SUCCESS")]
    run = store.get_run(metadata, run_id)
    assert (run.rows_read, run.chunks_done) == (20, 2)
    assert store.get_checkpoint(metadata, mapref).value == {"type": "int", "value": 101}
    assert [a for a in reconcile(session_settings) if a.run_id == run_id] == []


def test_worker_killed_during_last_chunk(
    session_settings, config_path, make_settings, wh, schema, tmp_path, workers
):
    """Kill the only worker of a queue while its chunk runs: heartbeats stop, reconcile fails
    the run after visibility timeout + grace, and resume on live workers completes it."""
    create_customers(wh, schema, 60_000)
    kill_queue = f"cl-{TOKEN}-kill"
    mapping = scd2_mapping(schema, batch_rows=500, chunking={"min_rows_for_parallel": 10**9})
    settings = make_settings({schema: mapping})
    doomed_settings = settings.model_copy(
        update={
            "celery": settings.celery.model_copy(
                update={"queue": kill_queue, "visibility_timeout_s": 2, "heartbeat_grace_s": 1}
            )
        }
    )
    worker = WorkerProcess(
        config_path,
        queue=kill_queue,
        name=f"doomed-{TOKEN}",
        concurrency=1,
        log_path=tmp_path / "doomed.log",
    )
    worker.start()
    metadata = get_engine(settings.metadata)
    try:
        run_id = launch(schema, settings=doomed_settings)
        wait_until(
            lambda: store.get_chunk(metadata, run_id, 0).batches_done >= 3,
            what="the chunk to be mid-way",
        )
        os.killpg(worker.proc.pid, signal.SIGKILL)
        worker.proc.wait(10)
    finally:
        worker.stop()
    assert store.get_run(metadata, run_id).status is RunStatus.RUNNING
    actions = wait_until(  # this run's actions: runs other tests left behind are not ours
        lambda: [a for a in reconcile(doomed_settings) if a.run_id == run_id],
        timeout_s=30,
        interval_s=0.5,
        what="reconcile to act",
    )
    assert [(a.run_id, a.action, a.status) for a in actions] == [(run_id, "failed", "FAILED")]
    run = store.get_run(metadata, run_id)
    assert "stopped heart-beating" in run.message
    assert store.get_checkpoint(metadata, schema) is None
    resume(run_id, settings=settings)
    assert wait(run_id, settings=settings, timeout_s=60).status is RunStatus.SUCCESS
    _target_matches_source(wh, schema)


def _cli(config_path, *args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "coordinator.cli", "--config", str(config_path), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture
def dim_config(config_path, base_config, schema, tmp_path):
    import yaml

    mapping = scd2_mapping(
        schema, batch_rows=1_000, chunking={"rows_per_chunk": 10_000, "min_rows_for_parallel": 1}
    )
    path = tmp_path / "chordload.yaml"
    path.write_text(yaml.safe_dump({**base_config, "mappings": {schema: mapping}}))
    return path


def test_stop_cli_errors(workers, dim_config, wh, schema):
    create_customers(wh, schema, 5_000)
    unknown = _cli(dim_config, "stop", "nosuchrun")
    assert unknown.returncode == 2 and "neither a run id nor a mapping" in unknown.stderr
    no_active = _cli(dim_config, "stop", schema)
    assert no_active.returncode == 2 and "no active run" in no_active.stderr
    done = _cli(dim_config, "run", schema, "--wait", "--json")
    assert done.returncode == 0, done.stderr
    run_id = re.search(r'"run_id": "(\w+)"', done.stdout).group(1)
    finished = _cli(dim_config, "stop", run_id)
    assert finished.returncode == 2 and "already finished: SUCCESS" in finished.stderr
    refused = _cli(dim_config, "resume", run_id)
    assert refused.returncode == 4 and "only a FAILED or STOPPED run" in refused.stderr


def test_watch_plain_and_terminal(workers, dim_config, wh, schema):
    create_customers(wh, schema, 100_000)
    config = yaml.safe_load(dim_config.read_text())
    # the run is still going when watch starts
    config["mappings"][schema]["source"]["query"] = paced_customers_query(wh, schema, every=20)
    dim_config.write_text(yaml.safe_dump(config))
    started = _cli(dim_config, "run", schema)
    assert started.returncode == 0, started.stderr
    run_id = started.stdout.strip()
    plain = _cli(dim_config, "watch", run_id, env={"CHORDLOAD_PROGRESS_INTERVAL_S": "0.2"})
    assert plain.returncode == 0, plain.stderr
    lines = [line for line in plain.stdout.splitlines() if line.startswith(run_id)]
    assert len(lines) >= 2, plain.stdout
    assert re.search(rf"{run_id} SUCCESS 100% rows 100,000/100,000 10/10 chunks", plain.stdout)
    assert "\x1b[" not in plain.stdout, "no terminal control codes when piped"
    assert "100,000 read: 100,000 inserted" in plain.stdout

    # terminal mode: a real pseudo-terminal, as a user at a shell would see it
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "coordinator.cli", "--config", str(dim_config), "watch", run_id],
        cwd=REPO,
        stdout=slave,
        stderr=slave,
        env={**os.environ, "COLUMNS": "120"},
    )
    os.close(slave)
    output = b""
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:
            break
        if not data:
            break
        output += data
    assert proc.wait(30) == 0
    os.close(master)
    screen = output.decode(errors="replace")
    # the run has ended: its summary, styled for the terminal (the live bar of a running
    # run in a terminal: tests/test_operator_cli.py)
    assert "\x1b[" in screen, "styled with control codes"
    assert f"run {run_id} already ended: SUCCESS" in screen
    assert "100,000 read: 100,000 inserted" in screen


def test_a_resumed_run_gets_a_fresh_deadline(workers, make_settings, wh, schema):
    """run_timeout_s counts from a launch's start: a run stopped, then resumed after its
    deadline (counted from its first start) has passed, is not failed by reconcile; it ends
    SUCCESS with the target equal to the source."""
    create_customers(wh, schema, 5_000)
    settings = make_settings({schema: scd2_mapping(schema, run_timeout_s=2)})
    # a queue no worker reads: the run stays RUNNING with its chunks pending
    idle = settings.model_copy(
        update={"celery": settings.celery.model_copy(update={"queue": f"cl-{TOKEN}-idle"})}
    )
    metadata = get_engine(settings.metadata)
    run_id = launch(schema, settings=idle)
    assert stop(run_id, settings=idle).status is RunStatus.STOPPED
    started = store.get_run(metadata, run_id).started_at
    wait_until(
        lambda: (
            store.get_run(metadata, run_id).ended_at is not None
            and time.time() - started.timestamp() > 3
        ),
        timeout_s=30,
        what="the first launch's deadline to pass",
    )
    resume(run_id, settings=idle)  # pending again, on the idle queue
    assert [a for a in reconcile(settings) if a.run_id == run_id] == [], "failed on resume"
    assert store.get_run(metadata, run_id).status is RunStatus.RUNNING
    stop(run_id, settings=idle)
    resume(run_id, settings=settings)  # now on the workers' queue
    run = wait(run_id, settings=settings, timeout_s=60)
    assert run.status is RunStatus.SUCCESS, run.message
    _target_matches_source(wh, schema)


def _with_queue(settings, queue: str, **celery):
    return settings.model_copy(
        update={"celery": settings.celery.model_copy(update={"queue": queue, **celery})}
    )


def test_reconcile_relaunches_chunks_whose_messages_were_lost(
    workers, config_path, make_settings, wh, schema, tmp_path, redis_prefix
):
    """The chunk messages vanish from Redis (a restart without persistence): nothing is
    queued, no worker holds them, nothing moves. Reconcile, called as beat would, relaunches
    those chunks under a new launch; the run ends SUCCESS with the target equal to the source."""
    create_customers(wh, schema, 30_000)
    mapping = scd2_mapping(
        schema, batch_rows=1_000, chunking={"rows_per_chunk": 5_000, "min_rows_for_parallel": 1}
    )
    queue = f"cl-{TOKEN}-lost"
    settings = _with_queue(make_settings({schema: mapping}), queue, lost_message_grace_s=1)
    metadata = get_engine(settings.metadata)
    client = redis.Redis.from_url(REDIS_URL)
    run_id = launch(schema, settings=settings)  # no worker reads this queue yet
    chunks = store.get_chunks(metadata, run_id)
    assert len(chunks) >= 6
    # kombu's list for the queue, under the global key prefix: one message per chunk
    assert client.llen(f"{redis_prefix}{queue}") == len(chunks)
    assert client.delete(f"{redis_prefix}{queue}") == 1
    worker = WorkerProcess(
        config_path,
        queue=queue,
        name=f"lost-{TOKEN}",
        concurrency=2,
        log_path=tmp_path / "lost.log",
    )
    worker.start()
    actions = []
    try:

        def terminal() -> bool:
            actions.extend(a for a in reconcile(settings) if a.run_id == run_id)
            return store.get_run(metadata, run_id).status.is_terminal

        wait_until(terminal, timeout_s=60, interval_s=0.5, what="the relaunched run to finish")
    finally:
        worker.stop()
    relaunched = [a for a in actions if a.action == "relaunched"]
    assert len(relaunched) == 1, actions
    assert relaunched[0].chunks == tuple(c.chunk_no for c in chunks)
    run = store.get_run(metadata, run_id)
    assert run.status is RunStatus.SUCCESS, run.message
    assert run.launches == 2
    assert "reconcile relaunched chunk(s) 0, 1" in run.plan_note  # shown by `chordload status`
    final = store.get_chunks(metadata, run_id)
    assert all(c.status is ChunkStatus.SUCCESS and c.task_id.endswith(".r1") for c in final)
    _target_matches_source(wh, schema)


def test_reconcile_relaunches_the_running_chunk_of_a_dead_worker(
    config_path, make_settings, wh, schema, tmp_path
):
    """A whole worker is SIGKILLed mid-chunk: its message stays unacknowledged in Redis until
    the visibility timeout (4 h by default), and the chunk stays RUNNING. Reconcile, called as
    beat would, sees no worker holding the task and relaunches the chunk; a new worker loads
    it and the run ends SUCCESS, exact, in seconds rather than hours."""
    create_customers(wh, schema, 30_000)
    mapping = scd2_mapping(schema, batch_rows=500)
    queue = f"cl-{TOKEN}-dead"
    settings = _with_queue(make_settings({schema: mapping}), queue, lost_message_grace_s=3)
    metadata = get_engine(settings.metadata)

    def worker(name: str) -> WorkerProcess:
        process = WorkerProcess(
            config_path,
            queue=queue,
            name=f"{name}-{TOKEN}",
            concurrency=1,
            log_path=tmp_path / f"{name}.log",
        )
        process.start()
        return process

    first = worker("doomed")
    second = None
    actions = []
    try:
        run_id = launch(schema, settings=settings, chunks_override=1)
        wait_until(
            lambda: store.get_chunks(metadata, run_id)[0].batches_done >= 2,
            what="the chunk in the middle of its batches",
        )
        os.killpg(first.proc.pid, signal.SIGKILL)
        first.proc.wait(10)
        first.stop()
        second = worker("heir")

        def terminal() -> bool:
            actions.extend(a for a in reconcile(settings) if a.run_id == run_id)
            return store.get_run(metadata, run_id).status.is_terminal

        wait_until(terminal, timeout_s=90, interval_s=0.5, what="the relaunched run to finish")
    finally:
        first.stop()
        if second is not None:
            second.stop()
    assert [a.action for a in actions if a.action == "relaunched"] == ["relaunched"], actions
    run = store.get_run(metadata, run_id)
    assert run.status is RunStatus.SUCCESS, run.message
    assert (run.rows_read, run.rows_inserted) == (30_000, 30_000)
    assert "reconcile relaunched chunk(s) 0" in run.plan_note
    _target_matches_source(wh, schema)


def test_reconcile_leaves_queued_and_working_runs_alone(workers, make_settings, wh, schema):
    """Messages waiting on a queue no worker reads yet are not lost; neither are the chunks of
    a run that workers are loading: reconcile (with a 1 s grace) relaunches neither."""
    create_customers(wh, schema, 30_000)
    mapping = scd2_mapping(
        schema, batch_rows=1_000, chunking={"rows_per_chunk": 5_000, "min_rows_for_parallel": 1}
    )
    settings = make_settings({schema: mapping})
    eager = settings.model_copy(
        update={"celery": settings.celery.model_copy(update={"lost_message_grace_s": 1})}
    )
    idle = _with_queue(settings, f"cl-{TOKEN}-waiting", lost_message_grace_s=1)
    metadata = get_engine(settings.metadata)

    run_id = launch(schema, settings=idle)
    time.sleep(2)  # past the grace, with nothing moving
    assert [a for a in reconcile(idle) if a.run_id == run_id] == []
    run = store.get_run(metadata, run_id)
    assert (run.status, run.launches) == (RunStatus.RUNNING, 1)
    assert stop(run_id, settings=idle).status is RunStatus.STOPPED

    run_id = launch(schema, settings=eager)
    actions = []

    def terminal() -> bool:
        actions.extend(a for a in reconcile(eager) if a.run_id == run_id)
        return store.get_run(metadata, run_id).status.is_terminal

    wait_until(terminal, timeout_s=60, interval_s=0.2, what="the run to finish")
    assert actions == [] or [a.action for a in actions] == ["finalized"], actions
    run = store.get_run(metadata, run_id)
    assert (run.status, run.launches) == (RunStatus.SUCCESS, 1), run.message
    _target_matches_source(wh, schema)
