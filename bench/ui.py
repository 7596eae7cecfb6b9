"""How fast the dashboard's pages answer with a real history: ``python -m bench.ui``.

On its own throwaway Postgres metadata database (``clbench_<token>_uimeta``, dropped at the
end): ``--runs`` runs (default 10,000) over ``--mappings`` mappings, 4 chunks each, a few
FAILED with quarantined rows, plus one RUNNING run of ``--chunks`` chunks (default 256) on 8
worker processes with 500 quarantined rows. The dashboard is served for real (uvicorn on a
loopback port) and each page is fetched ``--repeat`` times over HTTP with basic auth; the
table gives the median and the worst time per page against the 200 ms goal. See
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import base64
import statistics
import sys
import time
import urllib.request
import uuid

from sqlalchemy import create_engine, text

from bench.env import DEFAULT_PG
from coordinator.ui.security import Credentials
from coordinator.ui.serve import running
from shared.config.settings import settings_from_dict
from shared.engines import dispose_all, get_engine
from shared.metadata.schema import upgrade

GOAL_MS = 200.0
USER, PASSWORD = "bench", uuid.uuid4().hex
BIG_RUN = "bigrun0000000000"

SEED_RUNS = """
INSERT INTO process_log (run_id, mapref, status, created_at, started_at, ended_at, load_kind,
    estimated_rows, chunks_total, chunks_done, chunks_failed, rows_read, rows_inserted,
    rows_changed, rows_unchanged, rows_errored, rows_duplicate, rows_deleted, mapping,
    launches, plan_note, message)
SELECT lpad(to_hex(g), 16, '0'), 'm' || (g % :mappings),
    CASE WHEN g % 50 = 0 THEN 'FAILED' WHEN g % 97 = 0 THEN 'STOPPED' ELSE 'SUCCESS' END,
    now() - (:runs - g) * interval '5 minutes',
    now() - (:runs - g) * interval '5 minutes' + interval '2 seconds',
    now() - (:runs - g) * interval '5 minutes' + (30 + g % 90) * interval '1 second',
    'incremental', 100000, 4, 4, 0, 100000 + g % 5000, 1000, 500, 98500 + g % 5000,
    CASE WHEN g % 50 = 0 THEN 2 ELSE 0 END, 0, 0, CAST(:mapping AS json), 1,
    '4 chunks of ~25000 rows (quantile)',
    CASE WHEN g % 50 = 0 THEN 'chunk 3 failed: connection reset' END
FROM generate_series(1, :runs) g
"""
SEED_CHUNKS = """
INSERT INTO chunk_log (run_id, chunk_no, task_id, status, includes_nulls, rows_read,
    rows_inserted, rows_changed, rows_unchanged, rows_errored, rows_duplicate, batches_done,
    attempts, worker, started_at, heartbeat_at, ended_at)
SELECT p.run_id, c, p.run_id || '.' || c,
    CASE WHEN p.status = 'FAILED' AND c = 3 THEN 'FAILED' ELSE 'SUCCESS' END, false,
    25000, 250, 125, 24625, 0, 0, 3, 1, 'w' || (c % 2) || '@bench/' || (100 + c),
    p.started_at, p.ended_at, p.ended_at
FROM process_log p, generate_series(0, 3) c
WHERE p.run_id <> :big
"""
SEED_ERRORS = """
INSERT INTO error_row (run_id, chunk_no, row_key, row_data, message, created_at)
SELECT p.run_id, 3, json_build_object('id', k), json_build_object('id', k, 'name', 'x'),
    'value too long for type character varying(20)', p.ended_at
FROM process_log p, generate_series(1, 2) k WHERE p.status = 'FAILED'
"""
SEED_BIG_RUN = """
INSERT INTO process_log (run_id, mapref, status, created_at, started_at, load_kind,
    estimated_rows, chunks_total, chunks_done, chunks_failed, rows_read, rows_inserted,
    rows_changed, rows_unchanged, rows_errored, rows_duplicate, rows_deleted, mapping,
    launches, plan_note)
VALUES (:big, 'm0', 'RUNNING', now(), now() - interval '10 minutes', 'initial', 25600000,
    :chunks, 0, 0, 0, 0, 0, 0, 0, 0, 0, CAST(:mapping AS json), 1,
    '256 chunks requested with --chunks');
INSERT INTO chunk_log (run_id, chunk_no, task_id, status, includes_nulls, lower_bound,
    upper_bound, rows_read, rows_inserted, rows_changed, rows_unchanged, rows_errored,
    rows_duplicate, batches_done, attempts, worker, started_at, heartbeat_at, ended_at)
