"""The run dashboard (``chordload ui``) and ``/metrics``, served for real (uvicorn on a free
loopback port) over the session's metadata database.

- ``chordload ui`` refuses to start without credentials, and ``--local-only`` off loopback;
- ``/metrics`` parsed by prometheus_client's own parser, every value checked against runs,
  chunks and quarantined rows written to the metadata database; the pages escape what the
  data holds;
- in a real browser (Debian's chromium driven by Playwright), against real workers: a run's
  page shows its progress move and its timeline fill without a reload, a cross-site POST is
  refused, Stop ends the run STOPPED, Resume ends it SUCCESS, a quarantined row holding
  ``<script>`` is shown as text; screenshots of the pages
  (into docs/ with ``CHORDLOAD_SCREENSHOTS=docs``).
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from coordinator.launch import launch
from coordinator.ui.security import PASSWORD_ENV, TOKEN_ENV, USER_ENV, Credentials
from coordinator.ui.serve import running
from shared.engines import get_engine
from shared.metadata import store
from shared.metadata.models import ChunkLog, ErrorRow, ProcessLog
from shared.run.statuses import ChunkStatus, RunStatus
from shared.timeutil import utcnow
from tests.cliutil import run_cli
from tests.pgdata import BUSINESS_COLUMNS, create_customers, scd2_mapping
from tests.test_lifecycle import wait_until

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
USER, PASSWORD, TOKEN = "ops", "pw-" + uuid.uuid4().hex[:12], "tok-" + uuid.uuid4().hex
CREDENTIALS = Credentials(USER, PASSWORD, TOKEN)
SCRIPT = "<script>window.pwned=1</script>"


def _get(url: str, auth: str | None = None) -> tuple[int, str, dict[str, str]]:
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", auth)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode(), dict(response.headers)
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(), dict(err.headers)


BASIC = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()


# -- starting it ------------------------------------------------------------------------------
def test_ui_refuses_to_start_without_credentials(config_path, monkeypatch, capsys):
    for name in (USER_ENV, PASSWORD_ENV, TOKEN_ENV):
        monkeypatch.delenv(name, raising=False)
    result = run_cli(capsys, "ui", "--config", str(config_path))
    assert result.code == 2
    assert USER_ENV in result.err and "--local-only" in result.err
    result = run_cli(
        capsys, "ui", "--config", str(config_path), "--local-only", "--host", "0.0.0.0"
    )
    assert result.code == 2 and "loopback" in result.err
    monkeypatch.setenv(USER_ENV, "ops")
    result = run_cli(capsys, "ui", "--config", str(config_path))
    assert result.code == 2 and PASSWORD_ENV in result.err


# -- /metrics and the pages over seeded metadata ----------------------------------------------
def _seed(metadata, mapref: str) -> dict[str, ProcessLog]:
    """Four runs of ``mapref``: SUCCESS, FAILED (one FAILED chunk), SUCCESS (the latest
    finished), RUNNING (the latest: one FAILED chunk, two quarantined rows)."""
    now = utcnow().replace(microsecond=0)
    specs = [
        ("ok1", RunStatus.SUCCESS, 180, 60, 100),
        ("bad", RunStatus.FAILED, 120, 20, 50),
        ("ok2", RunStatus.SUCCESS, 60, 30, 200),
        ("live", RunStatus.RUNNING, 1, None, 0),
    ]
    runs = {}
    for name, status, minutes_ago, took_s, rows in specs:
        created = now - dt.timedelta(minutes=minutes_ago)
        run = ProcessLog(
            run_id=f"{uuid.uuid4().hex[:12]}{name}",
            mapref=mapref,
            status=status,
            created_at=created,
            started_at=created,
            ended_at=created + dt.timedelta(seconds=took_s) if took_s else None,
            load_kind="incremental",
            estimated_rows=1000,
            chunks_total=2,
            rows_read=rows,
            mapping={},
            plan_note=f"2 chunks <b>{name}</b>",
        )
        chunk_statuses = {
            "bad": (ChunkStatus.SUCCESS, ChunkStatus.FAILED),
            "live": (ChunkStatus.FAILED, ChunkStatus.RUNNING),
        }.get(name, (ChunkStatus.SUCCESS, ChunkStatus.SUCCESS))
        chunks = [
            ChunkLog(
                run_id=run.run_id,
                chunk_no=no,
                task_id=f"{run.run_id}.{no}",
                status=st,
                worker=f"w{no}@host/{100 + no}",
                started_at=created,
                ended_at=None if st is ChunkStatus.RUNNING else created + dt.timedelta(seconds=5),
                rows_read=rows // 2,
            )
            for no, st in enumerate(chunk_statuses, start=1)
        ]
        store.create_run(metadata, run, chunks)
        runs[name] = run
    with store.session(metadata) as s, s.begin():
        s.add_all(
            ErrorRow(
                run_id=runs["live"].run_id,
                chunk_no=1,
                row_key={"id": i},
                row_data={"id": i, "name": SCRIPT},
                message=f"value too long <{i}>",
                created_at=now,
            )
            for i in (1, 2)
        )
    return runs


def test_metrics_and_pages_show_the_metadata(make_settings, schema):
    mapref, idle = f"{schema}_seeded", f"{schema}_idle"
    mapping = scd2_mapping(schema)
    settings = make_settings({mapref: mapping, idle: {**mapping, "freshness_s": 60}})
    metadata = get_engine(settings.metadata)
    runs = _seed(metadata, mapref)
    with running(settings, CREDENTIALS) as base:
        assert _get(f"{base}/metrics")[0] == 401
        assert _get(f"{base}/metrics", "Bearer wrong")[0] == 401
        code, body, headers = _get(f"{base}/metrics", f"Bearer {TOKEN}")
        assert code == 200 and headers["content-type"].startswith("text/plain")
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body)
            for s in family.samples
            if s.labels.get("mapping") in (mapref, idle)
        }

        def value(name: str, mapping: str = mapref, **labels: str) -> float | None:
            return samples.get((name, tuple(sorted({"mapping": mapping, **labels}.items()))))

        with metadata.connect() as conn:  # the expected values, read from the metadata
            ok2 = conn.execute(
                text(
                    "SELECT ended_at, extract(epoch FROM ended_at - started_at), rows_read "
                    "FROM process_log WHERE run_id = :r"
                ),
                {"r": runs["ok2"].run_id},
            ).one()
            by_status = dict(
                conn.execute(
                    text(
                        "SELECT status, count(*) FROM process_log WHERE mapref = :m GROUP BY status"
                    ),
                    {"m": mapref},
                ).all()
            )
        assert value("chordload_last_success_timestamp_seconds") == ok2[0].timestamp()
        assert value("chordload_last_run_duration_seconds") == pytest.approx(float(ok2[1]))
        assert value("chordload_last_run_rows") == ok2[2] == 200
        assert value("chordload_runs_total", status="SUCCESS") == by_status["SUCCESS"] == 2
        assert value("chordload_runs_total", status="FAILED") == by_status["FAILED"] == 1
        assert value("chordload_runs_total", status="STOPPED") == 0
        assert value("chordload_active_runs") == by_status["RUNNING"] == 1
        assert value("chordload_failed_chunks") == 1  # of the latest run, not the FAILED one
        assert value("chordload_quarantined_rows") == 2
        # a configured mapping that never ran: zeros, and no last success at all
        assert value("chordload_active_runs", idle) == 0
        assert value("chordload_last_success_timestamp_seconds", idle) is None

        code, page, headers = _get(f"{base}/runs/{runs['live'].run_id}", BASIC)
        assert code == 200 and "chordload_csrf" in headers.get("set-cookie", "")
        assert SCRIPT not in page and "&lt;script&gt;window.pwned=1&lt;/script&gt;" in page
        assert "<b>live</b>" not in page and "&lt;b&gt;live&lt;/b&gt;" in page
        assert page.count('class="bar"') == 2  # both chunks started: two bars, two lanes
        code, page, _ = _get(f"{base}/runs?mapping={mapref}&status=SUCCESS", BASIC)
        assert code == 200
        assert runs["ok1"].run_id in page and runs["ok2"].run_id in page
        assert runs["bad"].run_id not in page
        assert _get(f"{base}/runs?status=NOPE", BASIC)[0] == 400
        code, page, _ = _get(f"{base}/", BASIC)
        assert code == 200 and mapref in page
        assert 'data-stale="yes"' in page  # idle: freshness_s set and it never succeeded
        code, page, _ = _get(f"{base}/mappings/{mapref}", BASIC)
        assert code == 200 and page.count('class="bar"') == 2 * len(runs)
        assert SCRIPT not in page


# -- in a browser, against real workers ------------------------------------------------------
ROWS, CHUNKS, BATCH = 4_000, 8, 100
BAD_ID = 5
# Two gates, advisory locks the test holds: a worker reading a source row with an id above
# 1,000 waits at the first gate, above 2,000 at the second too. The 8 chunks are the key
# ranges (0, 500], (500, 1000], ...: chunks 1-2 load while 3-4 wait at the first gate; it
# opens, 3-4 load and 5-6 wait at the second, so the run cannot end before it opens. What
# the page shows at each step is known, whatever the machine's speed.
GATE_AT = (1_000, 2_000)


def _gated_source(wh, schema: str, gates: tuple[int, ...]) -> dict:
    """The source, read by the workers through the gates and at about 1 ms a row (the plan,
    made in this process - its sessions' application_name - reads freely). A target whose
    ``name`` column is too short for one row, which is quarantined."""
    create_customers(wh, schema, ROWS)
    planner = f"chordload/{os.getpid()}"
    waits = " ".join(
        f"IF id > {at} THEN PERFORM pg_advisory_lock_shared({gate}); "
        f"PERFORM pg_advisory_unlock_shared({gate}); END IF;"
        for at, gate in zip(GATE_AT, gates)
    )
    with wh.begin() as conn:
        conn.execute(
            text(
                f'CREATE FUNCTION "{schema}".gated(id bigint) RETURNS boolean LANGUAGE plpgsql '
                f"VOLATILE AS $$ BEGIN IF current_setting('application_name') <> '{planner}' "
                f"THEN PERFORM pg_sleep(0.001); {waits} END IF; RETURN true; END $$"
            )
        )
        conn.execute(
            text(f'UPDATE "{schema}".customers SET name = :name WHERE id = :id'),
            {"name": SCRIPT, "id": BAD_ID},
        )
        conn.execute(
            text(
                f'CREATE TABLE "{schema}".dim_customer (sk bigint GENERATED BY DEFAULT AS '
                f"IDENTITY PRIMARY KEY, id bigint NOT NULL, name varchar(20), email text, "
                f"city text, balance numeric(12,2), signup date, active boolean, updated_at "
                f"timestamp, row_hash varchar(32) NOT NULL, valid_from timestamptz NOT NULL, "
                f"valid_to timestamptz, is_current boolean NOT NULL, run_id varchar(32) NOT NULL)"
            )
        )
    mapping = scd2_mapping(schema, batch_rows=BATCH, errors={"max_rows": 10})
    mapping["source"]["query"] = (
        f'SELECT {BUSINESS_COLUMNS} FROM "{schema}"."customers" WHERE "{schema}".gated(id)'
    )
    return mapping


@contextmanager
def _opened_at_exit(gatekeeper):
    """Whatever happens, the gates open at the end (the workers finish and can stop)."""
    try:
        yield gatekeeper
    finally:
        gatekeeper.execute(text("SELECT pg_advisory_unlock_all()"))
        gatekeeper.commit()
        gatekeeper.close()


def _settled(page, metadata, run_id: str, done: int) -> None:
    """Wait until ``done`` chunks succeeded and two wait at a gate, then until the page
    (polling, never reloaded) shows those rows and one bar per started chunk."""

    def state():
        t = store.progress_totals(metadata, run_id)
        return t if t["status_success"] == done and t["status_running"] == 2 else None

    totals = wait_until(state, timeout_s=60, what=f"{done} chunks done, 2 at a gate")
    page.wait_for_function(
        f"() => +document.querySelector('#rows').dataset.rows == {totals['rows_read']} "
        f"&& document.querySelectorAll('#timeline rect.bar').length == {done + 2}"
    )


def _rows_shown(page) -> int:
    return int(page.get_attribute("#rows", "data-rows"))


@pytest.mark.e2e
def test_dashboard_in_a_browser(workers, make_settings, wh, schema, tmp_path):
    from playwright.sync_api import sync_playwright

    mapref = f"{schema}_ui"
    gates = tuple(int(uuid.uuid4().int % 2**62) for _ in range(2))
    settings = make_settings({mapref: _gated_source(wh, schema, gates)})
    metadata = get_engine(settings.metadata)
    # the pages' screenshots: into docs/ with CHORDLOAD_SCREENSHOTS=docs (how the committed
    # ones were taken), else beside the test, so a test run leaves the checkout unchanged
    docs = REPO / "docs" if os.environ.get("CHORDLOAD_SCREENSHOTS") == "docs" else tmp_path
    gatekeeper = wh.connect()  # holds both gates (session advisory locks)
    for gate in gates:
        gatekeeper.execute(text("SELECT pg_advisory_lock(:k)"), {"k": gate})
    gatekeeper.commit()

    def open_gate(gate: int) -> None:
        gatekeeper.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": gate})
        gatekeeper.commit()

    with (
        _opened_at_exit(gatekeeper),
        running(settings, CREDENTIALS) as base,
        sync_playwright() as pw,
    ):
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            anonymous = browser.new_context()
            assert anonymous.request.get(base + "/").status == 401
            anonymous.close()

            context = browser.new_context(
                http_credentials={"username": USER, "password": PASSWORD},
                viewport={"width": 1280, "height": 800},
            )
            context.set_default_timeout(60_000)
            page = context.new_page()
            run_id = launch(mapref, settings=settings, chunks_override=CHUNKS)
            page.goto(f"{base}/runs/{run_id}")
            page.evaluate("window.loadedOnce = true")  # gone if the page were reloaded
            # chunks 1-2 load, then both workers wait at the first gate; the page shows it
            _settled(page, metadata, run_id, done=2)
            seen = _rows_shown(page)
            open_gate(gates[0])  # chunks 3-4 load: the rows and the timeline grow
            _settled(page, metadata, run_id, done=4)
            assert _rows_shown(page) > seen > 0
            assert page.evaluate("window.loadedOnce") is True  # htmx swapped, no reload

            # a cross-site POST, with the user's credentials and cookie: refused, nothing stops
            evil = context.request.post(
                f"{base}/runs/{run_id}/stop",
                headers={"Origin": "http://evil.example"},
                form={"csrf": "guessed"},
            )
            assert evil.status == 403 and "refused" in evil.text()
            tokenless = context.request.post(
                f"{base}/runs/{run_id}/stop", headers={"Origin": base}, form={}
            )
            assert tokenless.status == 403
            assert not store.stop_requested(metadata, run_id)

            page.click("#stop")  # 7-8 are revoked; 5-6 stop after their first batch
            page.wait_for_selector("#notice")
            open_gate(gates[1])
            page.wait_for_selector('#run-status[data-status="STOPPED"]')
            assert store.get_run(metadata, run_id).status is RunStatus.STOPPED
            assert store.stop_requested(metadata, run_id)

            page.click("#resume")
            page.wait_for_selector('#run-status[data-status="SUCCESS"]', timeout=90_000)
            run = store.get_run(metadata, run_id)
            assert run.status is RunStatus.SUCCESS and run.launches == 2, run.message
            assert run.rows_errored == 1

            page.reload()  # the quarantined row, as text: no script of the data ever runs
            shown = page.locator("#quarantine .row-data").inner_text()
            assert SCRIPT in shown
            assert page.locator("#quarantine script").count() == 0
            assert page.evaluate("window.pwned") is None
            assert page.locator("#timeline rect.bar").count() == CHUNKS
            page.screenshot(path=str(docs / "ui-run.png"), full_page=True)
            page.goto(f"{base}/runs?mapping={mapref}")
            assert page.locator("#runs tbody tr").count() == 1
            page.screenshot(path=str(docs / "ui-runs.png"), full_page=True)
            page.goto(f"{base}/")
            assert page.locator("#mappings").get_by_text(mapref).count() == 1
            page.screenshot(path=str(docs / "ui-mappings.png"), full_page=True)
            page.goto(f"{base}/mappings/{mapref}")
            assert page.locator("#history rect.bar").count() == 2  # one run: two bars
            page.screenshot(path=str(docs / "ui-history.png"), full_page=True)
            context.close()
        finally:
            browser.close()


def test_the_dashboard_benchmark_runs(metadata_ready):
    """bench/ui.py on a small history, as a person runs it, so it never rots: it seeds its
    own database, serves every page and reports each one (timings are not asserted here)."""
    proc = subprocess.run(
        [sys.executable, "-m", "bench.ui", "--runs", "300", "--chunks", "32", "--repeat", "2"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode in (0, 1), proc.stderr  # 1: a page missed 200 ms on a busy box
    assert "seeded 300 runs" in proc.stdout
    for page in ("/runs?page=100", "/runs/bigrun0000000000/live", "/metrics", "/mappings/m7"):
        assert f"\n{page} " in proc.stdout, proc.stdout
