"""Cron schedules: parse errors name the field; slot arithmetic (next_after, latest_slot)."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.config.cron import latest_slot, next_after, parse_cron

UTC = dt.UTC
FIELDS = ["minute", "hour", "day-of-month", "month", "day-of-week"]


@pytest.mark.parametrize(
    "expr, field",
    [
        ("60 * * * *", "minute"),
        ("* 24 * * *", "hour"),
        ("* * 0 * *", "day-of-month"),
        ("* * 32 * *", "day-of-month"),
        ("* * * 13 *", "month"),
        ("* * * * 8", "day-of-week"),
        ("*/x * * * *", "minute"),
        ("* * * jan-foo *", "month"),
    ],
)
def test_parse_errors_name_the_field(expr, field):
    """A bad field is named, with its value and the expected format."""
    with pytest.raises(ValueError) as info:
        parse_cron(expr)
    text = str(info.value)
    value = expr.split()[FIELDS.index(field)]
    assert f"the {field} field {value!r} is invalid" in text
    assert "minute hour day-of-month month day-of-week" in text


@pytest.mark.parametrize("expr, count", [("* * * *", 4), ("* * * * * *", 6), ("", 0)])
def test_parse_errors_count_the_fields(expr, count):
    """Anything but five fields is refused, saying how many there were."""
    with pytest.raises(ValueError, match=f"needs 5 fields .*got {count}"):
        parse_cron(expr)


def test_a_schedule_that_never_fires_is_refused():
    """A day that no month in the expression has (Feb 30) is refused."""
    with pytest.raises(ValueError, match="never fires or is invalid"):
        parse_cron("0 0 30 2 *")


def fires_at(cron, moment: dt.datetime) -> bool:
    """Whether ``moment`` (a whole minute) is a fire time of ``cron``."""
    return next_after(cron, moment - dt.timedelta(minutes=1)) == moment


minute_fields = st.sampled_from(["*", "0", "*/15", "5,35", "59", "10-12"])
hour_fields = st.sampled_from(["*", "0", "*/6", "3", "22-23"])
dom_fields = st.sampled_from(["*", "1", "15", "28", "31", "1-7"])
month_fields = st.sampled_from(["*", "1", "2", "*/3", "12"])
dow_fields = st.sampled_from(["*", "0", "1-5", "6"])


def fires_ever(expr: str) -> bool:
    try:
        parse_cron(expr)
    except ValueError:  # e.g. day 31 of February
        return False
    return True


crons = (
    st.tuples(minute_fields, hour_fields, dom_fields, month_fields, dow_fields)
    .map(" ".join)
    .filter(fires_ever)
)
moments = st.datetimes(
    min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2100, 1, 1), timezones=st.just(UTC)
)


@settings(max_examples=60, deadline=None)
@given(crons, moments)
def test_next_after_is_the_first_fire_time_strictly_later(expr, when):
    """next_after is a whole minute, strictly after ``when``, a fire time of the schedule."""
    cron = parse_cron(expr)
    following = next_after(cron, when)
    assert following > when
    assert following.second == following.microsecond == 0 and following.tzinfo is not None
    assert fires_at(cron, following)


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(["* * * * *", "*/15 * * * *", "5,35 * * * *", "10-12 */6 * * *"]),
    moments,
)
def test_next_after_skips_no_fire_time(expr, when):
    """No fire time lies strictly between when and next_after(when) (checked minute by minute)."""
    cron = parse_cron(expr)
    following = next_after(cron, when)
    minute = when.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
    while minute < following:
        assert not fires_at(cron, minute), f"{minute} fires but next_after gave {following}"
        minute += dt.timedelta(minutes=1)


GRACES = st.sampled_from([60, 61, 600, 3600, 86_400, 40 * 86_400])


def check_latest_slot(cron, now: dt.datetime, grace: float) -> dt.datetime | None:
    """latest_slot's contract: a fire time in (now - grace, now] with no fire time after it
    up to now; None only when (now - grace, now] holds no fire time."""
    slot = latest_slot(cron, now, grace)
    if slot is None:
        assert next_after(cron, now - dt.timedelta(seconds=grace)) > now
        return None
    assert now - dt.timedelta(seconds=grace) < slot <= now
    assert fires_at(cron, slot)
    assert next_after(cron, slot) > now
    return slot


@settings(max_examples=50, deadline=None)
@given(crons, moments, GRACES)
def test_latest_slot_is_the_last_fire_time_within_grace(expr, now, grace):
    """At any moment latest_slot is the last fire time within grace, or None if there is none."""
    check_latest_slot(parse_cron(expr), now, grace)


@settings(max_examples=80, deadline=None)
@given(crons, moments, GRACES, st.floats(0, 1.5))
def test_latest_slot_near_a_fire_time(expr, base, grace, late):
    """Less than grace after a fire time, that fire time (or a later one) is the latest slot."""
    cron = parse_cron(expr)
    fired = next_after(cron, base)
    now = fired + dt.timedelta(seconds=round(late * grace, 3))
    slot = check_latest_slot(cron, now, grace)
    if now - fired < dt.timedelta(seconds=grace):
        assert slot is not None and slot >= fired
    elif slot is not None:
        assert slot > fired


@settings(max_examples=30, deadline=None)
@given(crons, moments, GRACES)
def test_a_slot_is_its_own_latest_slot(expr, when, grace):
    """At a fire time that fire time is the latest slot; a moment before it, it is not."""
    cron = parse_cron(expr)
    slot = next_after(cron, when)
    assert latest_slot(cron, slot, grace) == slot
    assert latest_slot(cron, slot - dt.timedelta(microseconds=1), grace) != slot


def test_latest_slot_takes_naive_and_other_zones_as_instants():
    """An aware time in another zone is the same instant in UTC; a naive one is read as UTC."""
    cron = parse_cron("0 * * * *")
    now = dt.datetime(2024, 3, 1, 12, 30, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert latest_slot(cron, now, 3600) == dt.datetime(2024, 3, 1, 10, 0, tzinfo=UTC)
    assert next_after(cron, dt.datetime(2024, 3, 1, 10, 0)) == dt.datetime(
        2024, 3, 1, 11, 0, tzinfo=UTC
    )
