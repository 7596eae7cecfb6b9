"""What a target can hold (shared/dialects/holds.py), and the stand-ins for source values
beyond Python's range (shared/dialects/exact.py): pure logic, no database."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from shared.dialects.exact import beyond_range as stand_in
from shared.dialects.exact import source_text
from shared.dialects.holds import (
    ValueCheck,
    beyond_range,
    decimal_digits,
    fits_decimal,
    no_checkpoint_beyond_range,
)
from shared.dialects.sqlite import _numeric_rules
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
