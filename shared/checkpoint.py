"""The checkpoint: how a mapping loads incrementally, in one place.

Strategies (``checkpoint.strategy``):

- NONE: every run reads the whole source; nothing is stored.
- KEY: one or more source columns that only grow (``updated_at``). The planner freezes the
  high-water mark ``hwm = max(col)``; the run reads ``checkpoint - lag <= col <= hwm``
  (the lower boundary is re-read on purpose: the SCD apply is idempotent, so boundary rows
  cause no duplicates and ties are never lost); the new checkpoint is the greatest value a
  chunk loaded. Several columns compare as a row value ``(c1, c2) >= (v1, v2)``.
- PYTHON: a user function ``package.module:function`` computes each row's value in the
  worker; the worker keeps the rows above the stored checkpoint (minus ``lag``). Such runs
  are one chunk: values computed per row cannot be split into key ranges.
- AUTO: KEY when a column is given, else NONE (resolved once, by the mapping spec).

Modes: an incremental run starts at the stored checkpoint; ``--full`` ignores it (and still
stores a new one); a backfill ``--from X --to Y`` reads exactly that window and never moves
the stored checkpoint. A stored checkpoint never moves backwards by a run.

This module decides the window (``plan_window``), the rows a chunk keeps with their values
(``CheckpointReader``) and the value the run stores (``advanced``); the planner, the chunk
loader and finalize call it and hold no checkpoint rules of their own.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from shared.config.mapping import CheckpointStrategy, MappingSpec
from shared.errors import ConfigError
from shared.run.modes import RunMode
from shared.run.values import (
    Value,
    coerce_like,
    decode_value,
    encode_value,
    max_value,
    minus_lag,
    rank,
    same_shape,
)
from shared.run.window import Window


def load_function(path: str) -> Callable[[dict[str, Any]], Any]:
    """The PYTHON strategy's function, imported from ``package.module:function``."""
    module_name, _, name = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - ImportError, or the module failing on import
        raise ConfigError(
            f"checkpoint.function '{path}': cannot import module "
            f"'{module_name}': {type(exc).__name__}: {exc}"
        ) from None
    function = getattr(module, name, None)
    if not callable(function):
        raise ConfigError(
            f"checkpoint.function '{path}': module '{module_name}' has no function '{name}'"
        )
    return function


@dataclass(frozen=True)
class PythonFilter:
    """Which rows a PYTHON-checkpoint run keeps: ``lower < value`` (``<=`` for a backfill's
    ``--from``) and ``value <= upper``. No lower bound (a first run or ``--full``) keeps every
    row, also rows whose value is None."""

    function_path: str
    lower: Value = None
    lower_inclusive: bool = False
    upper: Value = None

    def keeps(self, value: Value) -> bool:
        if value is None:
            return self.lower is None and self.upper is None
        if self.lower is not None and (
            rank(value) < rank(self.lower)
            or (rank(value) == rank(self.lower) and not self.lower_inclusive)
        ):
            return False
        return self.upper is None or rank(value) <= rank(self.upper)

    def to_document(self) -> dict[str, Any]:
        return {
            "function": self.function_path,
            "lower": encode_value(self.lower),
            "lower_inclusive": self.lower_inclusive,
            "upper": encode_value(self.upper),
        }

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> PythonFilter:
        return cls(
            doc["function"],
            decode_value(doc["lower"]),
            doc["lower_inclusive"],
            decode_value(doc["upper"]),
        )


# -- planning: the window ------------------------------------------------------------------
def window_column(columns: Sequence[str]) -> str | tuple[str, ...] | None:
    if not columns:
        return None
    return columns[0] if len(columns) == 1 else tuple(columns)


def stored_value(spec: MappingSpec, encoded: dict[str, Any] | None) -> Value:
    """The stored checkpoint as the mapping uses it (NONE uses none)."""
    if encoded is None or spec.checkpoint_strategy is CheckpointStrategy.NONE:
        return None
    return decode_value(encoded)


