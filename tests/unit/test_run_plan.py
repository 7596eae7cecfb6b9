"""A run's plan and its one codec: to_document() -> process_log row -> RunPlan.from_row()."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine

from shared.checkpoint import PythonFilter
from shared.config.mapping import MappingSpec
from shared.dialects import adapter_for
from shared.metadata.models import ProcessLog
from shared.run.modes import LoadKind, RunMode
from shared.run.plan import RunPlan, bind_moment
from shared.run.values import encode_value
from shared.run.window import Window
from shared.scd.target import Scd2Options

FUNCTION = "tests.checkpoint_functions:version_then_id"
UTC = dt.UTC


def spec_with(**extra) -> MappingSpec:
    return MappingSpec.model_validate(
        {
            "source": {"connection": "src", "query": "SELECT * FROM t"},
            "target": {"connection": "dst", "table": "w.t"},
            "keys": ["id"],
            **extra,
        }
    )


SPECS = {
    "none": spec_with(scd={"type": 1, "deletes": "invalidate"}),
    "key": spec_with(
        checkpoint={"strategy": "KEY", "column": "u", "lag": 30},
        scd={"current_valid_to": "9999-12-31", "tracked": ["a"], "valid_from": "u"},
        chunking={"strategy": "offset", "parallelism": 3},
    ),
    "key2": spec_with(checkpoint={"strategy": "KEY", "columns": ["u", "v"]}),
    "python": spec_with(checkpoint={"strategy": "PYTHON", "function": FUNCTION}),
}
values = st.one_of(
    st.none(), st.integers(-100, 100), st.dates(), st.datetimes(timezones=st.just(UTC))
)


@st.composite
def plans(draw) -> RunPlan:
    name = draw(st.sampled_from(sorted(SPECS)))
    spec = SPECS[name]
    checkpoint_from = draw(values)
    if name == "key2":
        checkpoint_from = draw(st.one_of(st.none(), st.tuples(st.integers(), st.integers())))
        window = Window(("u", "v"), checkpoint_from, draw(st.tuples(st.integers(), st.integers())))
    elif name == "key":
        window = Window(
            "u", checkpoint_from, draw(values), draw(st.sampled_from([None, True, False]))
        )
    else:
        window = Window()
    python = None
    if name == "python":
        python = PythonFilter(FUNCTION, checkpoint_from, draw(st.booleans()), draw(values))
    return RunPlan(
        run_id=draw(st.text("0123456789abcdef", min_size=12, max_size=12)),
        mapref=draw(st.text(min_size=1, max_size=20)),
        spec=spec,
        columns=draw(st.lists(st.sampled_from(["id", "u", "v", "a", "b"]), unique=True)),
        window=window,
        created_at=draw(st.datetimes(timezones=st.just(UTC))),
        mode=draw(st.sampled_from(list(RunMode))),
        python_filter=python,
        validity_kind=draw(st.sampled_from([None, "date", "timestamp", "timestamptz"])),
        checkpoint_from=checkpoint_from,
        queue=draw(st.sampled_from([None, "chordload", "nightly"])),
    )


def stored_row(plan: RunPlan, naive: bool = False) -> ProcessLog:
    """The process_log row as the metadata database hands it back (JSON columns through
    JSON text; SQLite returns naive timestamps)."""
    created = plan.created_at.replace(tzinfo=None) if naive else plan.created_at
    return ProcessLog(
        run_id=plan.run_id,
        mapref=plan.mapref,
        created_at=created,
        checkpoint_from=json.loads(json.dumps(encode_value(plan.checkpoint_from))),
        hwm=json.loads(json.dumps(encode_value(plan.window.upper))),
        mapping=json.loads(json.dumps(plan.to_document())),
    )


def assert_same_plan(back: RunPlan, plan: RunPlan) -> None:
    assert (back.run_id, back.mapref, back.spec, back.columns) == (
        plan.run_id,
        plan.mapref,
        plan.spec,
        plan.columns,
    )
    assert (back.mode, back.python_filter, back.validity_kind, back.checkpoint_from) == (
        plan.mode,
        plan.python_filter,
        plan.validity_kind,
        plan.checkpoint_from,
    )
    assert back.queue == plan.queue
    assert back.created_at == plan.created_at and back.created_at.tzinfo is not None
    # include_nulls=None (the default) comes back as the value it stood for
    assert back.window.to_document() == plan.window.to_document()
    assert back.to_document() == plan.to_document()
    assert back.load_kind is plan.load_kind


@settings(max_examples=100, deadline=None)
@given(plans(), st.booleans())
def test_plan_round_trip_through_the_process_log_row(plan, naive):
    """from_row(row of to_document()) is the same plan; created_at aware UTC even if naive."""
    assert_same_plan(RunPlan.from_row(stored_row(plan, naive)), plan)


@settings(max_examples=50, deadline=None)
@given(st.integers(), st.integers(), st.datetimes(timezones=st.just(UTC)))
def test_a_row_planned_before_run_options_gets_the_stored_window(cp, hwm, created):
    """A row without a 'run' section reads as incremental over checkpoint_from <= col <= hwm."""
    spec = SPECS["key"]
    row = ProcessLog(
        run_id="r1",
        mapref="m",
        created_at=created,
        checkpoint_from=encode_value(cp),
        hwm=encode_value(hwm),
        mapping={"spec": spec.model_dump(mode="json"), "columns": ["id", "u"]},
    )
    plan = RunPlan.from_row(row)
    assert plan.window == Window("u", cp, hwm)
    assert plan.mode is RunMode.INCREMENTAL and plan.python_filter is None
    assert plan.checkpoint_from == cp and plan.load_kind is LoadKind.INCREMENTAL


def plan_of(spec: MappingSpec, mode: RunMode, checkpoint_from=None, validity_kind=None):
    return RunPlan(
        "r",
        "m",
        spec,
        ["id", "u", "a"],
        Window(),
        dt.datetime(2024, 1, 2, 3, 4, tzinfo=UTC),
        mode,
        None,
        validity_kind,
        checkpoint_from,
    )


@pytest.mark.parametrize(
    "name, mode, checkpoint_from, kind",
    [
        ("key", RunMode.INCREMENTAL, None, LoadKind.INITIAL),
        ("key", RunMode.INCREMENTAL, 5, LoadKind.INCREMENTAL),
        ("key", RunMode.FULL, 5, LoadKind.FULL),
        ("key", RunMode.BACKFILL, 5, LoadKind.BACKFILL),
        ("key", RunMode.BACKFILL, None, LoadKind.BACKFILL),
        ("python", RunMode.INCREMENTAL, None, LoadKind.INITIAL),
        ("python", RunMode.INCREMENTAL, 1, LoadKind.INCREMENTAL),
        ("none", RunMode.INCREMENTAL, None, LoadKind.FULL),
        ("none", RunMode.FULL, None, LoadKind.FULL),
    ],
)
def test_load_kind_for_each_mode(name, mode, checkpoint_from, kind):
    """load_kind: backfill; full (--full or NONE); initial until a checkpoint; incremental."""
    assert plan_of(SPECS[name], mode, checkpoint_from).load_kind is kind


@pytest.mark.parametrize(
    "kind, expected",
    [
        ("date", dt.date(9999, 12, 31)),
        ("timestamp", dt.datetime(9999, 12, 31)),
        ("timestamptz", dt.datetime(9999, 12, 31, tzinfo=UTC)),
        (None, dt.datetime(9999, 12, 31, tzinfo=UTC)),
    ],
)
def test_scd2_options_type_the_sentinel_like_the_validity_column(kind, expected):
    """SCD2 options carry the spec; current_valid_to is typed like the validity column."""
    options = plan_of(SPECS["key"], RunMode.INCREMENTAL, validity_kind=kind).scd2_options()
    assert options == Scd2Options(
        valid_from_column="u", current_valid_to=expected, tracked=("a",), is_deleted=None
    )
    assert type(options.current_valid_to) is type(expected)


def test_scd2_options_defaults_and_type_1():
    """Type 1 has no SCD2 options; new_record deletes name the is_deleted column."""
    assert plan_of(SPECS["none"], RunMode.FULL).scd2_options() == Scd2Options()
    spec = spec_with(scd={"deletes": "new_record", "audit_columns": {"is_deleted": "gone"}})
    assert plan_of(spec, RunMode.FULL).scd2_options() == Scd2Options(is_deleted="gone")


@settings(max_examples=50)
@given(
    st.one_of(st.none(), st.dates(), st.datetimes(), st.datetimes(timezones=st.just(UTC))),
    st.sampled_from([None, "date", "timestamp", "timestamptz"]),
)
def test_bind_moment_keeps_the_instant(value, kind):
    """bind_moment keeps the instant: a date, naive UTC or aware, as the column kind says."""
    bound = bind_moment(value, kind)
    if value is None:
        assert bound is None
        return
    as_dt = (
        value if isinstance(value, dt.datetime) else dt.datetime(value.year, value.month, value.day)
    )
    instant = as_dt if as_dt.tzinfo else as_dt.replace(tzinfo=UTC)
    if kind == "date":
        assert type(bound) is dt.date and bound == as_dt.date()
    elif kind == "timestamp":
        assert bound.tzinfo is None and bound.replace(tzinfo=UTC) == instant
    else:
        assert bound.tzinfo is not None and bound == instant


def test_scd_target_describes_the_table_on_the_dialect():
    """The SCD target names the quoted table, the plan's columns, keys, audit names and run."""
    plan = plan_of(SPECS["key"], RunMode.FULL, validity_kind="date")
    target = plan.scd_target(adapter_for(create_engine("sqlite://")))
    assert target.table == '"w"."t"'
    assert (target.columns, target.keys, target.run_id, target.scd_type) == (
        ("id", "u", "a"),
        ("id",),
        "r",
        2,
    )
    assert target.options == plan.scd2_options()
    assert target.hashed_columns == ["a"] and target.in_place_columns == ["u"]
    assert plan.deleted_at == dt.date(2024, 1, 2) and plan.valid_from == plan.created_at
    assert plan.split_columns == ["id"]


def test_questions_about_a_run_go_to_the_queue_it_was_sent_to():
    """A run sent to queue 'nightly' is asked about (presence) and relaunched (reconcile) on
    'nightly', whatever queue the asking process's config names; a run planned before the
    queue was stored keeps the config's."""
    from shared.config.settings import settings_from_dict
    from shared.run.plan import on_run_queue

    settings = settings_from_dict({"metadata": "sqlite:///m.db"}, "test")
    sent = ProcessLog(run_id="r", mapping={"run": {"queue": "nightly"}})
    assert on_run_queue(settings, sent).celery.queue == "nightly"
    assert on_run_queue(settings, ProcessLog(run_id="r", mapping={"run": {}})) is settings
    assert on_run_queue(settings, ProcessLog(run_id="r", mapping={})) is settings
