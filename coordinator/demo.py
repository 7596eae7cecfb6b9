"""``chordload demo``: a real parallel SCD2 load with no servers.

SQLite files for source, target and metadata; Celery with the in-memory broker and result
backend and an in-process thread pool. The demo generates a source, runs the initial load in
several chunks, changes ~10% of the rows and adds new ones, runs the incremental load, and
prints both summaries and the version history of one changed key. Everything it runs is the
production path: the same planner, chord, chunk task and finalize.
"""

from __future__ import annotations

import datetime as dt
import random
import shutil
import sqlite3
import sys
from pathlib import Path

from rich.console import Console

from shared.broker import WORKER_TASK_MODULES, celery_app, use_client_app
from shared.config.settings import Settings, settings_from_dict
from shared.engines import dispose_all, get_engine
from shared.metadata.schema import upgrade

CITIES = ["Berlin", "Lisbon", "Oslo", "Turin", "Gdansk", "Lyon", "Porto", "Ghent", "Cork", "Graz"]
SEGMENTS = ["retail", "smb", "enterprise", "public"]
CHANGED_KEY = 3  # id % 10 == 3 rows change; this one is shown


def _customer(i: int, rng: random.Random, updated_at: str) -> tuple:
    return (
        i,
        f"Customer {i}",
        f"c{i}@example.com",
        rng.choice(CITIES),
        rng.choice(SEGMENTS),
        round(rng.uniform(0, 50_000), 2),
        updated_at,
    )


