"""The demo (``chordload demo``'s function, small) and ``run --json``'s output."""

from __future__ import annotations

import json
import re
import sqlite3

import pytest
from sqlalchemy import text

from coordinator.demo import CHANGED_KEY, change_source, create_source
from shared.config.settings import load_settings
from shared.engines import get_engine
from shared.metadata import store
from tests.cliutil import REPO, run_cli, write_config
from tests.pgdata import change_every_tenth, create_customers, scd2_mapping
from tests.ptyutil import PtyProcess, screen_lines
from tests.ptyutil import bar_width as _bar_width

COLUMNS = "id, name, email, city, segment, balance, updated_at"


def test_demo_loads_and_versions_at_80_columns(tmp_path):
    """`chordload demo` (small) in an 80-column pseudo-terminal, as `make demo` shows it: every
    line fits, the bar keeps 20+ characters and the ETA is whole, and the closing hint names a
    command that exists; then the SQLite files are checked."""
    workdir = tmp_path / "demo"
    cli = PtyProcess("demo", "--rows", "20000", "--chunks", "8", "--dir", workdir)
    try:
        code = cli.wait(timeout_s=120)
    finally:
        cli.kill()
    assert code == 0, cli.text[-3000:]
    assert "Traceback" not in cli.text
    lines = screen_lines(cli.raw)
    assert not [line for line in lines if len(line.rstrip()) > 80], lines
    bars = [line for line in lines if "rows/s" in line and "ETA" in line]
    assert bars and all(_bar_width(line) >= 20 for line in bars), [
        (line, _bar_width(line)) for line in bars if _bar_width(line) < 20
    ]
    assert all(re.search(r"ETA (--:--|\d+:\d\d)$", line.rstrip()) for line in bars), bars
    hint = re.search(r"to start over: (.*)", cli.text).group(1).strip()
    assert hint in ("chordload demo", "make demo (or ./.venv/bin/chordload demo)"), hint
    if hint != "chordload demo":
        assert (REPO / ".venv" / "bin" / "chordload").is_file()

    with sqlite3.connect(workdir / "warehouse.db") as conn:
        conn.execute(f"ATTACH DATABASE '{workdir / 'source.db'}' AS src")
        source_rows = conn.execute("SELECT count(*) FROM src.customers").fetchone()[0]
        assert source_rows == 21_000  # 20,000 + 5% new
        current = f"SELECT {COLUMNS} FROM dim_customer WHERE dw_is_current"
        source = f"SELECT {COLUMNS} FROM src.customers"
        assert conn.execute(f"SELECT count(*) FROM ({current} EXCEPT {source})").fetchone()[0] == 0
        assert conn.execute(f"SELECT count(*) FROM ({source} EXCEPT {current})").fetchone()[0] == 0
        assert (
            conn.execute(
                "SELECT count(*) FROM (SELECT id FROM dim_customer WHERE dw_is_current "
                "GROUP BY id HAVING count(*) <> 1)"
            ).fetchone()[0]
            == 0
        )
        assert (
            conn.execute("SELECT count(*) FROM dim_customer WHERE dw_is_current").fetchone()[0]
            == source_rows
        )
        # every 10th key changed: two versions, the old one expired when the new one started
        assert conn.execute("SELECT count(*) FROM dim_customer").fetchone()[0] == 21_000 + 2_000
        versions = conn.execute(
            "SELECT city, dw_valid_from, dw_valid_to, dw_is_current FROM dim_customer "
            "WHERE id = ? ORDER BY dw_sk",
            (CHANGED_KEY,),
        ).fetchall()
    assert len(versions) == 2
    (old_city, _, old_to, old_current), (new_city, new_from, new_to, new_current) = versions
    assert (old_current, new_current, new_to, new_city) == (0, 1, None, "Reykjavik")
    assert old_city != "Reykjavik" and old_to == new_from

    with sqlite3.connect(workdir / "metadata.db") as conn:
        runs = conn.execute(
            "SELECT status, chunks_total, rows_read, rows_inserted, rows_changed "
            "FROM process_log ORDER BY created_at"
        ).fetchall()
    assert runs[0] == ("SUCCESS", 8, 20_000, 20_000, 0)
    assert runs[1][0] == "SUCCESS" and runs[1][3:] == (1_000, 2_000)
    assert "history of customer id=3" in cli.text


