"""The verify benchmark: ``python -m bench.verify --rows 1000000``.

On its own throwaway databases, Redis prefix, queue and worker (as ``bench/run.py``): a
generated source is loaded once by chordload (SCD2, untimed), then timed:

1. full_read   one full read of the source, as a load's typed path reads it: the source
               query streamed through a server-side cursor into Python rows, one stream
2. verify      ``chordload verify`` of the equal target (start_verify + wait_verify): both
               sides digested range by range on the worker (its pool, in parallel)

and prints both, their ratio (the goal: verify at most 1.5x one full read) and the worker's
peak RSS. See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from bench.env import DEFAULT_PG, DEFAULT_REDIS, BenchServices, BenchWorker, dsn
from bench.run import isolate_environment, mapping
from bench.source import SOURCE_QUERY, create_source

GOAL_RATIO = 1.5


def full_read(source_url: str, batch_rows: int) -> tuple[int, float]:
    """Rows and seconds of one stream of the whole source query into Python rows."""
    from shared.dialects import adapter_for
    from shared.engines import READ_ONLY, get_engine

    adapter = adapter_for(get_engine(source_url))
    start = time.perf_counter()
    rows = 0
    with adapter.engine.connect().execution_options(**READ_ONLY) as conn:
        sql = f"SELECT * FROM {adapter.from_query(SOURCE_QUERY)}"
        for batch in adapter.stream(conn, sql, {}, batch_rows):
            rows += len(batch)
    return rows, time.perf_counter() - start


def run(args: argparse.Namespace, log=print) -> dict[str, Any]:
    from coordinator.launch import launch
    from coordinator.verify import start_verify, wait_verify
    from coordinator.watch import wait
    from shared.config.settings import settings_from_dict
    from shared.engines import get_engine
    from shared.metadata.schema import upgrade

    n = args.rows
    rows_per_chunk = args.rows_per_chunk or max(1000, n // 20)
    services = BenchServices(pg_base=args.pg, redis_url=args.redis)
    work = Path(tempfile.mkdtemp(prefix="chordload-bench-verify-"))
    worker: BenchWorker | None = None
    services.create()
    try:
        create_source(dsn(services.urls["src"]), n)
        spec = mapping("dim_verify", rows_per_chunk, rows_per_chunk, 10_000, args.concurrency)
        config = services.config({"bench_verify": spec})
        config_path = work / "chordload.yaml"
        config_path.write_text(yaml.safe_dump(config))
        os.environ["CHORDLOAD_CONFIG"] = str(config_path)
        settings = settings_from_dict(config, "bench config")
        upgrade(get_engine(settings.metadata))
        worker = BenchWorker(
            config_path, services.queue, services.token, work / "worker.log", args.concurrency
        )
        worker.start()
        loaded = wait(launch("bench_verify", settings=settings), settings=settings, timeout_s=3600)
        log(f"[bench] loaded {loaded.rows_read:,} rows: {loaded.status.value}")
        read_rows, read_s = full_read(services.urls["src"], 10_000)
        log(f"[bench] full read: {read_rows:,} rows in {read_s:.2f} s")
        worker.reset_peaks()
        start = time.perf_counter()
        verify_id = start_verify(settings, "bench_verify")
        verify = wait_verify(settings, verify_id, timeout_s=3600, poll_s=0.1)
        verify_s = time.perf_counter() - start
        worker.sample()
        ratio = verify_s / read_s
        result = {
            "rows": n,
            "full_read_s": round(read_s, 3),
            "verify_s": round(verify_s, 3),
            "verify_status": verify.status.value,
            "verify_ranges": verify.ranges_total,
            "rows_source": verify.rows_source,
            "rows_target": verify.rows_target,
            "ratio": round(ratio, 2),
            "goal_ratio": GOAL_RATIO,
            "goal_met": ratio <= GOAL_RATIO and verify.status.value == "EQUAL",
            "worker_peak_rss_mb": round(worker.peak_rss_mb(), 1),
            "concurrency": args.concurrency,
        }
        log(
            f"[bench] verify: {verify.status.value} in {verify_s:.2f} s over "
            f"{verify.ranges_total} ranges = {ratio:.2f}x one full read (goal <= "
            f"{GOAL_RATIO}x: {'met' if result['goal_met'] else 'missed'}); worker peak RSS "
            f"{result['worker_peak_rss_mb']} MB"
        )
        return result
    finally:
        if worker is not None:
            worker.stop()
        services.drop()
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.verify", description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rows-per-chunk", type=int, default=None)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--pg", default=DEFAULT_PG)
    parser.add_argument("--redis", default=DEFAULT_REDIS)
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the result")
    args = parser.parse_args(argv)
    isolate_environment()
    result = run(args)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0 if result["verify_status"] == "EQUAL" else 1


if __name__ == "__main__":
    sys.exit(main())
