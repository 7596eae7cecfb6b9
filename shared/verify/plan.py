"""What every range task of one verify uses, stored with the verify (``verify_log.plan``):
the mapping spec, the source's columns and their kinds, the window verified and the range
sizes at which a differing range is compared row by row instead of being split again."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.config.mapping import DeletesMode, MappingSpec
from shared.dialects.types import TypeKind
from shared.run.window import Window

# A differing range of at most this many rows (on either side) is compared key by key;
# a larger one is split into SPLIT_PARTS ranges and each is digested again, at most
# MAX_DEPTH times (then it is compared whatever its size: the compare streams).
LEAF_ROWS = 1000
SPLIT_PARTS = 8
MAX_DEPTH = 4


@dataclass(frozen=True)
class VerifyPlan:
    verify_id: str
    mapref: str
    spec: MappingSpec
    columns: list[str]
    kinds: list[TypeKind | None]
    window: Window
    leaf_rows: int = LEAF_ROWS

    @property
    def deletes_explain_extra(self) -> bool:
        """Whether keys the source no longer has are expected in the target: with
        ``scd.deletes: ignore`` a load never retires them."""
        return self.spec.scd.deletes is DeletesMode.IGNORE

    def to_document(self) -> dict[str, Any]:
        return {
            "spec": self.spec.model_dump(mode="json"),
            "columns": list(self.columns),
            "kinds": [k.value if k is not None else None for k in self.kinds],
            "window": self.window.to_document(),
            "leaf_rows": self.leaf_rows,
        }

    @classmethod
    def from_document(cls, verify_id: str, mapref: str, doc: dict[str, Any]) -> VerifyPlan:
        return cls(
            verify_id,
            mapref,
            MappingSpec.model_validate(doc["spec"]),
            list(doc["columns"]),
            [TypeKind(k) if k is not None else None for k in doc["kinds"]],
            Window.from_document(doc["window"]),
            int(doc.get("leaf_rows", LEAF_ROWS)),
        )
