"""``/metrics``: the runs of each mapping in Prometheus' text format, read from the metadata
database at every scrape (a custom collector: nothing is counted in this process, so any
number of dashboards agree, and a restart loses nothing).

What to alert on, e.g. "mapping X has not succeeded for 2 h"::

    time() - chordload_last_success_timestamp_seconds{mapping="X"} > 7200
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Engine

from shared.metadata.dashboard import mapping_metrics
from shared.run.statuses import RunStatus

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class RunCollector(Collector):
    """Per mapping: last success time, last finished run's duration and rows, runs by final
    status, active runs, failed chunks and quarantined rows of the latest run."""

    def __init__(self, engine: Engine, maprefs: list[str]):
        self.engine = engine
        self.maprefs = maprefs  # the config's mappings: shown even before their first run

    def collect(self) -> Iterator[Metric]:
        found = mapping_metrics(self.engine)
        maprefs = sorted(set(self.maprefs) | set(found))
        last_success = GaugeMetricFamily(
            "chordload_last_success_timestamp_seconds",
            "End of the mapping's latest SUCCESS run (Unix time); absent before its first",
            labels=["mapping"],
        )
        duration = GaugeMetricFamily(
            "chordload_last_run_duration_seconds",
            "Duration of the mapping's latest finished run",
            labels=["mapping"],
        )
        rows = GaugeMetricFamily(
            "chordload_last_run_rows",
            "Rows read by the mapping's latest finished run",
            labels=["mapping"],
        )
        runs = CounterMetricFamily(
            "chordload_runs", "Finished runs by final status", labels=["mapping", "status"]
        )
        active = GaugeMetricFamily(
            "chordload_active_runs", "Runs QUEUED or RUNNING", labels=["mapping"]
        )
        failed = GaugeMetricFamily(
            "chordload_failed_chunks",
            "FAILED chunks of the mapping's latest run",
            labels=["mapping"],
        )
        quarantined = GaugeMetricFamily(
            "chordload_quarantined_rows",
            "Rows the mapping's latest run quarantined (chordload errors RUN_ID)",
            labels=["mapping"],
        )
        for mapref in maprefs:
            m = found.get(mapref)
            if m is not None and m.last_success_at is not None:
                last_success.add_metric([mapref], m.last_success_at.timestamp())
            if m is not None and m.last_run_duration_s is not None:
                duration.add_metric([mapref], m.last_run_duration_s)
            if m is not None and m.last_run_rows is not None:
                rows.add_metric([mapref], m.last_run_rows)
            by_status = (m.runs_by_status if m else None) or {}
            for status in (RunStatus.SUCCESS, RunStatus.FAILED, RunStatus.STOPPED):
                runs.add_metric([mapref, status.value], by_status.get(status.value, 0))
            active.add_metric([mapref], m.active_runs if m else 0)
            failed.add_metric([mapref], m.failed_chunks if m else 0)
            quarantined.add_metric([mapref], m.quarantined_rows if m else 0)
        yield from (last_success, duration, rows, runs, active, failed, quarantined)


def render(engine: Engine, maprefs: list[str]) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RunCollector(engine, maprefs))
    return generate_latest(registry)
