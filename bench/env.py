"""The benchmark's throwaway services: its own Postgres databases, its own Redis key prefix
and Celery queue, and one real ``celery -A workers worker`` (prefork) subprocess.

Nothing here touches a database, key or queue that the harness did not create: databases are
named ``clbench_<token>_*`` and dropped by exactly those names, Redis keys carry the run's own
``clbench:<token>:`` prefix and only keys with that prefix are deleted.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import redis
from sqlalchemy import create_engine, text

REPO = Path(__file__).resolve().parent.parent
DEFAULT_PG = os.environ.get("CHORDLOAD_BENCH_PG", "postgresql+psycopg2://root@127.0.0.1:5432")
DEFAULT_REDIS = os.environ.get("CHORDLOAD_BENCH_REDIS", "redis://127.0.0.1:6379/0")
DB_ROLES = ("src", "wh", "meta")


def dsn(sqlalchemy_url: str) -> str:
    """A libpq DSN for psycopg2 from a SQLAlchemy URL (the baseline and naive loaders use the
    driver directly, no SQLAlchemy and no chordload code)."""
    from sqlalchemy.engine import make_url

    url = make_url(sqlalchemy_url)
    parts = {
        "host": url.host,
        "port": url.port,
        "user": url.username,
        "password": url.password,
        "dbname": url.database,
    }
    return " ".join(f"{k}={v}" for k, v in parts.items() if v is not None)


@dataclass
class BenchServices:
    pg_base: str = DEFAULT_PG
    redis_url: str = DEFAULT_REDIS
    token: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    created: list[str] = field(default_factory=list)

    @property
    def db_names(self) -> dict[str, str]:
        return {role: f"clbench_{self.token}_{role}" for role in DB_ROLES}

    @property
    def urls(self) -> dict[str, str]:
        return {role: f"{self.pg_base}/{name}" for role, name in self.db_names.items()}

    @property
    def redis_prefix(self) -> str:
        return f"clbench:{self.token}:"

    @property
    def queue(self) -> str:
        return f"clbench-{self.token}"

    def _admin(self):
        return create_engine(f"{self.pg_base}/postgres", isolation_level="AUTOCOMMIT")

    def create(self) -> None:
        client = redis.Redis.from_url(self.redis_url)
        try:
            client.ping()
        finally:
            client.close()
        admin = self._admin()
        try:
            with admin.connect() as conn:
                for name in self.db_names.values():
                    conn.execute(text(f'CREATE DATABASE "{name}"'))
                    self.created.append(name)
        finally:
            admin.dispose()

    def drop(self, keep_databases: bool = False) -> None:
        """Drop the databases this run created (unless kept) and delete its Redis keys."""
        from shared.engines import dispose_all

        dispose_all()
        if not keep_databases:
            admin = self._admin()
            try:
                with admin.connect() as conn:
                    for name in self.created:
                        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            finally:
                admin.dispose()
            self.created.clear()
        client = redis.Redis.from_url(self.redis_url)
        try:
            for key in client.scan_iter(match=f"{self.redis_prefix}*", count=1000):
                client.delete(key)
        finally:
            client.close()

    def config(self, mappings: dict) -> dict:
        return {
            "metadata": self.urls["meta"],
            "broker": self.redis_url,
            "result_backend": self.redis_url,
            "connections": {"src": self.urls["src"], "wh": self.urls["wh"]},
            "mappings": mappings,
            "celery": {
                "queue": self.queue,
                "broker_transport_options": {"global_keyprefix": self.redis_prefix},
                "result_backend_transport_options": {"global_keyprefix": self.redis_prefix},
            },
        }


def _proc_status(pid: int) -> dict[str, str]:
    try:
        with open(f"/proc/{pid}/status") as fh:
            return dict(line.rstrip("\n").split(":\t", 1) for line in fh if ":\t" in line)
    except OSError:
        return {}


def _kb(value: str | None) -> int:
    return int(value.split()[0]) if value else 0


_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process so far (None once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime (fields 14, 15)


def machine_busy_s() -> float:
    """CPU seconds all of the machine's cores have been busy (not idle or waiting on I/O)."""
    with open("/proc/stat") as fh:
        fields = [int(v) for v in fh.readline().split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / _TICKS


def child_pids(parent: int) -> list[int]:
    """Direct children of ``parent`` (the prefork pool processes of a celery worker)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        # the comm field may contain spaces; the ppid is the 2nd field after the last ')'
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == parent:
            pids.append(int(entry))
    return sorted(pids)


class BenchWorker:
    """One ``celery -A workers worker --pool prefork --concurrency N`` on the bench queue."""

    def __init__(
        self, config_path: Path, queue: str, token: str, log_path: Path, concurrency: int = 2
    ):
        self.config_path = config_path
        self.queue = queue
        self.hostname = f"bench-{token}@localhost"
        self.log_path = log_path
        self.concurrency = concurrency
        self.proc: subprocess.Popen | None = None
        self._log: BinaryIO | None = None
        self._peaks: dict[int, int] = {}
        self._pids: list[int] = []
        self._cpu_start: dict[int, float] = {}

    def start(self, ready_timeout_s: float = 90) -> None:
        env = {**os.environ, "CHORDLOAD_CONFIG": str(self.config_path)}
        cmd = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "workers",
            "worker",
            "--pool",
            "prefork",
            "--concurrency",
            str(self.concurrency),
            "--queues",
            self.queue,
            "--hostname",
            self.hostname,
            "--loglevel",
            "INFO",
            "--without-mingle",
            "--without-gossip",
        ]
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            cmd,
            cwd=REPO,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        from shared.broker import client_app
        from shared.config.settings import load_settings

        app = client_app(load_settings(self.config_path))
        deadline = time.monotonic() + ready_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}: {self.log_tail()}")
            if app.control.ping(destination=[self.hostname], timeout=1.0):
                while len(self.pool_pids()) < self.concurrency and time.monotonic() < deadline:
                    time.sleep(0.1)
                return
        raise RuntimeError(f"worker not ready after {ready_timeout_s}s: {self.log_tail()}")

    def restart(self) -> None:
        """A fresh worker: its pool processes' peak RSS is then this scenario's alone (Python
        keeps memory it once used, so a scenario would inherit the previous one's high-water
        mark), and no scenario inherits another's warm caches either."""
        self.stop()
        self.start()

    @property
    def pid(self) -> int | None:
        """The worker's main process (the pool's parent), None when it is not running."""
        return self.proc.pid if self.proc else None

    def pool_pids(self) -> list[int]:
        return child_pids(self.proc.pid) if self.proc else []

    def reset_peaks(self) -> None:
        """Reset each pool process's VmHWM (``echo 5 > /proc/PID/clear_refs``) so the next
        reading is the peak of the next scenario alone; without that support the peak is
        since the process started, which is still an upper bound."""
        self._peaks = {}
        self._pids = self.pool_pids()
        self._cpu_start = {pid: cpu_seconds(pid) or 0.0 for pid in self._pids}
        for pid in self._pids:
            try:
                with open(f"/proc/{pid}/clear_refs", "w") as fh:
                    fh.write("5")
            except OSError:
                pass

    def sample(self) -> None:
        """Record the pool processes' peaks (cheap: reads two /proc files; the process list is
        re-read only when a pool process went away and was replaced)."""
        for pid in self._pids:
            hwm = _kb(_proc_status(pid).get("VmHWM"))
            if hwm:
                self._peaks[pid] = max(self._peaks.get(pid, 0), hwm)
            else:
                self._pids = self.pool_pids()
                break

    def cpu_s(self) -> float:
        """CPU seconds the pool processes used since reset_peaks (Python's share of a load:
        fetching, converting, COPY text; the database's work is in its own processes)."""
        used = 0.0
        for pid in self.pool_pids():
            now = cpu_seconds(pid)
            if now is not None:
                used += now - self._cpu_start.get(pid, 0.0)
        return used

    def peak_rss_mb(self) -> float:
        """The largest peak resident set (VmHWM) of any pool process since reset_peaks."""
        self.sample()
        return max(self._peaks.values(), default=0) / 1024

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout_s: float = 30) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout_s)
        if self._log:
            self._log.close()
        self.proc = None
