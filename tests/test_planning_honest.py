"""Honest, visible, interruptible planning: a stale low estimate is confirmed by a bounded
count (parallel chunks after all, and the summary sets estimate, count and rows read side by
side with a warning); ``chordload plan`` shows the same plan and writes nothing; a run is
PLANNING from the start, shows its step, and is ended by ``stop``, by SIGTERM of the CLI or
by ``planning.timeout_s``, with its source query cancelled each time."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import threading
import time
import uuid

import pytest
from sqlalchemy import text

from coordinator import planning_guard
from coordinator.launch import launch
from coordinator.planning_guard import PlanningGuard
from coordinator.resume import resume
from shared.dialects import adapter_for
from shared.engines import get_engine
from shared.errors import PlanningCancelled, RunRefusedError
from shared.lifecycle.reconcile import reconcile
from shared.metadata import store
from shared.metadata.models import ProcessLog
from shared.run.statuses import RunStatus
from shared.timeutil import utcnow
from tests.cliutil import CHORDLOAD, CONFIG_ENV, REPO, run_cli, table_exists, write_config
from tests.pgdata import BASE_TS, scalar

pytestmark = pytest.mark.e2e


def _events(wh, schema: str, rows: int) -> str:
    """A source without an index on updated_at and without autovacuum: its statistics stay
    as ANALYZE left them, as after a bulk load no one analyzed."""
    table = f'"{schema}"."events"'
    with wh.begin() as conn:
        conn.execute(
            text(
                f"CREATE TABLE {table} (id bigint PRIMARY KEY, name text, "
                f"updated_at timestamp NOT NULL) WITH (autovacuum_enabled = false)"
            )
        )
        conn.execute(
            text(
                f"INSERT INTO {table} SELECT g, 'event ' || g, TIMESTAMP '{BASE_TS}' "
                f"+ g * INTERVAL '1 second' FROM generate_series(1, :n) g"
            ),
            {"n": rows},
        )
        conn.execute(text(f"ANALYZE {table}"))
    return table


def _mapping(schema: str, query: str, **chunking) -> dict:
    return {
        "source": {"connection": "wh", "query": query},
        "target": {"connection": "wh", "table": f"{schema}.dim_events"},
        "keys": ["id"],
        "scd": {"type": 2},
        "checkpoint": {"strategy": "KEY", "column": "updated_at"},
        "chunking": {"rows_per_chunk": 10_000, "min_rows_for_parallel": 20_000, **chunking},
    }


def test_stale_statistics_still_get_parallel_chunks(
    workers, clean_cli_env, base_config, wh, schema, tmp_path, capsys
):
    table = _events(wh, schema, 1_000)
    mapref = f"stale_{schema}"
    query = f"SELECT id, name, updated_at FROM {table}"
    path = write_config(tmp_path / "c.yaml", base_config, {mapref: _mapping(schema, query)})
    first = run_cli(capsys, "run", mapref, "--wait", "--timeout-s", "120", "--config", path)
    assert first.code == 0, first
    with wh.begin() as conn:  # 30,000 newer rows, statistics not refreshed
        conn.execute(
            text(
                f"INSERT INTO {table} SELECT g, 'late ' || g, TIMESTAMP '{BASE_TS}' "
                f"+ INTERVAL '1 day' + g * INTERVAL '1 millisecond' "
                f"FROM generate_series(1001, 31000) g"
            )
        )
    metadata = get_engine(base_config["metadata"])
    runs_before = len(store.recent_runs(metadata, 1000))
    checkpoint_before = store.get_checkpoint(metadata, mapref).value

    # the dry run shows the plan the run will follow, and writes nothing
    dry = run_cli(capsys, "plan", mapref, "--json", "--config", path)
    assert dry.code == 0, dry
    preview = json.loads(dry.out)
    assert preview["estimated_rows"] < 20_000  # the premise: the planner's figure is stale
    assert preview["counted_rows"] == 20_001  # the count stopped one past the threshold
    assert [c["rows"] for c in preview["chunks"]] and preview["rows"] == 30_001
    assert len(preview["chunks"]) == 3 and min(c["rows"] for c in preview["chunks"]) > 5_000
    assert preview["target_ddl"] == []  # it exists
    assert len(store.recent_runs(metadata, 1000)) == runs_before
    assert store.get_checkpoint(metadata, mapref).value == checkpoint_before

    result = run_cli(capsys, "run", mapref, "--wait", "--timeout-s", "120", "--config", path)
    assert result.code == 0, result
    run = store.latest_run(metadata, mapref)
    assert (run.chunks_total, run.counted_rows, run.rows_read) == (3, 20_001, 30_001)
    assert run.estimated_rows == preview["estimated_rows"]
    out = " ".join(result.out.split())  # the summary table may fold lines
    assert f"{run.estimated_rows:,} estimated, 20,001 counted" in out
    assert "30,001 read" in out
    assert "statistics are probably stale" in out  # >10x off: warned
    shown = run_cli(capsys, "status", run.run_id, "--json", "--config", path)
    summary = json.loads(shown.out)
    assert summary["counted_rows"] == 20_001 and "x off" in summary["estimate_warning"]


def test_plan_of_a_new_target_shows_its_ddl_and_writes_nothing(
    clean_cli_env, base_config, wh, schema, tmp_path, capsys
):
    table = _events(wh, schema, 5_000)
    mapref = f"dry_{schema}"
    mapping = _mapping(
        schema, f"SELECT id, name, updated_at FROM {table}", min_rows_for_parallel=1_000
    )
    mapping["chunking"]["rows_per_chunk"] = 2_000
    path = write_config(tmp_path / "c.yaml", base_config, {mapref: mapping})
    result = run_cli(capsys, "plan", mapref, "--config", path)
    assert result.code == 0, result
    out = result.out
    assert "nothing was written" in out and "3 chunks" in out
    assert "rows in the window: 5,000" in out
    assert f'CREATE TABLE "{schema}"."dim_events"' in out and "CREATE UNIQUE INDEX" in out
    assert not table_exists(wh, schema, "dim_events")
    metadata = get_engine(base_config["metadata"])
    assert store.latest_run(metadata, mapref) is None
    assert store.get_checkpoint(metadata, mapref) is None


def _slow_source(wh, schema: str) -> str:
    """A query whose every row costs 0.1 s: max(updated_at) takes 30 s."""
    table = _events(wh, schema, 300)
    with wh.begin() as conn:
        conn.execute(
            text(
                f'CREATE FUNCTION "{schema}".slow(x bigint) RETURNS bigint LANGUAGE sql '
                f"VOLATILE AS $$ SELECT pg_sleep(0.1); SELECT x $$"
            )
        )
    return f'SELECT id, name, updated_at FROM {table} WHERE "{schema}".slow(id) > 0'


def _source_query_gone(wh, schema: str, deadline_s: float = 10) -> bool:
    """No statement of the slow source query is still running on the source."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        running = scalar(
            wh,
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
            "AND query LIKE :q AND pid <> pg_backend_pid()",
            q=f'%"{schema}".slow(id)%',
        )
        if running == 0:
            return True
        time.sleep(0.1)
    return False


