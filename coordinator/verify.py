"""``chordload verify``: plan a verify's key ranges, launch them as one chord and report.

The coordinator plans with the loader's own machinery (the window, the row estimate, the
chunk count and the quantile/range/offset boundaries of ``coordinator/plan.py``) and never
reads the rows: each range is digested and compared on the workers
(``shared/verify/ranges.py``), and the chord's body stores the verdict in verify_log, the
differing keys in verify_diff. A verify is refused while a run of the mapping is active (its
target is moving).
"""

from __future__ import annotations

import math
import random
import time
import uuid
from typing import Any

from celery import chord
from celery._state import _set_task_join_will_block, task_join_will_block
from rich.console import Console
from sqlalchemy.exc import DBAPIError

from coordinator.plan import (
    _boundaries,
    _source_connection,
    chunk_count,
    read_source_columns,
    with_target_audit_names,
)
from shared import broker
from shared.broker import require_broker
from shared.config.mapping import DeletesMode, MappingSpec
from shared.config.settings import Settings
from shared.dialects import adapter_for
from shared.engines import get_engine, mask_url
from shared.errors import (
    ConfigError,
    LaunchError,
    RunRefusedError,
    SourceUnavailableError,
    describe_db_error,
)
from shared.metadata import store, verifies
from shared.metadata.models import VerifyLog
from shared.metadata.schema import require_current
from shared.run.plan import RunPlan
from shared.run.statuses import VerifyStatus
from shared.run.window import ChunkRange, Window, ranges_from_bounds
from shared.timeutil import as_utc, utcnow
from shared.verify.plan import VerifyPlan

KINDS = ("missing", "extra", "different")
DEFAULT_SHOW = 10


def _check_target(settings: Settings, mapref: str, spec: MappingSpec, columns: list[str]) -> None:
    url = settings.connection_url(spec.target.connection)
    adapter = adapter_for(get_engine(url))
    try:
        with adapter.engine.connect() as conn:
            if not adapter.target_exists(conn, spec.target):
                raise ConfigError(
                    f"mapping '{mapref}': the target table {spec.target.table} does not exist "
                    f"yet; nothing to verify before a first run (chordload run {mapref})"
                )
            adapter.check_target(
                conn, spec.target, columns, spec.scd.type, list(spec.scd.audit_names().values())
            )
    except DBAPIError as exc:
        raise SourceUnavailableError(
            f"mapping '{mapref}': cannot read the target database {mask_url(url)}: "
            f"{describe_db_error(exc)}"
        ) from None


def _window(metadata: Any, mapref: str, spec: MappingSpec, last_window: bool) -> Window:
    """All keys (no window), or the window of the mapping's last successful run."""
    if not last_window:
        return Window()
    if not spec.checkpoint_columns:
        raise ConfigError(
            f"mapping '{mapref}' has no KEY checkpoint column (checkpoint strategy "
            f"{spec.checkpoint_strategy.value}): its runs have no window of checkpoint values "
            f"to verify; verify all keys (--all)"
        )
    last = verifies.last_successful_run(metadata, mapref)
    if last is None:
        raise ConfigError(
            f"mapping '{mapref}' has no successful run yet, so no last window to verify; "
            f"verify all keys (--all)"
        )
    return RunPlan.from_row(last).window


def _ranges(
    settings: Settings,
    mapref: str,
    spec: MappingSpec,
    window: Window,
    chunks_override: int | None,
) -> tuple[list[ChunkRange], list[str], list[Any]]:
    """The key ranges (as a load of the window would chunk it), the columns and kinds."""
    adapter, source_columns = read_source_columns(settings, mapref, spec)
    url = settings.connection_url(spec.source.connection)
    try:
        with _source_connection(adapter, mapref, url) as conn:
            where, params = window.predicate(adapter)
            estimate = adapter.estimate_rows(
                conn, spec.source.query, where, params, spec.chunking.exact_count
            )
            parts, _note = chunk_count(spec, estimate, chunks_override)
            bounds = _boundaries(adapter, conn, mapref, spec, where, params, parts, estimate)
    except DBAPIError as exc:
        if exc.connection_invalidated:
            raise SourceUnavailableError(
                f"mapping '{mapref}': cannot reach the source database {mask_url(url)}: "
                f"{describe_db_error(exc)}"
            ) from None
        raise ConfigError(
            f"mapping '{mapref}': the source query fails while planning the verify: "
            f"{describe_db_error(exc)}"
        ) from None
    return (
        ranges_from_bounds(bounds),
        [c.name for c in source_columns],
        [c.type.kind for c in source_columns],
    )


