"""Flower, started with the documented commands (``chordload flower`` from any directory, and
``celery -A workers flower`` reading ./flowerconfig.py) against the session's broker: basic
auth from FLOWER_BASIC_AUTH, loopback only by default, and through its HTTP API the live
worker and the tasks of a real run."""

from __future__ import annotations

import ast

import pytest

from coordinator.launch import launch
from coordinator.watch import wait
from shared.engines import get_engine
from shared.metadata import store
from shared.run.statuses import RunStatus
from tests.cliutil import CHORDLOAD, run_subprocess
from tests.opsutil import (
    CeleryProcess,
    free_port,
    http_get,
    http_json,
    listening_addresses,
    wait_for,
)
from tests.pgdata import create_customers, scd2_mapping

pytestmark = pytest.mark.e2e

AUTH = ("ops", "s3cret-flower")


@pytest.fixture
def flower(config_path, workers, tmp_path):
    port = free_port()
    proc = CeleryProcess(
        ["flower"],
        log_path=tmp_path / "flower.log",
        env={
            "CHORDLOAD_CONFIG": str(config_path),
            "FLOWER_BASIC_AUTH": ":".join(AUTH),
            "FLOWER_PORT": str(port),
            "FLOWER_ADDRESS": "",
        },
    ).start()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(
            lambda: not proc.alive() or http_get(f"{base}/healthcheck")[0] == 200,
            timeout_s=30,
            what="Flower's /healthcheck",
            diagnostics=proc.log_tail,
        )
        assert proc.alive(), proc.log_tail()
        yield base, port
    finally:
        proc.stop()


def test_flower_refuses_to_start_without_credentials(config_path, tmp_path):
    proc = CeleryProcess(
        ["flower"],
        log_path=tmp_path / "noauth.log",
        env={
            "CHORDLOAD_CONFIG": str(config_path),
            "FLOWER_BASIC_AUTH": "",
            "FLOWER_PORT": str(free_port()),
        },
    ).start()
    try:
        proc.proc.wait(timeout=30)
    finally:
        proc.stop()
    assert "FLOWER_BASIC_AUTH" in proc.log_text()


def test_chordload_flower_needs_credentials_and_stays_local(config_path, tmp_path):
    """``chordload flower`` from a directory without flowerconfig.py: no credentials, no
    Flower (exit 2, the fix in the message); with them, Flower asks for them and listens on
    127.0.0.1 only."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    refused = run_subprocess(
        "flower", "--config", str(config_path), env={"FLOWER_BASIC_AUTH": ""}, cwd=elsewhere
    )
    assert refused.code == 2, refused
    assert "FLOWER_BASIC_AUTH=user:password chordload flower" in refused.err

    port = free_port()
    proc = CeleryProcess(
        ["flower", "--config", str(config_path), "--port", str(port)],
        command=[str(CHORDLOAD)],
        cwd=elsewhere,
        log_path=tmp_path / "flower.log",
        env={"FLOWER_BASIC_AUTH": ":".join(AUTH), "FLOWER_ADDRESS": "", "CHORDLOAD_CONFIG": ""},
    ).start()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(
            lambda: not proc.alive() or http_get(f"{base}/healthcheck")[0] == 200,
            timeout_s=30,
            what="Flower's /healthcheck",
            diagnostics=proc.log_tail,
        )
        assert proc.alive(), proc.log_tail()
        assert listening_addresses(port) == {"127.0.0.1"}, "loopback only by default"
        assert http_get(f"{base}/")[0] == 401
        assert http_get(f"{base}/", ("ops", "wrong"))[0] == 401
        assert http_get(f"{base}/", AUTH)[0] == 200
    finally:
        proc.stop()


def test_flower_sees_workers_and_run_tasks(flower, workers, make_settings, wh, schema):
    base, port = flower
    assert listening_addresses(port) == {"127.0.0.1"}, "loopback only by default"

    for url in (f"{base}/api/workers", f"{base}/api/tasks", f"{base}/"):
        assert http_get(url)[0] == 401, url
        assert http_get(url, ("ops", "wrong"))[0] == 401, url

    # events reach Flower (the worker's heartbeats) before the run starts
    wait_for(
        lambda: (
            (http_json(f"{base}/api/workers?status=1", AUTH) or {}).get(workers.hostname) is True
        ),
        timeout_s=30,
        what="the worker online in Flower",
    )
    online = http_json(f"{base}/api/workers?refresh=1", AUTH)
    assert workers.hostname in online
    assert online[workers.hostname]["stats"]["pool"]["max-concurrency"] == 2

    create_customers(wh, schema, 3_000)
    settings = make_settings(
        {
            "flowered": scd2_mapping(
                schema, chunking={"rows_per_chunk": 1_000, "min_rows_for_parallel": 0}
            )
        }
    )
    run_id = launch("flowered", settings=settings, chunks_override=3)
    assert wait(run_id, settings=settings, timeout_s=60).status is RunStatus.SUCCESS
    chunk_ids = {c.task_id for c in store.get_chunks(get_engine(settings.metadata), run_id)}
    body_id = f"{min(chunk_ids)}.finalize"

    def tasks_done():
        tasks = http_json(f"{base}/api/tasks?limit=1000", AUTH) or {}
        mine = {tid: t for tid, t in tasks.items() if tid in chunk_ids | {body_id}}
        if len(mine) == 4 and all(t["state"] == "SUCCESS" for t in mine.values()):
            return mine
        return None

    mine = wait_for(tasks_done, timeout_s=30, what="the run's 4 tasks SUCCESS in Flower")
    assert {mine[t]["name"] for t in chunk_ids} == {"chordload.load_chunk"}
    assert mine[body_id]["name"] == "chordload.finalize_run"
    assert {t["worker"] for t in mine.values()} == {workers.hostname}
    result = ast.literal_eval(mine[body_id]["result"])  # Flower shows the result's repr
    assert result == {"run_id": run_id, "status": "SUCCESS"}

    types = http_json(f"{base}/api/task/types", AUTH)["task-types"]
    assert {"chordload.load_chunk", "chordload.finalize_run"} <= set(types)

    # Prometheus scrapes /metrics (no auth in Flower 2.x: keep the port private)
    status, metrics = http_get(f"{base}/metrics")
    assert status == 200
    samples = [
        line for line in metrics.decode().splitlines() if line.startswith("flower_events_total{")
    ]
    assert any(
        'task="chordload.load_chunk"' in line and 'type="task-succeeded"' in line
        for line in samples
    ), samples
