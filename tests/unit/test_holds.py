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
    decimal_digits,
    fits_decimal,
    floats_held,
    moment_text,
    no_checkpoint_beyond_range,
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
        ["d"], [{str: always(both(rule, moment_text("date", "date")))}], screens={str: nul_free}
    )
    good, bad = check.split([("2024-01-01",), ("2024-01-01 10:00",)])
    assert good == [("2024-01-01",)]
    assert bad[0][1] == "column 'd': '2024-01-01 10:00' has a time of day, which date would drop"


@pytest.mark.parametrize(
    ("kind", "value", "refused"),
    [
        ("date", "2024-01-01", None),
        ("date", "2024-01-01 00:00:00", None),
        ("date", "2024-01-01T00:00:00.000", None),
        ("date", "0044-03-15 BC", None),
        ("date", "12345-01-01", None),
        ("date", "infinity", None),
        ("date", "2024-01-01 10:00:00", "has a time of day"),
        ("date", "2024-01-01T00:00:00.5", "has a time of day"),
        ("date", "today", "is not an ISO date"),
        ("date", "epoch", "is not an ISO date"),
        ("date", "01/02/2024", "is not an ISO date"),
        ("timestamp", "2024-01-01 10:00:00.123456", None),
        ("timestamp", "2024-01-01", None),
        ("timestamp", "0044-03-15 10:00:00 BC", None),
        ("timestamp", "2024-01-01 10:00:00Z", None),  # UTC: the value as chordload reads it
        ("timestamp", "2024-01-01 10:00:00+00:00", None),
        ("timestamp", "2024-01-01 10:00:00 UTC", None),
        ("timestamp", "-infinity", None),
        ("timestamp", "2024-01-01 10:00:00+05:00", "has a time zone (+05:00)"),
        ("timestamp", "2024-01-01T10:00:00-0130", "has a time zone (-0130)"),
        ("timestamp", "2024-01-01 10:00 Europe/Paris", "has a time zone (Europe/Paris)"),
        ("timestamp", "2024-01-01 10:00:00.1234567", "has 7 digits of a second"),
        ("timestamp", "now", "is not an ISO timestamp"),
        ("timestamptz", "2024-01-01 10:00:00.5+05:45", None),
        ("timestamptz", "0044-03-15 09:53:28+00:53:28 BC", None),
        ("timestamptz", "2024-01-01 10:00:00 Europe/Paris", None),
        ("timestamptz", "2024-01-01 10:00:00.1234567+00", "has 7 digits of a second"),
        ("timestamptz", "yesterday", "is not an ISO timestamptz"),
    ],
)
def test_text_for_a_date_or_timestamp_column_is_iso_of_that_kind(kind, value, refused):
    why = moment_text(kind, "T")(value)
    assert why is None if refused is None else refused in why, why


def test_a_target_that_converts_offsets_takes_them():
    assert moment_text("timestamp", "DATETIME(6)", offsets=True)("2024-01-01 10:00+05:00") is None


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
