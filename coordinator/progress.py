"""Showing a run: the live progress display (rich on a terminal, plain lines otherwise) and
the final summary, as text or as one JSON object."""

from __future__ import annotations

import json
import sys
import time
from collections import deque
from dataclasses import dataclass
from typing import IO, Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn
from rich.table import Table

from shared.metadata.models import ProcessLog
from shared.run.statuses import ChunkStatus, RunStatus
from shared.run.values import display_value, plain_value
from shared.timeutil import as_utc, utcnow

ESTIMATE_WARN_FACTOR = 10


def estimate_warning(run: ProcessLog) -> str | None:
    """A warning when the planner's estimate and the rows the finished run read differ by
    more than ESTIMATE_WARN_FACTOR: chunking followed a wrong figure (stale statistics).
    Only a run that read its whole window (SUCCESS) says how many rows there were: a stopped
    or failed run's count says nothing about the estimate."""
    if run.status is not RunStatus.SUCCESS or run.estimated_rows is None:
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


def chunk_statuses(totals: dict[str, int] | None) -> dict[str, int]:
    """The chunk count of each status that has chunks, from ``store.progress_totals``."""
    if totals is None:
        return {}
    return {
        status.value: totals[f"status_{status.value.lower()}"]
        for status in ChunkStatus
        if totals.get(f"status_{status.value.lower()}")
    }


def run_summary(run: ProcessLog, totals: dict[str, int] | None = None) -> dict[str, Any]:
    """The run as the JSON object `run --json` and `status --json` print; with the run's
    ``totals`` (``store.progress_totals``) also its chunks by status (``chunk_statuses``)."""
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
        **({"chunk_statuses": chunk_statuses(totals)} if totals is not None else {}),
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


def print_summary(run: ProcessLog, console: Console, totals: dict[str, int] | None = None) -> None:
    """The run as a two-column table; with ``totals`` its chunks are counted by status, so
    chunks revoked or stopped by `chordload stop` are not called failed."""
    s = run_summary(run, totals)
    colour = {"SUCCESS": "green", "FAILED": "red", "STOPPED": "yellow"}.get(s["status"], "cyan")
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("run", f"{s['run_id']}  ({s['mapref']}, {s['load_kind']})")
    table.add_row("status", f"[{colour}]{s['status']}[/{colour}]")
    if s["status"] == "PLANNING":
        table.add_row("planning", s["planning_step"] or "-")
    if totals is not None:
        counts = s["chunk_statuses"]
        by_status = ", ".join(
            f"{counts[st]} {'done' if st == 'SUCCESS' else st.lower()}"
            for st in ("SUCCESS", "RUNNING", "PENDING", "FAILED", "STOPPED", "REVOKED")
            if counts.get(st)
        )
        table.add_row("chunks", f"{by_status or 'none'}; {s['chunks']} total")
    else:
        table.add_row(
            "chunks", f"{s['chunks_done']} done, {s['chunks_failed']} not done, {s['chunks']} total"
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


def compact(n: float) -> str:
    """A count in at most four characters and a unit: 950, 12.3k, 225k, 1.25M."""
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.3g}{unit}"
    return f"{n:.0f}"


