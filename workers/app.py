"""The Celery app. Settings that make chunks safe to redeliver are fixed here, not left to
configuration: JSON only, late acks, reject on worker loss, prefetch 1, a visibility timeout
above the longest chunk, and results/chord counters that outlive the longest run."""
from __future__ import annotations

import os

from celery import Celery

from shared.config.cron import beat_schedule
from shared.config.settings import ENV_OVERRIDES, Settings, current_settings, resolve_config_path
from workers import logging_setup  # noqa: F401 - structured logs via Celery's signals

RESULT_EXPIRES_S = 7 * 24 * 3600


def configure(app: Celery, settings: Settings) -> None:
    """Point ``app`` at the broker/backend of ``settings`` with chordload's fixed options."""
    visibility_timeout_s = settings.visibility_timeout_s
    broker_options = {"visibility_timeout": visibility_timeout_s,
                      **settings.celery.broker_transport_options}
    backend_options = {"visibility_timeout": visibility_timeout_s,
                       **settings.celery.result_backend_transport_options}
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
        task_track_started=True,
        result_expires=RESULT_EXPIRES_S,
        result_extended=False,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,  # a restarted Redis: reconnect, however long
        result_backend_always_retry=True,    # results and chord counters survive a blip
        result_backend_max_retries=30,
        worker_hijack_root_logger=False,
        worker_send_task_events=True,
        task_send_sent_event=True,
        beat_schedule=beat_schedule(settings.celery.queue),
    )


def _settings_for_import() -> Settings | None:
    """Settings for ``celery -A workers``: the config file if there is one; otherwise the
    environment alone (broker/backend/metadata URLs) so a bare worker still starts."""
    if resolve_config_path().is_file():
        return current_settings()
    if any(os.environ.get(env) for env in ENV_OVERRIDES.values()):
        from shared.config.settings import settings_from_dict, use_settings

        settings = settings_from_dict({"metadata": os.environ.get("CHORDLOAD_METADATA_URL", "")},
                                      "environment")
        use_settings(settings)
        return settings
    return None


app = Celery("chordload", include=["workers.tasks", "workers.schedule"])
_settings = _settings_for_import()  # a broken config file fails the worker start, loudly
if _settings is not None:
    configure(app, _settings)