def check_mode(mapref: str, spec: MappingSpec, mode: RunMode, has_to: bool, has_from: bool) -> None:
    """Refuse a mode the mapping's checkpoint cannot serve (before anything is read)."""
    if mode is RunMode.BACKFILL and spec.checkpoint_strategy is CheckpointStrategy.NONE:
        raise ConfigError(
            f"mapping '{mapref}' has no checkpoint (strategy NONE): a backfill "
            f"with --from/--to needs checkpoint strategy KEY or PYTHON"
        )
    if has_to and not has_from:
        raise ConfigError(f"mapping '{mapref}': --to needs --from")


def type_name(example: Value) -> str:
    """A checkpoint value's type as messages name it: datetime, date, int, Decimal, str..., a
    row of them for several columns."""
    if example is None:
        return "value"
    if isinstance(example, tuple):
        return f"row ({', '.join(type_name(v) for v in example)})"
    return type(example).__name__


def typed(mapref: str, option: str, text: str, example: Value) -> Value:
    """A --from/--to (or ``checkpoint --set``) value read as the checkpoint's type (the
    source's high-water mark, or the stored checkpoint)."""
    try:
        return coerce_like(text, example)
    except ValueError as err:
        raise ConfigError(
            f"mapping '{mapref}': {option} '{text}' is not a {type_name(example)} like the "
            f"checkpoint's values ({err})"
        ) from None


def lagged(mapref: str, value: Value, lag: float) -> Value:
    try:
        return minus_lag(value, lag)
    except TypeError as err:
        raise ConfigError(f"mapping '{mapref}': checkpoint.lag: {err}") from None


@dataclass(frozen=True)
class PlannedWindow:
    """What a run reads: the SQL window (KEY), or the worker's filter (PYTHON)."""

    window: Window = field(default_factory=Window)
    python_filter: PythonFilter | None = None
    notes: tuple[str, ...] = ()


def _refuse_reversed(
    mapref: str, window_from: str, window_to: str | None, lower: Any, upper: Any
) -> None:
    """A backfill whose --from is above its --to (values, or rows of values, of the same
    types; values Python cannot compare are left to the database)."""
    if window_to is None:
        return
    try:
        reversed_ = bool(lower > upper)
    except TypeError:
        return
    if reversed_:
        raise ConfigError(
            f"mapping '{mapref}': --from {window_from} is after --to {window_to}: the window "
            f"would be empty; swap them"
        )


