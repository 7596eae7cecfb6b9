"""Scheduling: cron validation, slot math, slot claims under races and clock skew, skipped
slots, ``chordload schedule``, and real ``celery beat`` processes (two at once) with real
workers launching an every-minute mapping on time, once per slot.

The tests use their own metadata database, so the beat's periodic ``reconcile`` and the
slot claims touch nothing of the other tests."""

from __future__ import annotations

import datetime as dt
import json
import threading

import pytest
import yaml
from sqlalchemy import select, text

from coordinator.cli import main
from coordinator.schedule import dispatch_due
from shared.broker import beat_schedule
from shared.config.cron import latest_slot, next_after, parse_cron
from shared.config.settings import settings_from_dict
from shared.engines import get_engine
from shared.errors import ConfigError
from shared.metadata import slots, store
from shared.metadata.models import ProcessLog
from shared.metadata.schema import upgrade
from shared.run.statuses import RunStatus
from shared.timeutil import as_utc, utcnow
from tests.conftest import PG_HOST, TOKEN, _admin_engine
from tests.opsutil import CeleryProcess, wait_for
from tests.pgdata import create_customers, scd2_mapping
from tests.worker_process import WorkerProcess

UTC = dt.UTC


def at(hour: int, minute: int = 0, second: int = 0) -> dt.datetime:
    return dt.datetime(2026, 1, 5, hour, minute, second, tzinfo=UTC)


# -- pure: cron validation and slot math ------------------------------------------------------


def test_cron_errors_name_the_mapping_and_the_field(base_config):
    def load(schedule):
        mapping = scd2_mapping("s", schedule=schedule)
        return settings_from_dict({**base_config, "mappings": {"nightly": mapping}}, "cfg.yaml")

    with pytest.raises(ConfigError) as err:
        load("*/15 * * *")
    assert "mappings.nightly.schedule" in str(err.value) and "5 fields" in str(err.value)
    with pytest.raises(ConfigError) as err:
        load("0 25 * * *")
    assert "hour field '25'" in str(err.value)
    with pytest.raises(ConfigError) as err:
        load("0 0 30 2 *")
    assert "never" in str(err.value)
    assert load(" */15  *  * * * ").mappings["nightly"].schedule == "*/15 * * * *"
    assert load("0 2 * * mon-fri").mappings["nightly"].enabled is True


def test_slot_math():
    quarter = parse_cron("*/15 * * * *")
    assert next_after(quarter, at(10, 7, 30)) == at(10, 15)
    assert next_after(quarter, at(10, 15)) == at(10, 30), "strictly after"
    assert latest_slot(quarter, at(10, 15), 3600) == at(10, 15), "a slot is due at its time"
    assert latest_slot(quarter, at(10, 29, 59), 3600) == at(10, 15)
    assert latest_slot(quarter, at(10, 20), 60) is None, "older than the grace period"
    nightly = parse_cron("0 2 * * *")
    assert latest_slot(nightly, at(14), 3600) is None
    assert latest_slot(nightly, at(14), 86400) == at(2)
    assert next_after(nightly, at(14)) == at(2) + dt.timedelta(days=1)
    entries = beat_schedule(settings_from_dict({"metadata": "sqlite://", "celery": {"queue": "q"}}))
    assert {e["task"] for e in entries.values()} == {
        "chordload.dispatch_due",
        "chordload.reconcile",
    }
    assert entries["chordload.reconcile"]["schedule"] == 30.0
    assert all(e["options"]["queue"] == "q" for e in entries.values())


# -- metadata database of their own ----------------------------------------------------------


@pytest.fixture(scope="module")
def sched_meta(pg_urls):
    name = f"cl_{TOKEN}_sched"
    admin = _admin_engine()
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = f"{PG_HOST}/{name}"
    upgrade(get_engine(url))
    yield url
    get_engine(url).dispose()
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _settings(base_config, metadata: str, queue: str, mappings: dict) -> dict:
    return {
        **base_config,
        "metadata": metadata,
        "celery": {**base_config["celery"], "queue": queue},
        "mappings": mappings,
    }


def _runs(metadata: str, mapref: str) -> list[ProcessLog]:
    with store.session(get_engine(metadata)) as s:
        return list(
            s.scalars(
                select(ProcessLog)
                .where(ProcessLog.mapref == mapref)
                .order_by(ProcessLog.created_at)
            )
        )


