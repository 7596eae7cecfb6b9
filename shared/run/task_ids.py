"""Task ids of a run's chord, spelled in one place.

Chunk tasks have deterministic ids, so ``stop`` can revoke them by id without asking the
broker, logs can name the run and chunk of any task, and a late task of an earlier launch
(a resume gives the unfinished chunks new ids) is recognised as superseded:

- ``<run_id>.<chunk_no>``: a chunk of the first launch;
- ``<run_id>.<chunk_no>.r<n>``: that chunk in the n-th resume;
- ``<first chunk's id>.finalize``: the chord body.
"""

from __future__ import annotations

import re

TASK_ID = re.compile(
    r"^(?P<run_id>[A-Za-z0-9_-]+)\.(?P<chunk_no>\d+)(?:\.r\d+)?"
    r"(?P<finalize>\.finalize)?$"
)


def chunk_task_id(run_id: str, chunk_no: int, launch: int = 1) -> str:
    """The id of chunk ``chunk_no``'s task in the run's ``launch`` (1 = the first)."""
    if launch <= 1:
        return f"{run_id}.{chunk_no}"
    return f"{run_id}.{chunk_no}.r{launch - 1}"


def finalize_task_id(first_chunk_task_id: str) -> str:
    return f"{first_chunk_task_id}.finalize"


def parse_task_id(task_id: str | None) -> tuple[str, int | None] | None:
    """(run_id, chunk_no) from a chordload task id; chunk_no is None for the chord body."""
    match = TASK_ID.match(task_id or "")
    if match is None:
        return None
    chunk_no = None if match.group("finalize") else int(match.group("chunk_no"))
    return match.group("run_id"), chunk_no
