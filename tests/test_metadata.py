"""The metadata database through the CLI: ``db upgrade`` on Postgres and SQLite (idempotent),
refusal to work on an un-migrated database, migration 0006 (checkpoint_change) up and down,
one active run per mapping (the unique partial index, exit 4 naming the active run), and
``status`` in all its forms."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest
from alembic import command
from sqlalchemy import create_engine, inspect, text

from shared.engines import get_engine
from shared.errors import RunRefusedError
from shared.metadata import store
from shared.metadata.models import ProcessLog
from shared.metadata.schema import _alembic_config, current_revision, head_revision, upgrade
from shared.run.statuses import RunStatus
from shared.timeutil import utcnow
from tests.cliutil import process_log_count, run_cli, write_config
from tests.conftest import PG_HOST, TOKEN
from tests.pgdata import create_customers, scd2_mapping

METADATA_TABLES = {
    "process_log",
    "chunk_log",
    "checkpoint",
    "stop_request",
    "error_row",
    "checkpoint_change",
    "alembic_version",
}


@pytest.fixture
def fresh_pg_url() -> Iterator[str]:
    name = f"cl_{TOKEN}_m{uuid.uuid4().hex[:6]}"
    admin = create_engine(f"{PG_HOST}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield f"{PG_HOST}/{name}"
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["postgres", "sqlite"])
def fresh_metadata_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'meta.db'}"
    return request.getfixturevalue("fresh_pg_url")


def test_db_upgrade_is_needed_first_then_idempotent(
    clean_cli_env, base_config, fresh_metadata_url, tmp_path, capsys
):
    path = write_config(
        tmp_path / "chordload.yaml",
        base_config,
        {"m": scd2_mapping("nowhere")},
        metadata=fresh_metadata_url,
    )
    for argv in (
        ["status"],
        ["status", "--json"],
        ["status", "abc123"],
        ["run", "m"],
        ["watch", "abc123"],
        ["stop", "abc123"],
        ["resume", "abc123"],
        ["errors", "abc123"],
        ["reconcile"],
        ["schedule"],
        ["checkpoint", "m"],
        ["checkpoint", "m", "--set", "1"],
    ):
        result = run_cli(capsys, *argv, "--config", path)
        assert result.code == 2, (argv, result)
        assert "revision none" in result.err and "run `chordload db upgrade`" in result.err, result
        assert "Traceback" not in result.err

    head = head_revision()
    for _ in range(2):
        result = run_cli(capsys, "db", "upgrade", "--config", path)
        assert result.code == 0, result
        assert result.out.strip().endswith(f"is at revision {head}")
    engine = get_engine(fresh_metadata_url)
    assert current_revision(engine) == head
    with engine.connect() as conn:
        assert set(inspect(conn).get_table_names()) >= METADATA_TABLES
        assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar_one() == 1
        indexes = {i["name"]: i for i in inspect(conn).get_indexes("process_log")}
    assert indexes["ux_process_log_one_active_run"]["unique"]
    result = run_cli(capsys, "status", "--json", "--config", path)
    assert (result.code, json.loads(result.out)) == (0, []), result


def test_metadata_behind_head_is_refused(clean_cli_env, base_config, tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    cfg = _alembic_config()
    with get_engine(url).begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
    path = write_config(tmp_path / "chordload.yaml", base_config, {}, metadata=url)
    result = run_cli(capsys, "status", "--config", path)
    assert result.code == 2, result
    assert "at revision 0001" in result.err and "chordload db upgrade" in result.err
    # validate says the same, among its other checks
    result = run_cli(capsys, "validate", "--config", path)
    assert result.code == 2, result
    assert "metadata database: INVALID: " in result.err and "at revision 0001" in result.err
    assert "run `chordload db upgrade`" in result.err and "broker: ok" in result.out
    missing = write_config(
        tmp_path / "missing.yaml", base_config, {}, metadata=f"sqlite:///{tmp_path / 'no.db'}"
    )
    result = run_cli(capsys, "validate", "--config", missing)
    assert result.code == 2 and "no.db does not exist" in result.err, result
    assert not (tmp_path / "no.db").exists()  # validate creates nothing
    assert run_cli(capsys, "db", "upgrade", "--config", path).code == 0
    assert run_cli(capsys, "status", "--config", path).code == 0


def test_migration_0006_checkpoint_change_up_and_down(fresh_metadata_url):
    """0006 adds checkpoint_change and lets checkpoint.run_id be NULL (set by hand); down
    drops the table and keeps a checkpoint set by hand, with run_id 'manual'."""
    engine = get_engine(fresh_metadata_url)
    cfg = _alembic_config()

    def migrate(step, revision: str) -> None:
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            step(cfg, revision)

    def shape() -> tuple[set[str], bool, set[str]]:
        with engine.connect() as conn:
            inspector = inspect(conn)
            tables = set(inspector.get_table_names())
            [run_id] = [c for c in inspector.get_columns("checkpoint") if c["name"] == "run_id"]
            indexes = (
                {i["name"] for i in inspector.get_indexes("checkpoint_change")}
                if "checkpoint_change" in tables
                else set()
            )
        return tables, run_id["nullable"], indexes

    migrate(command.upgrade, "0005")
    tables, nullable, _ = shape()
    assert "checkpoint_change" not in tables and not nullable
    migrate(command.upgrade, "0006")
    assert current_revision(engine) == "0006"
    tables, nullable, indexes = shape()
    assert "checkpoint_change" in tables and nullable
    assert indexes == {"ix_checkpoint_change_mapref"}

    upgrade(engine)  # the store writes the current models (later revisions add columns)
    value = {"type": "int", "value": 7}
    change = store.change_checkpoint(engine, "m", value, changed_by="me@here", reason="test")
    assert change is not None and (change.old_value, change.new_value) == (None, value)
    assert store.get_checkpoint(engine, "m").run_id is None
    assert [c.reason for c in store.checkpoint_changes(engine, "m")] == ["test"]

    migrate(command.downgrade, "0005")
    assert current_revision(engine) == "0005"
    tables, nullable, _ = shape()
    assert "checkpoint_change" not in tables and not nullable
    with engine.connect() as conn:
        kept = conn.execute(text("SELECT value, run_id FROM checkpoint")).one()
    assert (json.loads(kept.value) if isinstance(kept.value, str) else kept.value) == value
    assert kept.run_id == "manual"

    upgrade(engine)
    tables, nullable, _ = shape()
    assert "checkpoint_change" in tables and nullable
    assert store.checkpoint_changes(engine, "m") == []


def _active_run(mapref: str, status: RunStatus = RunStatus.RUNNING) -> ProcessLog:
    return ProcessLog(
        run_id=uuid.uuid4().hex[:12],
        mapref=mapref,
        status=status,
        created_at=utcnow(),
        load_kind="full",
        mapping={"spec": {}, "columns": []},
    )


@pytest.fixture(params=["postgres", "sqlite"])
def migrated_metadata_url(request, base_config, metadata_ready, tmp_path) -> str:
    if request.param == "postgres":
        return base_config["metadata"]
    url = f"sqlite:///{tmp_path / 'meta.db'}"
    upgrade(get_engine(url))
    return url


def test_one_active_run_per_mapping(
    clean_cli_env, base_config, migrated_metadata_url, tmp_path, capsys
):
    metadata = get_engine(migrated_metadata_url)
    mapref = f"active_{uuid.uuid4().hex[:8]}"
    first = _active_run(mapref, RunStatus.PLANNING)  # a run holds the slot from planning on
    store.create_run(metadata, first, [])

    # the database itself refuses a second active row (no pre-check involved)
    with pytest.raises(RunRefusedError) as refused:
        store.create_run(metadata, _active_run(mapref, RunStatus.QUEUED), [])
    assert refused.value.active_run_id == first.run_id
    assert first.run_id in str(refused.value)

    path = write_config(
        tmp_path / "chordload.yaml",
        base_config,
        {mapref: scd2_mapping("nowhere")},
        metadata=migrated_metadata_url,
    )
    result = run_cli(capsys, "run", mapref, "--config", path)
    assert result.code == 4, result
    assert f"already has an active run {first.run_id}" in result.err
    assert process_log_count(migrated_metadata_url, mapref) == 1

    # once the run is terminal, a new one may start; other mappings were never blocked
    assert store.set_run_status(
        metadata, first.run_id, RunStatus.STOPPED, only_from={RunStatus.PLANNING}
    )
    again = _active_run(mapref, RunStatus.QUEUED)
    store.create_run(metadata, again, [])
    store.create_run(metadata, _active_run(f"{mapref}_other"), [])
    assert store.active_run(metadata, mapref).run_id == again.run_id
    for run_id, mref in ((again.run_id, mapref), (None, f"{mapref}_other")):
        run_id = run_id or store.active_run(metadata, mref).run_id
        store.set_run_status(
            metadata, run_id, RunStatus.FAILED, only_from={RunStatus.QUEUED, RunStatus.RUNNING}
        )


@pytest.mark.e2e
def test_status_forms(workers, clean_cli_env, base_config, wh, schema, tmp_path, capsys):
    create_customers(wh, schema, 2_000)
    mapref = f"st_{schema}"
    path = write_config(
        tmp_path / "chordload.yaml",
        base_config,
        {mapref: scd2_mapping(schema), f"{mapref}_never": scd2_mapping(schema)},
    )

    first = run_cli(
        capsys, "run", mapref, "--chunks", "2", "--wait", "--timeout-s", "60", "--config", path
    )
    assert first.code == 0, first
    assert "SUCCESS" in first.out
    second = run_cli(
        capsys, "run", mapref, "--wait", "--json", "--timeout-s", "60", "--config", path
    )
    assert second.code == 0, second
    second_id = json.loads(second.out)["run_id"]
    runs = {
        r["run_id"]: r
        for r in json.loads(
            run_cli(capsys, "status", "--json", "--limit", "100", "--config", path).out
        )
    }
    assert second_id in runs
    [first_run] = [r for r in runs.values() if r["mapref"] == mapref and r["run_id"] != second_id]
    first_id = first_run["run_id"]
    assert (first_run["status"], first_run["chunks"], first_run["rows_read"]) == (
        "SUCCESS",
        2,
        2_000,
    )

    listing = run_cli(capsys, "status", "--config", path)
    assert listing.code == 0
    for run_id in (first_id, second_id):
        assert run_id in listing.out, listing.out
    limited = json.loads(run_cli(capsys, "status", "--json", "--limit", "1", "--config", path).out)
    assert [r["run_id"] for r in limited] == [second_id]

    one = run_cli(capsys, "status", first_id, "--config", path)
    assert one.code == 0 and first_id in one.out and "SUCCESS" in one.out
    assert "2 done; 2 total" in one.out, one.out  # counted by status, not listed
    listed = run_cli(capsys, "status", first_id, "--chunks", "--config", path)
    chunk_lines = [line.split()[:2] for line in listed.out.splitlines() if line.split()[:1]]
    assert [cells for cells in chunk_lines if cells[0] in ("0", "1")] == [
        ["0", "SUCCESS"],
        ["1", "SUCCESS"],
    ], listed.out

    detail = json.loads(run_cli(capsys, "status", first_id, "--json", "--config", path).out)
    assert detail["run_id"] == first_id and detail["status"] == "SUCCESS"
    assert [c["chunk_no"] for c in detail["chunk_list"]] == [0, 1]
    assert all(c["status"] == "SUCCESS" for c in detail["chunk_list"])
    assert sum(c["rows_read"] for c in detail["chunk_list"]) == 2_000

    latest = json.loads(run_cli(capsys, "status", mapref, "--json", "--config", path).out)
    assert latest["run_id"] == second_id and latest["mapref"] == mapref

    missing = run_cli(capsys, "status", "no-such-run", "--config", path)
    assert missing.code == 2 and "neither a run id nor a mapping" in missing.err
    never = run_cli(capsys, "status", f"{mapref}_never", "--config", path)
    assert never.code == 2 and "has no runs yet" in never.err
