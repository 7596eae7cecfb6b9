"""Celery app and tasks. ``celery -A workers worker`` finds ``app`` here."""
from workers.app import app  # noqa: F401
