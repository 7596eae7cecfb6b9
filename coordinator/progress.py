"""Showing a run: the live progress display (rich on a terminal, plain lines otherwise) and
the final summary, as text or as one JSON object."""

from __future__ import annotations

import json
import sys
import time
from typing import IO, Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeRemainingColumn
from rich.table import Table

from shared.metadata.models import ProcessLog
from shared.run.values import display_value, plain_value
from shared.timeutil import as_utc, utcnow

ESTIMATE_WARN_FACTOR = 10


def estimate_warning(run: ProcessLog) -> str | None:
    """A warning when the planner's estimate and the rows the finished run read differ by
    more than ESTIMATE_WARN_FACTOR: chunking followed a wrong figure (stale statistics)."""
    if not run.status.is_terminal or run.estimated_rows is None:
        return None
    estimate, read = run.estimated_rows, run.rows_read
    low, high = sorted((estimate, read))
    if high <= ESTIMATE_WARN_FACTOR * max(low, 1):
        return None
    return (
        f"the planner estimated {estimate:,} rows and the run read {read:,} "
        f"({high / max(low, 1):,.0f}x off): the source's statistics are probably stale; "
        f"ANALYZE the source tables, or set chunking.exact_count: true"
    )


def run_summary(run: ProcessLog) -> dict[str, Any]:
    """The run as the JSON object `run --json` and `status --json` print."""
    started, ended = as_utc(run.started_at), as_utc(run.ended_at)
    duration_s = None
    if started is not None:
        duration_s = round(((ended or utcnow()) - started).total_seconds(), 3)
    return {
        "run_id": run.run_id,
        "mapref": run.mapref,
        "status": run.status.value,
        "load_kind": run.load_kind,
        "chunks": run.chunks_total,
        "chunks_done": run.chunks_done,
        "chunks_failed": run.chunks_failed,
        "estimated_rows": run.estimated_rows,
        "counted_rows": run.counted_rows,
        "estimate_warning": estimate_warning(run),
        "planning_step": run.planning_step,
        "rows_read": run.rows_read,
        "rows_inserted": run.rows_inserted,
        "rows_changed": run.rows_changed,
        "rows_unchanged": run.rows_unchanged,
        "rows_errored": run.rows_errored,
        "rows_duplicate": run.rows_duplicate or 0,
        "rows_deleted": run.rows_deleted or 0,
        "checkpoint_from": plain_value(run.checkpoint_from),
        "checkpoint_to": plain_value(run.checkpoint_to),
        "hwm": plain_value(run.hwm),
        "started_at": started.isoformat() if started else None,
        "ended_at": ended.isoformat() if ended else None,
        "duration_s": duration_s,
        "plan": run.plan_note,
        "message": run.message,
    }


def print_summary(run: ProcessLog, console: Console) -> None:
    s = run_summary(run)
    colour = {"SUCCESS": "green", "FAILED": "red", "STOPPED": "yellow"}.get(s["status"], "cyan")
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("run", f"{s['run_id']}  ({s['mapref']}, {s['load_kind']})")
    table.add_row("status", f"[{colour}]{s['status']}[/{colour}]")
    if s["status"] == "PLANNING":
        table.add_row("planning", s["planning_step"] or "-")
    table.add_row(
        "chunks", f"{s['chunks_done']} done, {s['chunks_failed']} failed, {s['chunks']} total"
    )
    rows = (
        f"{s['rows_read']:,} read: {s['rows_inserted']:,} inserted, "
        f"{s['rows_changed']:,} changed, {s['rows_unchanged']:,} unchanged, "
        f"{s['rows_errored']:,} errored"
    )
    if s["rows_duplicate"]:
        rows += f", {s['rows_duplicate']:,} duplicate"
    if s["rows_deleted"]:
        rows += f"; {s['rows_deleted']:,} deleted keys retired"
    table.add_row("rows", rows)
    if s["estimated_rows"] is not None:
        estimate = f"{s['estimated_rows']:,} estimated"
        if s["counted_rows"] is not None:
            estimate += f", {s['counted_rows']:,} counted (the count stops there)"
        table.add_row("estimate", f"{estimate}, {s['rows_read']:,} read")
    if s["estimate_warning"]:
        table.add_row("[yellow]warning[/yellow]", s["estimate_warning"])
    table.add_row(
        "checkpoint",
        f"{display_value(run.checkpoint_from)} -> "
        f"{display_value(run.checkpoint_to)}  (hwm {display_value(run.hwm)})",
    )
    if s["duration_s"] is not None:
        rate = s["rows_read"] / s["duration_s"] if s["duration_s"] else 0
        table.add_row("duration", f"{s['duration_s']:.1f} s  ({rate:,.0f} rows/s)")
    if s["plan"]:
        table.add_row("plan", s["plan"])
    if s["message"]:
        table.add_row("message", s["message"])
    console.print(table)


def print_json(obj: Any, stream: IO[str] | None = None) -> None:
    (stream or sys.stdout).write(json.dumps(obj, default=str) + "\n")


class ProgressDisplay:
    """Callback for ``coordinator.wait``: a live bar on a terminal, a plain line every few
    seconds when output is piped (CI logs stay readable)."""

    def __init__(self, console: Console, interval_s: float):
        self.console = console
        self.interval_s = interval_s
        self.live = console.is_terminal
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._last_plain = 0.0
        self._started = time.monotonic()
        self._planning_step: str | None = None

    def __enter__(self) -> ProgressDisplay:
        if self.live:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                TextColumn("{task.completed:,.0f}/{task.total:,.0f} rows"),
                TextColumn("{task.fields[chunks]}"),
                TextColumn("{task.fields[rate]}"),
                TimeRemainingColumn(),
                console=self.console,
                transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task("loading", total=1, chunks="", rate="")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def __call__(self, snap) -> None:
        run, totals = snap.run, snap.totals
        done = totals["rows_read"]
        total = max(run.estimated_rows or 0, run.counted_rows or 0, done, 1)
        elapsed = max(time.monotonic() - self._started, 1e-6)
        rate = done / elapsed
        chunks = (
            f"chunks {totals['chunks_done']}/{totals['chunks_total']}"
            f"{' failed ' + str(totals['chunks_failed']) if totals['chunks_failed'] else ''}"
        )
        if run.status.value == "PLANNING":  # no rows or chunks yet: say what it is doing
            if run.planning_step != self._planning_step:
                self._planning_step = run.planning_step
                self.console.print(
                    f"{run.run_id} PLANNING: {run.planning_step or '-'}", highlight=False
                )
            return
        if self._progress is not None:
            assert self._task is not None  # added together with the Progress in __enter__
            self._progress.update(
                self._task,
                completed=done,
                total=total,
                chunks=chunks,
                rate=f"{rate:,.0f} rows/s",
                description=f"{run.mapref} {run.status.value.lower()}",
            )
            return
        now = time.monotonic()
        if now - self._last_plain >= self.interval_s or run.status.is_terminal:
            self._last_plain = now
            eta = (total - done) / rate if rate > 0 and done < total else 0
            self.console.print(
                f"{run.run_id} {run.status.value} rows {done:,}/{total:,} "
                f"{chunks} {rate:,.0f} rows/s eta {eta:,.0f}s",
                highlight=False,
            )
