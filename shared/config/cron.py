"""Cron schedules of mappings, and the static Celery beat entries.

A mapping's ``schedule`` is a five-field cron expression in UTC (``minute hour day-of-month
month day-of-week``), parsed with Celery's own :class:`celery.schedules.crontab`. Beat does not
get one entry per mapping: it runs one static entry, ``chordload.dispatch_due``, every few
seconds, and that task works out which *slot* (a cron fire time) of each mapping is due. Slot
times are computed from the cron expression alone, so every dispatcher - whichever worker,
whichever beat process sent it - names the same slot the same way, and the metadata database
can refuse a second claim of it (see ``shared/metadata/slots.py``).

Knobs (environment of the workers and of beat):
  CHORDLOAD_DISPATCH_INTERVAL_S   how often beat sends ``dispatch_due`` (default 5)
  CHORDLOAD_RECONCILE_INTERVAL_S  how often beat sends ``reconcile`` (default 30)
  CHORDLOAD_SCHEDULE_GRACE_S      how late a slot may still be launched (default 3600); a slot
                                  older than that (beat or all workers were down) is not
                                  launched, the next one is
"""
from __future__ import annotations

import datetime as dt
import os
from typing import Any

from celery.schedules import crontab, crontab_parser

UTC = dt.timezone.utc
CRON_FIELDS = (  # name, crontab_parser(max, min)
    ("minute", 60, 0), ("hour", 24, 0), ("day-of-month", 31, 1), ("month", 12, 1),
    ("day-of-week", 7, 0))
CRON_HELP = "minute hour day-of-month month day-of-week, in UTC; e.g. '*/15 * * * *'"

DISPATCH_TASK = "chordload.dispatch_due"
RECONCILE_TASK = "chordload.reconcile"


def _env_float(name: str, default: float, minimum: float) -> float:
    raw = os.environ.get(name)
    if raw in (None, ""):
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number of seconds") from None
    if value < minimum:
        raise ValueError(f"{name}={raw!r}: must be at least {minimum}")
    return value


def dispatch_interval_s() -> float:
    return _env_float("CHORDLOAD_DISPATCH_INTERVAL_S", 5.0, 0.5)


def reconcile_interval_s() -> float:
    return _env_float("CHORDLOAD_RECONCILE_INTERVAL_S", 30.0, 1.0)


def schedule_grace_s() -> float:
    return _env_float("CHORDLOAD_SCHEDULE_GRACE_S", 3600.0, 1.0)


def parse_cron(expr: str) -> crontab:
    """A cron expression as a Celery crontab; ValueError says which field is wrong and why."""
    fields = expr.split()
    if len(fields) != 5:
        raise ValueError(f"schedule {expr!r} is not a cron expression: it needs 5 fields "
                         f"({CRON_HELP}), got {len(fields)}")
    for value, (name, max_, min_) in zip(fields, CRON_FIELDS):
        try:
            crontab_parser(max_, min_).parse(value)
        except Exception as err:  # noqa: BLE001 - crontab_parser raises several types
            raise ValueError(f"schedule {expr!r}: the {name} field {value!r} is invalid: "
                             f"{err} ({CRON_HELP})") from None
    minute, hour, day_of_month, month, day_of_week = fields
    try:
        return crontab(minute=minute, hour=hour, day_of_month=day_of_month,
                       month_of_year=month, day_of_week=day_of_week)
    except Exception as err:  # noqa: BLE001 - e.g. "day_of_month '30' never occurs in '2'"
        raise ValueError(f"schedule {expr!r} never fires or is invalid: {err} "
                         f"({CRON_HELP})") from None


def next_after(cron: crontab, when: dt.datetime) -> dt.datetime:
    """The first fire time of ``cron`` strictly after ``when`` (UTC, whole minutes)."""
    when = when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)
    start, delta, _now = cron.remaining_delta(when, tz=UTC)
    return (start + delta).astimezone(UTC).replace(second=0, microsecond=0)


def latest_slot(cron: crontab, now: dt.datetime, grace_s: float) -> dt.datetime | None:
    """The most recent fire time in ``(now - grace_s, now]``, or None.

    Searches backwards in doubling steps, so a daily schedule costs a dozen crontab
    evaluations and an every-minute one costs two.
    """
    now = now.astimezone(UTC)
    grace = dt.timedelta(seconds=grace_s)
    step = dt.timedelta(seconds=60)
    while True:
        step = min(step, grace)
        candidate = next_after(cron, now - step)
        if candidate <= now:
            while True:  # walk forward to the last one that is not in the future
                following = next_after(cron, candidate)
                if following > now:
                    return candidate
                candidate = following
        if step >= grace:
            return None
        step *= 2


def beat_schedule(queue: str) -> dict[str, dict[str, Any]]:
    """The static beat entries: ``dispatch_due`` every few seconds, ``reconcile`` every ~30 s.

    ``expires`` drops messages that waited too long behind busy workers, so a backlog of
    dispatches cannot pile up; a late dispatch is harmless anyway (slots are claimed once).
    """
    dispatch = dispatch_interval_s()
    reconcile = reconcile_interval_s()
    return {
        DISPATCH_TASK: {"task": DISPATCH_TASK, "schedule": dispatch,
                        "options": {"queue": queue, "expires": max(30.0, 6 * dispatch)}},
        RECONCILE_TASK: {"task": RECONCILE_TASK, "schedule": reconcile,
                         "options": {"queue": queue, "expires": max(30.0, 2 * reconcile)}},
    }