def test_planning_timeout_fails_the_run_and_cancels_the_query(make_settings, wh, schema):
    query = _slow_source(wh, schema)
    mapref = f"slow_{schema}"
    settings = make_settings({mapref: _mapping(schema, query)})
    settings = settings.model_copy(
        update={"planning": settings.planning.model_copy(update={"timeout_s": 1.5})}
    )
    started = time.monotonic()
    with pytest.raises(PlanningCancelled) as ended:
        launch(mapref, settings=settings)
    assert time.monotonic() - started < 10  # not the 30 s the query would take
    assert ended.value.exit_code == 1
    run = store.latest_run(get_engine(settings.metadata), mapref)
    assert run.status is RunStatus.FAILED
    assert "planning.timeout_s (1.5 s)" in run.message
    assert "reading the high-water mark" in run.message
    assert _source_query_gone(wh, schema)
    assert not table_exists(wh, schema, "dim_events")
    with pytest.raises(RunRefusedError, match="ended while planning"):
        resume(run.run_id, settings=settings)  # nothing was planned to resume


def _start_run(mapref: str, path) -> subprocess.Popen:
    """``chordload run MAPREF --wait`` as its own process (signals go to it alone)."""
    env = {k: v for k, v in os.environ.items() if k not in CONFIG_ENV}
    return subprocess.Popen(
        [str(CHORDLOAD), "run", mapref, "--wait", "--config", str(path)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _planning(proc: subprocess.Popen, step: str) -> str:
    """Read the CLI's lines until it says planning is on ``step``; returns what it printed."""
    seen = ""
    assert proc.stdout is not None
    for line in proc.stdout:
        seen += line
        if step in line:
            return seen
    raise AssertionError(f"the CLI ended without reaching '{step}': {seen}")


def test_planning_is_visible_and_ends_on_stop_ctrl_c_or_sigterm(
    clean_cli_env, base_config, wh, schema, tmp_path, capsys
):
    query = _slow_source(wh, schema)
    mapref = f"plan_{schema}"
    path = write_config(tmp_path / "c.yaml", base_config, {mapref: _mapping(schema, query)})
    metadata = get_engine(base_config["metadata"])
    step = "reading the high-water mark"

    proc = _start_run(mapref, path)
    _planning(proc, step)
    status = run_cli(capsys, "status", mapref, "--config", path)
    assert "PLANNING" in status.out and step in " ".join(status.out.split())
    stopped = run_cli(capsys, "stop", mapref, "--config", path)
    assert stopped.code == 0, stopped
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 3, (out, err)
    assert "STOPPED" in out
    run = store.latest_run(metadata, mapref)
    assert run.status is RunStatus.STOPPED and "stopped while planning" in run.message
    assert _source_query_gone(wh, schema)

    for sig in (signal.SIGINT, signal.SIGTERM):  # Ctrl-C, and a service manager's stop
        proc = _start_run(mapref, path)
        _planning(proc, step)
        if sig is signal.SIGINT:  # meanwhile `watch` shows the step too
            run_id = store.latest_run(metadata, mapref).run_id
            watched = run_cli(capsys, "watch", run_id, "--timeout-s", "0.5", "--config", path)
            assert f"{run_id} PLANNING: {step}" in " ".join(watched.out.split())
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 130, (sig, out, err)
        assert "planning was interrupted" in err and "cancelled" in err
        run = store.latest_run(metadata, mapref)
        assert run.status is RunStatus.STOPPED and "planning was interrupted" in run.message
        assert _source_query_gone(wh, schema)
    assert not table_exists(wh, schema, "dim_events")


@pytest.fixture(params=["pg", "mdb", "lite"])
def any_db(request, pg_urls, mariadb_url, sqlite_url, schema):
    url = {"pg": pg_urls["wh"], "mdb": mariadb_url, "lite": sqlite_url}[request.param]
    engine = get_engine(url)
    table = f"{schema}.nums" if request.param == "pg" else f"nums_{schema}"
    with engine.begin() as conn:
        conn.execute(text(f"CREATE TABLE {table} (n int)"))
        conn.execute(text(f"INSERT INTO {table} VALUES {', '.join(f'({i})' for i in range(10))}"))
    yield request.param, adapter_for(engine), table
    if request.param != "pg":  # the schema fixture drops the Postgres one
        with engine.begin() as conn:
            conn.execute(text(f"DROP TABLE {table}"))


def test_the_bounded_count_stops_at_its_limit_and_a_statement_can_be_cancelled(any_db):
    kind, adapter, table = any_db
    query = f"SELECT n FROM {table}"
    with adapter.engine.connect() as conn:
        assert adapter.count_up_to(conn, query, "src.n >= :m", {"m": 3}, 4) == 4
        assert adapter.count_up_to(conn, query, "src.n >= :m", {"m": 3}, 100) == 7
    if kind == "lite":
        return  # one file, nothing runs long enough to cancel
    sleep = "SELECT pg_sleep(30)" if kind == "pg" else "SELECT SLEEP(30)"
    ended: list[float] = []
    with adapter.engine.connect() as conn:

        def run() -> None:
            started = time.monotonic()
            try:
                conn.execute(text(sleep)).all()
            except Exception:  # PostgreSQL raises QueryCanceled; SLEEP() on MariaDB returns 1
                pass
            ended.append(time.monotonic() - started)

        worker = threading.Thread(target=run)
        worker.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not _statement_running(adapter, sleep):
            time.sleep(0.05)
        adapter.cancel_statement(conn)
        worker.join(timeout=15)
    assert ended and ended[0] < 10, ended  # cancelled, not the 30 s


def _statement_running(adapter, sql: str) -> bool:
    listing = (
        "SELECT count(*) FROM pg_stat_activity WHERE query = :q AND state = 'active'"
        if adapter.name == "postgresql"
        else "SELECT count(*) FROM information_schema.processlist WHERE info = :q"
    )
    with adapter.engine.connect() as conn:
        return bool(conn.execute(text(listing), {"q": sql}).scalar_one())


class _CancelSpy:
    """A source adapter whose every cancel is seen by the test: ``cancels`` counts them,
    ``cancelled`` is set once the first one has been sent."""

    def __init__(self, adapter):
        self.adapter = adapter
        self.cancels = 0
        self.cancelled = threading.Event()

    def cancel_statement(self, conn) -> None:
        self.adapter.cancel_statement(conn)
        self.cancels += 1
        self.cancelled.set()


def test_a_cancel_sent_before_the_statement_starts_still_ends_it(wh, schema, base_config):
    """Planning is ended just after a step begins and before its statement reaches the
    source: PostgreSQL drops a cancel request that finds the connection idle, so the
    statement that follows must be cancelled too, not left to run its 30 s."""
    sleep = f"SELECT pg_sleep(30) /* {schema} */"
    spy = _CancelSpy(adapter_for(wh))
    guard = PlanningGuard(
        get_engine(base_config["metadata"]), "idle-cancel", 0.3, poll_s=0.05, status_every_s=3600
    )

    def plan() -> None:
        with wh.connect() as conn, guard.source(spy, conn):  # type: ignore[arg-type]
            assert spy.cancelled.wait(10), "planning.timeout_s never cancelled"
            conn.execute(text(sleep)).all()  # starts after the cancel was sent

    started = time.monotonic()
    with pytest.raises(PlanningCancelled, match="planning.timeout_s"):
        guard.run(plan)
    assert time.monotonic() - started < 10, spy.cancels  # not the 30 s of the statement
    assert not _statement_running(adapter_for(wh), sleep)


def test_an_interrupt_waits_for_the_planning_thread_to_end(base_config):
    """SIGTERM of ``chordload run`` while planning: the guard returns only once planning
    has ended, since the process exits right after it (with a statement still running it
    would stay on the source). Python 3.11 takes a thread whose ``join`` a signal handler
    interrupted for ended (python/cpython#90882)."""
    assert threading.current_thread() is threading.main_thread()  # where signals are handled
    ended = threading.Event()

    class SlowToEnd:  # a source that takes a moment to answer the cancel
        def cancel_statement(self, conn) -> None:
            pass

    guard = PlanningGuard(
        get_engine(base_config["metadata"]), "interrupted", 60, status_every_s=3600, sigterm=True
    )

    def plan() -> None:
        with guard.source(SlowToEnd(), None):  # type: ignore[arg-type]
            time.sleep(0.2)  # a moment into planning, while the guard supervises it,
            os.kill(os.getpid(), signal.SIGTERM)  # SIGTERM (handled in the main thread)
            deadline = time.monotonic() + 10
            while guard.cancellation is None and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.5)  # the statement's end, after the cancel
            ended.set()

    with pytest.raises(PlanningCancelled, match="planning was interrupted") as raised:
        guard.run(plan)
    assert raised.value.exit_code == 130
    assert ended.is_set()  # planning had ended when the guard returned


def test_a_source_that_ignores_the_cancel_does_not_hang_the_coordinator(base_config, monkeypatch):
    """A source that cannot be reached (or ignores cancel requests) keeps planning's
    statement going: the guard waits for it up to its grace, then ends anyway and says the
    statement may still be running there, rather than hang the operator's terminal."""
    monkeypatch.setattr(planning_guard, "CANCEL_GRACE_S", 1.0)
    release = threading.Event()

    class Unreachable:  # every cancel request is lost
        cancels = 0

        def cancel_statement(self, conn) -> None:
            Unreachable.cancels += 1

    guard = PlanningGuard(
        get_engine(base_config["metadata"]), "unreachable", 0.3, poll_s=0.05, status_every_s=3600
    )

    def plan() -> None:
        with guard.source(Unreachable(), None):  # type: ignore[arg-type]
            release.wait(60)  # a statement that does not end

    started = time.monotonic()
    try:
        with pytest.raises(PlanningCancelled, match="planning.timeout_s") as raised:
            guard.run(plan)
        waited_s = time.monotonic() - started
    finally:
        release.set()
    assert "may still be running on the source" in str(raised.value)
    assert 1.0 < waited_s < 10, waited_s
    assert Unreachable.cancels > 1  # the cancel was sent again while the guard waited


def test_reconcile_fails_a_run_whose_planner_died(make_settings):
    """A run left PLANNING past planning.timeout_s (its `chordload run` was SIGKILLed) is
    failed by reconcile, which frees the mapping; a run still within it is left alone."""
    settings = make_settings({})
    metadata = get_engine(settings.metadata)
    now = utcnow()
    timeout_s = settings.planning.timeout_s
    dead, alive = f"dead_{uuid.uuid4().hex[:8]}", f"alive_{uuid.uuid4().hex[:8]}"
    for mapref, age_s in ((dead, timeout_s + 60), (alive, 5)):
        store.begin_planning(
            metadata,
            ProcessLog(
                run_id=uuid.uuid4().hex[:12],
                mapref=mapref,
                created_at=now - dt.timedelta(seconds=age_s),
                load_kind="incremental",
                mapping={},
                planning_step="estimating rows",
            ),
        )
    actions = [a for a in reconcile(settings, now) if a.mapref in (dead, alive)]
    assert [(a.mapref, a.action, a.status) for a in actions] == [(dead, "failed", "FAILED")]
    failed = store.latest_run(metadata, dead)
    assert failed.status is RunStatus.FAILED and store.active_run(metadata, dead) is None
    assert "coordinator presumably died" in failed.message and "estimating rows" in failed.message
    assert store.latest_run(metadata, alive).status is RunStatus.PLANNING
    store.set_run_status(
        metadata,
        store.latest_run(metadata, alive).run_id,
        RunStatus.FAILED,
        only_from={RunStatus.PLANNING},
    )
