"""The SCD algorithm (shared/scd/) on a SQLite file: applying a batch is idempotent, and
versions follow the changes. SQLite is a library here, not a service."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from shared.config.mapping import AuditColumns, TargetSpec
from shared.dialects import adapter_for
from shared.dialects.types import ColumnType, SourceColumn, TypeKind
from shared.engines import get_engine
from shared.scd import apply as scd
from shared.scd.target import ApplyCounts, ScdTarget

COLUMNS = [
    SourceColumn("id", ColumnType(TypeKind.BIGINT)),
    SourceColumn("a", ColumnType(TypeKind.TEXT)),
    SourceColumn("b", ColumnType(TypeKind.BIGINT)),
]
NAMES = [c.name for c in COLUMNS]
AUDIT = AuditColumns()
T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
_tables = itertools.count()


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    engine = get_engine("sqlite:///" + str(tmp_path_factory.mktemp("scd") / "target.db"))
    yield engine
    engine.dispose()


class Target:
    """A fresh target table of ``scd_type`` and the staged apply of batches to it."""

    def __init__(self, engine, scd_type: int):
        self.engine, self.scd_type = engine, scd_type
        self.adapter = adapter_for(engine)
        self.spec = TargetSpec(connection="t", table=f"target_{next(_tables)}")
        with engine.begin() as conn:
            self.adapter.create_target(conn, self.spec, COLUMNS, ["id"], scd_type, AUDIT)

    def scd_target(self, run_id: str) -> ScdTarget:
        return ScdTarget(
            self.adapter,
            self.adapter.table_ref(self.spec),
            tuple(NAMES),
            ("id",),
            AUDIT,
            self.scd_type,
            run_id,
        )

    def apply(self, rows, run_id: str, when: dt.datetime, own: bool = False) -> ApplyCounts:
        """Stage ``rows`` and apply them as run ``run_id`` at ``when``; ``own``: first
        overwrite this run's versions (a rewrite or replay)."""
        target = self.scd_target(run_id)
        nulls = any(r[0] is None for r in rows)
        with self.engine.begin() as conn:
            stage = self.adapter.create_stage(conn, self.spec, NAMES)
            self.adapter.load_stage(conn, stage, NAMES, rows)
            if own:
                scd.replace_own_versions(conn, target, stage, nulls, now=when)
            counts = scd.apply(conn, target, stage, len(rows), nulls, valid_from=when, now=when)
            self.adapter.drop_stage(conn, stage)
        return counts

    def snapshot(self) -> list[tuple]:
        with self.engine.connect() as conn:
            table = self.adapter.table_ref(self.spec)
            return [tuple(r) for r in conn.execute(text(f"SELECT * FROM {table} ORDER BY 1, 2"))]

    def current(self) -> dict:
        """key -> (a, b) of the current version."""
        q = self.adapter.q
        where = f" WHERE {q(AUDIT.is_current)}" if self.scd_type == 2 else ""
        with self.engine.connect() as conn:
            rows = conn.execute(
                text(f"SELECT id, a, b FROM {self.adapter.table_ref(self.spec)}{where}")
            )
            return {r[0]: (r[1], r[2]) for r in rows}

    def versions(self) -> dict:
        """key -> number of versions."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                text(f"SELECT id, count(*) FROM {self.adapter.table_ref(self.spec)} GROUP BY id")
            )
            return dict(rows.all())


batches = st.lists(
    st.tuples(
        st.one_of(st.none(), st.integers(0, 20)),
        st.one_of(st.none(), st.sampled_from(["x", "y", ""])),
        st.one_of(st.none(), st.integers(0, 2)),
    ),
    unique_by=lambda r: r[0],
    min_size=1,
    max_size=12,
)


@settings(max_examples=25, deadline=None)
@given(st.sampled_from([1, 2]), batches)
def test_applying_a_batch_twice_writes_nothing_the_second_time(engine, scd_type, rows):
    """Applying a batch again finds every row unchanged and leaves the target as it was."""
    target = Target(engine, scd_type)
    first = target.apply(rows, "run1", T0)
    assert first == ApplyCounts(inserted=len(rows))
    before = target.snapshot()
    again = target.apply(rows, "run2", T0 + dt.timedelta(hours=1))
    assert again == ApplyCounts(unchanged=len(rows))
    assert target.snapshot() == before
    assert target.current() == {r[0]: r[1:] for r in rows}


@settings(max_examples=25, deadline=None)
@given(st.sampled_from([1, 2]), batches, st.data())
def test_a_later_run_writes_exactly_the_changes(engine, scd_type, rows, data):
    """A later run inserts new keys, changes changed ones (SCD2: new version), counts exactly."""
    target = Target(engine, scd_type)
    target.apply(rows, "run1", T0)
    old = {r[0]: r[1:] for r in rows}
    later = data.draw(batches)
    counts = target.apply(later, "run2", T0 + dt.timedelta(days=1))
    new_keys = [r for r in later if r[0] not in old]
    changed = [r for r in later if r[0] in old and old[r[0]] != r[1:]]
    assert counts == ApplyCounts(
        inserted=len(new_keys),
        changed=len(changed),
        unchanged=len(later) - len(new_keys) - len(changed),
    )
    assert target.current() == {**old, **{r[0]: r[1:] for r in later}}
    if scd_type == 2:
        versions = target.versions()
        assert all(versions[r[0]] == 2 for r in changed)
        assert all(versions[k] == 1 for k in old if k not in {r[0] for r in changed})


@settings(max_examples=25, deadline=None)
@given(st.sampled_from([1, 2]), batches, st.data())
def test_a_rewrite_in_the_same_run_leaves_one_version_per_key(engine, scd_type, rows, data):
    """A same-run rewrite (replace_own_versions) overwrites in place: one version per key."""
    target = Target(engine, scd_type)
    target.apply(rows, "run1", T0)
    keys = [r[0] for r in rows]
    rewrite = [
        (k, data.draw(st.sampled_from(["x", "z", None])), data.draw(st.integers(0, 2)))
        for k in data.draw(st.lists(st.sampled_from(keys), unique=True, min_size=1))
    ]
    counts = target.apply(rewrite, "run1", T0 + dt.timedelta(minutes=1), own=True)
    assert counts == ApplyCounts(unchanged=len(rewrite))
    assert target.current() == {**{r[0]: r[1:] for r in rows}, **{r[0]: r[1:] for r in rewrite}}
    assert set(target.versions().values()) == {1}
