"""Structured logs, read from real worker log files: every line about a run carries its
run_id, mapref and chunk_no - Celery's own "received" line in the worker's main process as
well as the task's lines in the pool processes - one line per event, text or JSON."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from coordinator.launch import launch
from coordinator.watch import wait
from shared.config.settings import settings_from_dict
from shared.engines import get_engine
from shared.logging_context import bind_run_context, current_run_context, parse_task_id
from shared.metadata import store
from shared.run.statuses import RunStatus
from tests.opsutil import wait_for
from tests.pgdata import create_customers, scd2_mapping
from tests.worker_process import WorkerProcess

pytestmark = pytest.mark.e2e

TEXT_LINE = re.compile(
    r"^\[[^\]]+\] (?P<logger>\S+) run_id=(?P<run_id>\S+) mapref=(?P<mapref>\S+) "
    r"chunk_no=(?P<chunk_no>\S+): (?P<message>.*)$"
)


def _small_run(settings, mapref: str, chunks: int = 3):
    run_id = launch(mapref, settings=settings, chunks_override=chunks)
    run = wait(run_id, settings=settings, timeout_s=60)
    assert run.status is RunStatus.SUCCESS, run.message
    task_ids = {
        c.chunk_no: c.task_id for c in store.get_chunks(get_engine(settings.metadata), run_id)
    }
    assert len(task_ids) == chunks
    return run_id, task_ids


def _mapping(schema: str) -> dict:
    return scd2_mapping(schema, chunking={"rows_per_chunk": 1_000, "min_rows_for_parallel": 0})


def test_task_ids_and_context_binding():
    assert parse_task_id("abc123.4") == ("abc123", 4)
    assert parse_task_id("abc123.4.r2") == ("abc123", 4)
    assert parse_task_id("abc123.0.finalize") == ("abc123", None)
    assert parse_task_id("abc123.0.r1.finalize") == ("abc123", None)
    assert parse_task_id("6f1c2d7e-8a1b-4c5d-9e0f-123456789abc") is None
    with bind_run_context(run_id="r1", mapref="m", chunk_no=3):
        assert current_run_context() == {"run_id": "r1", "mapref": "m", "chunk_no": 3}
        with bind_run_context(run_id="r2"):  # another run inherits nothing of the first
            assert current_run_context() == {"run_id": "r2"}
        with bind_run_context(chunk_no=4):
            assert current_run_context() == {"run_id": "r1", "mapref": "m", "chunk_no": 4}
    assert current_run_context() == {}


def test_text_log_lines_of_a_run_carry_run_mapref_and_chunk(workers, make_settings, wh, schema):
    create_customers(wh, schema, 3_000)
    settings = make_settings({"log_text": _mapping(schema)})
    run_id, task_ids = _small_run(settings, "log_text")
    finalize_id = f"{task_ids[min(task_ids)]}.finalize"

    def run_lines() -> list[str]:
        text = workers.log_path.read_text(errors="replace")
        return [line for line in text.splitlines() if run_id in line]

    # the chord body's "succeeded" line is the last one of the run
    lines = wait_for(
        lambda: (
            (ls := run_lines())
            and any(finalize_id in line and "succeeded" in line for line in ls)
            and ls
        ),
        timeout_s=30,
        what="the finalize task's 'succeeded' line",
        diagnostics=workers.log_tail,
    )

    parsed = []
    for line in lines:
        match = TEXT_LINE.match(line)
        assert match, f"not a structured line: {line!r}"
        assert match["run_id"] == run_id, line
        assert match["mapref"] == "log_text", line
        parsed.append(match)
    for chunk_no, task_id in task_ids.items():
        about_chunk = [m for m in parsed if f"[{task_id}]" in m["message"]]
        assert {m["chunk_no"] for m in about_chunk} == {str(chunk_no)}
        received = [m for m in about_chunk if "received" in m["message"]]
        succeeded = [m for m in about_chunk if "succeeded" in m["message"]]
        assert received and "MainProcess" in received[0].string, "main process line"
        assert succeeded and "ForkPoolWorker" in succeeded[0].string, "pool process line"
    about_body = [m for m in parsed if f"[{finalize_id}]" in m["message"]]
    assert about_body and {m["chunk_no"] for m in about_body} == {"-"}
    finalized = [m for m in parsed if m["logger"] == "chordload.tasks"]
    assert finalized and finalized[0]["chunk_no"] == "-", "the task's own log line"


def test_json_log_lines(base_config, session_settings, wh, schema, tmp_path_factory):
    """A worker started with CHORDLOAD_LOG_JSON=1 writes one JSON object per log line."""
    queue = f"{session_settings.celery.queue}-json"
    raw = {**base_config, "celery": {**base_config["celery"], "queue": queue}}
    workdir = tmp_path_factory.mktemp("jsonlog")
    config = workdir / "chordload.yaml"
    config.write_text(yaml.safe_dump(raw))
    worker = WorkerProcess(
        config,
        queue=queue,
        name=f"json-{queue}",
        concurrency=2,
        log_path=workdir / "worker.log",
        extra_env={"CHORDLOAD_LOG_JSON": "1"},
    )
    worker.start()
    try:
        create_customers(wh, schema, 2_000)
        settings = settings_from_dict({**raw, "mappings": {"log_json": _mapping(schema)}}, "t")
        run_id, task_ids = _small_run(settings, "log_json", chunks=2)

        def records() -> list[dict]:
            out = []
            for line in worker.log_path.read_text(errors="replace").splitlines():
                if run_id in line:
                    out.append(json.loads(line))  # every line about the run is JSON
            return out

        docs = wait_for(
            lambda: (
                (r := records())
                and any(
                    d["task_name"] == "chordload.finalize_run" and "succeeded" in d["message"]
                    for d in r
                )
                and r
            ),
            timeout_s=30,
            what="finalize 'succeeded' JSON line",
            diagnostics=worker.log_tail,
        )
    finally:
        worker.stop()
    assert all(d["run_id"] == run_id and d["mapref"] == "log_json" for d in docs)
    for chunk_no, task_id in task_ids.items():
        mine = [d for d in docs if d["task_id"] == task_id]
        assert {d["chunk_no"] for d in mine} == {str(chunk_no)}
        processes = {d["process"] for d in mine}
        assert "MainProcess" in processes, "the main process's 'received' line"
        assert any(p.startswith("ForkPoolWorker") for p in processes), "the pool's lines"
        assert any("received" in d["message"] for d in mine)
        assert any("succeeded" in d["message"] for d in mine)
