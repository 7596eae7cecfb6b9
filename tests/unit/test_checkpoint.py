"""The checkpoint rules (shared/checkpoint.py): the window each mode reads, the rows a chunk
keeps, and the value a run stores."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.checkpoint import (
    CheckpointReader,
    PythonFilter,
    advanced,
    check_mode,
    load_function,
    plan_window,
    stored_value,
    stores,
)
from shared.config.mapping import MappingSpec
from shared.errors import ConfigError
from shared.run.modes import RunMode
from shared.run.values import encode_value, rank
from shared.run.window import Window

FUNCTION = "tests.checkpoint_functions:version_then_id"


def spec_with(checkpoint: dict | None = None) -> MappingSpec:
    doc = {
        "source": {"connection": "src", "query": "SELECT * FROM t"},
        "target": {"connection": "dst", "table": "t"},
        "keys": ["id"],
    }
    if checkpoint is not None:
        doc["checkpoint"] = checkpoint
    return MappingSpec.model_validate(doc)


NONE = spec_with()
KEY = spec_with({"strategy": "KEY", "column": "c"})
KEY2 = spec_with({"strategy": "KEY", "columns": ["c", "d"]})
PYTHON = spec_with({"strategy": "PYTHON", "function": FUNCTION})
SPECS = {"NONE": NONE, "KEY": KEY, "KEY2": KEY2, "PYTHON": PYTHON}


class Hwm:
    """The high-water mark reader: counts how often planning asks for it."""

    def __init__(self, value):
        self.value, self.calls = value, 0

    def __call__(self):
        self.calls += 1
        return self.value


# -- plan_window --------------------------------------------------------------------------------
@settings(max_examples=50)
@given(
    st.one_of(st.none(), st.integers(-100, 100)),
    st.one_of(st.none(), st.integers(-100, 100)),
    st.sampled_from([0, 1, 5, 2.5]),
)
def test_key_incremental_window_starts_at_the_lagged_checkpoint(stored, hwm, lag):
    """KEY incremental reads stored - lag <= c <= hwm (NULLs on a first run); hwm read once."""
    spec = spec_with({"strategy": "KEY", "column": "c", "lag": lag})
    reader = Hwm(hwm)
    planned = plan_window("m", spec, RunMode.INCREMENTAL, stored, reader)
    lower = None if stored is None else stored - lag
    assert planned.window == Window("c", lower, hwm)
    assert planned.window.takes_nulls == (stored is None)
    assert planned.python_filter is None
    assert reader.calls == 1
    assert bool(planned.notes) == (stored is not None and bool(lag))


@settings(max_examples=50)
@given(st.one_of(st.none(), st.integers()), st.one_of(st.none(), st.integers()))
def test_key_full_window_ignores_the_stored_checkpoint(stored, hwm):
    """KEY --full: everything up to the high-water mark, NULLs included, whatever is stored."""
    planned = plan_window("m", KEY, RunMode.FULL, stored, Hwm(hwm))
    assert planned.window == Window("c", None, hwm, include_nulls=True)
    assert "full reload" in planned.notes[0]


@settings(max_examples=50)
@given(
    st.integers(-1000, 1000),
    st.one_of(st.none(), st.integers(-1000, 1000)),
    st.one_of(st.none(), st.integers(-1000, 1000)),
    st.sampled_from([0, 7]),
)
def test_key_backfill_window_is_exactly_from_to(frm, to, hwm, lag):
    """KEY backfill reads exactly --from <= c <= --to (default: hwm): no NULLs, no lag; a
    --from after --to is refused (an empty window is a typo, not a load)."""
    spec = spec_with({"strategy": "KEY", "column": "c", "lag": lag})
    args = ("m", spec, RunMode.BACKFILL, 3, Hwm(hwm), str(frm), None if to is None else str(to))
    if to is not None and frm > to:
        with pytest.raises(ConfigError, match=f"--from {frm} is after --to {to}"):
            plan_window(*args)
        return
    planned = plan_window(*args)
    upper = to if to is not None else hwm
    assert planned.window == Window("c", frm, upper, include_nulls=False)
    assert "does not move" in planned.notes[0]


def test_key_backfill_types_from_and_to_like_the_high_water_mark():
    """--from/--to are typed like the high-water mark, else like the stored checkpoint."""
    hwm = dt.datetime(2024, 5, 1, 12, tzinfo=dt.UTC)
    planned = plan_window(
        "m", KEY, RunMode.BACKFILL, None, Hwm(hwm), "2024-01-01T00:00:00", "2024-02-01 10:00"
    )
    assert planned.window.lower == dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    assert planned.window.upper == dt.datetime(2024, 2, 1, 10, tzinfo=dt.UTC)
    planned = plan_window("m", KEY, RunMode.BACKFILL, dt.date(2024, 1, 9), Hwm(None), "2024-01-02")
    assert planned.window.lower == dt.date(2024, 1, 2)
    with pytest.raises(ConfigError, match="--from 'soon' is not a datetime"):
        plan_window("m", KEY, RunMode.BACKFILL, None, Hwm(hwm), "soon")


def test_key_two_columns_windows_are_row_values():
    """Several KEY columns: the window compares rows and a stored scalar does not fit."""
    planned = plan_window("m", KEY2, RunMode.INCREMENTAL, (1, 2), Hwm((5, 0)))
    assert planned.window == Window(("c", "d"), (1, 2), (5, 0))
    with pytest.raises(ConfigError, match="does not fit checkpoint columns.*--full"):
        plan_window("m", KEY2, RunMode.INCREMENTAL, 7, Hwm((5, 0)))
    with pytest.raises(ConfigError, match="does not fit"):
        plan_window("m", KEY, RunMode.INCREMENTAL, (1, 2), Hwm(5))


def test_key_lag_the_values_cannot_take_is_refused_by_name():
    """A lag on a column whose values have no arithmetic (plain text) is a config error."""
    spec = spec_with({"strategy": "KEY", "column": "c", "lag": 5})
    with pytest.raises(ConfigError, match="mapping 'm': checkpoint.lag"):
        plan_window("m", spec, RunMode.FULL, None, Hwm("abc"))


@settings(max_examples=50)
@given(st.one_of(st.none(), st.integers()), st.sampled_from(list(RunMode)))
def test_none_strategy_reads_everything_and_never_asks_for_the_hwm(stored, mode):
    """NONE: the window is everything, no filter, and the source's maximum is never read."""
    reader = Hwm(5)
    planned = plan_window("m", NONE, mode, stored, reader, "1", None)
    assert planned.window == Window() and planned.python_filter is None
    assert reader.calls == 0