def plan_window(
    mapref: str,
    spec: MappingSpec,
    mode: RunMode,
    stored: Value,
    hwm: Callable[[], Value],
    window_from: str | None = None,
    window_to: str | None = None,
) -> PlannedWindow:
    """The run's window for ``mode``. ``hwm`` reads the source's high-water mark (KEY only:
    asked once, and only when needed)."""
    strategy, lag = spec.checkpoint_strategy, spec.checkpoint.lag
    columns = spec.checkpoint_columns
    if strategy is CheckpointStrategy.KEY:
        high = hwm()
        if lag and high is not None:
            lagged(mapref, high, lag)  # refuse a lag the column's values cannot take
        column = window_column(columns)
        if mode is RunMode.INCREMENTAL:
            if stored is not None and isinstance(stored, tuple) != (len(columns) > 1):
                raise ConfigError(
                    f"mapping '{mapref}': the stored checkpoint {stored!r} does not fit "
                    f"checkpoint columns {columns} (did the config change?); run once with "
                    f"--full to reload and store a new checkpoint"
                )
            notes: tuple[str, ...] = ()
            lower = stored
            if lower is not None and lag:
                lower = lagged(mapref, lower, lag)
                notes = (f"lag {lag}: window from {lower} (checkpoint {stored})",)
            return PlannedWindow(Window(column, lower, high), notes=notes)
        if mode is RunMode.FULL:
            return PlannedWindow(
                Window(column, None, high, include_nulls=True),
                notes=("full reload: the stored checkpoint is ignored",),
            )
        assert window_from is not None  # a backfill has --from
        example = high if high is not None else stored
        lower = typed(mapref, "--from", window_from, example)
        upper = typed(mapref, "--to", window_to, example) if window_to is not None else high
        _refuse_reversed(mapref, window_from, window_to, lower, upper)
        return PlannedWindow(
            Window(column, lower, upper, include_nulls=False),
            notes=(f"backfill {lower} .. {upper}: the stored checkpoint does not move",),
        )
    if strategy is CheckpointStrategy.PYTHON:
        path = spec.checkpoint.function
        assert path is not None  # the spec requires it for PYTHON
        if mode is RunMode.INCREMENTAL:
            lower = lagged(mapref, stored, lag) if stored is not None else None
            return PlannedWindow(python_filter=PythonFilter(path, lower))
        if mode is RunMode.FULL:
            return PlannedWindow(
                python_filter=PythonFilter(path),
                notes=("full reload: the stored checkpoint is ignored",),
            )
        assert window_from is not None
        python_filter = PythonFilter(
            path,
            typed(mapref, "--from", window_from, stored),
            True,
            typed(mapref, "--to", window_to, stored) if window_to is not None else None,
        )
        _refuse_reversed(mapref, window_from, window_to, python_filter.lower, python_filter.upper)
        return PlannedWindow(
            python_filter=python_filter,
            notes=(
                f"backfill {python_filter.lower} .. {python_filter.upper or '-'}: the stored "
                f"checkpoint does not move",
            ),
        )
    return PlannedWindow()


# -- loading: each row's checkpoint value ---------------------------------------------------
class CheckpointReader:
    """The rows of a batch that are in the run's window, each with its checkpoint value: the
    KEY column(s), or for PYTHON the function's value (rows it puts outside the window are
    dropped here, as SQL drops them for KEY)."""

    def __init__(
        self, spec: MappingSpec, columns: Sequence[str], python_filter: PythonFilter | None
    ):
        self.columns = list(columns)
        self.positions = [self.columns.index(c) for c in spec.checkpoint_columns]
        self.python_filter = python_filter
        self.function = load_function(python_filter.function_path) if python_filter else None

    @property
    def computed(self) -> bool:
        """Whether values are computed in Python (no SQL can take their maximum)."""
        return self.function is not None

    def in_window(self, rows: list[tuple]) -> tuple[list[tuple], list[Value]]:
        if self.function is not None and self.python_filter is not None:
            columns, function, keep = self.columns, self.function, self.python_filter.keeps
            kept, values = [], []
            for row in rows:
                value = function(dict(zip(columns, row)))
                if keep(value):
                    kept.append(row)
                    values.append(value)
            return kept, values
        positions = self.positions
        if not positions:
            return rows, [None] * len(rows)
        if len(positions) == 1:
            p = positions[0]
            return rows, [row[p] for row in rows]
        return rows, [tuple(row[p] for p in positions) for row in rows]


# -- finalize: the value the run stores -----------------------------------------------------
def stores(spec: MappingSpec, mode: RunMode) -> bool:
    """Whether a successful run stores a checkpoint: never without one, never a backfill."""
    return spec.checkpoint_strategy is not CheckpointStrategy.NONE and mode is not RunMode.BACKFILL


def advanced(
    spec: MappingSpec, mode: RunMode, stored: Value, chunk_maxima: Sequence[Value]
) -> Value:
    """The checkpoint after a successful run (None when it stores none, see ``stores``): the
    maximum of the chunks' maxima, never below the stored value and never NULL. A full
    reload replaces a stored value of another shape (the checkpoint columns changed; the
    planner refuses that for the other modes)."""
    if not stores(spec, mode):
        return None
    loaded = max_value(list(chunk_maxima))
    if stored is not None and loaded is not None and not same_shape(stored, loaded):
        stored = None
    return max_value([loaded, stored])
