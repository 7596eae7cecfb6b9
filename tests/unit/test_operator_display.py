"""What the operator reads, without services: the worker diagnosis, progress figures (rates
true whenever you attach, 100% of the rows read at the end) and the CLI's help."""

from __future__ import annotations

import argparse
import datetime as dt

from coordinator.cli import build_parser
from coordinator.presence import WorkerSurvey, diagnose
from coordinator.progress import RateMeter, clock, compact, estimate_warning, progress_line
from coordinator.watch import RunSnapshot
from shared.metadata.models import ProcessLog
from shared.run.statuses import RunStatus
from shared.timeutil import utcnow

START = "celery -A workers worker --queues q1 -n w1@%h"


def test_no_consumer_names_the_queue_the_others_and_the_command():
    found = WorkerSurvey("q1", consumers=(), others=("w9@h",))
    message = diagnose(found, ["t1"], 0, START)
    assert message is not None
    assert "no worker consumes queue 'q1'" in message and "w9@h" in message
    assert message.endswith(f"Start one:\n  {START}")


def test_chunks_behind_busy_workers_are_told_apart_from_chunks_on_their_way():
    busy = WorkerSurvey("q1", ("w1@h",), held=frozenset({"other.0"}), active={"w1@h": 2})
    message = diagnose(busy, ["run.0", "run.1"], 0, START)
    assert message is not None
    assert "the run's 2 chunk(s) wait in queue 'q1'" in message
    assert "busy with 2 other task(s) (w1@h)" in message and START in message
    # a worker holds one of them, or one runs already, or the workers are idle: nothing to say
    holding = WorkerSurvey("q1", ("w1@h",), held=frozenset({"run.0"}), active={"w1@h": 1})
    assert diagnose(holding, ["run.0", "run.1"], 0, START) is None
    assert diagnose(busy, ["run.1"], 1, START) is None
    assert diagnose(WorkerSurvey("q1", ("w1@h",), active={"w1@h": 0}), ["run.0"], 0, START) is None


def test_compact_counts_and_clock():
    assert [compact(n) for n in (0, 950, 3_000, 12_345, 225_000, 1_250_000)] == [
        "0", "950", "3k", "12.3k", "225k", "1.25M"
    ]  # fmt: skip
    assert [clock(s) for s in (0, 59.6, 61, 3_725)] == ["0:00", "1:00", "1:01", "1:02:05"]


def _run(status: RunStatus, rows: int, started_s_ago: float, took_s: float | None = None):
    started = utcnow() - dt.timedelta(seconds=started_s_ago)
    ended = started + dt.timedelta(seconds=took_s) if took_s is not None else None
    return ProcessLog(
        run_id="r1",
        mapref="m",
        status=status,
        started_at=started,
        ended_at=ended,
        rows_read=rows,
        estimated_rows=721_687,
    )


def test_rate_is_over_the_run_not_since_attaching():
    meter = RateMeter(window_s=30, min_span_s=3)
    running = _run(RunStatus.RUNNING, 1_000_000, started_s_ago=100)
    # attaching to a run 100 s in: its average, not a million rows in no time
    assert 9_000 < meter.rate(running, 1_000_000, now=1000.0) < 11_000
    # once the samples span a few seconds: the recent rate
    assert meter.rate(running, 1_060_000, now=1003.0) == 20_000
    ended = _run(RunStatus.SUCCESS, 5_000, started_s_ago=20, took_s=10)
    assert RateMeter().rate(ended, 5_000) == 500


def test_an_ended_run_is_100_percent_of_the_rows_read():
    ended = _run(RunStatus.SUCCESS, 550_000, started_s_ago=60, took_s=50)
    totals = {"chunks_done": 11, "chunks_total": 11}
    line = progress_line(RunSnapshot(ended, totals), RateMeter())
    assert (line.done, line.total, line.percent, line.eta) == (550_000, 550_000, 100.0, "0:00")
    assert line.stats() == "550k/550k rows  11/11 chunks  11k rows/s  ETA 0:00"


def test_every_argument_of_every_command_is_described():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    undescribed = []
    seen = set()
    todo = list(sub.choices.items())
    while todo:
        name, command = todo.pop()
        if id(command) in seen:
            continue
        seen.add(id(command))
        for action in command._actions:
            if isinstance(action, argparse._SubParsersAction):
                todo.extend((f"{name} {n}", p) for n, p in action.choices.items())
            elif not action.help:
                undescribed.append(f"{name} {action.dest}")
    assert not undescribed, undescribed


def test_only_a_finished_load_judges_the_estimate():
    """A run that read its window shows how far off the estimate was; a stopped or failed
    run read only part of it (or nothing), which says nothing about the statistics."""

    def run(status: RunStatus, read: int) -> ProcessLog:
        return ProcessLog(run_id="r", status=status, estimated_rows=500_000, rows_read=read)

    assert "x off" in (estimate_warning(run(RunStatus.SUCCESS, 20_000)) or "")
    assert estimate_warning(run(RunStatus.SUCCESS, 400_000)) is None
    assert estimate_warning(run(RunStatus.STOPPED, 0)) is None
    assert estimate_warning(run(RunStatus.FAILED, 150)) is None
