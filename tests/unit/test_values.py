"""Checkpoint and chunk-bound values: the typed JSON codec and the arithmetic planning does."""

from __future__ import annotations

import datetime as dt
import json
import math
import uuid
from decimal import Decimal

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from shared.run.values import (
    coerce_like,
    decode_value,
    display_value,
    encode_value,
    json_safe,
    max_value,
    minus_lag,
    parse_loose,
    plain_value,
    rank,
    same_shape,
    stride_bounds,
    value_type_name,
)

# fixed-offset zones only: datetimes in a zoneinfo zone's fold never compare equal across zones
offsets = st.integers(-14 * 60, 14 * 60).map(lambda m: dt.timezone(dt.timedelta(minutes=m)))
naive_datetimes = st.datetimes(min_value=dt.datetime(1, 1, 2), max_value=dt.datetime(9999, 12, 30))
aware_datetimes = st.datetimes(
    min_value=dt.datetime(1, 1, 2), max_value=dt.datetime(9999, 12, 30), timezones=offsets
)
finite_floats = st.floats(allow_nan=False, allow_infinity=False)
finite_decimals = st.decimals(allow_nan=False, allow_infinity=False)
scalars = st.one_of(
    st.booleans(),
    st.integers(),
    finite_floats,
    finite_decimals,
    st.text(),
    st.dates(),
    naive_datetimes,
    aware_datetimes,
)
rows = st.lists(st.one_of(st.none(), scalars), min_size=1, max_size=4).map(tuple)
values = st.one_of(st.none(), scalars, rows)


def same(a, b) -> bool:
    """Equal, of the same type, and (datetimes) with the same UTC offset."""
    if isinstance(a, tuple):
        return isinstance(b, tuple) and len(a) == len(b) and all(map(same, a, b))
    if type(a) is not type(b) or a != b:
        return False
    if isinstance(a, Decimal):
        return str(a) == str(b)  # the exact digits and exponent, not just the number
    if isinstance(a, dt.datetime):
        return a.utcoffset() == b.utcoffset()
    return True


# -- the codec --------------------------------------------------------------------------------
@settings(max_examples=150)
@given(values)
def test_encode_decode_round_trip_through_json(value):
    """encode -> JSON -> decode gives back the same type, value, digits and UTC offset."""
    encoded = json.loads(json.dumps(encode_value(value), allow_nan=False))
    assert same(decode_value(encoded), value)


@settings(max_examples=50)
@given(values)
def test_type_name_and_plain_value_follow_the_encoding(value):
    """value_type_name is the encoded type tag; plain_value drops the tags (rows -> lists)."""
    encoded = encode_value(value)
    assert value_type_name(value) == (None if value is None else encoded["type"])
    plain = plain_value(encoded)
    if isinstance(value, tuple):
        assert isinstance(plain, list) and len(plain) == len(value)
        assert [p is None for p in plain] == [v is None for v in value]
    elif value is not None:
        assert plain == encoded["value"]


def test_display_value_spells_rows_and_nulls():
    """display_value shows '-' for no value and a row's NULL parts as NULL."""
    assert display_value(None) == "-"
    assert display_value(encode_value((1, None, "a"))) == "(1, NULL, a)"
    assert display_value(encode_value(dt.date(2024, 1, 2))) == "2024-01-02"


@pytest.mark.parametrize("value", [b"x", [1], {"a": 1}, dt.time(1, 2), uuid.uuid4(), object()])
def test_unsupported_values_are_refused(value):
    """Values that are no checkpoint type are refused by name, not stored as something else."""
    with pytest.raises(TypeError, match=type(value).__name__):
        encode_value(value)


def test_unknown_encoded_type_is_refused():
    """A document with an unknown type tag is an error, not a silent None."""
    with pytest.raises(ValueError, match="unknown encoded value type 'blob'"):
        decode_value({"type": "blob", "value": "00"})


def test_nan_and_infinity_are_not_refused_by_the_codec():
    """Non-finite floats encode unvalidated and cannot be written as strict JSON."""
    encoded = encode_value(float("nan"))
    assert encoded["type"] == "float" and math.isnan(decode_value(encoded))
    assert decode_value(encode_value(float("inf"))) == float("inf")
    with pytest.raises(ValueError):
        json.dumps(encoded, allow_nan=False)


# -- max_value and rank -----------------------------------------------------------------------
int_or_none = st.one_of(st.none(), st.integers(-50, 50))


@settings(max_examples=50)
@given(st.lists(int_or_none))
def test_max_value_ignores_nulls(items):
    """max_value is the greatest non-NULL value, None when there is none."""
    present = [v for v in items if v is not None]
    assert max_value(items) == (max(present) if present else None)


