"""Cron schedules of mappings.

A mapping's ``schedule`` is a five-field cron expression in UTC (``minute hour day-of-month
month day-of-week``), parsed with Celery's own :class:`celery.schedules.crontab`. Beat does not
get one entry per mapping: it runs one static entry, ``chordload.dispatch_due``, every few
seconds (``shared/broker.py``), and that task works out which *slot* (a cron fire time) of
each mapping is due. Slot times are computed from the cron expression alone, so every
dispatcher - whichever worker, whichever beat process sent it - names the same slot the same
way, and the metadata database can refuse a second claim of it (``shared/metadata/slots.py``).
"""

from __future__ import annotations

import datetime as dt

from celery.schedules import crontab, crontab_parser

UTC = dt.UTC
CRON_FIELDS = (  # name, crontab_parser(max, min)
    ("minute", 60, 0),
    ("hour", 24, 0),
    ("day-of-month", 31, 1),
    ("month", 12, 1),
    ("day-of-week", 7, 0),
)
CRON_HELP = "minute hour day-of-month month day-of-week, in UTC; e.g. '*/15 * * * *'"


def parse_cron(expr: str) -> crontab:
    """A cron expression as a Celery crontab; ValueError says which field is wrong and why."""
    fields = expr.split()
    if len(fields) != 5:
        raise ValueError(
            f"schedule {expr!r} is not a cron expression: it needs 5 fields "
            f"({CRON_HELP}), got {len(fields)}"
        )
    for value, (name, max_, min_) in zip(fields, CRON_FIELDS):
        try:
            crontab_parser(max_, min_).parse(value)
        except Exception as err:  # noqa: BLE001 - crontab_parser raises several types
            raise ValueError(
                f"schedule {expr!r}: the {name} field {value!r} is invalid: {err} ({CRON_HELP})"
            ) from None
    minute, hour, day_of_month, month, day_of_week = fields
    try:
        return crontab(
            minute=minute,
            hour=hour,
            day_of_month=day_of_month,
            month_of_year=month,
            day_of_week=day_of_week,
        )
    except Exception as err:  # noqa: BLE001 - e.g. "day_of_month '30' never occurs in '2'"
        raise ValueError(
            f"schedule {expr!r} never fires or is invalid: {err} ({CRON_HELP})"
        ) from None


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