def _sample(ranges: list[ChunkRange], sample_pct: float | None) -> list[ChunkRange]:
    if sample_pct is None or sample_pct >= 100:
        return ranges
    chosen = max(1, math.ceil(len(ranges) * sample_pct / 100))
    return sorted(random.sample(ranges, chosen), key=lambda r: r.chunk_no)


def _send(settings: Settings, verify_id: str, ranges: list[ChunkRange]) -> None:
    app = broker.client_app(settings)
    queue = settings.celery.queue
    header = [
        app.signature(broker.VERIFY_RANGE, args=(verify_id, r.to_message()), immutable=True).set(
            queue=queue
        )
        for r in ranges
    ]
    body = app.signature(broker.FINISH_VERIFY, args=(verify_id,)).set(queue=queue)
    body = body.on_error(app.signature(broker.ON_VERIFY_ERROR, args=(verify_id,)).set(queue=queue))
    joining_was_blocked = task_join_will_block()  # never subscribe to the results (chord.py)
    _set_task_join_will_block(True)
    try:
        chord(header, body, app=app).apply_async()
    finally:
        _set_task_join_will_block(joining_was_blocked)


def start_verify(
    settings: Settings,
    mapref: str,
    *,
    chunks_override: int | None = None,
    last_window: bool = False,
    sample_pct: float | None = None,
    run_id: str | None = None,
    spec: MappingSpec | None = None,
) -> str:
    """Plan and launch a verify of ``mapref``; returns its id. Refused (exit 4) while a run
    of the mapping is QUEUED or RUNNING. ``sample_pct``: verify that share of the ranges,
    chosen at random. ``run_id``: the run this verify follows (``verify.after_run``), whose
    stored ``spec`` it verifies (a worker's config need not name the mapping)."""
    if sample_pct is not None and not 0 < sample_pct <= 100:
        raise ConfigError(f"--sample takes a percentage above 0 and at most 100, not {sample_pct}")
    metadata = get_engine(settings.metadata)
    require_current(metadata)
    spec = spec or settings.mapping(mapref)
    active = store.active_run(metadata, mapref)
    if active is not None:
        raise RunRefusedError(
            f"mapping '{mapref}' has an active run {active.run_id} ({active.status.value}): "
            f"its target is moving; verify once it ends (chordload watch {active.run_id})",
            active.run_id,
        )
    window = _window(metadata, mapref, spec, last_window)
    all_ranges, columns, kinds = _ranges(settings, mapref, spec, window, chunks_override)
    # the audit names the target was created with (earlier targets keep unprefixed ones)
    spec = with_target_audit_names(settings, mapref, spec, columns)
    _check_target(settings, mapref, spec, columns)
    ranges = _sample(all_ranges, sample_pct)
    verify_id = uuid.uuid4().hex[:12]
    plan = VerifyPlan(verify_id, mapref, spec, columns, kinds, window)
    verifies.create_verify(
        metadata,
        VerifyLog(
            verify_id=verify_id,
            mapref=mapref,
            status=VerifyStatus.RUNNING,
            scope="window" if last_window else "all",
            started_at=utcnow(),
            ranges_total=len(all_ranges),
            sample_pct=sample_pct if len(ranges) < len(all_ranges) else None,
            run_id=run_id,
            plan=plan.to_document(),
        ),
    )
    try:
        _send(settings, verify_id, ranges)
    except Exception as exc:  # noqa: BLE001 - whatever the broker did, nothing runs
        verifies.end_verify(
            metadata,
            verify_id,
            VerifyStatus.FAILED,
            message=f"could not send the verify to the broker: {exc}",
        )
        raise LaunchError(f"verify {verify_id}: could not reach the broker: {exc}") from None
    return verify_id


def wait_verify(
    settings: Settings, verify_id: str, timeout_s: float | None = None, poll_s: float = 0.2
) -> VerifyLog:
    """Poll verify_log until the verify has its verdict (TimeoutError after ``timeout_s``)."""
    metadata = get_engine(settings.metadata)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        verify = verifies.get_verify(metadata, verify_id)
        if verify.status.is_terminal:
            return verify
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"verify {verify_id} has no verdict after {timeout_s:.0f} s")
        time.sleep(poll_s)


def _explanation(spec: MappingSpec) -> str:
    if spec.scd.deletes is DeletesMode.IGNORE:
        return (
            "explained by scd.deletes: ignore (keys deleted from the source stay in the "
            "target; scd.deletes: invalidate retires them)"
        )
    return (
        f"not explained by scd.deletes: {spec.scd.deletes.value} (a full load retires "
        f"keys the source no longer has; they were deleted after the last run, or the "
        f"target was changed by hand)"
    )


