"""``chordload init``: a commented config from a real source table that validates as written
(keys from the primary key, the checkpoint from the updated_at column), no password in the
file, and an existing file never overwritten."""

from __future__ import annotations

import yaml
from sqlalchemy import text

from coordinator.init_config import TableShape, render
from tests.cliutil import run_cli


def test_init_writes_a_config_that_validates(
    clean_cli_env, base_config, pg_urls, wh, schema, capsys, monkeypatch
):
    with wh.begin() as conn:
        conn.execute(
            text(
                f'CREATE TABLE "{schema}".orders (order_no bigint, line int, amount numeric, '
                f"created_on date, updated_at timestamp, PRIMARY KEY (order_no, line))"
            )
        )
    output = clean_cli_env / "chordload.yaml"
    args = ["init", "--source-url", pg_urls["wh"], "--table", f"{schema}.orders"]
    written = run_cli(capsys, *args)
    assert written.code == 0, written
    assert "mapping 'orders'" in written.out and "chordload plan orders" in written.out
    config = output.read_text()
    assert "keys: [order_no, line]  # the table's primary key" in config
    assert "checkpoint: {strategy: KEY, column: updated_at}" in config
    assert "other date/time columns: created_on" in config

    # validated as written, in this run's broker namespace: its worker survey (a Celery
    # control broadcast) leaves no keys outside the run's prefix
    namespaced = config + yaml.safe_dump({"celery": base_config["celery"]})
    output.write_text(namespaced)
    monkeypatch.setenv("CHORDLOAD_BROKER_URL", base_config["broker"])
    monkeypatch.setenv("CHORDLOAD_RESULT_BACKEND", base_config["result_backend"])
    monkeypatch.setenv("CHORDLOAD_METADATA_URL", base_config["metadata"])
    monkeypatch.setenv("CHORDLOAD_TARGET_URL", pg_urls["wh"])
    validated = run_cli(capsys, "validate")
    assert validated.code == 0, validated
    assert "orders: ok (5 columns" in validated.out

    again = run_cli(capsys, *args)
    assert again.code == 4, again
    assert "already exists" in again.err and "--output" in again.err
    assert output.read_text() == namespaced


def test_init_keeps_the_password_out_of_the_file():
    shape = TableShape(None, "Events", ["Id", "at"], [], ["at"])
    config = render("postgresql+psycopg2://etl:hunter2@db/dw", shape)
    assert "hunter2" not in config
    assert "postgresql+psycopg2://etl:${CHORDLOAD_SOURCE_PASSWORD}@db/dw" in config
    assert 'query: "SELECT \\"Id\\", at FROM \\"Events\\""' in config  # quoted as needed
    assert "TODO: the table has no primary key" in config