@settings(max_examples=50)
@given(st.lists(st.tuples(int_or_none, int_or_none)))
def test_max_value_leaves_out_rows_with_a_null_part(items):
    """A row with any NULL part never becomes (or beats) the maximum."""
    complete = [r for r in items if None not in r]
    assert max_value(items) == (max(complete) if complete else None)


def test_max_value_refuses_mixed_naive_and_aware_datetimes():
    """Mixed naive/aware datetimes cannot be ordered and are refused."""
    naive, aware = dt.datetime(2024, 1, 1), dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    with pytest.raises(TypeError):
        max_value([naive, aware])


@settings(max_examples=50)
@given(st.lists(int_or_none, min_size=1))
def test_rank_puts_null_first_and_keeps_the_order_of_values(items):
    """Sorting by rank puts every NULL before every value and sorts the values as usual."""
    ranked = sorted(items, key=rank)
    nulls = items.count(None)
    assert ranked[:nulls] == [None] * nulls
    assert ranked[nulls:] == sorted(v for v in items if v is not None)


@settings(max_examples=50)
@given(st.tuples(int_or_none, int_or_none), st.tuples(int_or_none, int_or_none))
def test_rank_of_rows_orders_part_by_part_with_null_lowest(a, b):
    """Rows rank lexicographically, a NULL part below any value in that position."""

    def key(row):
        return tuple((0, 0) if v is None else (1, v) for v in row)

    assert (rank(a) < rank(b)) == (key(a) < key(b))
    assert (rank(a) == rank(b)) == (a == b)


def test_same_shape():
    """Scalars compare with scalars, rows only with rows of the same length."""
    assert same_shape(1, "a")
    assert same_shape((1, 2), (3, 4))
    assert not same_shape((1, 2), (1, 2, 3))
    assert not same_shape(1, (1,))


# -- minus_lag --------------------------------------------------------------------------------
lags = st.one_of(st.integers(1, 10**6), st.floats(0.001, 10**6))


@settings(max_examples=50)
@given(st.integers(), st.integers(1, 10**6))
def test_minus_lag_on_integers_subtracts_units_and_stays_integer(value, lag):
    """An integer checkpoint moves by the lag in units; an integral float lag keeps it an int."""
    for given_lag in (lag, float(lag)):
        result = minus_lag(value, given_lag)
        assert result == value - lag and type(result) is int


@settings(max_examples=50)
@given(finite_decimals, lags)
def test_minus_lag_on_decimals_stays_decimal(value, lag):
    """A Decimal checkpoint moves by the lag's decimal spelling and stays a Decimal."""
    result = minus_lag(value, lag)
    assert isinstance(result, Decimal)
    assert result == value - Decimal(str(int(lag) if float(lag).is_integer() else lag))


@settings(max_examples=50)
@given(st.one_of(naive_datetimes, aware_datetimes), lags)
def test_minus_lag_on_datetimes_is_seconds_and_keeps_the_zone(value, lag):
    """A timestamp moves back ``lag`` seconds and keeps its time zone (or lack of one)."""
    assume(value - dt.timedelta(seconds=lag) >= dt.datetime.min.replace(tzinfo=value.tzinfo))
    result = minus_lag(value, lag)
    assert result == value - dt.timedelta(seconds=lag)
    assert result.utcoffset() == value.utcoffset()


@settings(max_examples=50)
@given(st.dates(min_value=dt.date(100, 1, 1)), st.floats(0.001, 30_000))
def test_minus_lag_on_dates_rounds_days_up(value, lag):
    """A date moves back ceil(lag) days: a partial day of lag re-reads the whole day."""
    assert minus_lag(value, lag) == value - dt.timedelta(days=math.ceil(lag))


@settings(max_examples=50)
@given(st.one_of(naive_datetimes, aware_datetimes), st.sampled_from(["T", " "]), lags)
def test_minus_lag_on_iso_timestamp_text_stays_text_of_the_same_shape(value, sep, lag):
    """ISO timestamp text moves like a timestamp and keeps its separator and zone."""
    assume(
        value.year > 1
        and value - dt.timedelta(seconds=lag) > dt.datetime(1, 1, 2, tzinfo=value.tzinfo)
    )
    text = value.isoformat(sep)
    result = minus_lag(text, lag)
    assert isinstance(result, str) and result[10] == sep
    assert dt.datetime.fromisoformat(result) == value - dt.timedelta(seconds=lag)
    assert dt.datetime.fromisoformat(result).utcoffset() == value.utcoffset()


@settings(max_examples=50)
@given(st.dates(min_value=dt.date(100, 1, 1)), st.floats(0.001, 30_000))
def test_minus_lag_on_iso_date_text_stays_date_text(value, lag):
    """A date held as ISO text moves like a date and stays 'YYYY-MM-DD' text."""
    assert (
        minus_lag(value.isoformat(), lag) == (value - dt.timedelta(days=math.ceil(lag))).isoformat()
    )


