"""A real ``celery -A workers worker`` process for end-to-end tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


class WorkerProcess:
    def __init__(
        self,
        config_path: Path,
        *,
        queue: str,
        name: str,
        concurrency: int = 2,
        log_path: Path,
        extra_env: dict[str, str] | None = None,
        broker_url: str | None = None,
        command_prefix: list[str] | None = None,
    ):
        self.config_path = config_path
        self.queue = queue
        self.name = name
        self.concurrency = concurrency
        self.log_path = log_path
        self.extra_env = extra_env or {}
        self.broker_url = broker_url
        self.command_prefix = command_prefix or []  # e.g. ["ip", "netns", "exec", "hostA"]
        self.proc: subprocess.Popen | None = None

    @property
    def hostname(self) -> str:
        return f"{self.name}@localhost"

    def start(self, ready_timeout_s: float = 60) -> None:
        env = {**os.environ, "CHORDLOAD_CONFIG": str(self.config_path), **self.extra_env}
        cmd = [
            *self.command_prefix,
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
            preexec_fn=_die_with_parent,
        )
        self.wait_ready(ready_timeout_s)

    def wait_ready(self, timeout_s: float) -> None:
        from shared.broker import client_app
        from shared.config.settings import load_settings

        app = client_app(load_settings(self.config_path))
        if self.broker_url is not None:  # a worker on another broker: ask that broker
            from celery import Celery

            app = Celery("probe", broker=self.broker_url)

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}: {self.log_tail()}")
            replies = app.control.ping(destination=[self.hostname], timeout=1.0)
            if replies:
                return
        raise RuntimeError(
            f"worker {self.hostname} not ready after {timeout_s}s: {self.log_tail()}"
        )

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout_s: float = 30) -> None:
        if self.proc is None:
            return
        stop_process_group(self.proc, timeout_s)
        self._log.close()
        self.proc = None


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM it when the test process dies, so a killed or
    timed-out pytest leaves no workers behind (Linux prctl PR_SET_PDEATHSIG)."""
    import ctypes

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


def stop_process_group(proc: subprocess.Popen, timeout_s: float) -> None:
    """SIGTERM the process's group (a warm shutdown), SIGKILL it if it does not exit."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout_s)
