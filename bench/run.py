"""The chordload benchmark: ``python -m bench.run --rows 1000000`` (or ``make bench``).

In one run, on its own throwaway Postgres databases, Redis key prefix and Celery queue:

0. limit        the floor: one COPY stream into a fresh index-free SCD2 table, then indexes
1. baseline     one stream, no chordload code: COPY out -> COPY into a stage -> SCD2 SQL
2. initial      chordload initial SCD2 load, real prefork worker (2 processes) on Redis
3. chunks_4     the same initial load forced to 4 chunks     (launch(chunks_override=4))
   celery_4, celery_200: chords of 4 and 200 no-op tasks on the same worker (Celery's share)
4. chunks_200   the same initial load forced to 200 chunks   (launch(chunks_override=200))
5. incremental  chordload on the ``initial`` target after 10% of the rows changed (KEY),
                after ``limit_incremental``, its floor: the same changed rows applied to the
                limit's table by plain SCD2 SQL, one session a pool process
6. naive        row-at-a-time loader (look up each key, insert or update) on a smaller N
7. planning     hwm + estimate + boundaries of the full window (the planner's own calls)

then prints a table (wall time, rows/s, ratio to the limit and to the baseline, worker
peak RSS) and the issues' targets as met / missed. Ratios are what to read: the machine is
shared and noisy. See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench.cpu import ROLES as CPU_ROLES
from bench.cpu import CpuByRole
from bench.env import (
    DEFAULT_PG,
    DEFAULT_REDIS,
    REPO,
    BenchServices,
    BenchWorker,
    dsn,
    machine_busy_s,
)
from bench.loaders import (
    baseline_scd2,
    create_scd2_target,
    limit_incremental_scd2,
    limit_scd2,
    naive_scd2,
)
from bench.source import SOURCE_QUERY, SOURCE_TABLE, change_tenth, create_source, max_updated_at, pg
from shared.config.mapping import LEGACY_AUDIT_NAMES

TARGETS = {
    "initial_vs_limit": 1.15,
    "initial_vs_baseline": 1.5,
    "incremental_vs_initial": 0.25,
    "many_vs_few_chunks": 1.25,
    "worker_peak_rss_mb": 250.0,
    "rss_spread_mb": 25.0,
    "planning_s": 2.0,
}


@dataclass
class Result:
    scenario: str
    description: str
    rows: int
    wall_s: float
    chunks: int | None = None
    worker_peak_rss_mb: float | None = None
    worker_cpu_s: float | None = None
    ratio_to_baseline: float | None = None
    ratio_to_limit: float | None = None
    per_row_us: float | None = None
    extrapolated_s: float | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.wall_s if self.wall_s > 0 else 0.0


@dataclass
class Report:
    rows: int
    naive_rows: int
    batch_rows: int
    rows_per_chunk: int
    rounds: int
    machine: dict[str, Any]
    results: list[Result] = field(default_factory=list)
    planning: dict[str, Any] = field(default_factory=dict)
    targets: list[dict[str, Any]] = field(default_factory=list)
    checks: list[dict[str, Any]] = field(default_factory=list)
    round_walls: dict[str, list[float]] = field(default_factory=dict)
    total_s: float = 0.0

    def result(self, scenario: str) -> Result | None:
        return next((r for r in self.results if r.scenario == scenario), None)

    def check(self, name: str, ok: bool, detail: str) -> None:
        self.checks.append({"name": name, "ok": bool(ok), "detail": detail})

    def to_json(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "naive_rows": self.naive_rows,
            "batch_rows": self.batch_rows,
            "rows_per_chunk": self.rows_per_chunk,
            "rounds": self.rounds,
            "machine": self.machine,
            "results": [{**asdict(r), "rows_per_s": r.rows_per_s} for r in self.results],
            "planning": self.planning,
            "targets": self.targets,
            "checks": self.checks,
            "round_walls": self.round_walls,
            "total_s": self.total_s,
        }


# -- chordload scenarios ---------------------------------------------------------------------
def mapping(
    target: str, rows_per_chunk: int, min_rows_for_parallel: int, batch_rows: int, parallelism: int
) -> dict[str, Any]:
    return {
        "source": {"connection": "src", "query": SOURCE_QUERY},
        "target": {"connection": "wh", "table": f"public.{target}"},
        "keys": ["id"],
        # the baselines' tables (bench/loaders.py) use the unprefixed audit names: so does
        # chordload's target here, so every table is checked with the same SQL
        "scd": {"type": 2, "audit_columns": LEGACY_AUDIT_NAMES},
        "checkpoint": {"strategy": "KEY", "column": "updated_at"},
        "chunking": {
            "column": "id",
            "rows_per_chunk": rows_per_chunk,
            "min_rows_for_parallel": min_rows_for_parallel,
            "parallelism": parallelism,
        },
        "batch_rows": batch_rows,
    }


def settle(target_dsn: str, checkpoint: bool = True) -> None:
    """Before a measurement: VACUUM (ANALYZE) the warehouse (the tables earlier scenarios
    loaded; already-clean ones are skipped quickly), so autovacuum does not wake up on them in
    the middle of the next scenario, then CHECKPOINT (needs superuser; skipped without it) so
    one scenario does not pay for flushing the writes of the previous one."""
    with pg(target_dsn, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute("VACUUM (ANALYZE)")
        if not checkpoint:
            return
        try:
            cur.execute("CHECKPOINT")
        except Exception:
            pass


class Profiler:
    """Optional py-spy sampling of the worker's pool processes during one scenario."""

    def __init__(self, out_dir: Path | None, idle: bool = True):
        self.out_dir = out_dir
        self.idle = idle
        self.exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        self.proc: subprocess.Popen | None = None

    def start(self, worker_pid: int, scenario: str) -> None:
        if self.out_dir is None:
            return
        if not Path(self.exe).exists():
            raise SystemExit("--profile needs py-spy: pip install -e '.[bench]'")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        out = self.out_dir / f"{scenario}.txt"
        self.proc = subprocess.Popen(
            [
                self.exe,
                "record",
                "--pid",
                str(worker_pid),
                "--subprocesses",
                *(["--idle"] if self.idle else []),
                "--rate",
                "100",
                "--format",
                "raw",
                "--output",
                str(out),
                "--nonblocking",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(1.0)  # let py-spy attach before the scenario starts

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


def run_chordload(
    settings,
    worker: BenchWorker,
    profiler: Profiler,
    mapref: str,
    scenario: str,
    chunks_override: int | None = None,
    timeout_s: float = 3600,
):
    from coordinator.launch import launch
    from coordinator.watch import wait

    if worker.pid is None:
        raise RuntimeError("the benchmark's worker is not running")
    worker.reset_peaks()
    profiler.start(worker.pid, scenario)
    try:
        busy = machine_busy_s()
        start = time.perf_counter()
        run_id = launch(mapref, settings=settings, chunks_override=chunks_override)
        launched = time.perf_counter()
        run = wait(
            run_id,
            settings=settings,
            timeout_s=timeout_s,
            poll_s=0.1,
            on_progress=lambda _snap: worker.sample(),
        )
        wall = time.perf_counter() - start
        busy = machine_busy_s() - busy
    finally:
        profiler.stop()
    detail = {
        "run_id": run_id,
        "status": run.status.value,
        "message": run.message,
        "launch_s": round(launched - start, 3),
        "rows_read": run.rows_read,
        "rows_inserted": run.rows_inserted,
        "rows_changed": run.rows_changed,
        "rows_unchanged": run.rows_unchanged,
        "estimated_rows": run.estimated_rows,
        "plan_note": run.plan_note,
        "worker_cpu_s": worker.cpu_s(),
        "machine_busy_cores": round(busy / wall, 2),
    }
    return run, wall, worker.peak_rss_mb(), detail


def celery_chord_s(settings, tasks: int, timeout_s: float) -> float:
    """Wall seconds of one chord of ``tasks`` no-op tasks (Celery's built-in
    ``celery.accumulate``) and a no-op callback through the benchmark's worker, with
    chordload's Celery settings: what Celery itself costs a chunk, with nothing of
    chordload's inside the task."""
    from celery import chord

    from shared.broker import client_app

    noop = client_app(settings).signature("celery.accumulate")
    start = time.perf_counter()
    result = chord([noop.clone(args=(i,)) for i in range(tasks)])(noop.clone())
    # each task returns its arguments, (i,); the callback its one argument, the list of those
    (header_results,) = result.get(timeout=timeout_s)
    wall = time.perf_counter() - start
    if sorted(header_results) != [[i] for i in range(tasks)]:
        raise RuntimeError(f"a chord of {tasks} no-op tasks returned {header_results}")
    return wall


def measure_planning(settings, mapref: str, parts_override: int | None) -> dict[str, Any]:
    """The planner's own calls on the full (first-run) window: hwm, estimate, boundaries;
    then ``plan_run`` end to end (columns, checkpoint, all of the above, target check)."""
    from coordinator.plan import chunk_count, plan_run, planned_boundaries
    from shared.dialects import adapter_for
    from shared.engines import READ_ONLY, get_engine
    from shared.run.window import Window

    spec = settings.mapping(mapref)
    engine = get_engine(settings.connection_url(spec.source.connection))
    adapter = adapter_for(engine)
    out: dict[str, Any] = {}
    with engine.connect().execution_options(**READ_ONLY) as conn:
        t0 = time.perf_counter()
        hwm = adapter.max_value(conn, spec.source.query, spec.checkpoint_column)
        t1 = time.perf_counter()
        where, params = Window(spec.checkpoint_column, None, hwm).predicate(adapter)
        estimate = adapter.estimate_rows(
            conn, spec.source.query, where, params, spec.chunking.exact_count
        )
        t2 = time.perf_counter()
        parts, _note = chunk_count(spec, estimate, None)
        bounds, method = planned_boundaries(
            adapter, conn, mapref, spec, where, params, parts, estimate
        )
        t3 = time.perf_counter()
        many = parts_override or 200
        many_bounds, many_method = planned_boundaries(
            adapter, conn, mapref, spec, where, params, many, estimate
        )
        t4 = time.perf_counter()
        exact = adapter.split_boundaries(
            conn, spec.source.query, where, params, spec.split_column, parts
        )
        t5 = time.perf_counter()
        sizes = chunk_sizes(conn, adapter, spec, where, params, bounds)
        many_sizes = chunk_sizes(conn, adapter, spec, where, params, many_bounds)
    out.update(
        hwm_s=t1 - t0,
        estimate_s=t2 - t1,
        boundaries_s=t3 - t2,
        parts=parts,
        bounds=len(bounds),
        estimated_rows=estimate,
        estimate_plus_boundaries_s=(t2 - t1) + (t3 - t2),
        total_s=t3 - t0,
        boundaries_200_s=t4 - t3,
        parts_200=many,
        method=method,
        method_200=many_method,
        exact_boundaries_s=t5 - t4,
        exact_bounds=len(exact),
        chunk_rows_min=min(sizes),
        chunk_rows_max=max(sizes),
        chunk_rows_min_200=min(many_sizes),
        chunk_rows_max_200=max(many_sizes),
    )
    metadata = get_engine(settings.metadata)
    t5 = time.perf_counter()
    plan = plan_run(settings, mapref, spec, metadata)
    out["plan_run_s"] = time.perf_counter() - t5
    out["plan_run_chunks"] = len(plan.ranges)
    return out


def chunk_sizes(conn, adapter, spec, where, params, bounds) -> list[int]:
    """Rows of the window in each chunk the boundaries make (the plan's balance)."""
    from sqlalchemy import text

    from shared.run.window import ranges_from_bounds

    sizes = []
    for chunk in ranges_from_bounds(bounds):
        range_sql, range_params = chunk.predicate(adapter, spec.split_column)
        sizes.append(
            conn.execute(
                text(
                    f"SELECT count(*) FROM {adapter.from_query(spec.source.query)} "
                    f"WHERE ({where}) AND {range_sql}"
                ),
                {**params, **range_params},
            ).scalar_one()
        )
    return sizes


def _scalar(any_dsn: str, sql: str) -> Any:
    with pg(any_dsn) as conn, conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetchone()[0]


def target_state(target_dsn: str, table: str) -> tuple[int, int, int]:
    """(all versions, current versions, keys with more than one current version)."""
    with pg(target_dsn) as conn, conn.cursor() as cur:
        cur.execute(
            f"SELECT count(*), count(*) FILTER (WHERE is_current), "
            f"(SELECT count(*) FROM (SELECT id FROM {table} WHERE is_current GROUP BY id "
            f"HAVING count(*) > 1) d) FROM {table}"
        )
        return cur.fetchone()


# -- the run ---------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=1_000_000, help="source rows (default 1,000,000)")
    p.add_argument(
        "--naive-rows",
        type=int,
        default=None,
        help="rows for the row-at-a-time loader (default min(rows, 20,000))",
    )
    p.add_argument("--batch-rows", type=int, default=10_000, help="mapping batch_rows")
    p.add_argument(
        "--rows-per-chunk",
        type=int,
        default=None,
        help="mapping rows_per_chunk (default rows/20: 50,000 for 1M rows)",
    )
    p.add_argument("--few-chunks", type=int, default=4)
    p.add_argument("--many-chunks", type=int, default=200)
    p.add_argument("--concurrency", type=int, default=2, help="worker pool processes")
    p.add_argument(
        "--incremental-chunks",
        type=int,
        default=None,
        help="force the incremental run's chunk count (default: as planned)",
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="rounds of the timed scenarios; each reports its median round",
    )
    p.add_argument(
        "--skip",
        action="append",
        default=[],
        choices=["naive", "chunks", "incremental", "baseline"],
        help="leave a scenario out",
    )
    p.add_argument("--pg", default=DEFAULT_PG, help="Postgres server URL, no database")
    p.add_argument("--redis", default=DEFAULT_REDIS)
    p.add_argument("--json", type=Path, help="also write the report as JSON here")
    p.add_argument(
        "--profile",
        type=Path,
        help="py-spy the worker pool during chordload scenarios into this folder "
        "(raw collapsed stacks; slows the run, so timings are not comparable)",
    )
    p.add_argument(
        "--profile-cpu",
        action="store_true",
        help="with --profile: sample only running code (default: wall time, "
        "including waits on the database)",
    )
    p.add_argument(
        "--run-timeout",
        type=float,
        default=1800,
        help="seconds to wait for one chordload run before giving up",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="for smoke runs: no CHECKPOINT between scenarios and no fresh worker "
        "for the chunk comparison (faster; timings and RSS less comparable)",
    )
    p.add_argument(
        "--keep",
        action="store_true",
        help="keep the databases (names printed) instead of dropping them",
    )
    args = p.parse_args(argv)
    if args.rows < 100:
        p.error("--rows must be at least 100")
    if args.repeat < 1:
        p.error("--repeat must be at least 1")
    args.naive_rows = min(args.rows, args.naive_rows or 20_000)
    args.rows_per_chunk = args.rows_per_chunk or max(1, math.ceil(args.rows / 20))
    return args


class Scenarios:
    """Runs the scenarios of one benchmark; each round loads fresh target tables, and each
    scenario's result is the median wall time over the rounds."""

    def __init__(
        self,
        args: argparse.Namespace,
        report: Report,
        settings,
        worker: BenchWorker,
        src: str,
        wh: str,
        log,
        db_names: dict[str, str],
    ):
        self.args, self.report, self.settings, self.worker = args, report, settings, worker
        self.src, self.wh, self.log = src, wh, log
        self.databases = {
            "source": db_names["src"],
            "target": db_names["wh"],
            "metadata": db_names["meta"],
        }
        self.profiler = Profiler(args.profile, idle=not args.profile_cpu)
        self.samples: dict[str, list[Result]] = {}

    def cpu(self) -> CpuByRole:
        """CPU seconds by process role over a ``with`` block (bench/cpu.py)."""
        return CpuByRole(self.databases, lambda: self.worker.pid)

    def record(self, result: Result) -> None:
        self.samples.setdefault(result.scenario, []).append(result)

    def limit(self, round_no: int) -> None:
        table = f"public.limit_dim_r{round_no}"
        settle(self.wh, checkpoint=not self.args.quick)
        busy = machine_busy_s()
        with self.cpu() as cpu:
            floor = limit_scd2(self.src, self.wh, table)
        busy = machine_busy_s() - busy
        self.record(
            Result(
                "limit",
                "the floor: one COPY stream into a fresh table, then its indexes",
                floor.rows,
                floor.wall_s,
                detail={
                    "copy_s": round(floor.copy_s, 3),
                    "index_s": round(floor.apply_s, 3),
                    "machine_busy_cores": round(busy / floor.wall_s, 2),
                    "cpu_s": cpu.seconds,
                },
            )
        )
        self.report.check(
            f"limit r{round_no}: loaded every row",
            floor.rows == self.args.rows,
            f"loaded {floor.rows} of {self.args.rows}",
        )
        self.log(
            f"[bench] r{round_no} limit: {floor.wall_s:.2f}s (copy {floor.copy_s:.2f}s, "
            f"indexes {floor.apply_s:.2f}s), CPU s {cpu_text(cpu.seconds)}"
        )

    def baseline(self, round_no: int) -> None:
        table = f"public.base_dim_r{round_no}"
        # settle first: a VACUUMed empty target would be planned as empty (see bench/loaders.py)
        settle(self.wh, checkpoint=not self.args.quick)
        with pg(self.wh) as conn, conn.cursor() as cur:
            create_scd2_target(cur, table)
        busy = machine_busy_s()
        with self.cpu() as cpu:
            base = baseline_scd2(self.src, self.wh, table)
        busy = machine_busy_s() - busy
        n = self.args.rows
        self.record(
            Result(
                "baseline",
                "one stream: COPY out -> COPY in -> SCD2 SQL",
                base.rows,
                base.wall_s,
                detail={
                    "copy_s": round(base.copy_s, 3),
                    "apply_s": round(base.apply_s, 3),
                    "machine_busy_cores": round(busy / base.wall_s, 2),
                    "cpu_s": cpu.seconds,
                },
            )
        )
        self.report.check(
            f"baseline r{round_no}: loaded every row",
            base.inserted == n == base.rows,
            f"inserted {base.inserted} of {n}",
        )
        self.log(
            f"[bench] r{round_no} baseline: {base.wall_s:.2f}s (copy {base.copy_s:.2f}s, "
            f"apply {base.apply_s:.2f}s), CPU s {cpu_text(cpu.seconds)}"
        )

    def limit_incremental(self, round_no: int, where: str, changed: int) -> None:
        """The incremental's floor on this round's ``limit`` table (bench/loaders.py)."""
        settle(self.wh, checkpoint=not self.args.quick)
        with self.cpu() as cpu:
            floor = limit_incremental_scd2(
                self.src,
                self.wh,
                f"public.limit_dim_r{round_no}",
                where=where,
                sessions=self.args.concurrency,
            )
        self.record(
            Result(
                "limit_incremental",
                "the incremental's floor: one COPY stream into a stage, then the SCD2 SQL in "
                "one transaction a pool process",
                floor.rows,
                floor.wall_s,
                detail={
                    "copy_s": round(floor.copy_s, 3),
                    "apply_s": round(floor.apply_s, 3),
                    "cpu_s": cpu.seconds,
                },
            )
        )
        self.report.check(
            f"limit_incremental r{round_no}: counts",
            (floor.changed, floor.inserted) == (changed, 0),
            f"changed/inserted {floor.changed}/{floor.inserted}, expected {changed}/0",
        )
        self.log(
            f"[bench] r{round_no} limit_incremental: {floor.wall_s:.2f}s (copy "
            f"{floor.copy_s:.2f}s, SCD2 SQL {floor.apply_s:.2f}s in {self.args.concurrency} "
            f"sessions), CPU s {cpu_text(cpu.seconds)}"
        )

    def celery_chords(self, round_no: int, few: int, many: int) -> None:
        """Celery's own cost of ``many`` chunks against ``few``: chords of no-op tasks."""
        settle(self.wh, checkpoint=not self.args.quick)
        # untimed: the first chord after a worker restart took 0.2 s for 4 tasks, against
        # 0.04 s warm; that would lower the floor by taking too much off the few-chunk run
        celery_chord_s(self.settings, 1, self.args.run_timeout)
        for tasks in (few, many):
            with self.cpu() as cpu:
                wall = celery_chord_s(self.settings, tasks, self.args.run_timeout)
            self.record(
                Result(
                    f"celery_{tasks}",
                    f"a chord of {tasks} no-op tasks (celery.accumulate) on the same worker",
                    0,
                    wall,
                    chunks=tasks,
                    detail={"cpu_s": cpu.seconds},
                )
            )
            self.log(
                f"[bench] r{round_no} celery_{tasks}: {wall:.2f}s for a chord of {tasks} "
                f"no-op tasks, CPU s {cpu_text(cpu.seconds)}"
            )

    def chordload(
        self,
        name: str,
        mapref: str,
        description: str,
        expect: tuple[int, int, int],
        chunks_override: int | None = None,
        round_no: int = 0,
        fresh_worker: bool = False,
    ) -> None:
        settle(self.wh, checkpoint=not self.args.quick)
        if fresh_worker and not self.args.quick:  # peak-RSS comparison: no inherited high mark
            self.worker.restart()
        with self.cpu() as cpu:
            run, wall, rss, detail = run_chordload(
                self.settings,
                self.worker,
                self.profiler,
                mapref,
                f"{name}_r{round_no}",
                chunks_override,
                self.args.run_timeout,
            )
        detail["cpu_s"] = cpu.seconds
        table = f"public.{self.settings.mapping(mapref).target.table_name}"
        total, current, doubled = target_state(self.wh, table)
        self.record(
            Result(
                name,
                description,
                run.rows_read,
                wall,
                chunks=run.chunks_total,
                worker_peak_rss_mb=round(rss, 1),
                worker_cpu_s=round(detail.pop("worker_cpu_s"), 2),
                detail=detail,
            )
        )
        got = (run.rows_read, run.rows_inserted, run.rows_changed)
        self.report.check(
            f"{name} r{round_no}: run SUCCESS",
            run.status.value == "SUCCESS",
            f"{run.status.value}: {run.message or ''}",
        )
        self.report.check(
            f"{name} r{round_no}: counts",
            got == expect,
            f"read/inserted/changed {'/'.join(map(str, got))}, expected "
            f"{'/'.join(map(str, expect))}",
        )
        self.report.check(
            f"{name} r{round_no}: one current version per key",
            current == self.args.rows and doubled == 0,
            f"{current} current of {total} versions, {doubled} keys doubled",
        )
        self.log(
            f"[bench] r{round_no} {name}: {wall:.2f}s, {run.chunks_total} chunks, worker "
            f"CPU {self.samples[name][-1].worker_cpu_s:.1f}s, peak RSS {rss:.0f} MB "
            f"({run.status.value}), CPU s {cpu_text(cpu.seconds)}"
        )

    def naive(self) -> None:
        args = self.args
        settle(self.wh, checkpoint=not self.args.quick)
        with pg(self.wh) as conn, conn.cursor() as cur:
            create_scd2_target(cur, "public.naive_dim")
        naive = naive_scd2(self.src, self.wh, "public.naive_dim", args.naive_rows)
        per_row = naive.wall_s / max(1, naive.rows)
        self.record(
            Result(
                "naive",
                "row-at-a-time: look up each key, insert or update",
                naive.rows,
                naive.wall_s,
                per_row_us=per_row * 1e6,
                extrapolated_s=per_row * args.rows,
            )
        )
        self.report.check(
            "naive: loaded every row",
            naive.inserted == naive.rows == args.naive_rows,
            f"inserted {naive.inserted} of {args.naive_rows}",
        )
        self.log(
            f"[bench] naive: {naive.rows:,} rows in {naive.wall_s:.2f}s "
            f"({per_row * 1e6:.0f} us/row)"
        )

    def results(self) -> list[Result]:
        """One row per scenario: the median round (by wall time), the others' times kept."""
        out = []
        for runs in self.samples.values():
            ordered = sorted(runs, key=lambda r: r.wall_s)
            middle = ordered[(len(ordered) - 1) // 2]
            if len(runs) > 1:
                rss = [r.worker_peak_rss_mb for r in runs if r.worker_peak_rss_mb is not None]
                if rss:
                    middle.worker_peak_rss_mb = max(rss)
            out.append(middle)
        base = next((r for r in out if r.scenario == "baseline"), None)
        floor = next(r for r in out if r.scenario == "limit")
        for r in out:
            if not r.rows:  # a chord of no-op tasks loads nothing to compare
                continue
            total = r.extrapolated_s if r.extrapolated_s is not None else r.wall_s
            r.ratio_to_baseline = total / base.wall_s if base else None
            r.ratio_to_limit = total / floor.wall_s
        return out


def run_benchmark(args: argparse.Namespace, log=print) -> Report:
    from shared.config.settings import settings_from_dict
    from shared.engines import get_engine
    from shared.metadata.schema import upgrade

    n = args.rows
    rpc = args.rows_per_chunk
    report = Report(
        rows=n,
        naive_rows=args.naive_rows,
        batch_rows=args.batch_rows,
        rows_per_chunk=rpc,
        rounds=args.repeat,
        machine={
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
    )
    services = BenchServices(pg_base=args.pg, redis_url=args.redis)
    work = Path(tempfile.mkdtemp(prefix="chordload-bench-"))
    mappings = {
        "plan_probe": mapping("dim_initial_r0", rpc, rpc, args.batch_rows, args.concurrency)
    }
    for r in range(args.repeat):
        for kind in ("initial", "few", "many"):
            mappings[f"{kind}_r{r}"] = mapping(
                f"dim_{kind}_r{r}", rpc, rpc, args.batch_rows, args.concurrency
            )
    worker: BenchWorker | None = None
    began = time.perf_counter()
    log(f"[bench] databases clbench_{services.token}_{{src,wh,meta}}, queue {services.queue}")
    services.create()
    try:
        src, wh = dsn(services.urls["src"]), dsn(services.urls["wh"])
        t = time.perf_counter()
        create_source(src, n)
        log(f"[bench] source: {n:,} rows in {time.perf_counter() - t:.1f}s")
        config = services.config(mappings)
        config_path = work / "chordload.yaml"
        config_path.write_text(yaml.safe_dump(config))
        os.environ["CHORDLOAD_CONFIG"] = str(config_path)  # this process and the worker's
        settings = settings_from_dict(config, "bench config")
        upgrade(get_engine(settings.metadata))
        worker = BenchWorker(
            config_path,
            services.queue,
            services.token,
            work / "worker.log",
            concurrency=args.concurrency,
        )
        worker.start()
        runs = Scenarios(args, report, settings, worker, src, wh, log, services.db_names)
        few, many = f"chunks_{args.few_chunks}", f"chunks_{args.many_chunks}"
        for r in range(args.repeat):
            runs.limit(r)
            if "baseline" not in args.skip:
                runs.baseline(r)
            runs.chordload(
                "initial", f"initial_r{r}", "chordload initial SCD2 load", (n, n, 0), round_no=r
            )
            if "chunks" not in args.skip:
                runs.chordload(
                    few,
                    f"few_r{r}",
                    f"initial load, {args.few_chunks} chunks forced",
                    (n, n, 0),
                    args.few_chunks,
                    round_no=r,
                    fresh_worker=True,
                )
                runs.celery_chords(r, args.few_chunks, args.many_chunks)
                runs.chordload(
                    many,
                    f"many_r{r}",
                    f"initial load, {args.many_chunks} chunks forced",
                    (n, n, 0),
                    args.many_chunks,
                    round_no=r,
                    fresh_worker=True,
                )
            if r == 0:  # the full window, as the initial run planned it (before any change)
                report.planning = measure_planning(settings, "plan_probe", args.many_chunks)
                p = report.planning
                log(
                    f"[bench] planning: hwm {p['hwm_s']:.3f}s, estimate {p['estimate_s']:.3f}s, "
                    f"boundaries {p['boundaries_s']:.3f}s ({p['parts']} parts), plan_run "
                    f"{p['plan_run_s']:.3f}s"
                )
            if "incremental" not in args.skip:
                before = max_updated_at(src)
                changed = change_tenth(src, r)
                # the boundary row (the checkpoint itself) is re-read on purpose; it is one of
                # the changed rows when the last id is a multiple of ten
                window = f"updated_at >= '{before.isoformat()}'"
                in_window = _scalar(src, f"SELECT count(*) FROM {SOURCE_TABLE} WHERE {window}")
                runs.limit_incremental(r, window, changed)
                runs.chordload(
                    "incremental",
                    f"initial_r{r}",
                    "chordload incremental, 10% changed",
                    (in_window, 0, changed),
                    args.incremental_chunks,
                    round_no=r,
                )
        if "naive" not in args.skip:
            runs.naive()
        report.results = runs.results()
        report.round_walls = {
            name: [round(r.wall_s, 3) for r in runs_] for name, runs_ in runs.samples.items()
        }
    finally:
        if worker is not None:
            worker.stop()
        if args.keep:
            log(f"[bench] kept databases: {', '.join(services.created)}")
        services.drop(keep_databases=args.keep)
        shutil.rmtree(work, ignore_errors=True)
    report.total_s = time.perf_counter() - began
    report.targets = evaluate_targets(report, args)
    return report


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def celery_floor(
    rounds: dict[str, list[float]], few: str, few_chunks: int, many_chunks: int
) -> float | None:
    """The least ``many / few`` chunks can measure if a chunk cost nothing but its Celery
    task: per round, (few-chunk run + Celery's chord of many - its chord of few) / few-chunk
    run; the median over rounds."""
    per_round = [
        (f + m - cf) / f
        for f, cf, m in zip(
            rounds.get(few, []),
            rounds.get(f"celery_{few_chunks}", []),
            rounds.get(f"celery_{many_chunks}", []),
            strict=False,
        )
    ]
    return _median(per_round) if per_round else None


def evaluate_targets(report: Report, args: argparse.Namespace) -> list[dict[str, Any]]:
    """The issue's targets. A ratio is taken within each round (its two runs were minutes
    apart, not a whole benchmark apart) and the median over rounds is reported."""
    targets = []
    rounds = report.round_walls

    def ratio(top: str, bottom: str) -> float | None:
        pairs = list(zip(rounds.get(top, []), rounds.get(bottom, [])))
        return _median([t / b for t, b in pairs]) if pairs else None

    def add(
        name: str,
        what: str,
        value: float | None,
        limit: float,
        unit: str,
        floor: float | None = None,
    ) -> None:
        """``floor``: the least the value can measure on this machine, where a scenario
        measures it (the incremental's own limit against the initial load)."""
        if value is None:
            return
        targets.append(
            {
                "name": name,
                "what": what,
                "value": round(value, 3),
                "limit": limit,
                "unit": unit,
                "met": value <= limit,
                "floor": None if floor is None else round(floor, 3),
            }
        )

    few, many = f"chunks_{args.few_chunks}", f"chunks_{args.many_chunks}"
    add(
        "initial_vs_limit",
        "initial load / limit",
        ratio("initial", "limit"),
        TARGETS["initial_vs_limit"],
        "x",
    )
    add(
        "initial_vs_baseline",
        "initial load / baseline",
        ratio("initial", "baseline"),
        TARGETS["initial_vs_baseline"],
        "x",
    )
    add(
        "incremental_vs_initial",
        "incremental (10% changed) / initial",
        ratio("incremental", "initial"),
        TARGETS["incremental_vs_initial"],
        "x",
        floor=ratio("limit_incremental", "initial"),
    )
    add(
        "many_vs_few_chunks",
        f"{args.many_chunks} chunks / {args.few_chunks} chunks",
        ratio(many, few),
        TARGETS["many_vs_few_chunks"],
        "x",
        floor=celery_floor(rounds, few, args.few_chunks, args.many_chunks),
    )
    rss = [r.worker_peak_rss_mb for r in report.results if r.worker_peak_rss_mb is not None]
    add(
        "worker_peak_rss_mb",
        "worker peak RSS, any scenario",
        max(rss, default=None),
        TARGETS["worker_peak_rss_mb"],
        "MB",
    )
    few_r, many_r = report.result(few), report.result(many)
    if (
        few_r
        and many_r
        and few_r.worker_peak_rss_mb is not None
        and many_r.worker_peak_rss_mb is not None
    ):
        add(
            "rss_spread_mb",
            f"peak RSS {args.few_chunks} vs {args.many_chunks} chunks "
            f"(rows_per_chunk {math.ceil(report.rows / args.few_chunks):,} vs "
            f"{math.ceil(report.rows / args.many_chunks):,})",
            abs(few_r.worker_peak_rss_mb - many_r.worker_peak_rss_mb),
            TARGETS["rss_spread_mb"],
            "MB",
        )
    if report.planning:
        add(
            "planning_s",
            "planning: estimate + boundaries of the full window",
            report.planning["estimate_plus_boundaries_s"],
            TARGETS["planning_s"],
            "s",
        )
    return targets


def cpu_text(seconds: dict[str, float | None]) -> str:
    return ", ".join(f"{role} {'-' if v is None else f'{v:.2f}'}" for role, v in seconds.items())


def render(report: Report) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(132, shutil.get_terminal_size((132, 20)).columns))
    rounds = f", median of {report.rounds} rounds" if report.rounds > 1 else ""
    table = Table(
        title=f"chordload benchmark: {report.rows:,} rows, batch_rows "
        f"{report.batch_rows:,}, rows_per_chunk {report.rows_per_chunk:,}, "
        f"{report.machine['cpus']} CPUs{rounds}"
    )
    for col in (
        "scenario",
        "rows",
        "chunks",
        "wall s",
        "rows/s",
        "× limit",
        "× baseline",
        "worker CPU s",
        "busy cores",
        "worker peak RSS MB",
        "rounds (wall s)",
    ):
        table.add_column(col, justify="left" if col in ("scenario", "rounds (wall s)") else "right")

    def num(value: float | None, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    for r in report.results:
        walls = report.round_walls.get(r.scenario, [])
        table.add_row(
            r.scenario,
            f"{r.rows:,}" if r.rows else "-",
            num(r.chunks, "d"),
            f"{r.wall_s:.2f}",
            f"{r.rows_per_s:,.0f}" if r.rows else "-",
            num(r.ratio_to_limit, ".2f"),
            num(r.ratio_to_baseline, ".2f"),
            num(r.worker_cpu_s, ".1f"),
            num(r.detail.get("machine_busy_cores"), ".1f"),
            num(r.worker_peak_rss_mb, ".0f"),
            ", ".join(f"{w:.1f}" for w in walls) if len(walls) > 1 else "",
        )
    p = report.planning
    if p:
        table.add_row(
            "planning",
            f"{p['estimated_rows']:,}",
            str(p["parts"]),
            f"{p['estimate_plus_boundaries_s']:.3f}",
            "-",
            "-",
            "-",
            "-",
            "-",
            "-",
            "",
        )
    console.print(table)
    cpu = Table(title="CPU seconds by process (the median round; bench/cpu.py)")
    for col in ("scenario", *CPU_ROLES, "all"):
        cpu.add_column(col, justify="left" if col == "scenario" else "right")
    for r in report.results:
        seconds = r.detail.get("cpu_s")
        if seconds:
            known = [v for v in seconds.values() if v is not None]
            cpu.add_row(
                r.scenario,
                *(num(seconds.get(role), ".2f") for role in CPU_ROLES),
                f"{sum(known):.2f}",
            )
    console.print(cpu)
    notes = []
    for r in report.results:
        if r.scenario == "limit":
            notes.append(
                f"limit: COPY out -> COPY into a fresh index-free table {r.detail['copy_s']:.2f}s, "
                f"indexes {r.detail['index_s']:.2f}s (the floor every × limit is against)"
            )
        if r.scenario == "limit_incremental":
            notes.append(
                f"limit_incremental: the changed rows COPYed into a stage "
                f"{r.detail['copy_s']:.2f}s, SCD2 SQL {r.detail['apply_s']:.2f}s (one "
                f"session a pool process; the incremental's floor, on the limit's table)"
            )
        if r.scenario.startswith("celery_"):
            notes.append(
                f"{r.scenario}: a chord of {r.chunks} no-op tasks (celery.accumulate) on the "
                f"same worker, {r.wall_s:.2f}s: Celery's own cost of {r.chunks} chunks"
            )
        if r.scenario == "baseline":
            notes.append(
                f"baseline: COPY out -> COPY in {r.detail['copy_s']:.2f}s, SCD2 SQL "
                f"{r.detail['apply_s']:.2f}s (one stream, no chordload code)"
            )
        if r.per_row_us is not None:
            notes.append(
                f"naive: {r.rows:,} rows, {r.per_row_us:,.0f} µs/row, so "
                f"{r.extrapolated_s:,.0f}s for {report.rows:,} rows (its × limit, × baseline)"
            )
    if p:
        notes.append(
            f"planning: estimate {p['estimate_s']:.3f}s + boundaries "
            f"{p['boundaries_s']:.3f}s ({p['parts']} parts); hwm {p['hwm_s']:.3f}s; "
            f"whole plan_run {p['plan_run_s']:.3f}s; {p['method']}; chunks of "
            f"{p['chunk_rows_min']:,} to {p['chunk_rows_max']:,} rows; the exact sort would "
            f"take {p['exact_boundaries_s']:.3f}s"
        )
        notes.append(
            f"planning {p['parts_200']} chunks: boundaries {p['boundaries_200_s']:.3f}s, "
            f"{p['method_200']}; chunks of {p['chunk_rows_min_200']:,} to "
            f"{p['chunk_rows_max_200']:,} rows"
        )
    notes.append(
        "worker CPU s: the pool processes' CPU (Python's share); busy cores: the whole "
        "machine's, averaged over the scenario"
    )
    for note in notes:
        console.print(f"  {note}")
    targets = Table(title="targets (issues 7 and 16)")
    for col in ("target", "measured", "limit", "", "floor here"):
        targets.add_column(col)
    for t in report.targets:
        floor = t.get("floor")
        targets.add_row(
            t["what"],
            f"{t['value']:.2f} {t['unit']}",
            f"≤ {t['limit']} {t['unit']}",
            "[green]met[/green]" if t["met"] else "[red]missed[/red]",
            "-" if floor is None else f"{floor:.2f} {t['unit']}",
        )
    console.print(targets)
    console.print(
        "  floor here: the least the ratio can measure on this machine with chordload's own "
        "work taken out (the incremental: its run replaced by limit_incremental; the chunk "
        "counts: each extra chunk costing only its Celery task); a limit below it cannot be "
        "met here"
    )
    bad = [c for c in report.checks if not c["ok"]]
    console.print(
        f"correctness checks: {len(report.checks) - len(bad)}/{len(report.checks)} ok"
        + "".join(f"\n  [red]FAILED[/red] {c['name']}: {c['detail']}" for c in bad)
    )
    console.print(f"total harness time {report.total_s:.0f}s")


def isolate_environment() -> None:
    """The benchmark uses only what it creates: drop the variables that would point this
    process or its worker at another config, broker or metadata database."""
    from shared.config.settings import ENV_OVERRIDES

    for name in (*ENV_OVERRIDES, "CHORDLOAD_CONFIG"):
        os.environ.pop(name, None)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    isolate_environment()
    os.chdir(REPO)
    report = run_benchmark(args, log=lambda msg: print(msg, flush=True))
    render(report)
    if args.json:
        args.json.write_text(json.dumps(report.to_json(), indent=2, default=str))
    return 0 if all(c["ok"] for c in report.checks) else 1


if __name__ == "__main__":
    sys.exit(main())