def create_source(path: Path, rows: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    base = dt.datetime(2026, 1, 1)
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TABLE IF EXISTS customers")
        conn.execute(
            "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT, email TEXT, "
            "city TEXT, segment TEXT, balance NUMERIC, updated_at TIMESTAMP)"
        )
        batch = []
        for i in range(1, rows + 1):
            stamp = (base + dt.timedelta(seconds=i * 100)).strftime("%Y-%m-%d %H:%M:%S")
            batch.append(_customer(i, rng, stamp))
            if len(batch) >= 50_000:
                conn.executemany("INSERT INTO customers VALUES (?,?,?,?,?,?,?)", batch)
                batch.clear()
        conn.executemany("INSERT INTO customers VALUES (?,?,?,?,?,?,?)", batch)
        conn.execute("CREATE INDEX ix_customers_updated_at ON customers (updated_at)")


def change_source(path: Path, rows: int, new_rows: int) -> tuple[int, int]:
    """Change every row with id % 10 == 3 (10%) and append ``new_rows`` rows, stamped after
    every existing row (the generated stamps run past the wall clock for large sources), so
    the incremental run's window holds them."""
    rng = random.Random(11)
    with sqlite3.connect(path) as conn:
        latest = conn.execute("SELECT max(updated_at) FROM customers").fetchone()[0]
        stamp_at = dt.datetime.now().replace(microsecond=0)
        if latest is not None:
            stamp_at = max(stamp_at, dt.datetime.fromisoformat(latest) + dt.timedelta(seconds=1))
        stamp = stamp_at.strftime("%Y-%m-%d %H:%M:%S")
        changed = conn.execute(
            "UPDATE customers SET city = 'Reykjavik', balance = balance + 1, "
            "updated_at = ? WHERE id % 10 = 3",
            (stamp,),
        ).rowcount
        conn.executemany(
            "INSERT INTO customers VALUES (?,?,?,?,?,?,?)",
            [_customer(i, rng, stamp) for i in range(rows + 1, rows + new_rows + 1)],
        )
    return changed, new_rows


def demo_settings(workdir: Path, rows: int, chunks: int) -> Settings:
    rows_per_chunk = max(1, -(-rows // chunks))
    return settings_from_dict(
        {
            "metadata": f"sqlite:///{workdir / 'metadata.db'}",
            "broker": "memory://localhost/",
            "result_backend": "cache+memory://",
            "connections": {
                "crm": f"sqlite:///{workdir / 'source.db'}",
                "dw": f"sqlite:///{workdir / 'warehouse.db'}",
            },
            "mappings": {
                "dim_customer": {
                    "source": {
                        "connection": "crm",
                        "query": "SELECT id, name, email, city, segment, balance, updated_at "
                        "FROM customers",
                    },
                    "target": {"connection": "dw", "table": "dim_customer"},
                    "keys": ["id"],
                    "scd": {"type": 2},
                    "checkpoint": {"strategy": "KEY", "column": "updated_at"},
                    "chunking": {
                        "column": "id",
                        "rows_per_chunk": rows_per_chunk,
                        "min_rows_for_parallel": min(rows, 10_000),
                        "exact_count": True,
                    },
                    "batch_rows": 5_000,
                }
            },
        },
        "demo",
    )


def in_process_worker(settings: Settings, concurrency: int = 4):
    """Configure the Celery app for memory transport and start a thread-pool worker in this
    process. Polling every 10 ms keeps a 200-task chord's overhead well under a second."""
    from celery.contrib.testing.worker import start_worker

    # the worker's tasks, loaded by module name as `celery -A workers` loads them
    app = celery_app(settings, include=WORKER_TASK_MODULES)
    use_client_app(settings, app)  # its memory broker and result backend live in this app
    app.conf.broker_transport_options = {"polling_interval": 0.01}
    app.conf.result_chord_retry_interval = 0.05
    app.conf.worker_send_task_events = False
    app.conf.task_send_sent_event = False
    return start_worker(
        app,
        pool="threads",
        concurrency=concurrency,
        perform_ping_check=False,
        loglevel="WARNING",
        shutdown_timeout=30,
        hostname="demo@localhost",
    )


def demo_command() -> str:
    """A command that runs the demo again from where the user is: `chordload demo` when that
    is on PATH, else the installed script's path (in a checkout: `make demo` too)."""
    script = Path(sys.executable).parent / "chordload"
    on_path = shutil.which("chordload")
    if on_path and Path(on_path).resolve() == script.resolve():
        return "chordload demo"
    try:
        shown = f"./{script.relative_to(Path.cwd())}"
    except ValueError:
        shown = str(script)
    in_checkout = (Path.cwd() / "Makefile").is_file()
    return f"make demo (or {shown} demo)" if in_checkout else f"{shown} demo"


def _history(workdir: Path, key: int) -> list[tuple]:
    with sqlite3.connect(workdir / "warehouse.db") as conn:
        return conn.execute(
            "SELECT city, balance, dw_valid_from, dw_valid_to, dw_is_current, dw_run_id "
            "FROM dim_customer WHERE id = ? ORDER BY dw_sk",
            (key,),
        ).fetchall()


def run_demo(
    rows: int = 200_000, workdir: str | None = None, chunks: int = 8, console: Console | None = None
) -> int:
    from coordinator.launch import launch
    from coordinator.progress import ProgressDisplay, print_summary
    from coordinator.watch import wait

    console = console or Console()
    folder = Path(workdir or ".demo").resolve()
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("source.db", "warehouse.db", "metadata.db"):
        for suffix in ("", "-wal", "-shm"):
            (folder / f"{name}{suffix}").unlink(missing_ok=True)

    console.rule("chordload demo")
    console.print(f"generating {rows:,} source rows in {folder / 'source.db'}")
    create_source(folder / "source.db", rows)
    settings = demo_settings(folder, rows, chunks)
    upgrade(get_engine(settings.metadata))

    def load(title: str):
        console.rule(title)
        run_id = launch("dim_customer", settings=settings)
        with ProgressDisplay(console, interval_s=1.0) as display:
            run = wait(run_id, settings=settings, timeout_s=600, poll_s=0.2, on_progress=display)
        print_summary(run, console)
        return run.status

    statuses = []
    try:
        with in_process_worker(settings):
            statuses.append(load("1. initial load"))
            changed, added = change_source(folder / "source.db", rows, max(1, rows // 20))
            console.print(f"changed {changed:,} rows (10%) and added {added:,} new rows")
            statuses.append(load("2. incremental load"))
    finally:
        dispose_all()
        use_client_app(settings, None)

    console.rule(f"3. history of customer id={CHANGED_KEY}")
    console.print(
        "  city        balance  valid_from           valid_to             run_id", highlight=False
    )
    for city, balance, valid_from, valid_to, _current, run in _history(folder, CHANGED_KEY):
        until = str(valid_to)[:19] if valid_to else "(current)"
        console.print(
            f"  {city:<10} {balance:>8}  {str(valid_from)[:19]}  {until:<19}  {run}",
            highlight=False,
        )
    console.print(f"databases kept in {folder}", highlight=False)
    console.print(f"to start over: {demo_command()}", highlight=False)
    ok = all(s.value == "SUCCESS" for s in statuses)
    return 0 if ok else 1
