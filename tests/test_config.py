"""Bad input is refused by the real CLI with exit 2, a message naming the mapping and field,
and nothing written (no process_log row, no target table). Also: where the config file comes
from, environment overrides, ``${VAR}`` substitution and ``validate``."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml
from sqlalchemy import text

from shared.config.settings import load_settings
from shared.engines import get_engine
from shared.errors import ConfigError
from tests.cliutil import (
    process_log_count,
    run_cli,
    run_subprocess,
    table_exists,
    write_config,
)
from tests.pgdata import create_customers, scd2_mapping


@pytest.fixture
def source(wh, schema) -> str:
    create_customers(wh, schema, 1_000)
    return schema


def _mapping(schema: str, **overrides) -> dict:
    return scd2_mapping(schema, **overrides)


def _drop(mapping: dict, *path: str) -> dict:
    mapping = copy.deepcopy(mapping)
    node = mapping
    for part in path[:-1]:
        node = node[part]
    del node[path[-1]]
    return mapping


# Each case: (config mutation, fragments the message must contain). ``M`` is the mapref and
# ``S`` the test's schema, filled in per test.
def _case_unknown_top_key(cfg, m, s):
    cfg["mappingz"] = {}
    return ["mappingz", "unknown key"]


def _case_unknown_nested_key(cfg, m, s):
    cfg["mappings"][m]["chunking"]["rows_per_chunck"] = 10
    return [f"mappings.{m}.chunking.rows_per_chunck", "unknown key"]


def _case_unknown_mapping_key(cfg, m, s):
    cfg["mappings"][m]["scd_type"] = 2
    return [f"mappings.{m}.scd_type", "unknown key"]


def _case_unknown_connection(cfg, m, s):
    cfg["mappings"][m]["target"]["connection"] = "warehouse"
    return [f"'{m}'", "target.connection", "'warehouse'", "not defined"]


def _case_missing_keys(cfg, m, s):
    cfg["mappings"][m] = _drop(cfg["mappings"][m], "keys")
    return [f"mappings.{m}.keys", "missing"]


def _case_missing_source_query(cfg, m, s):
    cfg["mappings"][m] = _drop(cfg["mappings"][m], "source", "query")
    return [f"mappings.{m}.source.query", "missing"]


def _case_checkpoint_column_not_returned(cfg, m, s):
    cfg["mappings"][m]["checkpoint"]["column"] = "changed_at"
    return [f"'{m}'", "checkpoint.column 'changed_at'", "not a column of the source query"]


def _case_split_column_not_returned(cfg, m, s):
    cfg["mappings"][m]["keys"] = ["id", "region_id"]
    cfg["mappings"][m]["chunking"]["column"] = "region_id"
    return [f"'{m}'", "chunking.column 'region_id'", "not a column of the source query"]


def _case_key_not_returned(cfg, m, s):
    cfg["mappings"][m]["keys"] = ["customer_id"]
    cfg["mappings"][m]["chunking"]["column"] = "customer_id"
    return [f"'{m}'", "keys 'customer_id'", "not a column of the source query"]


def _case_column_case_differs(cfg, m, s):
    cfg["mappings"][m]["checkpoint"]["column"] = "Updated_At"
    return [f"'{m}'", "checkpoint.column 'Updated_At'", "did you mean 'updated_at'"]


def _case_split_column_not_a_key(cfg, m, s):
    cfg["mappings"][m]["chunking"]["column"] = "city"
    return [f"'{m}'", "chunking.column 'city' is not a business key"]


def _case_key_typo_with_a_split_column(cfg, m, s):
    # the typo is the key; the split column names a real column and is not blamed for it
    cfg["mappings"][m]["keys"] = ["idd"]
    cfg["mappings"][m]["chunking"]["column"] = "id"
    return [f"'{m}'", "keys 'idd' is not a column of the source query", "returns: id, name"]


def _case_audit_column_clash(cfg, m, s):
    cfg["mappings"][m]["source"]["query"] = (
        f'SELECT id, name, city AS dw_valid_to, updated_at FROM "{s}"."customers"'
    )
    return [f"'{m}'", "'dw_valid_to'", "audit column", "scd.audit_columns.valid_to"]


def _case_scd1_audit_name_clash(cfg, m, s):
    cfg["mappings"][m]["scd"] = {"type": 1, "audit_columns": {"inserted_at": "updated_at"}}
    return [f"'{m}'", "'updated_at'", "SCD1 audit column", "scd.audit_columns.inserted_at"]


def _case_source_query_fails(cfg, m, s):
    cfg["mappings"][m]["source"]["query"] = f'SELECT id, updated_at FROM "{s}"."custmers"'
    return [f"'{m}'", "source query fails", "custmers"]


def _case_checkpoint_column_without_max(cfg, m, s):
    # the column probe (LIMIT 0) passes; max(active) at plan time fails: boolean has no max
    cfg["mappings"][m]["checkpoint"]["column"] = "active"
    return [f"'{m}'", "source query fails while planning", "max(boolean)"]


def _case_target_exists_without_scd_columns(cfg, m, s):
    with get_engine(cfg["connections"]["wh"]).begin() as conn:
        conn.execute(text(f'CREATE TABLE "{s}"."existing" (id bigint, name text)'))
    cfg["mappings"][m]["target"]["table"] = f"{s}.existing"
    return [f"'{m}'", f"{s}.existing exists but lacks column(s) email, city"]


def _case_two_statements(cfg, m, s):
    cfg["mappings"][m]["source"]["query"] = f'SELECT id FROM "{s}"."customers"; SELECT 1'
    return [f"mappings.{m}.source.query", "single SELECT"]


def _case_bad_scd_type(cfg, m, s):
    cfg["mappings"][m]["scd"] = {"type": 3}
    return [f"mappings.{m}.scd.type"]


def _case_checkpoint_key_without_column(cfg, m, s):
    cfg["mappings"][m]["checkpoint"] = {"strategy": "KEY"}
    return [f"mappings.{m}.checkpoint", "needs 'column'"]


def _case_target_schema_missing(cfg, m, s):
    cfg["mappings"][m]["target"]["table"] = f"{s}_nope.dim"
    return [f"'{m}'", "cannot create target table", f"{s}_nope"]


def _case_source_unreachable(cfg, m, s):
    cfg["connections"]["src"] = (
        f"postgresql+psycopg2://root:s3cret-pw@127.0.0.1:5432/cl_no_such_db_{s}"
    )
    cfg["mappings"][m]["source"]["connection"] = "src"
    return [f"'{m}'", "cannot reach the source database", "***"]


def _case_target_database_missing(cfg, m, s):
    cfg["connections"]["dw"] = (
        f"postgresql+psycopg2://root:s3cret-pw@127.0.0.1:5432/cl_no_such_db_{s}"
    )
    cfg["mappings"][m]["target"]["connection"] = "dw"
    return [f"'{m}'", "cannot reach the target database", "***", "does not exist"]


def _case_bad_connection_url(cfg, m, s):
    cfg["connections"]["src"] = "not a database url"
    cfg["mappings"][m]["source"]["connection"] = "src"
    return ["connections.src", "not a valid database URL"]


NOT_VALIDATED = {
    "checkpoint_column_without_max",
}


def _case_unknown_driver(cfg, m, s):
    cfg["connections"]["src"] = "postgresql+nosuchdriver://root:s3cret-pw@127.0.0.1/x"
    cfg["mappings"][m]["source"]["connection"] = "src"
    return ["connections.src", "unknown database dialect/driver 'postgresql+nosuchdriver'"]


CASES = {
    name.removeprefix("_case_"): fn for name, fn in globals().items() if name.startswith("_case_")
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_mapping_exit_2_names_the_problem_and_writes_nothing(
    case, clean_cli_env, base_config, source, wh, tmp_path, capsys
):
    schema = source
    mapref = f"m_{schema}"
    cfg = copy.deepcopy(base_config)
    cfg["mappings"] = {mapref: _mapping(schema)}
    fragments = CASES[case](cfg, mapref, schema)
    path = tmp_path / "chordload.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))

    run = run_cli(capsys, "run", mapref, "--config", path)
    assert run.code == 2, run
    for fragment in fragments:
        assert fragment in run.err, (fragment, run.err)
    assert run.err.startswith("error: ") and "Traceback" not in run.err
    assert "s3cret-pw" not in run.err + run.out

    if case not in NOT_VALIDATED:  # validate probes the source's columns, nothing more
        validate = run_cli(capsys, "validate", "--config", path)
        assert validate.code == 2, validate
        for fragment in fragments:
            assert fragment in validate.err, (fragment, validate.err)

    # nothing half-written
    assert process_log_count(base_config["metadata"], mapref) == 0
    assert not table_exists(wh, schema, "dim_customer")
    assert not table_exists(wh, f"{schema}_nope", "dim")


def _write_text(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "chordload.yaml"
    path.write_text(text)
    return path


def test_file_level_errors_exit_2(clean_cli_env, base_config, tmp_path, capsys, monkeypatch):
    missing = tmp_path / "nowhere" / "chordload.yaml"
    run = run_cli(capsys, "run", "m", "--config", missing)
    assert run.code == 2 and "not found" in run.err and str(missing) in run.err, run

    run = run_cli(capsys, "status")  # no --config, no $CHORDLOAD_CONFIG, no ./chordload.yaml
    assert run.code == 2 and "chordload.yaml not found" in run.err, run

    bad_yaml = _write_text(tmp_path, "metadata: x\nmappings: [unclosed\n")
    run = run_cli(capsys, "validate", "--config", bad_yaml)
    assert run.code == 2 and "not valid YAML" in run.err and "line" in run.err, run

    not_a_mapping = _write_text(tmp_path, "- a\n- b\n")
    run = run_cli(capsys, "validate", "--config", not_a_mapping)
    assert run.code == 2 and "expected a mapping" in run.err, run

    config = yaml.safe_dump(
        {
            **base_config,
            "mappings": {
                "m": {
                    "source": {
                        "connection": "wh",
                        "query": "SELECT ${CL_TEST_UNSET_COLUMNS} FROM t",
                    },
                    "target": {"connection": "wh", "table": "t2"},
                    "keys": ["id"],
                }
            },
        }
    )
    monkeypatch.delenv("CL_TEST_UNSET_COLUMNS", raising=False)
    env_path = _write_text(tmp_path, config)
    run = run_cli(capsys, "run", "m", "--config", env_path)
    assert run.code == 2, run
    for fragment in ("${CL_TEST_UNSET_COLUMNS}", "not set", "mappings.m.source.query"):
        assert fragment in run.err, (fragment, run.err)

    write_config(tmp_path / "ok.yaml", base_config, {})
    run = run_cli(capsys, "run", "no_such_mapping", "--config", tmp_path / "ok.yaml")
    assert run.code == 2 and "unknown mapping 'no_such_mapping'" in run.err, run

    run = run_cli(capsys, "run", "m", "--chunks", "0", "--config", tmp_path / "ok.yaml")
    assert run.code == 2 and "--chunks" in run.err, run

    mysql_meta = write_config(
        tmp_path / "mysql_meta.yaml",
        {**base_config, "metadata": "mysql+pymysql://root@127.0.0.1/m"},
        {},
    )
    run = run_cli(capsys, "validate", "--config", mysql_meta)
    assert run.code == 2, run
    for fragment in ("metadata", "must be PostgreSQL", "not mysql", "'connections'"):
        assert fragment in run.err, (fragment, run.err)


def test_subprocess_exit_code_for_a_bad_config(base_config, source, tmp_path):
    mapref = f"m_{source}"
    mapping = _mapping(source)
    mapping["source"]["quer"] = mapping["source"].pop("query")
    path = write_config(tmp_path / "chordload.yaml", base_config, {mapref: mapping})
    result = run_subprocess("run", mapref, "--config", path)
    assert result.code == 2, result
    assert f"mappings.{mapref}.source.quer: unknown key" in result.err
    assert f"mappings.{mapref}.source.query: required key is missing" in result.err
    assert "Traceback" not in result.err
    assert process_log_count(base_config["metadata"], mapref) == 0


def test_env_substitution_is_per_value(tmp_path, monkeypatch):
    """``${VAR}`` fills values (YAML special characters in them stay literal), defaults work,
    and a ``${VAR}`` inside a YAML comment is not an error."""
    monkeypatch.setenv("CL_TEST_TABLE", "dw.dim: #1 'x'")
    monkeypatch.delenv("CL_TEST_UNSET", raising=False)
    monkeypatch.delenv("CHORDLOAD_METADATA_URL", raising=False)
    path = _write_text(
        tmp_path,
        """\
