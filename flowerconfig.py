"""Flower reads ``./flowerconfig.py`` when started as ``celery -A workers flower`` from the
repository (or /app in the image): this is the configuration shipped in the package,
``coordinator/flowerconfig.py`` (what ``chordload flower`` uses from any directory)."""

from coordinator.flowerconfig import *  # noqa: F403 - Flower reads this module's names
