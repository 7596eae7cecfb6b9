"""The operator's view, driven as a person drives it: `run --wait` in an 80-column
pseudo-terminal, Ctrl-C as a real SIGINT, `status`, `watch --timeout-s`, `stop` and
`validate`, a queue no worker consumes and a broker that is down."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import text

from coordinator.launch import launch
from coordinator.watch import wait
from shared.config.settings import load_settings
from shared.engines import get_engine
from shared.metadata import store
from shared.run.statuses import RunStatus
from tests.cliutil import process_log_count, run_cli, write_config
from tests.opsutil import free_port, wait_for
from tests.pgdata import create_customers, scd2_mapping
from tests.ptyutil import PtyProcess, screen_lines
from tests.ptyutil import bar_width as _bar_width


def _mapping(schema: str) -> dict:
    return scd2_mapping(schema, chunking={"rows_per_chunk": 1_000, "min_rows_for_parallel": 0})


def _fits(lines: list[str], columns: int = 80) -> None:
    """Every line fits, but an indented command to copy (kept whole: the terminal wraps it)."""
    wide = [line for line in lines if len(line.rstrip()) > columns and line[:2] != "  "]
    assert not wide, "\n".join(wide)


def test_a_run_nobody_consumes_says_so_and_ctrl_c_leaves_it_running(
    clean_cli_env, base_config, wh, schema, tmp_path, capsys
):
    """No worker consumes the run's queue: `run --wait` says so within seconds, naming the
    queue and the command that starts a worker; Ctrl-C ends the command (130) with a line that
    says the run continues and how to watch or stop it. Then `status`, `watch --timeout-s`
    (its own exit code) and `stop` (chunks REVOKED, not failed) on that run."""
    create_customers(wh, schema, 2_000)
    queue = f"{base_config['celery']['queue']}-nobody"
    mapref = f"idle_{schema}"
    path = write_config(
        tmp_path / "chordload.yaml",
        base_config,
        {mapref: _mapping(schema)},
        celery={**base_config["celery"], "queue": queue},
    )
    cli = PtyProcess("run", mapref, "--wait", "--chunks", "2", "--config", path)
    try:
        run_id = cli.read_until(r"run (\w+) started", timeout_s=60).group(1)
        warning = cli.read_until(r"no worker consumes queue '([^']+)'.*?-n w1@%h", timeout_s=15)
        assert warning.group(1) == queue
        assert f"celery -A workers worker --queues {queue} -n w1@%h" in warning.group(0)
        assert f"CHORDLOAD_CONFIG={path}" in warning.group(0)
        cli.interrupt()
        code = cli.wait(timeout_s=30)
    finally:
        cli.kill()
    assert code == 130, cli.text
    tail = " ".join(cli.text.split())
    assert f"interrupted: run {run_id} continues on the workers" in tail, cli.text
    assert f"chordload watch {run_id} --config {path}" in tail
    assert f"chordload stop {run_id} --config {path}" in tail
    assert "Traceback" not in cli.text
    _fits(screen_lines(cli.raw))

    metadata = get_engine(base_config["metadata"])
    assert store.get_run(metadata, run_id).status.value == "RUNNING"  # it did go on

    status = run_cli(capsys, "status", run_id, "--config", path)
    assert status.code == 0, status
    assert "2 pending; 2 total" in status.out, status.out
    assert f"no worker consumes queue '{queue}'" in " ".join(status.out.split())
    assert "PENDING" not in status.out  # the chunks themselves only with --chunks
    _fits(status.out.splitlines())

    watch = run_cli(capsys, "watch", run_id, "--timeout-s", "0.5", "--config", path)
    assert watch.code == 5, watch
    assert "exit code 5" in watch.err and "the run goes on" in watch.err, watch
    assert f"run {run_id} is still RUNNING" in watch.err
    assert f"chordload stop {run_id}" in watch.err

    validate = run_cli(capsys, "validate", "--config", path)
    assert validate.code == 0, validate  # a queue without a worker is a warning, not INVALID
    assert f"workers: WARNING: no worker consumes queue '{queue}'" in validate.err, validate
    assert f"{mapref}: ok" in validate.out and "broker: ok" in validate.out

    stopped = run_cli(capsys, "stop", run_id, "--config", path)
    assert stopped.code == 0 and "2 pending chunks revoked" in stopped.out, stopped
    status = run_cli(capsys, "status", run_id, "--chunks", "--config", path)
    assert status.code == 0, status
    assert "2 revoked; 2 total" in status.out and "failed" not in status.out, status.out
    assert len(re.findall(r"^\s*\d+\s+REVOKED\s", status.out, re.M)) == 2, status.out
    _fits(status.out.splitlines())

    listing = run_cli(capsys, "status", "--config", path)
    assert listing.code == 0 and run_id in listing.out, listing
    _fits(listing.out.splitlines())
    header = next(line for line in listing.out.splitlines() if "run_id" in line)
    assert header.split() == [
        "run_id", "mapref", "status", "started", "(UTC)", "took", "rows", "read"
    ]  # fmt: skip
    row = next(line for line in listing.out.splitlines() if run_id in line)
    assert row.split()[:3] == [run_id, mapref, "STOPPED"], listing.out  # nothing folded

    watch = run_cli(capsys, "watch", run_id, "--config", path)
    assert watch.code == 3 and f"run {run_id} already ended: STOPPED" in watch.out, watch


@pytest.mark.e2e
def test_progress_at_80_columns_ends_at_100_percent_of_the_rows_read(
    workers, clean_cli_env, base_config, wh, schema, tmp_path
):
    """The live bar at 80 columns: every drawn line fits, the bar keeps 20+ characters, and
    the last frame shows 100% of the rows actually read; the workers log each chunk's start
    and end."""
    create_customers(wh, schema, 3_000)
    mapref = f"bar_{schema}"
    path = write_config(tmp_path / "chordload.yaml", base_config, {mapref: _mapping(schema)})
    cli = PtyProcess("run", mapref, "--wait", "--chunks", "3", "--config", path)
    try:
        code = cli.wait(timeout_s=90)
    finally:
        cli.kill()
    assert code == 0, cli.text
    lines = screen_lines(cli.raw)
    _fits(lines)
    bars = [line for line in lines if "rows/s" in line and "ETA" in line]
    assert bars, cli.text
    final = bars[-1]
    assert "100%" in final and "3k/3k rows" in final and "3/3 chunks" in final, final
    assert _bar_width(final) >= 20, final
    run_id = re.search(r"run (\w+) started", cli.text).group(1)
    assert "status     SUCCESS" in cli.text or "SUCCESS" in cli.text

    def chunk_lines() -> list[str]:
        text = workers.log_path.read_text(errors="replace")
        return [line for line in text.splitlines() if run_id in line and "chunk" in line]

    wait_for(
        lambda: sum(" ended SUCCESS" in line for line in chunk_lines()) == 3,
        timeout_s=30,
        what="three 'chunk ... ended SUCCESS' lines in the worker log",
    )
    assert sum(" started" in line for line in chunk_lines()) >= 3, chunk_lines()


def test_broker_down_at_launch_names_it_and_leaves_no_run(
    clean_cli_env, base_config, wh, schema, tmp_path, capsys
):
    create_customers(wh, schema, 100)
    mapref = f"nobroker_{schema}"
    port = free_port()
    dead = f"redis://:hunter2-pw@127.0.0.1:{port}/0"
    path = write_config(
        tmp_path / "chordload.yaml",
        base_config,
        {mapref: _mapping(schema)},
        broker=dead,
        result_backend=dead,
    )
    result = run_cli(capsys, "run", mapref, "--wait", "--config", path)
    assert result.code == 2, result
    assert f"cannot reach the broker redis://:***@127.0.0.1:{port}/0" in result.err, result
    assert "Nothing was launched" in result.err and "Start Redis" in result.err
    assert "hunter2" not in result.err + result.out
    assert process_log_count(base_config["metadata"], mapref) == 0

    validate = run_cli(capsys, "validate", "--config", path)
    assert validate.code == 2, validate
    assert f"broker: INVALID: cannot reach the broker redis://:***@127.0.0.1:{port}/0" in (
        validate.err
    )
    assert f"{mapref}: ok" in validate.out  # the mapping itself is fine


@pytest.mark.e2e
def test_chunks_behind_busy_workers_are_reported_until_a_slot_frees(
    workers, clean_cli_env, base_config, session_settings, wh, schema, tmp_path, capsys
):
    """Both worker slots run another run's chunks (held on a lock of their target table): a
    second run's `run --wait` and `status` say its chunks wait behind 2 other tasks, naming the
    queue; once the lock goes, its chunks run and the command ends SUCCESS."""
    create_customers(wh, schema, 2_000, table="busy_src")
    create_customers(wh, schema, 1_000, table="next_src")
    busy = scd2_mapping(schema, table="busy_src", target="busy_dim")
    mappings = {"busy": busy, "next": scd2_mapping(schema, table="next_src", target="next_dim")}
    path = write_config(tmp_path / "chordload.yaml", base_config, mappings)
    settings = load_settings(path)
    first = launch("busy", settings=settings, chunks_override=2)
    assert wait(first, settings=settings, timeout_s=60).status is RunStatus.SUCCESS

    metadata = get_engine(base_config["metadata"])
    queue = session_settings.celery.queue
    holder = wh.connect()
    lock = holder.begin()
    cli = None
    try:
        # every chunk of a full reload writes to the target: both slots block on this lock
        holder.execute(text(f'LOCK TABLE "{schema}"."busy_dim" IN EXCLUSIVE MODE'))
        blocked = launch("busy", settings=settings, chunks_override=2, full=True)
        wait_for(
            lambda: store.progress_totals(metadata, blocked)["status_running"] == 2,
            timeout_s=30,
            what="both chunks of the blocked run RUNNING",
        )
        cli = PtyProcess("run", "next", "--wait", "--chunks", "2", "--config", path)
        run_id = cli.read_until(r"run (\w+) started", timeout_s=60).group(1)
        cli.read_until(
            rf"the run's 2 chunk\(s\) wait in queue '{queue}': its 1 worker\(s\) are busy "
            rf"with 2 other task\(s\) \({workers.hostname}\)",
            timeout_s=20,
        )
        status = run_cli(capsys, "status", run_id, "--config", path)
        assert "2 pending; 2 total" in status.out, status.out
        assert f"wait in queue '{queue}'" in " ".join(status.out.split()), status.out
    except BaseException:
        if cli is not None:
            cli.kill()
        raise
    finally:
        lock.rollback()
        holder.close()
    try:
        # (a presence check may still say "a worker took the run's chunks" first, or the run
        # may end before the next check: either way the command ends with its summary)
        cli.read_until(r"status SUCCESS", timeout_s=60)
        assert cli.wait(timeout_s=60) == 0, cli.text
    finally:
        cli.kill()
    assert wait(blocked, settings=settings, timeout_s=60).status is RunStatus.SUCCESS