SELECT :big, c, :big || '.' || c,
    CASE WHEN c < :chunks * 0.6 THEN 'SUCCESS' WHEN c < :chunks * 0.6 + 8 THEN 'RUNNING'
         ELSE 'PENDING' END, false,
    json_build_object('type', 'int', 'value', c * 100000),
    json_build_object('type', 'int', 'value', (c + 1) * 100000),
    CASE WHEN c < :chunks * 0.6 + 8 THEN 100000 ELSE 0 END, 100000, 0, 0, 0, 0, 10, 1,
    CASE WHEN c < :chunks * 0.6 + 8 THEN 'w' || (c % 8) || '@bench/' || (200 + c % 8) END,
    CASE WHEN c < :chunks * 0.6 + 8
         THEN now() - interval '10 minutes' + (c / 8) * interval '15 seconds' END,
    now(),
    CASE WHEN c < :chunks * 0.6
         THEN now() - interval '10 minutes' + (c / 8 + 1) * interval '15 seconds' END
FROM generate_series(0, :chunks - 1) c;
INSERT INTO error_row (run_id, chunk_no, row_key, row_data, message, created_at)
SELECT :big, k % :chunks, json_build_object('id', k),
    json_build_object('id', k, 'name', '<script>alert(' || k || ')</script>'),
    'value too long for type character varying(20)', now()
FROM generate_series(1, 500) k;
"""


def _mapping(i: int) -> dict:
    return {
        "source": {"connection": "src", "query": f"SELECT * FROM src.t{i}"},
        "target": {"connection": "src", "table": f"dw.t{i}"},
        "keys": ["id"],
        "schedule": "*/15 * * * *",
        "freshness_s": 3600,
    }


def _fetch(url: str) -> float:
    auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    request = urllib.request.Request(url, headers={"Authorization": f"Basic {auth}"})
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=30) as response:
        response.read()
        assert response.status == 200, url
    return (time.perf_counter() - started) * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ui", description=__doc__)
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--chunks", type=int, default=256)
    parser.add_argument("--mappings", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--pg", default=DEFAULT_PG, help="Postgres server URL (no database)")
    args = parser.parse_args(argv)

    name = f"clbench_{uuid.uuid4().hex[:8]}_uimeta"
    admin = create_engine(f"{args.pg}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = f"{args.pg}/{name}"
    try:
        engine = get_engine(url)
        upgrade(engine)
        mapping_json = '{"source": {"query": "' + "x" * 2000 + '"}}'  # frozen specs are big
        started = time.perf_counter()
        with engine.begin() as conn:
            params = {"runs": args.runs, "mappings": args.mappings, "mapping": mapping_json}
            conn.execute(text(SEED_RUNS), params)
            conn.execute(text(SEED_CHUNKS), {"big": BIG_RUN})
            conn.execute(text(SEED_ERRORS))
            for statement in SEED_BIG_RUN.split(";"):
                if statement.strip():
                    conn.execute(
                        text(statement),
                        {"big": BIG_RUN, "chunks": args.chunks, "mapping": mapping_json},
                    )
        with engine.begin() as conn:
            conn.execute(text("ANALYZE"))
        print(
            f"seeded {args.runs:,} runs ({4 * args.runs:,} chunks) over {args.mappings} "
            f"mappings and a {args.chunks}-chunk run in {time.perf_counter() - started:.1f} s"
        )
        settings = settings_from_dict(
            {
                "metadata": url,
                "connections": {"src": url},
                "mappings": {f"m{i}": _mapping(i) for i in range(args.mappings)},
            },
            "bench",
        )
        pages = [
            "/",
            "/runs",
            "/runs?page=100",
            "/runs?mapping=m7",
            "/runs?status=FAILED",
            "/runs?mapping=m7&status=STOPPED",
            f"/runs/{BIG_RUN}",
            f"/runs/{BIG_RUN}/live",
            "/runs/" + f"{50:016x}",
            "/mappings/m7",
            "/metrics",
        ]
        results = []
        with running(settings, Credentials(USER, PASSWORD)) as base:
            for page in pages:
                _fetch(base + page)  # warm: templates compiled, connections pooled
                times = [_fetch(base + page) for _ in range(args.repeat)]
                results.append((page, statistics.median(times), max(times)))
        print(f"\n{'page':<40} {'median ms':>10} {'max ms':>10}  goal {GOAL_MS:.0f} ms")
        missed = 0
        for page, median, worst in results:
            verdict = "met" if median < GOAL_MS else "MISSED"
            missed += verdict == "MISSED"
            print(f"{page:<40} {median:>10.1f} {worst:>10.1f}  {verdict}")
        return 1 if missed else 0
    finally:
        dispose_all()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    sys.exit(main())
