"""Celery tasks of ``chordload verify``: one ``verify_range`` per key range (the chord's
header) and ``finish_verify`` (its body). Thin wrappers over ``shared/verify/``; messages
carry only the verify id and a range's bounds, the plan is read from verify_log."""

from __future__ import annotations

import logging
from typing import Any

from celery import Task, shared_task

from shared import broker
from shared.run.window import ChunkRange
from shared.verify.finish import finish_verify
from shared.verify.ranges import verify_range
from workers.celery_app import settings_of

log = logging.getLogger("chordload.tasks")


@shared_task(name=broker.VERIFY_RANGE, bind=True)
def verify_range_task(self: Task, verify_id: str, bounds: dict[str, Any]) -> dict[str, Any]:
    """Digest one key range on both sides, and list the keys that differ."""
    outcome = verify_range(settings_of(self.app), verify_id, ChunkRange.from_message(bounds))
    return outcome.to_json()


@shared_task(name=broker.FINISH_VERIFY, bind=True)
def finish_verify_task(
    self: Task, outcomes: list[dict[str, Any]], verify_id: str
) -> dict[str, Any]:
    """Chord body: the verdict from every range's outcome."""
    status = finish_verify(settings_of(self.app), verify_id, outcomes)
    log.info("verify %s: %s", verify_id, status.value)
    return {"verify_id": verify_id, "status": status.value}
