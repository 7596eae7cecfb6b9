"""Planning that can be watched, stopped, interrupted and bounded in time.

Planning runs source queries (the high-water mark, the estimate, the bounded count, the
chunk boundaries) that can take minutes on an expensive query. The guard runs it in a
thread and supervises it from the caller's thread, which stays free to notice what should
end it: ``chordload stop`` (the run is no longer PLANNING), ``planning.timeout_s`` passing,
or Ctrl-C / SIGTERM of the coordinator. It then cancels the source statement in flight (on
PostgreSQL a cancel request, what ``pg_cancel_backend`` does; ``KILL QUERY`` on MariaDB), so
nothing keeps running on the source after the run has ended. Each step is recorded on the
run, so ``status`` and ``watch`` show what planning is doing.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine

from shared.dialects.base import DialectAdapter
from shared.errors import PlanningCancelled
from shared.metadata import store
from shared.run.statuses import RunStatus

T = TypeVar("T")
EXIT_INTERRUPTED = 130
# how long a cancelled planning is waited for before the caller goes on without it (a
# source that ignores cancel requests, or cannot be reached, must not hang the coordinator)
CANCEL_GRACE_S = 15.0


@dataclass(frozen=True)
class Cancellation:
    """Why planning was ended: the message the run ends with, its status, the CLI's exit."""

    message: str
    status: RunStatus
    exit_code: int


class PlanningGuard:
    def __init__(
        self,
        metadata: Engine,
        run_id: str,
        timeout_s: float,
        *,
        poll_s: float = 0.2,
        status_every_s: float = 1.0,
        on_step: Callable[[str, str], None] | None = None,
        sigterm: bool = False,
    ):
        self.metadata = metadata
        self.run_id = run_id
        self.timeout_s = timeout_s
        self.poll_s = poll_s
        self.status_every_s = status_every_s
        self.on_step = on_step
        self.sigterm = sigterm  # the CLI's planning: SIGTERM interrupts it like Ctrl-C
        self.current_step = "starting"
        self.cancellation: Cancellation | None = None
        self._lock = threading.Lock()
        self._source: tuple[DialectAdapter, Connection] | None = None

    # -- hooks the planner calls (from the planning thread) --------------------------------
    def step(self, name: str) -> None:
        """Record the step planning is starting; refuse to start one once cancelled."""
        self._raise_if_cancelled()
        self.current_step = name
        store.set_planning_step(self.metadata, self.run_id, name)
        if self.on_step is not None:
            self.on_step(self.run_id, name)

    @contextmanager
    def source(self, adapter: DialectAdapter, conn: Connection) -> Iterator[None]:
        """While planning holds ``conn`` to the source, a cancellation cancels its statement."""
        with self._lock:
            self._source = (adapter, conn)
        try:
            self._raise_if_cancelled()
            yield
        finally:
            with self._lock:
                self._source = None
        self._raise_if_cancelled()

    def _raise_if_cancelled(self) -> None:
        if self.cancellation is not None:
            raise PlanningCancelled(self.cancellation.message, self.cancellation.exit_code)

    # -- supervision (from the caller's thread) --------------------------------------------
    def cancel(self, cancellation: Cancellation) -> None:
        with self._lock:
            if self.cancellation is not None:
                return
            self.cancellation = cancellation
        self._cancel_statement()

    def _cancel_statement(self) -> None:
        """Cancel the statement on the source connection, if planning holds one. Sent under
        the lock, so that none reaches the connection once planning has given it back."""
        with self._lock:
            if self._source is None:
                return
            adapter, conn = self._source
            try:
                adapter.cancel_statement(conn)
            except Exception:  # noqa: BLE001 - the statement ended meanwhile; nothing to cancel
                pass

    def run(self, plan: Callable[[], T]) -> T:
        """Run ``plan`` in a thread until it ends; raises PlanningCancelled if it was ended.

        The thread is waited for to its end, also once cancelled (up to ``CANCEL_GRACE_S``,
        then the error says the statement may still run): it holds the source connection,
        and a process that exits while it runs leaves its statement running on the source.
        Ctrl-C (and SIGTERM for the CLI) only sets a flag that the loop reads: an exception
        raised by a signal handler inside ``Thread.join`` makes CPython 3.11 take the live
        thread for ended (python/cpython#90882), and one raised elsewhere in the loop would
        leave it without cancelling."""
        outcome: dict[str, Any] = {}
        done = threading.Event()

        def target() -> None:
            try:
                outcome["value"] = plan()
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                outcome["error"] = exc
            finally:
                done.set()

        thread = threading.Thread(target=target, name=f"plan-{self.run_id}", daemon=True)
        deadline = time.monotonic() + self.timeout_s
        next_status = time.monotonic() + self.status_every_s
        interrupted = threading.Event()
        with _interrupts_to(interrupted, sigterm=self.sigterm):
            thread.start()
            cancelled_at: float | None = None
            while not done.wait(self.poll_s):
                if self.cancellation is not None:
                    cancelled_at = cancelled_at or time.monotonic()
                    if time.monotonic() - cancelled_at > CANCEL_GRACE_S:
                        break  # the source ignores the cancel: say so, rather than hang
                    # Again until planning ends: PostgreSQL drops a cancel request that finds
                    # the connection idle (sent after a step began but before its statement
                    # reached the source), and that statement would then run to its end.
                    self._cancel_statement()
                    continue
                now = time.monotonic()
                if interrupted.is_set():
                    self.cancel(
                        Cancellation(
                            f"planning was interrupted (Ctrl-C or SIGTERM of the coordinator) "
                            f"during step '{self.current_step}'; its source queries were "
                            f"cancelled and nothing was launched",
                            RunStatus.STOPPED,
                            EXIT_INTERRUPTED,
                        )
                    )
                elif now > deadline:
                    self.cancel(
                        Cancellation(
                            f"planning took longer than planning.timeout_s "
                            f"({self.timeout_s:g} s) at step '{self.current_step}'; its source "
                            f"queries were cancelled. Make the source query cheaper (an index "
                            f"on the checkpoint and split columns) or raise planning.timeout_s",
                            RunStatus.FAILED,
                            RunStatus.FAILED.exit_code,
                        )
                    )
                elif now >= next_status:
                    next_status = now + self.status_every_s
                    status = store.get_run(self.metadata, self.run_id).status
                    if status is not RunStatus.PLANNING:
                        self.cancel(
                            Cancellation(
                                f"run {self.run_id} was {status.value.lower()} while planning",
                                status,
                                status.exit_code,
                            )
                        )
        if self.cancellation is not None:
            message = self.cancellation.message
            if not done.is_set():
                message += (
                    f"; the source's statement did not end within {CANCEL_GRACE_S:.0f} s of "
                    f"its cancel and may still be running on the source (step: "
                    f"{self.current_step})"
                )
            raise PlanningCancelled(message, self.cancellation.exit_code)
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]


@contextmanager
def _interrupts_to(interrupted: threading.Event, *, sigterm: bool) -> Iterator[None]:
    """While planning is supervised, Ctrl-C (where it would raise KeyboardInterrupt) and, for
    ``chordload run`` (``sigterm``), SIGTERM set ``interrupted`` instead of raising. Only in
    the main thread, the one that can handle signals; a worker's dispatch task keeps
    Celery's own handling."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: FrameType | None) -> None:
        interrupted.set()

    signums = (
        [signal.SIGINT] if signal.getsignal(signal.SIGINT) is signal.default_int_handler else []
    )
    if sigterm:
        signums.append(signal.SIGTERM)
    previous = {signum: signal.signal(signum, interrupt) for signum in signums}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