@settings(max_examples=50)
@given(st.tuples(st.integers(), st.text(), st.none()), st.integers(1, 1000))
def test_minus_lag_on_a_row_moves_its_first_column_only(row, lag):
    """A multi-column checkpoint moves on its first column; the other parts stay."""
    assert minus_lag(row, lag) == (row[0] - lag, *row[1:])


@settings(max_examples=50)
@given(values)
def test_minus_lag_of_zero_or_on_none_is_the_identity(value):
    """No lag (or no value) changes nothing, whatever the value's type."""
    assert same(minus_lag(value, 0), value)
    assert minus_lag(None, 5) is None


@pytest.mark.parametrize("value", [True, "abc", "2024-13-01", b"x"])
def test_minus_lag_refuses_values_without_arithmetic(value):
    """Booleans, non-ISO text and other values have no lag arithmetic: TypeError."""
    with pytest.raises(TypeError, match="lag"):
        minus_lag(value, 1)


# -- stride_bounds ----------------------------------------------------------------------------
def check_strides(low, high, parts, bounds):
    assert len(bounds) <= max(parts - 1, 0)
    assert all(a < b for a, b in zip(bounds, bounds[1:])), "strictly increasing"
    assert all(b < high for b in bounds), "every bound below the maximum"


@settings(max_examples=50)
@given(st.integers(-(10**12), 10**12), st.integers(0, 10**12), st.integers(-3, 300))
def test_stride_bounds_on_integers(low, span, parts):
    """Integer bounds: strictly increasing in [low, high), <= parts - 1, == parts - 1 if room."""
    high = low + span
    bounds = stride_bounds(low, high, parts)
    check_strides(low, high, parts, bounds)
    assert all(low <= b for b in bounds)
    assert all(type(b) is int for b in bounds)
    if parts > 1 and span >= parts:
        assert len(bounds) == parts - 1


@settings(max_examples=50)
@given(st.dates(), st.dates(), st.integers(1, 100))
def test_stride_bounds_on_dates(a, b, parts):
    """Date strides are whole days in [low, high), strictly increasing, at most parts - 1."""
    low, high = min(a, b), max(a, b)
    bounds = stride_bounds(low, high, parts)
    check_strides(low, high, parts, bounds)
    assert all(low <= b and type(b) is dt.date for b in bounds)
    if parts > 1 and (high - low).days >= parts:
        assert len(bounds) == parts - 1


@settings(max_examples=50)
@given(
    st.one_of(
        st.tuples(naive_datetimes, naive_datetimes),
        st.tuples(aware_datetimes, aware_datetimes),
        st.tuples(finite_floats, finite_floats).filter(lambda p: math.isfinite(p[1] - p[0])),
        st.tuples(st.decimals(-(10**9), 10**9, places=4), st.decimals(-(10**9), 10**9, places=4)),
    ),
    st.integers(1, 100),
)
def test_stride_bounds_on_timestamps_floats_and_decimals(pair, parts):
    """Timestamp/float/decimal bounds: increasing, in [low, high), own type, <= parts - 1."""
    low, high = sorted(pair)
    bounds = stride_bounds(low, high, parts)
    check_strides(low, high, parts, bounds)
    assert all(type(b) is type(low) for b in bounds)
    assert all(low <= b for b in bounds)


@settings(max_examples=50)
@given(
    st.one_of(
        st.tuples(st.dates(), st.dates()).map(lambda p: tuple(d.isoformat() for d in sorted(p))),
        st.tuples(naive_datetimes, naive_datetimes).map(
            lambda p: tuple(d.isoformat(" ") for d in sorted(p))
        ),
    ),
    st.integers(1, 50),
)
def test_stride_bounds_on_iso_text_are_text_like_the_input(pair, parts):
    """ISO text gets ISO text bounds of the same kind, ordered like the values they spell."""
    low, high = pair
    bounds = stride_bounds(low, high, parts)
    assert len(bounds) <= parts - 1
    assert all(isinstance(b, str) and len(b) >= 10 for b in bounds)
    parse = dt.date.fromisoformat if len(low) == 10 else dt.datetime.fromisoformat
    parsed = [parse(b) for b in bounds]
    check_strides(parse(low), parse(high), parts, parsed)
    if len(low) > 10:
        assert all(b[10] == " " for b in bounds)


@pytest.mark.parametrize(
    "low, high",
    [("a", "z"), (True, True), (1, 2.0), ("2024-01-01", "2024-01-01 10:00:00"), (b"a", b"b")],
)
def test_stride_bounds_refuses_values_without_strides(low, high):
    """Text that is not ISO, booleans, mixed types and bytes have no equal strides."""
    with pytest.raises(TypeError, match="strides"):
        stride_bounds(low, high, 4)