@settings(max_examples=50)
@given(st.one_of(st.none(), st.integers(-100, 100)), st.sampled_from([0, 3]))
def test_python_incremental_keeps_values_above_the_lagged_checkpoint(stored, lag):
    """PYTHON incremental keeps stored - lag < value, with no SQL window and no hwm read."""
    spec = spec_with({"strategy": "PYTHON", "function": FUNCTION, "lag": lag})
    reader = Hwm(1)
    planned = plan_window("m", spec, RunMode.INCREMENTAL, stored, reader)
    lower = None if stored is None else stored - lag
    assert planned.python_filter == PythonFilter(FUNCTION, lower)
    assert planned.window == Window()
    assert reader.calls == 0


def test_python_full_and_backfill_filters():
    """PYTHON --full keeps everything; a backfill keeps from <= value <= to, typed like stored."""
    full = plan_window("m", PYTHON, RunMode.FULL, 10, Hwm(0))
    assert full.python_filter == PythonFilter(FUNCTION)
    backfill = plan_window("m", PYTHON, RunMode.BACKFILL, 10, Hwm(0), "3", "8")
    assert backfill.python_filter == PythonFilter(FUNCTION, 3, True, 8)
    open_ended = plan_window("m", PYTHON, RunMode.BACKFILL, None, Hwm(0), "2024-01-01")
    assert open_ended.python_filter == PythonFilter(FUNCTION, dt.date(2024, 1, 1), True, None)


