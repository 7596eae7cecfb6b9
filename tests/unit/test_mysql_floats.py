"""A MariaDB ``FLOAT`` read as the ``DOUBLE`` it converts to exactly arrives as the shortest
decimal that is the same ``FLOAT`` (shared/dialects/mysql.py, ``shortest_single``)."""

from __future__ import annotations

import math
import struct

from hypothesis import given
from hypothesis import strategies as st

from shared.dialects.mysql import shortest_single


def single(value: float) -> float:
    return struct.unpack("<f", struct.pack("<f", value))[0]


@given(st.floats(width=32, allow_nan=False, allow_infinity=False))
def test_the_same_float_in_the_fewest_digits(value):
    shown = shortest_single(value)
    assert single(shown) == value and math.copysign(1, shown) == math.copysign(1, value)
    digits = len(f"{shown:.9e}".split("e")[0].replace("-", "").replace(".", "").rstrip("0"))
    if digits > 1:  # one digit fewer is another FLOAT
        fewer = float(f"{value:.{digits - 1}g}")
        assert (
            not math.isfinite(fewer) or abs(fewer) > 3.4028234663852886e38 or single(fewer) != value
        )


def test_examples():
    assert shortest_single(1.2345677614212036) == 1.2345678
    assert shortest_single(0.10000000149011612) == 0.1
    assert shortest_single(16777216.0) == 16777216.0
    assert shortest_single(3.4028234663852886e38) == 3.4028235e38
    assert shortest_single(None) is None and math.isnan(shortest_single(math.nan))
