"""Bad input found by an audit of the command line (1 December 2026): each is refused with exit
code 2 and a message that names the mapping and the fix, and nothing is written (no run row,
no target table, no stored checkpoint). One of them lost rows silently: a checkpoint column
of text that holds numbers."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import text

from shared.engines import get_engine
from tests.cliutil import process_log_count, run_cli, table_exists, write_config
from tests.pgdata import create_customers, scd2_mapping

pytestmark = pytest.mark.e2e


def _config(tmp_path, base_config, mappings, **overrides):
    return write_config(tmp_path / "chordload.yaml", base_config, mappings, **overrides)


def test_a_text_checkpoint_holding_numbers_is_refused_before_it_skips_rows(
    clean_cli_env, base_config, wh, schema, workers, tmp_path, capsys
):
    """Compared as text, '39' sorts before '9': with '9' stored, a later row '39' would never
    load, and the run would say SUCCESS. Refused when planned, with the cast to use; the
    cast makes it load."""
    src = f'"{schema}".src'
    with wh.begin() as conn:
        conn.execute(text(f"CREATE TABLE {src} (id int PRIMARY KEY, name text, ck text)"))
        conn.execute(
            text(f"INSERT INTO {src} SELECT g, 'n' || g, g::text FROM generate_series(3, 36) g")
        )
    mapping = {
        "source": {"connection": "wh", "query": f"SELECT id, name, ck FROM {src}"},
        "target": {"connection": "wh", "table": f"{schema}.dim"},
        "keys": ["id"],
        "checkpoint": {"strategy": "KEY", "column": "ck"},
    }
    path = _config(tmp_path, base_config, {"txt": mapping})
    for command in (["plan", "txt"], ["run", "txt", "--wait"]):
        result = run_cli(capsys, *command, "--config", path)
        assert result.code == 2, result
        assert "mapping 'txt': checkpoint column 'ck' is text holding numbers" in result.err
        assert "(its maximum is '9')" in result.err and "CAST(ck AS bigint) AS ck" in result.err
    assert process_log_count(base_config["metadata"], "txt") == 0
    assert not table_exists(wh, schema, "dim")

    mapping["source"]["query"] = f"SELECT id, name, CAST(ck AS bigint) AS ck FROM {src}"
    path = _config(tmp_path, base_config, {"txt": mapping})
    first = run_cli(capsys, "run", "txt", "--wait", "--timeout-s", "120", "--config", path)
    assert first.code == 0, first
    with wh.begin() as conn:
        conn.execute(text(f"INSERT INTO {src} VALUES (39, 'n39', '39')"))
    again = run_cli(
        capsys, "run", "txt", "--wait", "--json", "--timeout-s", "120", "--config", path
    )
    assert again.code == 0 and '"rows_inserted": 1' in again.out, again


@pytest.mark.parametrize(("connection", "limit"), [("wh", 63), ("mdb", 64)])
def test_a_target_name_longer_than_the_database_takes_is_refused(
    clean_cli_env, base_config, wh, schema, tmp_path, capsys, connection, limit
):
    """PostgreSQL would create the table under a shortened name that no later run finds;
    MariaDB refused it only once the run was under way (a traceback and a FAILED run)."""
    create_customers(wh, schema, 10)
    name = "t" + "x" * limit  # one more than the limit
    mapping = scd2_mapping(schema)
    mapping["target"] = {"connection": connection, "table": name}
    path = _config(tmp_path, base_config, {"long": mapping})
    for command in (["validate", "long"], ["plan", "long"], ["run", "long"]):
        result = run_cli(capsys, *command, "--config", path)
        assert result.code == 2, result
        assert "Traceback" not in result.err
        assert f"target.table's table name '{name}' is {limit + 1} " in result.err
        assert f"take at most {limit}; shorten it" in result.err
    assert process_log_count(base_config["metadata"], "long") == 0


def test_a_query_returning_one_column_twice_is_refused_by_validate_plan_and_run(
    clean_cli_env, base_config, wh, schema, tmp_path, capsys
):
    create_customers(wh, schema, 10)
    mapping = scd2_mapping(schema)
    mapping["source"]["query"] = f'SELECT id, name, name, updated_at FROM "{schema}".customers'
    path = _config(tmp_path, base_config, {"twice": mapping})
    for command in (["validate", "twice"], ["plan", "twice"], ["run", "twice"]):
        result = run_cli(capsys, *command, "--config", path)
        assert result.code == 2, result
        assert "returns the column 'name' more than once" in result.err
        assert "`name AS name_2`" in result.err
    assert process_log_count(base_config["metadata"], "twice") == 0


def test_a_backfill_from_after_to_is_refused(
    clean_cli_env, base_config, wh, schema, tmp_path, capsys
):
    create_customers(wh, schema, 10)
    path = _config(tmp_path, base_config, {"bf": scd2_mapping(schema)})
    result = run_cli(
        capsys, "run", "bf", "--from", "2030-01-01", "--to", "2020-01-01", "--config", path
    )
    assert result.code == 2, result
    assert "mapping 'bf': --from 2030-01-01 is after --to 2020-01-01" in result.err
    assert process_log_count(base_config["metadata"], "bf") == 0


def test_db_upgrade_and_init_say_what_to_fix_without_a_traceback(
    clean_cli_env, base_config, tmp_path, capsys
):
    missing = f"cl_missing_{uuid.uuid4().hex[:8]}"
    url = base_config["metadata"].rsplit("/", 1)[0] + "/" + missing
    path = _config(tmp_path, base_config, {}, metadata=url)
    result = run_cli(capsys, "db", "upgrade", "--config", path)
    assert result.code == 2 and "Traceback" not in result.err
    assert f'database "{missing}" does not exist' in result.err
    assert "create the database" in result.err

    source = base_config["connections"]["wh"]
    cases = [
        (["--source-url", "postgersql://x@h/d"], "unknown database dialect/driver 'postgersql'"),
        (["--source-url", "notaurl"], "not a valid database URL"),
        (
            ["--source-url", source, "--output", str(tmp_path / "nodir" / "x.yaml")],
            "nodir does not exist",
        ),
    ]
    for argv, message in cases:
        result = run_cli(capsys, "init", "--table", "customers", *argv)
        assert result.code == 2 and message in result.err, result
    assert not (tmp_path / "nodir").exists()


def test_verify_that_gives_up_waiting_exits_5_and_says_how_to_start_a_worker(
    clean_cli_env, base_config, wh, schema, workers, tmp_path, capsys
):
    """No worker consumes the queue: verify gives up after --timeout-s with run's exit code
    for that (5, not 1: nothing was found different), naming the queue; a negative
    --timeout-s is bad input."""
    create_customers(wh, schema, 10)
    mapping = scd2_mapping(schema)
    loaded = run_cli(
        capsys,
        "run",
        "vq",
        "--wait",
        "--timeout-s",
        "120",
        "--config",
        _config(tmp_path, base_config, {"vq": mapping}),
    )
    assert loaded.code == 0, loaded
    queue = f"{base_config['celery']['queue']}-nobody"
    path = _config(
        tmp_path, base_config, {"vq": mapping}, celery={**base_config["celery"], "queue": queue}
    )
    result = run_cli(capsys, "verify", "vq", "--timeout-s", "2", "--config", path)
    assert result.code == 5, result
    assert f"celery -A workers worker --queues {queue} -n w1@%h" in result.err
    for command in (["verify", "vq"], ["run", "vq"], ["watch", "abc"]):
        bad = run_cli(capsys, *command, "--timeout-s", "-1", "--config", path)
        assert bad.code == 2 and "must be more than 0 seconds" in bad.err, bad
    with get_engine(base_config["metadata"]).connect() as conn:
        verifies = conn.execute(
            text("SELECT count(*) FROM verify_log WHERE mapref = 'vq'")
        ).scalar_one()
    assert verifies == 1  # the one that gave up waiting goes on; none for the refused ones


def test_a_checkpoint_function_that_does_not_import_fails_validate_naming_the_mapping(
    clean_cli_env, base_config, wh, schema, tmp_path, capsys
):
    create_customers(wh, schema, 10)
    mapping = scd2_mapping(schema)
    mapping["checkpoint"] = {"strategy": "PYTHON", "function": "nosuchmod:fn"}
    path = _config(tmp_path, base_config, {"pyck": mapping})
    for command in (["validate", "pyck"], ["plan", "pyck"]):
        result = run_cli(capsys, *command, "--config", path)
        assert result.code == 2, result
        assert "mapping 'pyck': checkpoint.function 'nosuchmod:fn': cannot import" in result.err


def test_verify_with_a_broker_that_does_not_answer_writes_nothing(
    clean_cli_env, base_config, wh, schema, tmp_path, capsys
):
    create_customers(wh, schema, 10)
    dead = "redis://127.0.0.1:1/0"
    path = _config(tmp_path, base_config, {"vb": scd2_mapping(schema)}, broker=dead)
    result = run_cli(capsys, "verify", "vb", "--config", path)
    assert result.code == 2 and "redis://127.0.0.1:1/0" in result.err, result
    with get_engine(base_config["metadata"]).connect() as conn:
        count = conn.execute(text("SELECT count(*) FROM verify_log WHERE mapref = 'vb'"))
        assert count.scalar_one() == 0


def test_an_existing_target_whose_column_would_cut_every_value_is_refused(
    clean_cli_env, base_config, wh, schema, tmp_path, capsys
):
    """The relay COPYs the source's text into the target's type: a timestamp into an
    existing `date` column lost its time without a word. validate, plan and run refuse it,
    naming the column."""
    create_customers(wh, schema, 10)
    mapping = scd2_mapping(schema)
    with wh.begin() as conn:
        conn.execute(
            text(
                f'CREATE TABLE "{schema}".dim_customer (dw_sk bigserial, id bigint, name text, '
                "email text, city text, balance numeric(12,2), signup date, active boolean, "
                "updated_at date, dw_row_hash varchar(32) NOT NULL, dw_valid_from timestamptz "
                "NOT NULL, dw_valid_to timestamptz, dw_is_current boolean NOT NULL, dw_run_id "
                "varchar(32) NOT NULL)"
            )
        )
    path = _config(tmp_path, base_config, {"cut": mapping})
    for command in (["validate", "cut"], ["plan", "cut"], ["run", "cut"]):
        result = run_cli(capsys, *command, "--config", path)
        assert result.code == 2, result
        assert "its column 'updated_at' is date: a timestamp into a date drops" in result.err
    assert process_log_count(base_config["metadata"], "cut") == 0
