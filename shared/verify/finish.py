"""Ending a verify: the chord's body adds up its ranges' outcomes and stores the verdict."""

from __future__ import annotations

from typing import Any

from shared.config.settings import Settings
from shared.engines import writer_metadata
from shared.metadata import verifies
from shared.run.statuses import VerifyStatus


def finish_verify(
    settings: Settings, verify_id: str, outcomes: list[dict[str, Any]]
) -> VerifyStatus:
    """EQUAL when every range matched, DIFFERENT when some key differs, FAILED when a range
    could not be verified (then nothing is proven, whatever the other ranges found)."""
    metadata = writer_metadata(settings)
    verify = verifies.get_verify(metadata, verify_id)
    totals = {
        name: sum(int(o.get(name) or 0) for o in outcomes)
        for name in (
            "rows_source",
            "rows_target",
            "missing",
            "extra",
            "different",
            "ranges_compared",
        )
    }
    errors = [f"range {o['range_no']}: {o['error']}" for o in outcomes if o.get("error")]
    notes = []
    if errors:
        status = VerifyStatus.FAILED
        notes.append(f"{len(errors)} of {len(outcomes)} ranges failed: " + "; ".join(errors[:5]))
    elif totals["missing"] or totals["extra"] or totals["different"]:
        status = VerifyStatus.DIFFERENT
    else:
        status = VerifyStatus.EQUAL
    moved = verifies.runs_started_between(metadata, verify.mapref, verify.started_at)
    if moved:
        notes.append(
            f"run(s) {', '.join(moved)} of the mapping started during the verify: the target "
            f"was moving, verify again once they end"
        )
    verifies.end_verify(
        metadata,
        verify_id,
        status,
        ranges_verified=len(outcomes) - len(errors),
        message="; ".join(notes) or None,
        **totals,
    )
    return status
