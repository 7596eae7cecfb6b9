"""How many chunks a run gets (coordinator.plan.chunk_count): pure arithmetic on the spec."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.plan import chunk_count
from shared.config.mapping import MappingSpec


def spec_with(**chunking) -> MappingSpec:
    return MappingSpec.model_validate(
        {
            "source": {"connection": "src", "query": "SELECT * FROM t"},
            "target": {"connection": "dst", "table": "t"},
            "keys": ["id"],
            "chunking": chunking,
        }
    )


chunkings = st.fixed_dictionaries(
    {
        "rows_per_chunk": st.integers(1, 10**6),
        "min_rows_for_parallel": st.integers(0, 10**6),
        "max_chunks": st.integers(1, 10_000),
        "parallelism": st.integers(1, 64),
    }
)
estimates = st.one_of(st.integers(0, 10**4), st.integers(0, 10**10))


@settings(max_examples=200)
@given(chunkings, estimates)
def test_chunk_count_without_override(chunking, estimated):
    """1 <= n <= max_chunks; 1 below min rows; else least multiple of parallelism unless capped."""
    spec = spec_with(**chunking)
    n, note = chunk_count(spec, estimated, None)
    assert 1 <= n <= chunking["max_chunks"]
    if estimated < chunking["min_rows_for_parallel"]:
        assert n == 1 and "below min_rows_for_parallel" in note
        return
    wanted = math.ceil(estimated / chunking["rows_per_chunk"])
    slots = chunking["parallelism"]
    assert n >= min(wanted, chunking["max_chunks"]), "never fewer chunks than rows_per_chunk asks"
    rounded = math.ceil(wanted / slots) * slots if wanted > 1 else wanted
    capped = rounded > chunking["max_chunks"]
    if capped:
        assert n == chunking["max_chunks"]
    elif n > 1:
        assert n % slots == 0, "a multiple of parallelism"
        assert n - slots < wanted <= n, "the smallest such multiple"
    assert ("capped by max_chunks" in note) == (capped and n > 1)
    assert ("rounded up to a multiple of parallelism" in note) == (
        not capped and n > 1 and n > wanted
    )


@settings(max_examples=50)
@given(chunkings, estimates, st.integers(-5, 20_000))
def test_chunks_override_is_taken_up_to_max_chunks(chunking, estimated, override):
    """--chunks N gives max(1, N) chunks whatever the estimate or parallelism say, but never
    more than max_chunks, and the note says when it capped them."""
    spec = spec_with(**chunking)
    n, note = chunk_count(spec, estimated, override)
    cap = spec.chunking.max_chunks
    assert n == min(max(1, override), cap)
    if override > cap:
        assert f"--chunks {override} capped by chunking.max_chunks ({cap})" in note
    else:
        assert f"{override} chunks requested with --chunks" in note


def test_chunk_count_examples():
    """Worked examples: 3 wanted on 2 slots become 4; a cap wins over rounding."""
    spec = spec_with(rows_per_chunk=10, min_rows_for_parallel=0, parallelism=2, max_chunks=5)
    assert chunk_count(spec, 30, None)[0] == 4
    assert chunk_count(spec, 10, None)[0] == 1
    assert chunk_count(spec, 0, None)[0] == 1
    assert chunk_count(spec, 55, None)[0] == 5  # 6 wanted, capped at 5: not a multiple of 2
    default = spec_with()
    assert chunk_count(default, 99_999, None) == (
        1,
        "1 chunk: ~99999 rows is below min_rows_for_parallel (100000)",
    )
