"""The geometry of the dashboard's pictures, computed here so the templates only draw.

The chunk timeline: one bar per chunk (its latest attempt) from its start to its end (to its
last heartbeat, or now, while it runs), one lane per worker process, coloured by status. A
chunk stuck on one worker shows as a bar that keeps growing while the others end; an idle
worker shows as a lane with a gap. PENDING chunks have not started and draw no bar.

The history chart: per run of a mapping, its duration and its rows as two bar series.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from shared.metadata.dashboard import RunRow
from shared.metadata.models import ChunkLog
from shared.run.statuses import ChunkStatus, RunStatus
from shared.timeutil import as_utc

STATUS_COLOURS = {
    ChunkStatus.PENDING.value: "#c7ccd1",
    ChunkStatus.RUNNING.value: "#2f7fd8",
    ChunkStatus.SUCCESS.value: "#2e9e5b",
    ChunkStatus.FAILED.value: "#d0393e",
    ChunkStatus.STOPPED.value: "#e3a008",
    ChunkStatus.REVOKED.value: "#8a939b",
    RunStatus.QUEUED.value: "#c7ccd1",
}

WIDTH = 900  # the SVG's user units; it scales to the page
LANE_H = 22
LABEL_W = 170
AXIS_H = 20


@dataclass(frozen=True)
class Bar:
    chunk_no: int
    status: str
    x: float
    y: float
    width: float
    title: str

    @property
    def colour(self) -> str:
        return STATUS_COLOURS.get(self.status, "#888")


@dataclass(frozen=True)
class Timeline:
    lanes: list[str]
    bars: list[Bar]
    span_s: float
    height: float
    ticks: list[tuple[float, str]]  # (x, label)
    pending: int

    width: int = WIDTH
    label_w: int = LABEL_W
    lane_h: int = LANE_H


def _tick_step(span_s: float) -> float:
    for step in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600):
        if span_s / step <= 8:
            return float(step)
    return 86400.0


def _label(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s" if seconds % 60 else f"{seconds // 60}m"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"


def chunk_timeline(chunks: list[ChunkLog], now: dt.datetime) -> Timeline:
    started = [c for c in chunks if c.started_at is not None]
    pending = len(chunks) - len(started)
    if not started:
        return Timeline([], [], 0.0, AXIS_H, [], pending)
    t0 = min(as_utc(c.started_at) for c in started if c.started_at is not None)

    def end_of(chunk: ChunkLog) -> dt.datetime:
        if chunk.status in (ChunkStatus.RUNNING, ChunkStatus.PENDING) or chunk.ended_at is None:
            return now
        return as_utc(chunk.ended_at)

    t1 = max(max(end_of(c) for c in started), t0 + dt.timedelta(seconds=1))
    span_s = (t1 - t0).total_seconds()
    lanes = sorted({c.worker or "?" for c in started})
    lane_of = {name: i for i, name in enumerate(lanes)}
    plot_w = WIDTH - LABEL_W
    bars = []
    for c in started:
        begin = (as_utc(c.started_at) - t0).total_seconds()  # type: ignore[operator]
        took = max((end_of(c) - as_utc(c.started_at)).total_seconds(), 0.0)  # type: ignore[operator]
        x = LABEL_W + plot_w * begin / span_s
        width = max(plot_w * took / span_s, 2.0)
        status = c.status.value
        bars.append(
            Bar(
                chunk_no=c.chunk_no,
                status=status,
                x=round(x, 1),
                y=AXIS_H + lane_of[c.worker or "?"] * LANE_H + 3,
                width=round(min(width, WIDTH - x), 1),
                title=(
                    f"chunk {c.chunk_no}: {status}, {c.rows_read:,} rows, {took:.1f} s, "
                    f"attempt {c.attempts}"
                ),
            )
        )
    step = _tick_step(span_s)
    ticks = []
    t = 0.0
    while t <= span_s:
        ticks.append((round(LABEL_W + plot_w * t / span_s, 1), _label(t)))
        t += step
    return Timeline(lanes, bars, span_s, AXIS_H + len(lanes) * LANE_H + 4, ticks, pending)


@dataclass(frozen=True)
class HistoryBar:
    run_id: str
    status: str
    x: float
    width: float
    duration_h: float
    rows_h: float
    title: str

    @property
    def colour(self) -> str:
        return STATUS_COLOURS.get(self.status, "#888")


@dataclass(frozen=True)
class HistoryChart:
    bars: list[HistoryBar]
    max_duration_s: float
    max_rows: int
    panel_h: int = 110
    width: int = WIDTH


def history_chart(runs: list[RunRow]) -> HistoryChart:
    """Two panels (duration above, rows below), one bar per run, oldest at the left."""
    if not runs:
        return HistoryChart([], 0.0, 0)
    max_d = max((r.duration_s or 0.0) for r in runs) or 1.0
    max_rows = max(r.rows_read for r in runs) or 1
    slot = min((WIDTH - 60) / len(runs), 40.0)  # a few runs: narrow bars from the left
    bars = []
    for i, r in enumerate(runs):
        d = r.duration_s or 0.0
        bars.append(
            HistoryBar(
                run_id=r.run_id,
                status=r.status.value,
                x=round(60 + i * slot + slot * 0.1, 1),
                width=round(max(slot * 0.8, 1.0), 1),
                duration_h=round(100 * d / max_d, 1),
                rows_h=round(100 * r.rows_read / max_rows, 1),
                title=(
                    f"{r.run_id} {r.status.value}: {d:.1f} s, {r.rows_read:,} rows, "
                    f"{r.created_at:%Y-%m-%d %H:%M}"
                ),
            )
        )
    return HistoryChart(bars, max_d, max_rows)
