"""The workers: the Celery app and its thin tasks.

``celery -A workers worker`` (and ``beat``, ``flower``) finds ``app`` here. It is built on
first use from the config (``workers/celery_app.py``), so importing the task module alone needs no
config.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "app":
        from workers.celery_app import worker_app

        return worker_app()
    raise AttributeError(f"module 'workers' has no attribute {name!r}")
