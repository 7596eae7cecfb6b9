"""A mapping's stored checkpoint, by hand: ``chordload checkpoint MAPREF`` shows it,
``--set VALUE`` and ``--reset`` change it, ``--history`` lists its changes.

Runs only move a checkpoint up. When it has to go down (a source clock was set back, and new
rows carry values below the stored one, so every incremental run skips them) or start over,
an operator sets or deletes it here. Every change, by hand or by a run (finalize), is a
checkpoint_change row: who, when, old and new value, the run or the reason. A change is
refused while a run of the mapping is PLANNING, QUEUED or RUNNING, also one being launched at
that moment (``store.change_checkpoint``); a launch planned from the previous value is refused too
(``store.create_run``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from coordinator.operator import operator
from coordinator.plan import source_high_water
from shared import checkpoint as rules
from shared.config.mapping import CheckpointStrategy, MappingSpec
from shared.config.settings import Settings
from shared.engines import get_engine
from shared.errors import ConfigError
from shared.metadata import store
from shared.metadata.models import CheckpointChange
from shared.metadata.schema import require_current
from shared.run.values import Value, decode_value, display_value, encode_value, plain_value
from shared.timeutil import as_utc


def describe(encoded: dict[str, Any] | None) -> str:
    """A stored value with its type, e.g. ``2026-01-01 00:00:08 (datetime)``; ``none``."""
    if encoded is None:
        return "none"
    return f"{display_value(encoded)} ({rules.type_name(decode_value(encoded))})"


def _utc(moment: dt.datetime | None) -> dt.datetime | None:
    return as_utc(moment).astimezone(dt.UTC) if moment is not None else None


def _when(moment: dt.datetime | None) -> str | None:
    moment = _utc(moment)
    return moment.isoformat(" ", "seconds") if moment is not None else None


def _type_tag(encoded: dict[str, Any] | None) -> str | None:
    return encoded["type"] if encoded is not None else None


@dataclass(frozen=True)
class Change:
    """One change of a checkpoint (a checkpoint_change row)."""

    id: int
    mapref: str
    changed_at: dt.datetime
    changed_by: str
    old: dict[str, Any] | None
    new: dict[str, Any] | None
    run_id: str | None
    reason: str | None

    @classmethod
    def from_row(cls, row: CheckpointChange) -> Change:
        return cls(
            row.id,
            row.mapref,
            as_utc(row.changed_at).astimezone(dt.UTC),
            row.changed_by,
            row.old_value,
            row.new_value,
            row.run_id,
            row.reason,
        )

    @property
    def who(self) -> str:
        return f"run {self.run_id}" if self.run_id else self.changed_by

    def line(self) -> str:
        """The change as ``--history`` lists it."""
        line = f"{_when(self.changed_at)}  {self.who}: {describe(self.old)} -> {describe(self.new)}"
        return line + (f" ({self.reason})" if self.reason else "")

    def confirmation(self) -> str:
        action = "reset" if self.new is None else "set"
        line = (
            f"checkpoint of '{self.mapref}' {action}: {describe(self.old)} -> "
            f"{describe(self.new)}, by {self.who} at {_when(self.changed_at)}"
        )
        if self.reason:
            line += f" (reason: {self.reason})"
        if self.new is None:
            return line + "; the next run is an initial load"
        return line + "; the next incremental run reads from the new value"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "mapref": self.mapref,
            "action": "reset" if self.new is None else "set",
            "changed_at": self.changed_at.isoformat(),
            "changed_by": self.changed_by,
            "run_id": self.run_id,
            "reason": self.reason,
            "old": plain_value(self.old),
            "old_type": _type_tag(self.old),
            "new": plain_value(self.new),
            "new_type": _type_tag(self.new),
        }


@dataclass(frozen=True)
class StoredCheckpoint:
    """A mapping's checkpoint as ``chordload checkpoint MAPREF`` shows it."""

    mapref: str
    spec: MappingSpec
    value: dict[str, Any] | None  # typed JSON; None: nothing stored
    run_id: str | None  # the run that set it (None: set by hand, or nothing stored)
    set_by: str | None
    set_at: dt.datetime | None
    reason: str | None

    @property
    def source(self) -> str:
        """What the checkpoint is of: the KEY column(s) or the PYTHON function."""
        if self.spec.checkpoint_strategy is CheckpointStrategy.KEY:
            return ", ".join(self.spec.checkpoint_columns)
        return str(self.spec.checkpoint.function)

    def _next_run(self) -> str:
        if self.value is None:
            return "next run: initial load (reads everything)"
        value = decode_value(self.value)
        columns = self.spec.checkpoint_columns
        if columns and isinstance(value, tuple) != (len(columns) > 1):
            return (
                f"next run: refused: the stored value does not fit checkpoint columns "
                f"{', '.join(columns)} (did the config change?); run with --full or set it"
            )
        lag = self.spec.checkpoint.lag
        try:
            lower = rules.lagged(self.mapref, value, lag) if lag else value
        except ConfigError as err:
            return f"next run: refused: {err}"
        lagged = f" (lag {lag})" if lag else ""
        if columns:
            read = self.source if len(columns) == 1 else f"({self.source})"
            return (
                f"next run: incremental, reads {read} >= "
                f"{display_value(encode_value(lower))}{lagged}"
            )
        return (
            f"next run: incremental, keeps rows whose value is above "
            f"{display_value(encode_value(lower))}{lagged}"
        )

    def lines(self) -> list[str]:
        strategy = self.spec.checkpoint_strategy.value
        lines = [f"mapping {self.mapref}: checkpoint {strategy} on {self.source}"]
        lines.append(f"stored: {describe(self.value)}")
        if self.value is not None:
            when = _when(self.set_at) or "-"
            if self.run_id is not None:  # the reason of a run's change says what run it was
                kind = f" ({self.reason})" if self.reason else ""
                lines.append(f"set by run {self.run_id}{kind} at {when}")
            else:
                reason = f" (reason: {self.reason})" if self.reason else ""
                lines.append(f"set by {self.set_by or '-'} at {when}{reason}")
        lines.append(self._next_run())
        return lines

    def to_json(self) -> dict[str, Any]:
        return {
            "mapref": self.mapref,
            "strategy": self.spec.checkpoint_strategy.value,
            "columns": self.spec.checkpoint_columns,
            "function": self.spec.checkpoint.function,
            "lag": self.spec.checkpoint.lag,
            "stored": self.value is not None,
            "value": plain_value(self.value),
            "value_type": _type_tag(self.value),
            "encoded": self.value,
            "run_id": self.run_id,
            "set_by": self.set_by,
            "set_at": self.set_at.isoformat() if self.set_at else None,
            "reason": self.reason,
        }


