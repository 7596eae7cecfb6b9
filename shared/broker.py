"""The Celery app, built by one function from the settings.

The settings that make chunks safe to redeliver are fixed here, not left to configuration:
JSON only, late acks, reject on worker loss, prefetch 1, a visibility timeout above the
longest chunk, and results/chord counters that outlive the longest run. The worker's app
(``workers/celery_app.py``) and the coordinator's (to send a run's chord and revoke its chunks)
are both made by ``celery_app``; the coordinator sends tasks by name and never imports the
workers' code.
"""

from __future__ import annotations

import threading
from typing import Any

from celery import Celery

from shared.config.settings import Settings
from shared.engines import mask_url
from shared.errors import BrokerUnavailableError

RESULT_EXPIRES_S = 7 * 24 * 3600

# task names: the contract between the coordinator, beat and the workers
LOAD_CHUNK = "chordload.load_chunk"
FINALIZE_RUN = "chordload.finalize_run"
ON_RUN_ERROR = "chordload.on_run_error"
RECONCILE = "chordload.reconcile"
DISPATCH_DUE = "chordload.dispatch_due"
VERIFY_RANGE = "chordload.verify_range"
FINISH_VERIFY = "chordload.finish_verify"
VERIFY_AFTER_RUN = "chordload.verify_after_run"
ON_VERIFY_ERROR = "chordload.on_verify_error"
# where they are defined: a worker's app loads these modules by name
WORKER_TASK_MODULES = ("workers.tasks", "workers.verify_tasks")


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """The static beat entries: ``dispatch_due`` every few seconds, ``reconcile`` every ~30 s.

    ``expires`` drops messages that waited too long behind busy workers, so a backlog of
    dispatches cannot pile up; a late dispatch is harmless anyway (slots are claimed once).
    """
    queue, schedule = settings.celery.queue, settings.schedule
    dispatch, reconcile = schedule.dispatch_interval_s, schedule.reconcile_interval_s
    return {
        DISPATCH_DUE: {
            "task": DISPATCH_DUE,
            "schedule": dispatch,
            "options": {"queue": queue, "expires": max(30.0, 6 * dispatch)},
        },
        RECONCILE: {
            "task": RECONCILE,
            "schedule": reconcile,
            "options": {"queue": queue, "expires": max(30.0, 2 * reconcile)},
        },
    }


def configure(app: Celery, settings: Settings) -> None:
    """Point ``app`` at the broker/backend of ``settings`` with chordload's fixed options."""
    visibility_timeout_s = settings.visibility_timeout_s
    broker_options = {
        "visibility_timeout": visibility_timeout_s,
        **settings.celery.broker_transport_options,
    }
    backend_options = {
        "visibility_timeout": visibility_timeout_s,
        **settings.celery.result_backend_transport_options,
    }
    app.conf.update(
        broker_url=settings.broker,
        result_backend=settings.result_backend,
        broker_transport_options=broker_options,
        result_backend_transport_options=backend_options,
        task_default_queue=settings.celery.queue,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # no STARTED state in the result backend: one Redis write a task less (a chord of
        # 200 no-op tasks: 0.80 s -> 0.62 s); chunk_log says what runs, Flower has events
        task_track_started=False,
        result_expires=RESULT_EXPIRES_S,
        result_extended=False,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,  # a restarted Redis: reconnect, however long
        result_backend_always_retry=True,  # results and chord counters survive a blip
        result_backend_max_retries=30,
        worker_hijack_root_logger=False,
        worker_send_task_events=True,
        task_send_sent_event=True,
        beat_schedule=beat_schedule(settings),
    )


def celery_app(settings: Settings, include: tuple[str, ...] = ()) -> Celery:
    """A Celery app configured from ``settings``; ``include`` names task modules (workers)."""
    app = Celery("chordload", include=list(include), set_as_current=False)
    configure(app, settings)
    app.chordload_settings = settings
    return app


_clients: dict[int, tuple[Settings, Celery]] = {}
_clients_lock = threading.Lock()


def client_app(settings: Settings) -> Celery:
    """The app the coordinator sends and revokes with, one per settings object (its broker
    connection pool is reused across calls)."""
    with _clients_lock:
        entry = _clients.get(id(settings))
        if entry is None or entry[0] is not settings:
            if len(_clients) >= 16:
                _clients.clear()
            entry = _clients[id(settings)] = (settings, celery_app(settings))
    return entry[1]


def use_client_app(settings: Settings, app: Celery | None) -> None:
    """Send ``settings``' runs through ``app`` (an in-process worker's app, whose in-memory
    broker and result backend exist only in it), or again through an app of their own."""
    with _clients_lock:
        if app is None:
            _clients.pop(id(settings), None)
        else:
            _clients[id(settings)] = (settings, app)


def queue_length(settings: Settings) -> int:
    """Messages waiting in the settings' queue (all priority levels), as the broker sees it.

    A non-passive declare: kombu's Redis transport checks a passive declare with EXISTS,
    which it does not prefix with ``global_keyprefix``, so that declare finds no queue; the
    count itself (LLEN) is prefixed. On Redis declaring a queue writes nothing."""
    with client_app(settings).connection_for_write() as conn:
        declared = conn.default_channel.queue_declare(queue=settings.celery.queue, passive=False)
        return int(declared.message_count)


def task_ids_held_by_workers(settings: Settings, timeout_s: float = 1.0) -> set[str]:
    """The ids of the tasks that the workers replying within ``timeout_s`` are running,
    have reserved (prefetched) or hold for later (a retry's countdown)."""
    inspect = client_app(settings).control.inspect(timeout=timeout_s)
    held: set[str] = set()
    for entries in (inspect.active() or {}).values():
        held.update(e["id"] for e in entries)
    for entries in (inspect.reserved() or {}).values():
        held.update(e["id"] for e in entries)
    for entries in (inspect.scheduled() or {}).values():
        held.update(e["request"]["id"] for e in entries)
    return held


def require_broker(settings: Settings, timeout_s: float = 3.0) -> None:
    """Raise BrokerUnavailableError, naming the (masked) URL and the fix, unless the broker
    and a Redis result backend answer within ``timeout_s``. Launch asks before it writes the
    run, so a broker that is down leaves nothing behind (no FAILED run to clean up)."""
    import redis

    checks = [("broker", "broker", "CHORDLOAD_BROKER_URL", settings.broker)]
    if settings.result_backend.startswith(("redis://", "rediss://")):
        checks.append(
            (
                "result backend",
                "result_backend",
                "CHORDLOAD_RESULT_BACKEND",
                settings.result_backend,
            )
        )
    for what, key, env, url in checks:
        try:
            if what == "broker":
                with client_app(settings).connection_for_write() as conn:
                    conn.ensure_connection(max_retries=0, timeout=timeout_s)
            else:
                client = redis.Redis.from_url(
                    url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s
                )
                try:
                    client.ping()
                finally:
                    client.close()
        except Exception as exc:  # noqa: BLE001 - any failure to connect means "not reachable"
            raise BrokerUnavailableError(
                f"cannot reach the {what} {mask_url(url)}: {str(exc).rstrip('.')}. "
                f"Nothing was launched. "
                f"Start Redis there, or point `{key}` in the config ({env}) at one that "
                f"runs; `chordload validate` checks it"
            ) from None
