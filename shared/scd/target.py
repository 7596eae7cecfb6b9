"""The target of one run's SCD statements, described once.

The apply, replay and hard-delete statements all need the same facts: which table, which
business columns and keys, the audit column names, the SCD type and its options, the run.
They used to be re-exploded from the mapping at every call (ten parameters each); a
``ScdTarget`` is built once per chunk and handed to every statement instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from shared.config.mapping import AuditColumns
from shared.dialects.base import DialectAdapter

TOMBSTONE_HASH = "deleted"  # row_hash of a 'deleted' version: never equal to an md5


@dataclass(frozen=True)
class ApplyCounts:
    """What one apply did to the target, in staged rows."""

    inserted: int = 0
    changed: int = 0
    unchanged: int = 0

    def __add__(self, other: ApplyCounts) -> ApplyCounts:
        return ApplyCounts(
            self.inserted + other.inserted,
            self.changed + other.changed,
            self.unchanged + other.unchanged,
        )


@dataclass(frozen=True)
class Scd2Options:
    """SCD2 options of a mapping, as the apply statements need them.

    ``valid_from_column``: a staged column whose value starts a version (default: the run's
    start, bound as ``valid_from``). ``current_valid_to``: the value bound as valid_to of
    current versions (default NULL). ``tracked``: the columns hashed into row_hash; the other
    non-key columns are updated in place on the current version. ``is_deleted``: the column
    marking 'deleted' versions (deletes: new_record), set false on every version written here.
    """

    valid_from_column: str | None = None
    current_valid_to: Any = None
    tracked: tuple[str, ...] | None = None
    is_deleted: str | None = None

    def hashed_columns(self, columns: Sequence[str]) -> list[str]:
        return [c for c in columns if c in self.tracked] if self.tracked else list(columns)

    def in_place_columns(self, columns: Sequence[str], keys: Sequence[str]) -> list[str]:
        if not self.tracked:
            return []
        return [c for c in columns if c not in self.tracked and c not in keys]


@dataclass(frozen=True)
class ScdTarget:
    """One run's target table as the SCD statements see it."""

    dialect: DialectAdapter
    table: str  # the quoted table reference
    columns: tuple[str, ...]  # business columns, in the source query's order
    keys: tuple[str, ...]
    audit: AuditColumns
    scd_type: int
    run_id: str
    options: Scd2Options = field(default_factory=Scd2Options)

    @property
    def scd2(self) -> bool:
        return self.scd_type == 2

    @property
    def hashed_columns(self) -> list[str]:
        """The columns whose change is a change (SCD2 ``tracked``; else all)."""
        return self.options.hashed_columns(self.columns) if self.scd2 else list(self.columns)

    @property
    def in_place_columns(self) -> list[str]:
        """SCD2 with ``tracked``: the other non-key columns, updated on the current version."""
        return self.options.in_place_columns(self.columns, self.keys) if self.scd2 else []

    def q(self, identifier: str) -> str:
        return self.dialect.q(identifier)

    def flags(self) -> dict[str, Any]:
        """The booleans as this database binds them."""
        return {"true_": self.dialect.bool_value(True), "false_": self.dialect.bool_value(False)}
