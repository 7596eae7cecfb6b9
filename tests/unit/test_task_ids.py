"""Task ids of a run's chord: spelled by chunk_task_id/finalize_task_id, read by parse_task_id."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.run.task_ids import chunk_task_id, finalize_task_id, parse_task_id

run_ids = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-", min_size=1
)
chunk_nos = st.integers(0, 10**6)
launches = st.integers(-2, 1000)


@settings(max_examples=50)
@given(run_ids, chunk_nos, launches)
def test_chunk_task_ids_parse_back_to_run_and_chunk(run_id, chunk_no, launch):
    """Every chunk task id, of any launch, parses back to its run id and chunk number."""
    assert parse_task_id(chunk_task_id(run_id, chunk_no, launch)) == (run_id, chunk_no)


@settings(max_examples=50)
@given(run_ids, chunk_nos, launches)
def test_finalize_task_ids_parse_back_to_the_run(run_id, chunk_no, launch):
    """The chord body's id (after any launch's first chunk id) parses to the run, no chunk."""
    assert parse_task_id(finalize_task_id(chunk_task_id(run_id, chunk_no, launch))) == (
        run_id,
        None,
    )


@settings(max_examples=50)
@given(run_ids, chunk_nos, st.integers(1, 50), st.integers(1, 50))
def test_launches_get_distinct_ids(run_id, chunk_no, a, b):
    """Each launch gives a chunk its own id; launch 1 is the plain <run_id>.<chunk_no>."""
    assert (chunk_task_id(run_id, chunk_no, a) == chunk_task_id(run_id, chunk_no, b)) == (a == b)
    assert chunk_task_id(run_id, chunk_no) == f"{run_id}.{chunk_no}"
    assert chunk_task_id(run_id, chunk_no, 3) == f"{run_id}.{chunk_no}.r2"


@settings(max_examples=50)
@given(run_ids, chunk_nos, run_ids, chunk_nos)
def test_distinct_runs_and_chunks_get_distinct_ids(r1, c1, r2, c2):
    """Two chunk ids are equal only for the same run and chunk."""
    assert (chunk_task_id(r1, c1) == chunk_task_id(r2, c2)) == ((r1, c1) == (r2, c2))


@pytest.mark.parametrize(
    "task_id",
    [
        None,
        "",
        "abc",
        "abc.",
        ".3",
        "abc.x",
        "a.b.3",
        "abc.3.r",
        "abc.3.finalize.finalize",
        "abc.3.rx",
        "abc.3 ",
        "celery-beat-task-id",
        "9f1c2d3e-4b5a-6789-abcd-ef0123456789",
    ],
)
def test_other_ids_are_not_chordload_task_ids(task_id):
    """Ids of other tasks (uuids, beat's, malformed ones) are not taken for chunk tasks."""
    assert parse_task_id(task_id) is None
