"""The canonical row code of ``chordload verify``: one stored value read back as different
Python objects by different drivers codes the same; different values code differently; a
range's digest does not depend on row order."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from shared.dialects.exact import beyond_range as stand_in
from shared.dialects.types import TypeKind
from shared.verify.rowcode import Digest, RowCoder, encoder

UTC = dt.UTC
PLUS_0530 = dt.timezone(dt.timedelta(hours=5, minutes=30))


@pytest.mark.parametrize(
    ("kind", "values"),
    [
        (TypeKind.NUMERIC, [Decimal("1.500"), Decimal("1.5"), 1.5, "1.50"]),
        (TypeKind.NUMERIC, [Decimal("0"), Decimal("-0.000"), 0, 0.0, -0.0]),
        (TypeKind.BIGINT, [42, Decimal("42"), 42.0, "42"]),
        (TypeKind.FLOAT, [0.1, Decimal("0.1")]),
        (
            TypeKind.NUMERIC,
            [Decimal("12345678901234567890.0123456789"), "12345678901234567890.01234567890"],
        ),
        (TypeKind.BOOLEAN, [True, 1, "1", "true", Decimal(1)]),
        (TypeKind.BOOLEAN, [False, 0, "0", "false"]),
        (TypeKind.DATE, [dt.date(2025, 3, 1), "2025-03-01", dt.datetime(2025, 3, 1)]),
        (
            TypeKind.TIMESTAMPTZ,
            [
                dt.datetime(2025, 3, 1, 12, 0, 0, 11, tzinfo=UTC),
                dt.datetime(2025, 3, 1, 17, 30, 0, 11, tzinfo=PLUS_0530),
                dt.datetime(2025, 3, 1, 12, 0, 0, 11),  # naive means UTC (MariaDB)
                "2025-03-01 17:30:00.000011+05:30",  # SQLite's text
            ],
        ),
        (TypeKind.TIMESTAMP, [dt.datetime(2025, 3, 1, 8, 30), "2025-03-01 08:30:00"]),
        (TypeKind.BYTES, [b"\x00\x01", memoryview(b"\x00\x01"), bytearray(b"\x00\x01")]),
        (TypeKind.JSON, [{"a": 1, "b": [1, 2]}, '{"b": [1, 2], "a": 1}']),
        (TypeKind.JSON, ['{"n": 1e2}', '{"n": 100}', '{"n": 100.0}']),  # jsonb keeps 100
        (TypeKind.TEXT, ["Zoë 🎉", "Zoë 🎉"]),
        # beyond Python's range: a stand-in, and the text a SQLite target holds
        (TypeKind.DATE, [stand_in("date", "0044-03-15 BC"), "0044-03-15 BC"]),
        (TypeKind.TIMESTAMP, [stand_in("timestamp", "infinity"), "infinity"]),
        (TypeKind.TIME, [stand_in("time", "24:00:00"), "24:00:00"]),
        (TypeKind.TIME, [dt.time(10, 0, 0, 500000), "10:00:00.5", "10:00:00.500000"]),
    ],
)
def test_one_value_codes_the_same_however_it_is_read(kind, values):
    code = encoder(kind)
    assert len({code(v) for v in values}) == 1, [code(v) for v in values]


@pytest.mark.parametrize(
    ("kind", "a", "b"),
    [
        (TypeKind.TEXT, None, ""),
        (TypeKind.TEXT, "a", "a "),
        (TypeKind.TEXT, "x" * 2000, "x" * 999 + "y" + "x" * 1000),
        (TypeKind.NUMERIC, None, 0),
        (TypeKind.NUMERIC, Decimal("1.001"), Decimal("1.0010000000000000000000000000001")),
        (TypeKind.BOOLEAN, True, False),
        (TypeKind.BOOLEAN, None, False),
        (TypeKind.TIMESTAMP, dt.datetime(2025, 1, 1), dt.datetime(2025, 1, 1, 0, 0, 0, 1)),
        (TypeKind.DATE, dt.date(2025, 1, 1), dt.date(2025, 1, 2)),
        (TypeKind.BYTES, b"", None),
        (None, "1", 1),  # a column of unknown kind: text and numbers stay apart
        # what a sloppier code took for equal (found by an audit)
        (TypeKind.DATE, stand_in("date", "infinity"), dt.date(9999, 12, 31)),
        (TypeKind.DATE, stand_in("date", "0044-03-15 BC"), dt.date(1, 1, 1)),
        (TypeKind.TIMESTAMP, stand_in("timestamp", "infinity"), dt.datetime.max),
        (TypeKind.TIME, stand_in("time", "24:00:00"), dt.time.max),
        (TypeKind.BOOLEAN, 2, 1),  # a MariaDB TINYINT(1)
        (TypeKind.BOOLEAN, 2, True),
        (TypeKind.JSON, '{"n": 1.00000000000000000001}', '{"n": 1.0}'),
        (TypeKind.DATE, dt.date(2024, 1, 3), "2024-01-03 10:00:00"),
    ],
)
def test_different_values_code_differently(kind, a, b):
    code = encoder(kind)
    assert code(a) != code(b)


def test_row_hash_is_unambiguous_and_the_digest_order_independent():
    coder = RowCoder.for_kinds([TypeKind.TEXT, TypeKind.TEXT])
    # the same bytes split differently between columns are different rows
    assert coder.hash64(coder.codes(("ab", "c"))) != coder.hash64(coder.codes(("a", "bc")))
    rows = [(f"k{i}", None if i % 3 else f"v{i}") for i in range(50)]
    forward, backward = Digest(), Digest()
    for row in rows:
        forward.add(coder.hash64(coder.codes(row)))
    for row in reversed(rows):
        backward.add(coder.hash64(coder.codes(row)))
    assert forward.matches(backward) and forward.rows == 50
    one_less = Digest()
    for row in rows[1:]:
        one_less.add(coder.hash64(coder.codes(row)))
    assert not one_less.matches(forward)