def clock(seconds: float) -> str:
    """A duration as m:ss or h:mm:ss (an ETA never gets cut to a bare number)."""
    total = max(0, round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class RateMeter:
    """Rows per second of a run, true whenever you attach: over the last ``window_s`` of
    samples once they span a few seconds, before that the average since the run started
    (never since the moment the display started, which a long run's rows would dwarf)."""

    def __init__(self, window_s: float = 30.0, min_span_s: float = 3.0):
        self.window_s = window_s
        self.min_span_s = min_span_s
        self._samples: deque[tuple[float, int]] = deque()

    def rate(self, run: ProcessLog, rows: int, now: float | None = None) -> float:
        started, ended = as_utc(run.started_at), as_utc(run.ended_at)
        if started is None:
            return 0.0
        if run.status.is_terminal or ended is not None:
            took = ((ended or utcnow()) - started).total_seconds()
            return rows / took if took > 0 else 0.0
        now = time.monotonic() if now is None else now
        self._samples.append((now, rows))
        while len(self._samples) > 2 and now - self._samples[0][0] > self.window_s:
            self._samples.popleft()
        first_t, first_rows = self._samples[0]
        if now - first_t >= self.min_span_s:
            return max(0, rows - first_rows) / (now - first_t)
        took = (utcnow() - started).total_seconds()
        return rows / took if took > 0 else 0.0


@dataclass(frozen=True)
class ProgressLine:
    """What one progress update shows, computed once for the bar and the plain line."""

    done: int
    total: int
    rate: float
    eta_s: float | None
    chunks: str

    @property
    def percent(self) -> float:
        return 100.0 * self.done / self.total if self.total else 100.0

    @property
    def eta(self) -> str:
        return "--:--" if self.eta_s is None else clock(self.eta_s)

    def stats(self) -> str:
        """Counts, chunks, rate and ETA in ~50 characters: a bar of 20+ fits 80 columns."""
        return (
            f"{compact(self.done)}/{compact(self.total)} rows  {self.chunks}  "
            f"{compact(self.rate)} rows/s  ETA {self.eta}"
        )


def chunks_text(totals: dict[str, int]) -> str:
    """``3/10 chunks``, plus the chunks that ended without loading, each by its status."""
    text = f"{totals['chunks_done']}/{totals['chunks_total']} chunks"
    ended = [
        f"{totals[f'status_{status}']} {status}"
        for status in ("failed", "stopped", "revoked")
        if totals.get(f"status_{status}")
    ]
    return text + (f" ({', '.join(ended)})" if ended else "")


def progress_line(snap: Any, meter: RateMeter) -> ProgressLine:
    run, totals = snap.run, snap.totals
    done = run.rows_read  # live sums while active (``with_live_totals``), final at the end
    # the estimate is the goal while running; at the end of a complete load the goal is what
    # was actually read (100%); a stopped or failed run shows how far it got
    total = (
        done
        if run.status is RunStatus.SUCCESS
        else max(run.estimated_rows or 0, run.counted_rows or 0, done)
    )
    rate = meter.rate(run, done)
    if run.status.is_terminal or (total and done >= total):
        eta_s: float | None = 0.0
    else:
        eta_s = (total - done) / rate if rate > 0 else None
    return ProgressLine(done, total, rate, eta_s, chunks_text(totals))


class ProgressDisplay:
    """Callback for ``coordinator.wait``: a live bar on a terminal, a plain line every few
    seconds when output is piped (CI logs stay readable). ``note`` prints a line above it."""

    def __init__(self, console: Console, interval_s: float):
        self.console = console
        self.interval_s = interval_s
        self.live = console.is_terminal
        self.meter = RateMeter()
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._last_plain = 0.0
        self._planning_step: str | None = None

    def __enter__(self) -> ProgressDisplay:
        if self.live:
            self._progress = Progress(
                BarColumn(bar_width=None),  # takes what the text leaves: ~25 at 80 columns
                TextColumn("{task.percentage:>3.0f}%"),
                TextColumn("{task.fields[stats]}"),
                console=self.console,
                transient=False,
                expand=True,
            )
            self._progress.start()
            self._task = self._progress.add_task("loading", total=1, stats="")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def note(self, text: str) -> None:
        """Lines of their own (above the live bar), e.g. that no worker reads the queue.
        Prose wraps at the console's width; an indented line is a command to copy and is
        never broken (the terminal wraps it)."""
        for line in text.splitlines():
            self.console.print(line, highlight=False, markup=False, soft_wrap=line[:2] == "  ")

    def __call__(self, snap: Any) -> None:
        run = snap.run
        if run.status.value == "PLANNING":  # no rows or chunks yet: say what it is doing
            if run.planning_step != self._planning_step:
                self._planning_step = run.planning_step
                self.note(f"{run.run_id} PLANNING: {run.planning_step or '-'}")
            return
        line = progress_line(snap, self.meter)
        if self._progress is not None:
            assert self._task is not None  # added together with the Progress in __enter__
            self._progress.update(
                self._task, completed=line.done, total=max(line.total, 1), stats=line.stats()
            )
            return
        now = time.monotonic()
        if now - self._last_plain >= self.interval_s or run.status.is_terminal:
            self._last_plain = now
            self.console.print(
                f"{run.run_id} {run.status.value} {line.percent:.0f}% rows "
                f"{line.done:,}/{line.total:,} {line.chunks} {line.rate:,.0f} rows/s "
                f"eta {line.eta}",
                highlight=False,
            )
