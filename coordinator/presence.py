"""Is anyone going to run this? Worker presence for ``run --wait``, ``watch``, ``status`` and
``validate``.

A run whose queue no worker consumes waits forever without a sound, and so does a run whose
chunks sit behind other work; both look like "0 rows/s" on a progress bar. The workers are
asked over the broker (Celery's remote control: ``active_queues``, then what they run) with a
short timeout, and what they say is turned into one sentence that names the queue and the
command that starts a worker for it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from shared.broker import client_app
from shared.config.settings import Settings
from shared.run.plan import on_run_queue

INSPECT_TIMEOUT_S = 1.0  # how long the first broadcast waits for workers to answer
CHECK_INTERVAL_S = 5.0  # how often a waiting command asks again while nothing runs
FIRST_CHECK_S = 2.0  # when it asks first


@dataclass(frozen=True)
class WorkerSurvey:
    """What the workers that answered within the timeout said."""

    queue: str
    consumers: tuple[str, ...]  # workers that consume ``queue``
    others: tuple[str, ...] = ()  # workers that answered but consume other queues only
    held: frozenset[str] = frozenset()  # task ids the consumers run, reserved or scheduled
    active: dict[str, int] = field(default_factory=dict)  # consumer -> tasks it runs now


def survey(
    settings: Settings, timeout_s: float = INSPECT_TIMEOUT_S, *, tasks: bool
) -> WorkerSurvey:
    """Ask the workers which queues they consume and, with ``tasks``, what the consumers of
    the settings' queue hold. The first broadcast waits ``timeout_s``; the others stop as
    soon as every worker that answered the first has answered again."""
    app = client_app(settings)
    queue = settings.celery.queue
    queues = app.control.inspect(timeout=timeout_s).active_queues() or {}
    consumers = tuple(
        sorted(name for name, qs in queues.items() if any(q.get("name") == queue for q in qs))
    )
    others = tuple(sorted(set(queues) - set(consumers)))
    if not tasks or not consumers:
        return WorkerSurvey(queue, consumers, others)
    inspect = app.control.inspect(
        destination=list(consumers), timeout=timeout_s, limit=len(consumers)
    )
    active = inspect.active() or {}
    held = {e["id"] for entries in active.values() for e in entries}
    held.update(e["id"] for entries in (inspect.reserved() or {}).values() for e in entries)
    held.update(
        e["request"]["id"] for entries in (inspect.scheduled() or {}).values() for e in entries
    )
    return WorkerSurvey(
        queue,
        consumers,
        others,
        frozenset(held),
        {name: len(entries) for name, entries in active.items()},
    )


def start_worker_command(settings: Settings, config: str | None = None) -> str:
    """The command that starts a worker for the settings' queue, with a unique node name."""
    env = f"CHORDLOAD_CONFIG={config} " if config else ""
    return f"{env}celery -A workers worker --queues {settings.celery.queue} -n w1@%h"


def no_worker_message(found: WorkerSurvey, start_command: str) -> str:
    """The problem, then the command on a line of its own (a terminal never breaks it)."""
    elsewhere = (
        f" ({len(found.others)} worker(s) answer but consume other queues: "
        f"{', '.join(found.others)})"
        if found.others
        else ""
    )
    return (
        f"no worker consumes queue '{found.queue}'{elsewhere}; the run waits until one "
        f"does. Start one:\n  {start_command}"
    )


def diagnose(
    found: WorkerSurvey,
    pending_task_ids: Collection[str],
    running_chunks: int,
    start_command: str,
) -> str | None:
    """Why a run's chunks do not move, or None when nothing is wrong that workers could say.

    ``pending_task_ids``: the task ids of the run's PENDING chunks; ``running_chunks``: how
    many of its chunks are RUNNING."""
    if not found.consumers:
        return no_worker_message(found, start_command)
    if running_chunks or not pending_task_ids:
        return None
    if found.held.intersection(pending_task_ids):
        return None  # a worker has them: they start in a moment
    busy = {name: n for name, n in found.active.items() if n}
    if not busy:
        return None  # idle workers and a chunk just sent: it is on its way
    tasks = sum(busy.values())
    return (
        f"the run's {len(pending_task_ids)} chunk(s) wait in queue '{found.queue}': its "
        f"{len(found.consumers)} worker(s) are busy with {tasks} other task(s) "
        f"({', '.join(sorted(busy))}); the chunks start when a slot frees up. Or start "
        f"another worker:\n  {start_command}"
    )


class PresenceWatch:
    """Called with each progress snapshot of a waiting command; reports (``say``) a worker
    problem when it appears and when it is over. It asks the workers only while the run is
    active and none of its chunks is RUNNING, at most every ``interval_s``."""

    def __init__(
        self,
        settings: Settings,
        say: Callable[[str], None],
        *,
        config: str | None = None,
        interval_s: float = CHECK_INTERVAL_S,
        first_check_s: float = FIRST_CHECK_S,
        pending_task_ids: Callable[[], Collection[str]],
    ):
        self.settings = settings
        self.say = say
        self.config = config
        self.start_command = start_worker_command(settings, config)
        self.interval_s = interval_s
        self.pending_task_ids = pending_task_ids
        # workers take a fresh run's chunks within a second or two: ask only after that
        self._next_check = time.monotonic() + first_check_s
        self._problem: str | None = None

    def __call__(self, snap) -> None:
        run, totals = snap.run, snap.totals
        if run.status.is_terminal:
            self._problem = None
            return
        if totals.get("status_running", 0):
            self._clear("a worker took the run's chunks")
            return
        now = time.monotonic()
        if now < self._next_check or not totals.get("status_pending", 0):
            return
        self._next_check = now + self.interval_s
        settings = on_run_queue(self.settings, run)  # the queue the run was sent to
        try:
            found = survey(settings, tasks=True)
        except Exception as exc:  # noqa: BLE001 - a broker blip must not end the waiting
            problem: str | None = f"cannot ask the workers over the broker: {exc}"
        else:
            command = self.start_command
            if settings is not self.settings:
                command = start_worker_command(settings, self.config)
            problem = diagnose(found, self.pending_task_ids(), 0, command)
        if problem is None:
            self._clear("workers are taking the run's chunks")
        elif problem != self._problem:
            self._problem = problem
            self.say(f"warning: {problem}")

    def _clear(self, how: str) -> None:
        if self._problem is not None:
            self._problem = None
            self.say(how)
