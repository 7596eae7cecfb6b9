"""The workers' Celery app, built once per process from the config.

The config is ``$CHORDLOAD_CONFIG``, else ``./chordload.yaml``, else the environment alone
when it names the broker and the metadata database. A worker (or beat, or Flower) started
without any of them refuses to start and says how to give it one, instead of running
against some default broker.
"""

from __future__ import annotations

import sys
import threading

from celery import Celery

from shared import logging_context
from shared.broker import WORKER_TASK_MODULES, celery_app
from shared.config.settings import Settings, load_settings
from shared.errors import ConfigError
from workers import logging_setup  # structured logs via Celery's signals

_app: Celery | None = None
_lock = threading.Lock()


def build_app(settings: Settings) -> Celery:
    """A workers' app for ``settings`` (the demo runs one in-process)."""
    logging_setup.use_metadata(settings.metadata)
    logging_context.use_json_lines(settings.log_json)
    return celery_app(settings, include=WORKER_TASK_MODULES)


def worker_app() -> Celery:
    """The process's app, from the config; exits with the fix when there is none."""
    global _app
    with _lock:
        if _app is None:
            try:
                settings = load_settings()
            except ConfigError as err:
                print(f"error: chordload workers need a config: {err}", file=sys.stderr)
                raise SystemExit(2) from None
            _app = build_app(settings)
    return _app


def settings_of(app: Celery) -> Settings:
    """The settings an app was built from (tasks take them from their own app)."""
    return app.chordload_settings