# -- dispatch in this process: claims, skips, races -------------------------------------------


def test_dispatch_claims_each_slot_once_and_skips_while_running(
    sched_meta, base_config, session_settings, wh, schema, capsys, tmp_path
):
    """No worker consumes this queue, so a launched run stays RUNNING: the next slot must be
    SKIPPED with the active run named; redelivered or racing dispatches start nothing twice."""
    create_customers(wh, schema, 500)
    raw = _settings(
        base_config,
        sched_meta,
        f"cl-{TOKEN}-nobody",
        {
            "hourly": scd2_mapping(schema, schedule="0 * * * *"),
            "paused": scd2_mapping(
                schema, target="dim_paused", schedule="0 * * * *", enabled=False
            ),
            "manual": scd2_mapping(schema, target="dim_manual"),
        },
    )
    settings = settings_from_dict(raw, "test")
    metadata = get_engine(sched_meta)

    first = dispatch_due(settings, now=at(10, 0, 5), claimed_by="a")
    assert [(o.mapref, o.status) for o in first] == [("hourly", "LAUNCHED")]
    run_a = first[0].run_id
    assert dispatch_due(settings, now=at(10, 0, 6), claimed_by="a") == [], "redelivered"
    assert dispatch_due(settings, now=at(10, 0, 1), claimed_by="b") == [], "another beat"

    second = dispatch_due(settings, now=at(11, 0, 2), claimed_by="b")
    assert [(o.status, o.run_id) for o in second] == [("SKIPPED", None)]
    assert run_a in second[0].reason and "still running" in second[0].reason
    # a dispatcher whose clock is behind still sees 10:00 as current: claimed, and older
    # than the newest claim anyway
    assert dispatch_due(settings, now=at(10, 59, 59), claimed_by="slow-clock") == []
    assert [r.run_id for r in _runs(sched_meta, "hourly")] == [run_a]

    store.set_run_status(
        metadata, run_a, RunStatus.FAILED, only_from={RunStatus.RUNNING}, message="test: no worker"
    )
    # eight dispatchers race for the 12:00 slot: exactly one launches it
    barrier = threading.Barrier(8)
    outcomes: list = []

    def race(i: int) -> None:
        barrier.wait()
        outcomes.extend(dispatch_due(settings, now=at(12, 0, 1), claimed_by=f"racer-{i}"))

    threads = [threading.Thread(target=race, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert [o.status for o in outcomes] == ["LAUNCHED"]
    run_b = outcomes[0].run_id
    assert [r.run_id for r in _runs(sched_meta, "hourly")] == [run_a, run_b]

    recorded = {as_utc(s.scheduled_for): s for s in slots.for_mapping(metadata, "hourly")}
    assert sorted(recorded) == [at(10), at(11), at(12)]
    assert (recorded[at(10)].status, recorded[at(10)].run_id) == ("LAUNCHED", run_a)
    assert recorded[at(11)].status == "SKIPPED" and run_a in recorded[at(11)].reason
    assert recorded[at(12)].run_id == run_b and recorded[at(12)].claimed_by.startswith("racer-")
    assert slots.for_mapping(metadata, "paused") == [] and _runs(sched_meta, "paused") == []
    assert slots.for_mapping(metadata, "manual") == []

    # `chordload schedule --json`: next due time and last run per mapping
    config = tmp_path / "chordload.yaml"
    config.write_text(yaml.safe_dump(raw))
    capsys.readouterr()
    code = main(["schedule", "--json", "--config", str(config)])
    out = capsys.readouterr().out
    assert code == 0
    listing = {row["mapref"]: row for row in json.loads(out)}
    hourly = listing["hourly"]
    next_due = dt.datetime.fromisoformat(hourly["next_due"])
    assert next_due.minute == 0 and utcnow() < next_due <= utcnow() + dt.timedelta(hours=1)
    assert hourly["last_slot"]["status"] == "LAUNCHED" and hourly["last_run"]["run_id"] == run_b
    assert listing["paused"]["enabled"] is False and listing["paused"]["next_due"] is None
    assert listing["manual"]["schedule"] is None and listing["manual"]["last_run"] is None
    store.set_run_status(
        metadata, run_b, RunStatus.FAILED, only_from={RunStatus.RUNNING}, message="test: no worker"
    )


# -- real beat processes and workers -----------------------------------------------------------


@pytest.mark.e2e
def test_two_beats_start_an_every_minute_slot_once_and_on_time(
    sched_meta, base_config, session_settings, wh, schema, tmp_path
):
    from shared.broker import client_app

    app = client_app(session_settings)
    queue = f"cl-{TOKEN}-beat"
    create_customers(wh, schema, 2_000)
    raw = _settings(
        base_config,
        sched_meta,
        queue,
        {
            "every_minute": scd2_mapping(schema, schedule="* * * * *"),
            "switched_off": scd2_mapping(
                schema, target="dim_off", schedule="* * * * *", enabled=False
            ),
        },
    )
    config = tmp_path / "chordload.yaml"
    config.write_text(yaml.safe_dump(raw))
    env = {
        "CHORDLOAD_CONFIG": str(config),
        "CHORDLOAD_DISPATCH_INTERVAL_S": "1",
        "CHORDLOAD_SCHEDULE_GRACE_S": "10",
    }
    worker = WorkerProcess(
        config,
        queue=queue,
        name=f"sched-{TOKEN}",
        concurrency=2,
        log_path=tmp_path / "worker.log",
        extra_env=env,
    )
    beats = [
        CeleryProcess(
            [
                "beat",
                "--loglevel",
                "INFO",
                "--max-interval",
                "1",
                "--schedule",
                str(tmp_path / f"beat{i}-schedule"),
                "--enable-remote-control",
                "--hostname",
                f"beat{i}-{TOKEN}@localhost",
            ],
            env=env,
            log_path=tmp_path / f"beat{i}.log",
        )
        for i in (1, 2)
    ]
    try:
        worker.start()
        for beat in beats:
            beat.start()
        for i, beat in enumerate(beats, 1):
            wait_for(
                lambda i=i: app.control.ping(
                    destination=[f"beat{i}-{TOKEN}@localhost"], timeout=0.5
                ),
                timeout_s=30,
                what=f"beat {i} answering ping",
                diagnostics=beat.log_tail,
            )
        ready = utcnow()
        slot = next_after(parse_cron("* * * * *"), ready)

        def launched_and_done():
            row = next(
                (
                    s
                    for s in slots.for_mapping(get_engine(sched_meta), "every_minute")
                    if as_utc(s.scheduled_for) == slot and s.status == "LAUNCHED"
                ),
                None,
            )
            if row is None:
                return None
            run = store.get_run(get_engine(sched_meta), row.run_id)
            return run if run.status.is_terminal else None

        run = wait_for(
            launched_and_done,
            timeout_s=(slot - ready).total_seconds() + 45,
            poll_s=0.5,
            what=f"the {slot:%H:%M} slot launched and finished",
            diagnostics=lambda: worker.log_tail() + "\n" + beats[0].log_tail(),
        )
        assert all(b.alive() for b in beats), "both beats ran throughout"
    finally:
        for beat in beats:
            beat.stop()
        worker.stop()

    assert run.status is RunStatus.SUCCESS, run.message
    late_s = (as_utc(run.created_at) - slot).total_seconds()
    assert 0 <= late_s < 8, f"run planned {late_s:.1f}s after its slot"

    claimed = slots.for_mapping(get_engine(sched_meta), "every_minute")
    runs = _runs(sched_meta, "every_minute")
    assert {s.status for s in claimed} == {"LAUNCHED"}
    assert sorted(s.run_id for s in claimed) == sorted(r.run_id for r in runs), (
        "one run per slot, no run without a slot"
    )
    in_slot = [r for r in runs if slot <= as_utc(r.created_at) < slot + dt.timedelta(minutes=1)]
    assert [r.run_id for r in in_slot] == [run.run_id]
    assert slots.for_mapping(get_engine(sched_meta), "switched_off") == []

    # both beats really were dispatching, and the workers ran their dispatches
    for beat in beats:
        assert beat.log_text().count("Sending due task chordload.dispatch_due") >= 2
    assert worker.log_path.read_text().count("chordload.dispatch_due[") >= 4
