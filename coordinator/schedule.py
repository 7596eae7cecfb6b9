"""Beat dispatch and the schedule overview.

``dispatch_due`` runs inside the ``chordload.dispatch_due`` task, which one static beat entry
sends every few seconds. For each enabled mapping with a ``schedule`` it takes the latest slot
(cron fire time) that is not in the future and not older than the grace period, claims it in
``schedule_slot`` (unique per mapping and slot) and, if the claim is new, launches a run:

- LAUNCHED: the run started (``run_id``);
- SKIPPED: the mapping still had an active run, named in ``reason``;
- FAILED: planning or sending failed (bad config, source down, broker down), ``reason`` says.

A mapping's ``verify.schedule`` is dispatched the same way: its slots are claimed under
``verify:<mapref>`` and start a ``chordload verify`` of all keys (``run_id`` holds the
verify id; SKIPPED while a run of the mapping is active).

A slot that someone else claimed is left alone, so two beat processes, a redelivered dispatch
or workers with slightly different clocks never start one slot twice.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
from dataclasses import asdict, dataclass

from coordinator.launch import launch
from coordinator.verify import start_verify
from shared.config.cron import latest_slot, next_after, parse_cron
from shared.config.settings import Settings
from shared.engines import get_engine
from shared.errors import ChordloadError, RunRefusedError, describe_db_error
from shared.logging_context import bind_run_context
from shared.metadata import slots, store
from shared.metadata.models import ProcessLog, ScheduleSlot
from shared.metadata.slots import SlotStatus
from shared.timeutil import as_utc, utcnow

log = logging.getLogger("chordload.schedule")
VERIFY_SLOT_PREFIX = "verify:"  # the schedule_slot name of a mapping's verify.schedule


@dataclass(frozen=True)
class SlotOutcome:
    mapref: str
    scheduled_for: str
    status: str
    run_id: str | None = None
    reason: str | None = None

    def to_json(self) -> dict:
        return asdict(self)


def default_claimer() -> str:
    return f"{socket.gethostname()}/{os.getpid()}"


def dispatch_due(
    settings: Settings, *, now: dt.datetime | None = None, claimed_by: str | None = None
) -> list[SlotOutcome]:
    """Launch every mapping whose current slot is due and not yet claimed."""
    now = now or utcnow()
    grace_s = settings.schedule.grace_s
    claimed_by = claimed_by or default_claimer()
    metadata = get_engine(settings.metadata)
    outcomes = []
    for mapref, spec in settings.mappings.items():
        if not spec.enabled:
            continue
        if spec.schedule:
            slot = latest_slot(parse_cron(spec.schedule), now, grace_s)
            if slot is not None and slots.claim(metadata, mapref, slot, claimed_by):
                outcomes.append(_launch_slot(settings, mapref, slot, now))
        if spec.verify.schedule:
            slot = latest_slot(parse_cron(spec.verify.schedule), now, grace_s)
            name = VERIFY_SLOT_PREFIX + mapref
            if slot is not None and slots.claim(metadata, name, slot, claimed_by):
                outcomes.append(_launch_slot(settings, mapref, slot, now, verify=True))
    return outcomes


def _launch_slot(
    settings: Settings, mapref: str, slot: dt.datetime, now: dt.datetime, verify: bool = False
) -> SlotOutcome:
    """Launch the slot's run (or, ``verify``, its verify) and record how that went."""
    metadata = get_engine(settings.metadata)
    run_id = reason = None
    slot_name = VERIFY_SLOT_PREFIX + mapref if verify else mapref
    with bind_run_context(mapref=mapref):
        try:
            run_id = start_verify(settings, mapref) if verify else launch(mapref, settings=settings)
        except RunRefusedError as err:
            status = SlotStatus.SKIPPED
            reason = (
                f"mapping still running: run {err.active_run_id} is active"
                if err.active_run_id
                else f"refused: {err}"
            )
        except ChordloadError as err:
            status, reason = SlotStatus.FAILED, str(err)
        except Exception as err:  # noqa: BLE001 - record it on the slot; next slot is new
            status, reason = SlotStatus.FAILED, f"{type(err).__name__}: {describe_db_error(err)}"
        else:
            status = SlotStatus.LAUNCHED
        slots.finish(metadata, slot_name, slot, status, run_id=run_id, reason=reason)
        late_s = (now - slot).total_seconds()
        with bind_run_context(run_id=run_id or "-", mapref=mapref):
            if status is SlotStatus.LAUNCHED:
                log.info(
                    "schedule: slot %s of %s launched run %s (%.1fs after the slot)",
                    slot.isoformat(),
                    mapref,
                    run_id,
                    late_s,
                )
            else:
                log.warning(
                    "schedule: slot %s of %s %s: %s", slot.isoformat(), mapref, status.value, reason
                )
    return SlotOutcome(slot_name, slot.isoformat(), status.value, run_id, reason)


@dataclass(frozen=True)
class ScheduleRow:
    mapref: str
    schedule: str | None
    enabled: bool
    next_due: dt.datetime | None
    last_slot: ScheduleSlot | None
    last_run: ProcessLog | None

    def to_json(self) -> dict:
        slot, run = self.last_slot, self.last_run
        return {
            "mapref": self.mapref,
            "schedule": self.schedule,
            "enabled": self.enabled,
            "next_due": self.next_due.isoformat() if self.next_due else None,
            "last_slot": None
            if slot is None
            else {
                "scheduled_for": as_utc(slot.scheduled_for).isoformat(),
                "status": slot.status,
                "run_id": slot.run_id,
                "reason": slot.reason,
            },
            "last_run": None
            if run is None
            else {
                "run_id": run.run_id,
                "status": run.status.value,
                "started_at": _iso(run.started_at),
                "ended_at": _iso(run.ended_at),
            },
        }


def _iso(value: dt.datetime | None) -> str | None:
    return as_utc(value).isoformat() if value is not None else None


def overview(settings: Settings, now: dt.datetime | None = None) -> list[ScheduleRow]:
    """Every mapping: its schedule, next due time (None if unscheduled or disabled), last
    claimed slot and last run (scheduled or not)."""
    now = now or utcnow()
    metadata = get_engine(settings.metadata)
    rows = []
    for mapref, spec in sorted(settings.mappings.items()):
        next_due = (
            next_after(parse_cron(spec.schedule), now) if spec.schedule and spec.enabled else None
        )
        rows.append(
            ScheduleRow(
                mapref,
                spec.schedule,
                spec.enabled,
                next_due,
                slots.latest(metadata, mapref),
                store.latest_run(metadata, mapref),
            )
        )
    return rows
