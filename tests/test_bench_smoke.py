"""The benchmark harness (bench/, docs/benchmarks.md) on a tiny source, so it never rots.

It runs ``python -m bench.run`` as its own process, exactly as a person would: the harness
makes and drops its own databases, Redis key prefix, queue and worker. Timing targets are
not asserted (they are for 1,000,000 rows on a quiet machine); the report must have every
scenario with sane numbers, and every correctness check of the harness must pass.

Also here: the COPY text the Postgres adapter builds a column at a time (a speed-up measured
with the harness) must load exactly what the value-by-value formatter loads.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import subprocess
import sys
import uuid
from decimal import Decimal
from pathlib import Path

import pytest

from shared.dialects.postgres import copy_text, copy_text_value

REPO = Path(__file__).resolve().parent.parent
ROWS = 20_000
NAIVE_ROWS = 2_000
MANY_CHUNKS = 50  # the real run uses 200; fewer keep the smoke run short on a busy machine
SCENARIOS = {
    "limit",
    "baseline",
    "initial",
    "chunks_4",
    f"chunks_{MANY_CHUNKS}",
    "limit_incremental",
    "incremental",
    "celery_4",
    f"celery_{MANY_CHUNKS}",
    "naive",
}
TARGETS = {
    "initial_vs_limit",
    "initial_vs_baseline",
    "incremental_vs_initial",
    "many_vs_few_chunks",
    "worker_peak_rss_mb",
    "rss_spread_mb",
    "planning_s",
}


@pytest.mark.e2e
def test_bench_harness_smoke(tmp_path):
    out = tmp_path / "report.json"
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in (
            "CHORDLOAD_CONFIG",
            "CHORDLOAD_BROKER_URL",
            "CHORDLOAD_RESULT_BACKEND",
            "CHORDLOAD_METADATA_URL",
        )
    }
    if "CHORDLOAD_TEST_PG" in env:
        env["CHORDLOAD_BENCH_PG"] = env["CHORDLOAD_TEST_PG"]
    if "CHORDLOAD_TEST_REDIS" in env:
        env["CHORDLOAD_BENCH_REDIS"] = env["CHORDLOAD_TEST_REDIS"]
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.run",
            "--rows",
            str(ROWS),
            "--naive-rows",
            str(NAIVE_ROWS),
            "--many-chunks",
            str(MANY_CHUNKS),
            "--quick",
            "--json",
            str(out),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}"
    assert "targets (issues 7 and 16)" in proc.stdout  # the table was printed
    report = json.loads(out.read_text())

    assert report["rows"] == ROWS
    bad = [c for c in report["checks"] if not c["ok"]]
    assert not bad and len(report["checks"]) >= 14, bad
    results = {r["scenario"]: r for r in report["results"]}
    assert set(results) == SCENARIOS
    for r in results.values():
        assert 0 < r["wall_s"] < 120, r
        if not r["scenario"].startswith("celery_"):  # those load nothing
            assert r["rows_per_s"] > 0 and r["ratio_to_baseline"] > 0, r
    assert results["baseline"]["ratio_to_baseline"] == 1
    assert results["limit"]["ratio_to_limit"] == 1 and results["limit"]["rows"] == ROWS
    for name in ("initial", "chunks_4", f"chunks_{MANY_CHUNKS}"):
        assert results[name]["rows"] == ROWS
    assert results["chunks_4"]["chunks"] == 4
    assert results[f"chunks_{MANY_CHUNKS}"]["chunks"] == MANY_CHUNKS
    assert results["initial"]["chunks"] > 1  # the harness loads in parallel even on tiny N
    assert results["incremental"]["rows"] == ROWS // 10
    # the incremental's floor applies the same window (the boundary row re-read) to the limit
    assert results["limit_incremental"]["rows"] == results["incremental"]["rows"]
    # and expired and wrote the changed rows (the harness's check, passed above)
    assert any(c["name"] == "limit_incremental r0: counts" for c in report["checks"])
    assert results["naive"]["rows"] == NAIVE_ROWS and results["naive"]["per_row_us"] > 0
    assert results[f"celery_{MANY_CHUNKS}"]["chunks"] == MANY_CHUNKS
    chordload = SCENARIOS - {"limit", "limit_incremental", "baseline", "naive"}
    for name in {n for n in chordload if not n.startswith("celery_")}:
        assert 20 < results[name]["worker_peak_rss_mb"] < 1000, results[name]
        assert results[name]["worker_cpu_s"] > 0, results[name]

    # where the CPU went, by process (bench/cpu.py): the databases run on this machine
    assert "CPU seconds by process" in proc.stdout
    for name in ("limit", "initial"):
        cpu = results[name]["detail"]["cpu_s"]
        assert cpu["source"] > 0 and cpu["target"] > 0, (name, cpu)
    assert results["limit"]["detail"]["cpu_s"]["bench"] > 0  # its relay thread
    assert results["initial"]["detail"]["cpu_s"]["workers"] > 0

    planning = report["planning"]
    assert planning["estimated_rows"] > 0 and planning["parts"] > 1
    assert 0 < planning["estimate_plus_boundaries_s"] < 30

    targets = {t["name"]: t for t in report["targets"]}
    assert set(targets) == TARGETS
    assert all(isinstance(t["met"], bool) and t["value"] >= 0 for t in targets.values())
    assert targets["incremental_vs_initial"]["floor"] > 0
    assert targets["many_vs_few_chunks"]["floor"] > 1  # the extra chunks cost Celery something
    assert "floor here" in proc.stdout


def test_profile_summary_counts_the_chunk_task_by_default(tmp_path):
    """The profile summary's default focus is the chunk task's frame as py-spy names it: a
    renamed task must not leave ``--profile`` summaries empty."""
    from bench import profile_summary
    from workers.tasks import load_chunk_task

    task = load_chunk_task.run
    frame = f"{task.__name__} ({Path(task.__code__.co_filename).relative_to(REPO)}:56)"
    idle = "_run_module_as_main (<frozen runpy>:198);Pool.__init__ (billiard/pool.py:1147) 40"
    capture = tmp_path / "chunks.txt"
    capture.write_text(
        f"{idle}\n"
        f'process 1:"celery";{frame};load_chunk (shared/chunk/load.py:101) 3\n'
        f'process 1:"celery";{frame};finish_chunk ({REPO}/shared/metadata/store.py:9) 1\n'
    )
    summary = profile_summary.summarize(capture, profile_summary.FOCUS, 10)
    assert "4 samples through" in summary, summary
    assert "25.0%  finish_chunk (shared/metadata/store.py)" in summary, summary


def test_copy_text_loads_what_value_by_value_loads(wh):
    """Column-at-a-time COPY text (type-picked formatters, escaping only when needed, mixed
    and odd types falling back) loads the same values as the value-by-value formatter."""
    tz = dt.timezone(dt.timedelta(hours=5, minutes=30))
    rows = [
        (
            1,
            "plain",
            Decimal("1.50"),
            0.1,
            dt.date(2026, 1, 2),
            dt.datetime(2026, 1, 2, 3, 4, 5, 6),
            dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=tz),
            dt.time(1, 2, 3, 4),
            True,
            uuid.uuid4(),
            b"\x00\x01\\",
            {"a": "t\tb"},
            7,
        ),
        (
            None,
            "tab\there\nnew\r\\back \\N",
            Decimal("-1E+3"),
            float("inf"),
            None,
            None,
            None,
            None,
            False,
            None,
            None,
            [1, "x"],
            2.5,
        ),
        (
            3,
            None,
            None,
            float("nan"),
            dt.date(1, 1, 1),
            dt.datetime(2026, 1, 1),
            dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
            dt.time(0, 0),
            None,
            None,
            bytearray(b"ab"),
            None,
            None,
        ),
        (
            4,
            "Zoë 🎉 日本",
            Decimal("NaN"),
            -0.0,
            dt.date(9999, 12, 31),
            None,
            None,
            None,
            True,
            None,
            memoryview(b"z"),
            '"s"',
            Decimal("3.25"),
        ),
        (5, "", Decimal("0"), 1e300, None, None, None, None, None, None, None, None, None),
    ]
    columns = (
        "i bigint, s text, n numeric, f double precision, d date, ts timestamp, "
        "tz timestamptz, t time, b boolean, u uuid, by bytea, j jsonb, m numeric"
    )
    loaded = []
    with wh.connect() as conn:
        dbapi = conn.connection.dbapi_connection
        cursor = dbapi.cursor()
        try:
            cursor.execute(f"CREATE TEMP TABLE copy_rt ({columns})")
            for body in (
                copy_text(rows),
                "".join("\t".join(map(copy_text_value, r)) + "\n" for r in rows),
            ):
                cursor.execute("TRUNCATE copy_rt")
                cursor.copy_expert("COPY copy_rt FROM STDIN", io.StringIO(body))
                cursor.execute("SELECT * FROM copy_rt ORDER BY i NULLS FIRST")
                loaded.append(
                    repr(
                        [
                            tuple(bytes(v) if isinstance(v, memoryview) else v for v in row)
                            for row in cursor.fetchall()
                        ]
                    )
                )
        finally:
            cursor.close()
            dbapi.rollback()  # the temp table goes with the transaction
    assert loaded[0] == loaded[1]
    assert "Zoë 🎉 日本" in loaded[0] and "tab\\there\\nnew" in loaded[0]
    assert copy_text([]) == ""
