"""What a target can hold (shared/dialects/holds.py), and the stand-ins for source values
beyond Python's range (shared/dialects/exact.py): pure logic, no database."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from shared.dialects.exact import beyond_range as stand_in
from shared.dialects.exact import source_text
from shared.dialects.holds import (
    ValueCheck,
    always,
    beyond_range,
    both,
    date_text,
    decimal_digits,
    fits_decimal,
    floats_held,
    no_checkpoint_beyond_range,
    timestamp_text,
)
from shared.dialects.sqlite import _duration, _numeric_rules
from shared.run.values import json_safe


def test_decimal_digits_before_and_after_the_point():
    assert decimal_digits(Decimal("2.50")) == (1, 2)
    assert decimal_digits(Decimal("1E+2")) == (3, 0)
    assert decimal_digits(Decimal("0.001")) == (0, 3)
    assert decimal_digits(Decimal("0")) == (0, 0)


def test_a_decimal_column_refuses_what_it_would_round_or_overflow():
    rule = fits_decimal(12, 2, "DECIMAL(12,2)")[Decimal]
    assert rule(Decimal("2.50")) is None
    assert rule(Decimal("2.500")) is None  # trailing zeros round to nothing
    assert rule(Decimal("9999999999.99")) is None
    assert "3 digits after the point" in (rule(Decimal("1.234")) or "")
    assert "11 digits before the point" in (rule(Decimal("12345678901")) or "")
    assert "NaN" in (rule(Decimal("NaN")) or "")
    assert fits_decimal(12, 2, "x")[float](0.1) is None
    assert fits_decimal(12, 2, "x")[float](float("inf")) is not None


def test_sqlite_numeric_columns_keep_15_significant_digits_or_a_64_bit_integer():
    numeric = _numeric_rules("NUMERIC")[Decimal]
    assert numeric(Decimal("123456789012345")) is None
    assert numeric(Decimal("9223372036854775807")) is None  # an INTEGER
    assert numeric(Decimal("1.23456789012345")) is None
    assert numeric(Decimal("NaN")) is None  # kept as text
    assert "21 significant digits" in (numeric(Decimal("1.00000000000000000001")) or "")
    real = _numeric_rules("REAL")
    assert real[Decimal](Decimal("9223372036854775807")) is not None
    assert real[int](2**53 + 1) is not None


def test_a_row_is_refused_with_the_column_named_and_the_others_pass():
    check = ValueCheck(["id", "at"], [{}, beyond_range("DATETIME(6)")])
    inf = stand_in("timestamp", "infinity", dt.UTC)
    rows = [(1, dt.datetime(2024, 1, 1)), (2, inf), (3, None)]
    good, bad = check.split(rows)
    assert good == [rows[0], rows[2]]
    assert bad[0][0] == rows[1]
    assert bad[0][1].startswith("column 'at': 'infinity' cannot be held by DATETIME(6)")
    check.add(["id"], no_checkpoint_beyond_range())
    assert check.problem((stand_in("date", "0044-03-15 BC"), None)) is not None


def test_a_screen_skips_a_rule_for_a_batch_without_the_case():
    calls = []

    def rule(value: str) -> str | None:
        calls.append(value)
        return "NUL" if "\x00" in value else None

    def nul_free(values: list[str]) -> bool:
        return "\x00" not in "".join(values)

    check = ValueCheck(["s"], [{str: rule}], screens={str: nul_free})
    assert check.split([("a",), ("b",)]) == ([("a",), ("b",)], [])
    assert calls == []
    good, bad = check.split([("a",), ("x\x00",)])
    assert (good, [row for row, _ in bad]) == ([("a",)], [("x\x00",)])

    # a rule that checks more than the screen stays for such a batch
    check = ValueCheck(
        ["d"], [{str: always(both(rule, date_text("date")))}], screens={str: nul_free}
    )
    good, bad = check.split([("2024-01-01",), ("2024-01-01 10:00",)])
    assert good == [("2024-01-01",)]
    assert bad[0][1] == "column 'd': '2024-01-01 10:00' has a time of day, which date would drop"


@pytest.mark.parametrize(
    ("value", "refused"),
    [
        ("2024-01-01", False),
        ("2024-01-01 00:00:00", False),
        ("2024-01-01T00:00:00.000", False),
        ("0044-03-15 BC", False),
        ("infinity", False),
        ("not a date", False),  # the database refuses it by itself
        ("2024-01-01 10:00:00", True),
        ("2024-01-01T00:00:00.5", True),
        ("2024-01-01 00:00:01+05:00", True),
    ],
)
def test_a_date_column_refuses_text_with_a_time_of_day(value, refused):
    assert (date_text("date")(value) is not None) is refused


@pytest.mark.parametrize(
    ("value", "refused"),
    [
        ("2024-01-01 10:00:00", False),
        ("2024-01-01 10:00:00.123456", False),
        ("2024-01-01", False),
        ("0044-03-15 10:00:00 BC", False),
        ("2024-01-01 10:00:00Z", False),  # UTC: the value as chordload reads it
        ("2024-01-01 10:00:00+00:00", False),
        ("2024-01-01 10:00:00 UTC", False),
        ("2024-01-01 10:00:00+05:00", True),
        ("2024-01-01T10:00:00-0130", True),
        ("2024-01-01 10:00 Europe/Paris", True),
    ],
)
def test_a_timestamp_column_without_zone_refuses_text_with_one(value, refused):
    assert (timestamp_text("timestamp")(value) is not None) is refused


def test_negative_zero_nan_and_infinity_where_a_target_cannot_hold_them():
    rule = floats_held("DOUBLE")[float]
    assert rule(0.0) is None and rule(1.5) is None
    assert rule(-0.0) == "-0.0 cannot be held by DOUBLE (it stores 0)"
    assert rule(float("nan")) is not None and rule(float("-inf")) is not None


def test_a_duration_is_named_as_mariadb_prints_it():
    assert _duration(dt.timedelta(hours=25)).startswith("TIME 25:00:00 is beyond")
    assert _duration(-dt.timedelta(hours=838, minutes=59, seconds=59)).startswith(
        "TIME -838:59:59 is beyond"
    )
    assert _duration(dt.timedelta(days=2, microseconds=5)).startswith("TIME 48:00:00.000005 ")


def test_stand_ins_compare_as_the_ends_of_pythons_range_and_keep_their_text():
    inf = stand_in("timestamp", "infinity", dt.UTC)
    minus = stand_in("timestamp", "-infinity")
    bc = stand_in("date", "0044-03-15 BC")
    assert inf >= dt.datetime.max.replace(tzinfo=dt.UTC) and minus <= dt.datetime.min
    assert bc <= dt.date.min and stand_in("date", "10000-01-01") >= dt.date.max
    assert stand_in("time", "24:00:00") >= dt.time.max
    # equal only to the same source value: a key 'infinity' is not the key year 9999
    assert inf != dt.datetime.max.replace(tzinfo=dt.UTC) and bc != dt.date.min
    assert bc == stand_in("date", "0044-03-15 BC") and bc != stand_in("date", "0045-03-15 BC")
    assert len({bc, stand_in("date", "0044-03-15 BC"), dt.date.min}) == 2
    assert (source_text(inf), source_text(bc), source_text(dt.date.min)) == (
        "infinity",
        "0044-03-15 BC",
        None,
    )
    assert json_safe(bc) == "0044-03-15 BC"
    assert json_safe(float("nan")) == "nan"