def test_demo_changes_land_after_the_first_checkpoint(tmp_path):
    """The demo's changed and new rows must be newer than anything loaded before, however far
    the generated timestamps reach (200,000 rows x 100 s goes past the wall clock at times)."""
    path = tmp_path / "source.db"
    create_source(path, 100)
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE customers SET updated_at = '2999-01-01 00:00:00' WHERE id = 100")
    changed, added = change_source(path, 100, 5)
    assert (changed, added) == (10, 5)
    with sqlite3.connect(path) as conn:
        stale = conn.execute(
            "SELECT count(*) FROM customers WHERE (id % 10 = 3 OR id > 100) "
            "AND updated_at <= '2999-01-01 00:00:00'"
        ).fetchone()[0]
    assert stale == 0


RUN_JSON_FIELDS = {
    "run_id",
    "mapref",
    "status",
    "chunks",
    "rows_read",
    "rows_inserted",
    "rows_changed",
    "rows_unchanged",
    "rows_errored",
    "checkpoint_from",
    "checkpoint_to",
    "duration_s",
    "message",
}


@pytest.mark.e2e
def test_run_json_output(workers, clean_cli_env, base_config, wh, schema, tmp_path, capsys):
    source = create_customers(wh, schema, 3_000)
    mapref = f"json_{schema}"
    path = write_config(
        tmp_path / "chordload.yaml",
        base_config,
        {
            mapref: scd2_mapping(
                schema,
                chunking={
                    "rows_per_chunk": 1_000,
                    "min_rows_for_parallel": 1_000,
                    "exact_count": True,
                },
            )
        },
    )

    first = run_cli(
        capsys, "run", mapref, "--wait", "--json", "--timeout-s", "60", "--config", path
    )
    assert first.code == 0, first
    summary = json.loads(first.out)  # stdout holds the JSON object and nothing else
    assert set(summary) >= RUN_JSON_FIELDS
    max_ts = _scalar(wh, f"SELECT max(updated_at) FROM {source}")
    assert summary["mapref"] == mapref and summary["status"] == "SUCCESS"
    assert (
        summary["chunks"],
        summary["rows_read"],
        summary["rows_inserted"],
        summary["rows_changed"],
        summary["rows_unchanged"],
        summary["rows_errored"],
    ) == (3, 3_000, 3_000, 0, 0, 0)
    assert (summary["checkpoint_from"], summary["checkpoint_to"]) == (None, max_ts.isoformat())
    assert isinstance(summary["duration_s"], float) and summary["duration_s"] > 0
    assert summary["message"] is None
    run = store.get_run(get_engine(base_config["metadata"]), summary["run_id"])
    assert (run.mapref, run.rows_read) == (mapref, 3_000)

    change_every_tenth(wh, source)
    second = run_cli(
        capsys, "run", mapref, "--wait", "--json", "--timeout-s", "60", "--config", path
    )
    assert second.code == 0, second
    summary2 = json.loads(second.out)
    assert summary2["checkpoint_from"] == summary["checkpoint_to"]
    assert summary2["checkpoint_to"] > summary["checkpoint_to"]
    # the window re-reads the boundary row (id 3000, changed too): 300 changed rows read
    assert (summary2["rows_read"], summary2["rows_changed"], summary2["rows_inserted"]) == (
        300,
        300,
        0,
    )

    # without --wait: the object as launched; the run goes on
    launched = run_cli(capsys, "run", mapref, "--json", "--config", path)
    assert launched.code == 0, launched
    started = json.loads(launched.out)
    assert set(started) >= RUN_JSON_FIELDS
    assert started["status"] in ("RUNNING", "SUCCESS")
    from coordinator.watch import wait

    done = wait(started["run_id"], settings=load_settings(path), timeout_s=60, poll_s=0.2)
    assert done.status.value == "SUCCESS"


def _scalar(wh, sql: str):
    with wh.connect() as conn:
        return conn.execute(text(sql)).scalar_one()
