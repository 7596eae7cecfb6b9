"""CPU seconds by process role during a scenario: the source's, the target's and the
metadata's database sessions, the worker (celery's parent and its pool) and the bench
process itself (the limit's relay thread).

On a machine of two cores every process takes its time from the same two cores, so a
scenario's wall time follows the CPU all of them spend, and this says which one spends
it. Read from /proc every ``SAMPLE_S`` in a thread: a process seen first during the scenario
counts from zero (it started then), one that ends between two looks loses at most that
interval's CPU. Database sessions are found by the database name in their process title
(``postgres: ... <user> <database> <host>``, autovacuum workers included), so the database
roles read None when PostgreSQL runs on another machine. The bench role includes the
sampling itself, about 0.03 CPU seconds a second.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

from bench.env import cpu_seconds

SAMPLE_S = 0.02
ROLES = ("source", "target", "metadata", "workers", "bench")


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            raw = fh.read()
    except OSError:
        return []
    # a PostgreSQL backend rewrites its title into argv[0], spaces and all
    return raw.replace(b"\0", b" ").decode(errors="replace").split()


def _parent(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return int(fh.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


class CpuByRole:
    """Sample the CPU of the processes of each role while the ``with`` block runs;
    ``seconds`` then holds each role's CPU seconds (None: no process of the role could be
    seen)."""

    def __init__(self, databases: dict[str, str], worker_pid: Callable[[], int | None]):
        self._databases = {name: role for role, name in databases.items()}
        self._worker_pid = worker_pid
        self._start: dict[int, float] = {}  # pid -> CPU when first seen
        self._last: dict[int, tuple[str, float]] = {}  # pid -> (role, CPU at the last look)
        self._others: set[int] = set()  # processes of no role, not looked at again
        self._postgres_seen = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-cpu", daemon=True)
        self.seconds: dict[str, float | None] = {}

    def __enter__(self) -> CpuByRole:
        self._look(first=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._look()
        totals: dict[str, float] = dict.fromkeys(ROLES, 0.0)
        for pid, (role, cpu) in self._last.items():
            totals[role] += cpu - self._start[pid]
        self.seconds = {
            role: (
                None
                if role in ("source", "target", "metadata") and not self._postgres_seen
                else round(total, 2)
            )
            for role, total in totals.items()
        }

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            self._look()

    def _role(self, pid: int, worker: int | None) -> str | None:
        if pid == os.getpid():
            return "bench"
        if worker is not None and (pid == worker or _parent(pid) == worker):
            return "workers"
        argv = _cmdline(pid)
        if not argv or argv[0] != "postgres:":
            # a backend forked a moment ago still has the server's command line until it
            # sets its title: look at it again, never set it aside
            if not any("postgres" in a for a in argv):
                self._others.add(pid)
            return None
        self._postgres_seen = True  # a backend names its database once it has logged in
        return next((self._databases[a] for a in argv if a in self._databases), None)

    def _look(self, first: bool = False) -> None:
        worker = self._worker_pid()
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            pid = int(entry)
            if pid in self._others:
                continue
            known = self._last.get(pid)
            role = known[0] if known else self._role(pid, worker)
            if role is None:
                continue
            cpu = cpu_seconds(pid)
            if cpu is None:
                continue
            if pid not in self._start:
                self._start[pid] = cpu if first else 0.0
            self._last[pid] = (role, cpu)