def test_check_mode_refuses_what_the_checkpoint_cannot_serve():
    """A backfill needs a checkpoint; --to needs --from."""
    with pytest.raises(ConfigError, match="strategy NONE.*needs checkpoint strategy KEY or PYTHON"):
        check_mode("m", NONE, RunMode.BACKFILL, False, True)
    with pytest.raises(ConfigError, match="--to needs --from"):
        check_mode("m", KEY, RunMode.BACKFILL, True, False)
    check_mode("m", KEY, RunMode.BACKFILL, True, True)


def test_stored_value_is_ignored_by_none():
    """The stored checkpoint is decoded for KEY and PYTHON, ignored by NONE."""
    assert stored_value(KEY, encode_value(4)) == 4
    assert stored_value(PYTHON, encode_value((1, "a"))) == (1, "a")
    assert stored_value(NONE, encode_value(4)) is None
    assert stored_value(KEY, None) is None


# -- stores and advanced ------------------------------------------------------------------------
@pytest.mark.parametrize("name", SPECS)
@pytest.mark.parametrize("mode", list(RunMode))
def test_stores_only_with_a_checkpoint_and_never_for_a_backfill(name, mode):
    """A successful run stores a checkpoint unless the mapping has none or it is a backfill."""
    assert stores(SPECS[name], mode) == (name != "NONE" and mode is not RunMode.BACKFILL)


maxima = st.lists(st.one_of(st.none(), st.integers(-100, 100)), max_size=6)


@settings(max_examples=100)
@given(
    st.sampled_from(["KEY", "PYTHON"]),
    st.sampled_from([RunMode.INCREMENTAL, RunMode.FULL]),
    st.one_of(st.none(), st.integers(-100, 100)),
    maxima,
)
def test_advanced_never_moves_backwards_nor_to_null(name, mode, stored, chunk_maxima):
    """The new checkpoint is max(stored, chunk maxima): never below stored, never back to NULL."""
    new = advanced(SPECS[name], mode, stored, chunk_maxima)
    candidates = [v for v in [stored, *chunk_maxima] if v is not None]
    assert new == (max(candidates) if candidates else None)
    if stored is not None:
        assert new is not None and new >= stored


@settings(max_examples=50)
@given(
    st.sampled_from(list(RunMode)),
    st.one_of(st.none(), st.integers()),
    maxima,
)
def test_advanced_stores_nothing_for_none_or_a_backfill(mode, stored, chunk_maxima):
    """NONE never stores a checkpoint, and a backfill never moves one."""
    assert advanced(NONE, mode, stored, chunk_maxima) is None
    assert advanced(KEY, RunMode.BACKFILL, stored, chunk_maxima) is None


@settings(max_examples=50)
@given(
    st.one_of(st.none(), st.tuples(st.integers(-9, 9), st.integers(-9, 9))),
    st.lists(
        st.one_of(
            st.none(),
            st.tuples(
                st.one_of(st.none(), st.integers(-9, 9)), st.one_of(st.none(), st.integers(-9, 9))
            ),
        ),
        max_size=5,
    ),
)
def test_advanced_on_rows_ignores_maxima_with_null_parts(stored, chunk_maxima):
    """A multi-column checkpoint advances to the greatest complete row, never backwards."""
    new = advanced(KEY2, RunMode.INCREMENTAL, stored, chunk_maxima)
    complete = [v for v in [stored, *chunk_maxima] if v is not None and None not in v]
    assert new == (max(complete) if complete else None)