def _spec(settings: Settings, mapref: str) -> MappingSpec:
    spec = settings.mapping(mapref)
    if spec.checkpoint_strategy is CheckpointStrategy.NONE:
        raise ConfigError(
            f"mapping '{mapref}' has no checkpoint (checkpoint strategy NONE): every run "
            f"reads the whole source, so there is nothing to show or set"
        )
    return spec


def show(settings: Settings, mapref: str) -> StoredCheckpoint:
    spec = _spec(settings, mapref)
    metadata = get_engine(settings.metadata)
    stored = store.get_checkpoint(metadata, mapref)
    if stored is None or stored.value is None:
        return StoredCheckpoint(mapref, spec, None, None, None, None, None)
    last = store.latest_checkpoint_change(metadata, mapref)
    if last is not None and last.new_value == stored.value:  # who set the value stored now
        change = Change.from_row(last)
        return StoredCheckpoint(
            mapref, spec, stored.value, change.run_id, change.who, change.changed_at, change.reason
        )
    # stored before checkpoint changes were recorded: the row names its run
    return StoredCheckpoint(
        mapref,
        spec,
        stored.value,
        stored.run_id,
        f"run {stored.run_id}" if stored.run_id else None,
        _utc(stored.updated_at),
        None,
    )


def _fits(spec: MappingSpec, value: Value) -> bool:
    """Whether a stored value has the shape of the mapping's checkpoint columns."""
    columns = spec.checkpoint_columns
    if not columns:
        return True  # PYTHON: any value its function returned
    if len(columns) == 1:
        return not isinstance(value, tuple)
    return isinstance(value, tuple) and len(value) == len(columns)


def _example(settings: Settings, mapref: str, spec: MappingSpec, stored: Value) -> Value:
    """What ``--set`` reads its value like: the stored value, else the source's current
    maximum of the checkpoint column(s); without either, a loose reading (number, date,
    timestamp, text), per column."""
    if stored is not None and _fits(spec, stored):
        return stored
    high = source_high_water(settings, mapref, spec)
    if high is not None:
        return high
    columns = spec.checkpoint_columns
    return (None,) * len(columns) if len(columns) > 1 else None


def set_checkpoint(
    settings: Settings,
    mapref: str,
    text: str,
    *,
    reason: str | None = None,
    changed_by: str | None = None,
) -> Change:
    """Store ``text``, read as the checkpoint's type, as the checkpoint of ``mapref`` (lower
    than the stored one too: that is what it is for). Refused while a run is active."""
    spec = _spec(settings, mapref)
    metadata = get_engine(settings.metadata)
    require_current(metadata)
    stored = store.get_checkpoint(metadata, mapref)
    example = _example(settings, mapref, spec, decode_value(stored.value) if stored else None)
    value = rules.typed(mapref, "--set", text, example)
    change = store.change_checkpoint(
        metadata, mapref, encode_value(value), changed_by=changed_by or operator(), reason=reason
    )
    assert change is not None  # a value is always a change
    return Change.from_row(change)


def reset_checkpoint(
    settings: Settings,
    mapref: str,
    *,
    reason: str | None = None,
    changed_by: str | None = None,
) -> Change | None:
    """Delete the stored checkpoint of ``mapref``: its next run is an initial load. None if
    there was none. Refused while a run is active."""
    _spec(settings, mapref)
    metadata = get_engine(settings.metadata)
    require_current(metadata)
    change = store.change_checkpoint(
        metadata, mapref, None, changed_by=changed_by or operator(), reason=reason
    )
    return Change.from_row(change) if change is not None else None


def history(settings: Settings, mapref: str, limit: int | None = None) -> list[Change]:
    """The changes of the checkpoint of ``mapref``, newest first: runs that moved it and
    changes by hand."""
    _spec(settings, mapref)
    rows = store.checkpoint_changes(get_engine(settings.metadata), mapref, limit)
    return [Change.from_row(r) for r in rows]