def verify_report(settings: Settings, verify_id: str, show: int = DEFAULT_SHOW) -> dict[str, Any]:
    """The verify as JSON: counts per kind and the first ``show`` keys of each kind."""
    metadata = get_engine(settings.metadata)
    verify = verifies.get_verify(metadata, verify_id)
    plan = VerifyPlan.from_document(verify_id, verify.mapref, verify.plan)
    started, ended = as_utc(verify.started_at), as_utc(verify.ended_at)
    first: dict[str, list[Any]] = {}
    for kind in KINDS:
        diffs = verifies.first_diffs(metadata, verify_id, kind, show)
        first[kind] = [
            {"key": d.row_key, "columns": d.columns} if kind == "different" else d.row_key
            for d in diffs
        ]
    return {
        "verify_id": verify.verify_id,
        "mapref": verify.mapref,
        "status": verify.status.value,
        "scope": verify.scope,
        "window": plan.window.to_document() if verify.scope == "window" else None,
        "run_id": verify.run_id,
        "started_at": started.isoformat() if started else None,
        "ended_at": ended.isoformat() if ended else None,
        "duration_s": (ended - started).total_seconds() if started and ended else None,
        "ranges_total": verify.ranges_total,
        "ranges_verified": verify.ranges_verified,
        "sample_pct": verify.sample_pct,
        "rows_source": verify.rows_source,
        "rows_target": verify.rows_target,
        "counts": {kind: getattr(verify, kind) for kind in KINDS},
        "ranges_compared": verify.ranges_compared,
        "first": first,
        "extra_explained_by_deletes": (plan.deletes_explain_extra if verify.extra else None),
        "extra_note": _explanation(plan.spec) if verify.extra else None,
        "message": verify.message,
    }


def _key_text(key: dict[str, Any]) -> str:
    parts = [
        f"{name}={value!r}" if isinstance(value, str) else f"{name}={value}"
        for name, value in key.items()
    ]
    return parts[0] if len(parts) == 1 else "(" + ", ".join(parts) + ")"


def print_report(report: dict[str, Any], console: Console) -> None:
    scope = "all keys" if report["scope"] == "all" else "the last run's window"
    ranges = f"{report['ranges_total']} ranges"
    if report["sample_pct"] is not None:
        ranges = (
            f"a {report['sample_pct']:g}% sample: {report['ranges_verified']} of "
            f"{report['ranges_total']} ranges"
        )
    duration = report["duration_s"]
    took = f" in {duration:.1f} s" if duration is not None else ""

    def print_line(text: str) -> None:
        console.print(text, highlight=False, markup=False, soft_wrap=True)

    print_line(
        f"verify {report['verify_id']} of {report['mapref']} ({scope}, {ranges}): "
        f"{report['status']}{took}"
    )
    print_line(f"rows: source {report['rows_source']:,}, target {report['rows_target']:,}")
    counts, first = report["counts"], report["first"]
    titles = {
        "missing": "keys missing from the target",
        "extra": "keys in the target that the source does not have",
        "different": "keys whose values differ",
    }
    for kind in KINDS:
        if not counts[kind]:
            continue
        shown = len(first[kind])
        more = f", the first {shown}" if shown < counts[kind] else ""
        print_line(f"{titles[kind]}: {counts[kind]:,}{more}")
        if kind == "extra":
            print_line(f"  {report['extra_note']}")
        for item in first[kind]:
            if kind == "different":
                print_line(f"  {_key_text(item['key'])}: {', '.join(item['columns'])}")
            else:
                print_line(f"  {_key_text(item)}")
    if any(counts.values()):
        print_line(
            f"every key is in the metadata table verify_diff (verify_id {report['verify_id']})"
        )
    if report["message"]:
        print_line(report["message"])


def verify(
    settings: Settings,
    mapref: str,
    *,
    chunks_override: int | None = None,
    last_window: bool = False,
    sample_pct: float | None = None,
    timeout_s: float | None = None,
    show: int = DEFAULT_SHOW,
) -> dict[str, Any]:
    """Launch a verify, wait for its verdict and return its report. A broker that does not
    answer is bad input (exit 2) before anything is written, as for ``chordload run``."""
    require_broker(settings)
    verify_id = start_verify(
        settings,
        mapref,
        chunks_override=chunks_override,
        last_window=last_window,
        sample_pct=sample_pct,
    )
    wait_verify(settings, verify_id, timeout_s)
    return verify_report(settings, verify_id, show)


def exit_code(report: dict[str, Any]) -> int:
    return VerifyStatus(report["status"]).exit_code