# metadata: ${CL_TEST_UNSET}   (the old one, kept for reference)
metadata: ${CL_TEST_UNSET:-sqlite:///meta.db}
connections: {c: "sqlite:///x.db"}
mappings:
  m:
    source: {connection: c, query: "SELECT id FROM t"}
    target: {connection: c, table: ${CL_TEST_TABLE}}
    keys: [id]
    batch_rows: ${CL_TEST_UNSET:-500}
""",
    )
    settings = load_settings(path)
    assert settings.metadata == "sqlite:///meta.db"
    assert settings.mappings["m"].target.table == "dw.dim: #1 'x'"
    assert settings.mappings["m"].batch_rows == 500


def test_config_file_precedence(clean_cli_env, base_config, source, tmp_path, capsys, monkeypatch):
    """--config, else $CHORDLOAD_CONFIG, else ./chordload.yaml."""
    cwd = clean_cli_env
    for where, path in (
        ("from_cwd", cwd / "chordload.yaml"),
        ("from_env", tmp_path / "env.yaml"),
        ("from_flag", tmp_path / "flag.yaml"),
    ):
        write_config(path, base_config, {where: _mapping(source)})
    monkeypatch.setenv("CHORDLOAD_CONFIG", str(tmp_path / "env.yaml"))

    run = run_cli(capsys, "validate", "--config", tmp_path / "flag.yaml")
    assert run.code == 0 and run.out.startswith("from_flag: ok"), run
    run = run_cli(capsys, "validate")
    assert run.code == 0 and run.out.startswith("from_env: ok"), run
    monkeypatch.delenv("CHORDLOAD_CONFIG")
    run = run_cli(capsys, "validate")
    assert run.code == 0 and run.out.startswith("from_cwd: ok"), run
    (cwd / "chordload.yaml").unlink()
    run = run_cli(capsys, "validate")
    assert run.code == 2 and "chordload.yaml not found" in run.err, run


def test_env_overrides_the_file(clean_cli_env, base_config, tmp_path, capsys, monkeypatch):
    bogus = {
        "metadata": f"sqlite:///{tmp_path}/no/such/dir/meta.db",
        "broker": "redis://127.0.0.1:1/0",
        "result_backend": "redis://127.0.0.1:1/1",
    }
    path = write_config(tmp_path / "chordload.yaml", base_config, {}, **bogus)
    monkeypatch.setenv("CHORDLOAD_BROKER_URL", base_config["broker"])
    monkeypatch.setenv("CHORDLOAD_RESULT_BACKEND", base_config["result_backend"])
    monkeypatch.setenv("CHORDLOAD_METADATA_URL", base_config["metadata"])
    settings = load_settings(path)
    assert (settings.broker, settings.result_backend, settings.metadata) == (
        base_config["broker"],
        base_config["result_backend"],
        base_config["metadata"],
    )
    run = run_cli(capsys, "status", "--json", "--config", path)
    assert run.code == 0, run
    assert isinstance(json.loads(run.out), list)

    monkeypatch.delenv("CHORDLOAD_METADATA_URL")
    run = run_cli(capsys, "status", "--config", path)
    assert run.code == 2 and "metadata database" in run.err, run


@pytest.mark.e2e
def test_env_overrides_reach_a_real_run(workers, base_config, source, wh, tmp_path):
    """A ``chordload run --config FILE`` process whose file names dead broker/backend services
    loads through CHORDLOAD_BROKER_URL / CHORDLOAD_RESULT_BACKEND (with the metadata URL from
    the file: importing the Celery app must not rebuild settings from the environment alone)."""
    mapref = f"env_{source}"
    bogus = {"broker": "redis://127.0.0.1:1/0", "result_backend": "redis://127.0.0.1:1/1"}
    path = write_config(
        tmp_path / "chordload.yaml", base_config, {mapref: _mapping(source)}, **bogus
    )
    env = {
        "CHORDLOAD_BROKER_URL": base_config["broker"],
        "CHORDLOAD_RESULT_BACKEND": base_config["result_backend"],
    }
    result = run_subprocess(
        "run", mapref, "--config", path, "--wait", "--json", "--timeout-s", "90", env=env
    )
    assert result.code == 0, result
    summary = json.loads(result.out)
    assert (summary["status"], summary["rows_read"]) == ("SUCCESS", 1_000)
    assert process_log_count(base_config["metadata"], mapref) == 1


def test_validate_prints_ok_per_mapping(clean_cli_env, base_config, source, tmp_path, capsys):
    good = {"a_good": _mapping(source, target="a"), "b_good": _mapping(source, target="b")}
    path = write_config(tmp_path / "chordload.yaml", base_config, good)
    run = run_cli(capsys, "validate", "--config", path)
    assert run.code == 0, run
    columns = "id, name, email, city, balance, signup, active, updated_at"
    lines = run.out.splitlines()
    assert lines[:2] == [
        f"a_good: ok (8 columns: {columns}); target {source}.a will be created by the first run",
        f"b_good: ok (8 columns: {columns}); target {source}.b will be created by the first run",
    ]
    # then what every run needs: the metadata database (migrated) and the broker
    assert lines[2].startswith("metadata database: ok: postgresql") and "revision" in lines[2]
    assert lines[3] == f"broker: ok: {base_config['broker']}", lines

    bad = _mapping(source, checkpoint={"column": "nope"})
    path = write_config(tmp_path / "chordload.yaml", base_config, {**good, "c_bad": bad})
    run = run_cli(capsys, "validate", "--config", path)
    assert run.code == 2, run
    assert [line.split(":")[0] for line in run.out.splitlines()] == [
        "a_good", "b_good", "metadata database", "broker"
    ]  # fmt: skip
    assert run.err.startswith("c_bad: INVALID: ") and "checkpoint.column 'nope'" in run.err
    run = run_cli(capsys, "validate", "a_good", "--config", path)
    assert run.code == 0 and run.out.startswith("a_good: ok") and "b_good" not in run.out

    with pytest.raises(ConfigError):
        load_settings(tmp_path / "missing.yaml")


def test_sqlite_source_query_error_is_not_reported_as_unreachable(
    clean_cli_env, base_config, tmp_path, capsys
):
    """SQLite raises OperationalError for a missing table too: once connected, an error is
    the query's, not 'cannot reach the source database'."""
    import sqlite3

    with sqlite3.connect(tmp_path / "src.db") as conn:
        conn.execute("CREATE TABLE t (id INTEGER, name TEXT)")
    mapping = {
        "source": {"connection": "lite", "query": "SELECT id, name FROM nosuch"},
        "target": {"connection": "lite", "table": "dim"},
        "keys": ["id"],
    }
    path = write_config(
        tmp_path / "chordload.yaml",
        base_config,
        {"lite_m": mapping},
        connections={
            "lite": f"sqlite:///{tmp_path / 'src.db'}",
            "gone": f"sqlite:///{tmp_path / 'no' / 'dir' / 'x.db'}",
        },
    )
    result = run_cli(capsys, "validate", "--config", path)
    assert result.code == 2, result
    assert (
        "lite_m: INVALID: mapping 'lite_m': the source query fails: no such table: nosuch"
        in result.err
    ), result

    mapping["source"] = {"connection": "gone", "query": "SELECT id, name FROM t"}
    path = write_config(
        tmp_path / "chordload.yaml",
        base_config,
        {"lite_m": mapping},
        connections={
            "lite": f"sqlite:///{tmp_path / 'src.db'}",
            "gone": f"sqlite:///{tmp_path / 'no' / 'dir' / 'x.db'}",
        },
    )
    result = run_cli(capsys, "run", "lite_m", "--config", path)
    assert result.code == 2, result
    assert "cannot reach the source database" in result.err, result


def test_a_mapping_name_given_twice_is_refused(tmp_path):
    """YAML keeps the last of two equal keys silently: the config refuses the file and
    names the key and both lines."""
    path = tmp_path / "chordload.yaml"
    path.write_text(
        "metadata: sqlite:///m.db\n"
        "connections: {c: 'sqlite:///w.db'}\n"
        "mappings:\n"
        "  dim: {source: {connection: c, query: 'SELECT 1 AS id'},\n"
        "        target: {connection: c, table: t1}, keys: [id]}\n"
        "  dim: {source: {connection: c, query: 'SELECT 2 AS id'},\n"
        "        target: {connection: c, table: t2}, keys: [id]}\n"
    )
    with pytest.raises(ConfigError, match=r"found the key 'dim' twice \(first on line 4\)"):
        load_settings(path)
