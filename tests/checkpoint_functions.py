"""Checkpoint functions for ``checkpoint: {strategy: PYTHON, function: ...}`` in tests (workers
import them: they run with the repository as their working directory)."""

from __future__ import annotations


def version_then_id(row: dict) -> int:
    """A checkpoint no single column holds: the row's version, then its id."""
    return int(row["version"]) * 1000 + int(row["id"])


NOT_CALLABLE = 42  # named as a function: refused at plan time


def row_id(row: dict) -> int:
    """The row's id: a PYTHON checkpoint over a table whose other values it never looks at."""
    return int(row["id"])