def test_stride_bounds_without_a_range_is_empty():
    """No minimum or maximum (an empty source), or one part: no bounds."""
    assert stride_bounds(None, 5, 4) == stride_bounds(1, None, 4) == stride_bounds(1, 9, 1) == []


# -- reading typed values ---------------------------------------------------------------------
@settings(max_examples=50)
@given(
    st.one_of(
        st.integers(),
        finite_floats,
        finite_decimals,
        st.booleans(),
        st.dates(),
        naive_datetimes,
        aware_datetimes,
        st.text(alphabet=st.characters(blacklist_categories=("Z", "Cc"), blacklist_characters=",")),
    )
)
def test_coerce_like_reads_the_text_of_a_value_back_as_that_value(value):
    """A value's own text, read like an example of its type, is the value again."""
    text = repr(value) if isinstance(value, float) else str(value)
    assert same(coerce_like(text, value), value)


@settings(max_examples=50)
@given(st.tuples(st.integers(), st.dates(), finite_decimals))
def test_coerce_like_reads_rows_as_comma_separated_parts(row):
    """A row example takes one comma-separated part per column, each typed like its part."""
    text = ", ".join(str(v) for v in row)
    assert same(coerce_like(text, row), row)
    with pytest.raises(ValueError, match="expected 3 comma-separated values, got 2"):
        coerce_like("1, 2", row)


@settings(max_examples=50)
@given(naive_datetimes, aware_datetimes)
def test_coerce_like_converts_datetimes_to_the_examples_zone_convention(naive, aware):
    """Aware text for a naive example becomes naive UTC; naive text for an aware one is UTC."""
    assume(dt.datetime(1, 1, 2) < aware.replace(tzinfo=None) < dt.datetime(9999, 12, 30))
    as_naive = coerce_like(aware.isoformat(), naive)
    assert as_naive.tzinfo is None
    assert as_naive == aware.astimezone(dt.UTC).replace(tzinfo=None)
    as_aware = coerce_like(naive.isoformat(), aware)
    assert as_aware == naive.replace(tzinfo=dt.UTC)


@pytest.mark.parametrize(
    "text, example",
    [("x", 1), ("x", Decimal(1)), ("x", 1.0), ("maybe", True), ("x", dt.date.today())],
)
def test_coerce_like_refuses_text_of_another_type(text, example):
    """Text that is no value of the example's type raises ValueError (the CLI reports it)."""
    with pytest.raises(ValueError):
        coerce_like(text, example)


@settings(max_examples=50)
@given(
    st.one_of(st.integers(), st.dates(), naive_datetimes.filter(lambda d: d.time() != dt.time()))
)
def test_parse_loose_recognises_integers_dates_and_timestamps(value):
    """With nothing to go by, an integer, a date or a timestamp is read as that type."""
    assert same(
        parse_loose(value.isoformat() if hasattr(value, "isoformat") else str(value)), value
    )


@settings(max_examples=50)
@given(
    st.decimals(allow_nan=False, allow_infinity=False, places=3).filter(
        lambda d: d != d.to_integral_value()
    )
)
def test_parse_loose_reads_fractions_as_decimals(value):
    """A number with a fraction is read exactly, as a Decimal (never a float)."""
    assert same(parse_loose(str(value)), value)


def test_parse_loose_falls_back_to_text():
    """Anything else stays the text it was."""
    assert parse_loose("abc") == "abc"
    assert parse_loose("2024-02-30") == "2024-02-30"


@settings(max_examples=50)
@given(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        finite_floats,
        st.text(),
        finite_decimals,
        st.dates(),
        naive_datetimes,
        aware_datetimes,
        st.times(),
        st.uuids(),
        st.binary(),
    )
)
def test_json_safe_values_survive_strict_json(value):
    """json_safe gives strict-JSON values: ISO dates/times, decimal/UUID text, hex bytes."""
    safe = json_safe(value)
    assert json.loads(json.dumps(safe, allow_nan=False)) == safe
    if isinstance(value, bytes):
        assert bytes.fromhex(safe) == value
    elif isinstance(value, (dt.date, dt.time)):
        assert safe == value.isoformat()
    elif isinstance(value, (Decimal, uuid.UUID)):
        assert safe == str(value)
    else:
        assert safe == value


def test_json_safe_falls_back_to_str():
    """Unknown types become their text rather than breaking the error row."""
    assert json_safe(memoryview(b"\x01\x02")) == "0102"
    assert json_safe(bytearray(b"\xff")) == "ff"
    assert json_safe({1, 2}) in ("{1, 2}", "{2, 1}")