def test_full_reload_replaces_a_stored_value_of_another_shape():
    """After the checkpoint columns changed, --full stores the new shape, even if lower."""
    assert advanced(KEY2, RunMode.FULL, 99, [(1, 2), (0, 5)]) == (1, 2)
    assert advanced(KEY, RunMode.FULL, (9, 9), [3]) == 3
    assert advanced(KEY, RunMode.FULL, (9, 9), []) == (9, 9)  # nothing loaded: keep it


# -- PythonFilter and CheckpointReader ----------------------------------------------------------
bounds = st.one_of(st.none(), st.integers(-10, 10))


@settings(max_examples=100)
@given(bounds, st.booleans(), bounds, st.one_of(st.none(), st.integers(-12, 12)))
def test_python_filter_keeps_values_inside_its_bounds(lower, inclusive, upper, value):
    """keeps: lower < v (<= if inclusive) and v <= upper; NULL only without bounds."""
    keep = PythonFilter(FUNCTION, lower, inclusive, upper).keeps(value)
    if value is None:
        assert keep == (lower is None and upper is None)
        return
    above = lower is None or lower < value or (inclusive and lower == value)
    below = upper is None or value <= upper
    assert keep == (above and below)


@settings(max_examples=50)
@given(
    st.one_of(st.none(), st.integers(), st.dates(), st.tuples(st.integers(), st.text())),
    st.booleans(),
    st.one_of(st.none(), st.integers(), st.dates()),
)
def test_python_filter_document_round_trip(lower, inclusive, upper):
    """A filter read back from its JSON document is the same filter."""
    f = PythonFilter(FUNCTION, lower, inclusive, upper)
    assert PythonFilter.from_document(json.loads(json.dumps(f.to_document()))) == f


@settings(max_examples=50)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 999), st.integers()), max_size=20))
def test_reader_key_values_are_the_checkpoint_columns(rows):
    """KEY keeps every row with its column value (a tuple for several); NONE gives None values."""
    columns = ["version", "id", "c"]
    kept, values = CheckpointReader(KEY, columns, None).in_window(rows)
    assert kept == rows and values == [r[2] for r in rows]
    spec2 = spec_with({"strategy": "KEY", "columns": ["c", "version"]})
    kept, values = CheckpointReader(spec2, columns, None).in_window(rows)
    assert kept == rows and values == [(r[2], r[0]) for r in rows]
    kept, values = CheckpointReader(NONE, columns, None).in_window(rows)
    assert kept == rows and values == [None] * len(rows)


@settings(max_examples=50)
@given(
    st.lists(st.tuples(st.integers(0, 5), st.integers(0, 999), st.integers()), max_size=20),
    bounds.map(lambda v: None if v is None else v * 500),
)
def test_reader_python_keeps_the_rows_the_filter_keeps_with_computed_values(rows, lower):
    """PYTHON keeps, in order, exactly the rows whose computed value the filter keeps."""
    function = load_function(FUNCTION)
    flt = PythonFilter(FUNCTION, lower)
    reader = CheckpointReader(PYTHON, ["version", "id", "c"], flt)
    assert reader.computed
    kept, values = reader.in_window(rows)
    expected = [
        (r, function({"version": r[0], "id": r[1], "c": r[2]}))
        for r in rows
        if flt.keeps(r[0] * 1000 + r[1])
    ]
    assert kept == [r for r, _ in expected]
    assert values == [v for _, v in expected]
    assert all(rank(v) > rank(lower) for v in values)


@pytest.mark.parametrize(
    "path, message",
    [
        ("tests.no_such_module:f", "cannot import module 'tests.no_such_module'"),
        ("tests.checkpoint_functions:missing", "has no function 'missing'"),
        ("tests.checkpoint_functions:NOT_CALLABLE", "has no function 'NOT_CALLABLE'"),
    ],
)
def test_load_function_errors_name_the_path(path, message):
    """A PYTHON function that cannot be imported or called is a config error naming it."""
    with pytest.raises(ConfigError, match=f"checkpoint.function '{path}'.*{message}"):
        load_function(path)
