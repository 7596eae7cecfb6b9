"""``chordload checkpoint MAPREF`` through the real CLI against the real services: show the
stored checkpoint, ``--set`` it (lower than the stored one: the next incremental run reads
from there), ``--reset`` it (the next run is an initial load), ``--history`` (runs that moved
it and changes by hand, newest first), refused with exit 4 while a run of the mapping is
active, also one being created at that moment, and a launch planned from the previous value
refused; bad values and mappings without a checkpoint are exit 2."""

from __future__ import annotations

import getpass
import json
import socket
import threading
import time
import uuid

import pytest

from coordinator.launch import _rows_for
from coordinator.plan import plan_run
from shared.config.settings import settings_from_dict
from shared.engines import get_engine
from shared.errors import RunRefusedError
from shared.metadata import store
from shared.metadata.models import ProcessLog
from shared.run.statuses import ACTIVE_RUN_STATUSES, RunStatus
from shared.timeutil import utcnow
from tests.cliutil import CliResult, process_log_count, run_cli, write_config
from tests.pgdata import create_customers, scalar, scd2_mapping

WHO = f"{getpass.getuser()}@{socket.gethostname()}"


def _config(tmp_path, base_config, mappings: dict):
    return write_config(tmp_path / "chordload.yaml", base_config, mappings)


def _run(capsys, path, mapref: str) -> dict:
    result = run_cli(
        capsys, "run", mapref, "--wait", "--json", "--timeout-s", "60", "--config", path
    )
    assert result.code == 0, result
    return json.loads(result.out)


def _checkpoint(capsys, path, mapref: str, *argv: str) -> CliResult:
    return run_cli(capsys, "checkpoint", mapref, *argv, "--config", path)


def _history(capsys, path, mapref: str) -> list[dict]:
    result = _checkpoint(capsys, path, mapref, "--history", "--json")
    assert result.code == 0, result
    return json.loads(result.out)


def _running(mapref: str) -> ProcessLog:
    """A run row as launch writes it, for a run that no worker will ever take."""
    return ProcessLog(
        run_id=uuid.uuid4().hex[:12],
        mapref=mapref,
        status=RunStatus.RUNNING,
        created_at=utcnow(),
        load_kind="incremental",
        mapping={"spec": {}, "columns": []},
    )


def _end(metadata, run_id: str) -> None:
    store.set_run_status(metadata, run_id, RunStatus.FAILED, only_from=set(ACTIVE_RUN_STATUSES))


@pytest.mark.e2e
def test_source_clock_went_back_set_lower_then_incremental_reads_from_it(
    workers, clean_cli_env, base_config, wh, schema, tmp_path, capsys
):
    qualified = create_customers(wh, schema, 50)  # updated_at = 2026-01-01 00:00:01 .. :50
    mapref = f"ck_{schema}"
    path = _config(tmp_path, base_config, {mapref: scd2_mapping(schema)})

    before = _checkpoint(capsys, path, mapref)
    assert before.code == 0, before
    assert before.out.splitlines() == [
        f"mapping {mapref}: checkpoint KEY on updated_at",
        "stored: none",
        "next run: initial load (reads everything)",
    ]

    first = _run(capsys, path, mapref)
    assert (first["load_kind"], first["rows_read"]) == ("initial", 50)
    shown = _checkpoint(capsys, path, mapref)
    assert shown.code == 0, shown
    assert shown.out.splitlines() == [
        f"mapping {mapref}: checkpoint KEY on updated_at",
        "stored: 2026-01-01T00:00:50 (datetime)",
        shown.out.splitlines()[2],
        "next run: incremental, reads updated_at >= 2026-01-01T00:00:50",
    ]
    assert shown.out.splitlines()[2].startswith(f"set by run {first['run_id']} (initial run) at 20")
    as_json = json.loads(_checkpoint(capsys, path, mapref, "--json").out)
    assert {k: as_json[k] for k in ("strategy", "columns", "stored", "value", "value_type")} == {
        "strategy": "KEY",
        "columns": ["updated_at"],
        "stored": True,
        "value": "2026-01-01T00:00:50",
        "value_type": "datetime",
    }
    assert (as_json["run_id"], as_json["set_by"]) == (first["run_id"], f"run {first['run_id']}")

    # The source's clock went back: new rows carry times below the stored checkpoint, and an
    # incremental run skips them (it re-reads only the boundary row).
    with wh.begin() as conn:
        conn.exec_driver_sql(
            f"INSERT INTO {qualified} SELECT g, 'Late ' || g, NULL, 'Cork', 1.00, NULL, true, "
            f"TIMESTAMP '2026-01-01 00:00:00' + (g - 21) * INTERVAL '1 second' "
            f"FROM generate_series(51, 55) g"
        )  # updated_at 00:00:30 .. 00:00:34
    skipped = _run(capsys, path, mapref)
    assert (skipped["load_kind"], skipped["rows_read"], skipped["rows_inserted"]) == (
        "incremental",
        1,
        0,
    )

    changed = _checkpoint(
        capsys, path, mapref, "--set", "2026-01-01 00:00:30", "--reason", "source clock went back"
    )
    assert changed.code == 0, changed
    [line] = changed.out.splitlines()
    assert line.startswith(
        f"checkpoint of '{mapref}' set: 2026-01-01T00:00:50 (datetime) -> "
        f"2026-01-01T00:00:30 (datetime), by {WHO} at 20"
    ), line
    assert "(reason: source clock went back)" in line
    shown = _checkpoint(capsys, path, mapref).out.splitlines()
    assert shown[1] == "stored: 2026-01-01T00:00:30 (datetime)"
    assert shown[2].startswith(f"set by {WHO} at ") and shown[2].endswith(
        "(reason: source clock went back)"
    )

    # the next incremental run reads from the value set: rows 30..50 and the five late ones
    after = _run(capsys, path, mapref)
    assert (after["load_kind"], after["checkpoint_from"]) == ("incremental", "2026-01-01T00:00:30")
    assert (after["rows_read"], after["rows_inserted"], after["rows_unchanged"]) == (26, 5, 21)
    assert after["checkpoint_to"] == "2026-01-01T00:00:50"
    target = f'"{schema}"."dim_customer"'
    assert scalar(wh, f"SELECT count(*) FROM {target} WHERE dw_is_current") == 55

    history = _history(capsys, path, mapref)
    assert [(h["changed_by"], h["run_id"], h["old"], h["new"], h["reason"]) for h in history] == [
        ("run", after["run_id"], "2026-01-01T00:00:30", "2026-01-01T00:00:50", "incremental run"),
        (WHO, None, "2026-01-01T00:00:50", "2026-01-01T00:00:30", "source clock went back"),
        ("run", first["run_id"], None, "2026-01-01T00:00:50", "initial run"),
    ]  # newest first; the run that did not move it (`skipped`) is not a change
    assert [h["action"] for h in history] == ["set", "set", "set"]
    listing = _checkpoint(capsys, path, mapref, "--history")
    assert listing.code == 0, listing
    header, *lines = listing.out.splitlines()
    assert header == f"checkpoint changes of {mapref}, newest first: 3"
    assert [line.split("  ", 1)[1] for line in lines] == [
        f"run {after['run_id']}: 2026-01-01T00:00:30 (datetime) -> 2026-01-01T00:00:50 "
        f"(datetime) (incremental run)",
        f"{WHO}: 2026-01-01T00:00:50 (datetime) -> 2026-01-01T00:00:30 (datetime) "
        f"(source clock went back)",
        f"run {first['run_id']}: none -> 2026-01-01T00:00:50 (datetime) (initial run)",
    ]
    assert all(line.startswith("20") and "+00:00  " in line for line in lines), lines


@pytest.mark.e2e
def test_reset_makes_the_next_run_initial(
    workers, clean_cli_env, base_config, wh, schema, tmp_path, capsys
):
    create_customers(wh, schema, 30)
    mapref = f"rs_{schema}"
    path = _config(tmp_path, base_config, {mapref: scd2_mapping(schema)})
    first = _run(capsys, path, mapref)
    assert first["load_kind"] == "initial"

    reset = _checkpoint(capsys, path, mapref, "--reset", "--json", "--reason", "start over")
    assert reset.code == 0, reset
    change = json.loads(reset.out)
    assert {k: change[k] for k in ("action", "changed", "old", "old_type", "new", "reason")} == {
        "action": "reset",
        "changed": True,
        "old": "2026-01-01T00:00:30",
        "old_type": "datetime",
        "new": None,
        "reason": "start over",
    }
    assert change["changed_by"] == WHO and change["run_id"] is None
    assert "stored: none" in _checkpoint(capsys, path, mapref).out

    again = _run(capsys, path, mapref)
    assert (again["load_kind"], again["checkpoint_from"], again["rows_read"]) == (
        "initial",
        None,
        30,
    )
    assert again["rows_unchanged"] == 30  # the target kept its rows: nothing doubled
    assert again["checkpoint_to"] == "2026-01-01T00:00:30"

    reset = _checkpoint(capsys, path, mapref, "--reset")
    assert reset.code == 0 and reset.out.startswith(
        f"checkpoint of '{mapref}' reset: 2026-01-01T00:00:30 (datetime) -> none, by {WHO}"
    ), reset
    assert reset.out.rstrip().endswith("the next run is an initial load")
    nothing = _checkpoint(capsys, path, mapref, "--reset")
    assert nothing.code == 0 and "has no stored checkpoint: nothing to reset" in nothing.out
    assert [(h["changed_by"], h["new"]) for h in _history(capsys, path, mapref)] == [
        (WHO, None),
        ("run", "2026-01-01T00:00:30"),
        (WHO, None),
        ("run", "2026-01-01T00:00:30"),
    ]


def test_refused_while_a_run_is_active(clean_cli_env, base_config, wh, schema, tmp_path, capsys):
    create_customers(wh, schema, 10)
    mapref = f"act_{schema}"
    path = _config(tmp_path, base_config, {mapref: scd2_mapping(schema)})
    metadata = get_engine(base_config["metadata"])
    assert _checkpoint(capsys, path, mapref, "--set", "2026-01-01 00:00:05").code == 0

    active = _running(mapref)
    store.create_run(metadata, active, [])
    try:
        for argv in (["--set", "2026-01-01 00:00:01"], ["--reset", "--reason", "why not"]):
            refused = _checkpoint(capsys, path, mapref, *argv)
            assert refused.code == 4, refused
            assert f"has an active run {active.run_id} (RUNNING)" in refused.err
            assert f"chordload stop {active.run_id}" in refused.err
            assert "Traceback" not in refused.err
        shown = _checkpoint(capsys, path, mapref)  # showing it is fine meanwhile
        assert shown.code == 0 and "stored: 2026-01-01T00:00:05 (datetime)" in shown.out
    finally:
        _end(metadata, active.run_id)
    assert len(_history(capsys, path, mapref)) == 1
    assert _checkpoint(capsys, path, mapref, "--set", "2026-01-01 00:00:01").code == 0


def test_a_change_racing_a_launch_never_slips_in(
    clean_cli_env, base_config, wh, schema, tmp_path, capsys
):
    """Both orders of a change and a launch of the same mapping, in Postgres:

    - a launch's run row is being created (its transaction is open): the change waits for it
      and is refused once it commits (exit 4, naming the run);
    - a launch planned from the stored checkpoint, which is then changed before the launch
      writes its run: the launch is refused, nothing is written."""
    create_customers(wh, schema, 10)
    mapref = f"race_{schema}"
    path = _config(tmp_path, base_config, {mapref: scd2_mapping(schema)})
    metadata = get_engine(base_config["metadata"])

    creating = _running(mapref)
    with store.session(metadata) as s:
        s.begin()
        s.add(creating)
        s.flush()  # the launch's INSERT, not committed yet
        results: list[CliResult] = []
        change = threading.Thread(
            target=lambda: results.append(
                _checkpoint(capsys, path, mapref, "--set", "2026-01-01 00:00:03")
            )
        )
        change.start()
        time.sleep(2)
        assert change.is_alive() and not results, "the change did not wait for the launch"
        s.commit()
    change.join(30)
    assert not change.is_alive()
    [refused] = results
    assert refused.code == 4, refused
    assert f"has an active run {creating.run_id}" in refused.err
    assert store.get_checkpoint(metadata, mapref) is None
    _end(metadata, creating.run_id)

    settings = settings_from_dict(
        {**base_config, "mappings": {mapref: scd2_mapping(schema)}}, "test"
    )
    plan = plan_run(settings, mapref, settings.mapping(mapref), metadata)
    assert plan.stored_checkpoint is None and plan.run.load_kind.value == "initial"
    assert _checkpoint(capsys, path, mapref, "--set", "2026-01-01 00:00:03").code == 0
    run, chunks = _rows_for(plan)
    with pytest.raises(RunRefusedError) as stale:
        store.create_run(metadata, run, chunks, store.PlannedCheckpoint(plan.stored_checkpoint))
    message = str(stale.value)
    assert f"mapping '{mapref}': its checkpoint changed while run {run.run_id}" in message
    assert f"(- -> 2026-01-01T00:00:03, by {WHO} at " in message
    assert process_log_count(base_config["metadata"], mapref) == 1  # only the ended one


def test_bad_values_and_mappings_without_a_checkpoint_exit_2(
    clean_cli_env, base_config, wh, schema, tmp_path, capsys
):
    create_customers(wh, schema, 10)
    key, pair, none = f"k_{schema}", f"p_{schema}", f"n_{schema}"
    mappings = {
        key: scd2_mapping(schema),
        pair: scd2_mapping(schema, target="dim_pair"),
        none: scd2_mapping(schema, target="dim_none"),
    }
    mappings[pair]["checkpoint"] = {"strategy": "KEY", "columns": ["updated_at", "id"]}
    mappings[none]["checkpoint"] = {"strategy": "NONE"}
    path = _config(tmp_path, base_config, mappings)

    # nothing stored: the value is read like the source's current maximum
    bad = _checkpoint(capsys, path, key, "--set", "yesterday")
    assert bad.code == 2, bad
    assert f"mapping '{key}': --set 'yesterday' is not a datetime" in bad.err, bad.err
    wrong = _checkpoint(capsys, path, pair, "--set", "2026-01-01 00:00:05")
    assert wrong.code == 2, wrong
    assert (
        f"mapping '{pair}': --set '2026-01-01 00:00:05' is not a row (datetime, int)" in wrong.err
    )
    assert "expected 2 comma-separated values" in wrong.err
    ok = _checkpoint(capsys, path, pair, "--set", "2026-01-01 00:00:05, 5", "--json")
    assert ok.code == 0, ok
    assert json.loads(ok.out)["new"] == ["2026-01-01T00:00:05", 5]
    assert "stored: (2026-01-01T00:00:05, 5) (row (datetime, int))" in (
        _checkpoint(capsys, path, pair).out
    )
    # once stored, the stored value is the example
    bad = _checkpoint(capsys, path, pair, "--set", "2026-01-01 00:00:05, five")
    assert bad.code == 2 and "is not a row (datetime, int)" in bad.err, bad

    for argv in ([], ["--set", "5"], ["--reset"], ["--history"]):
        result = _checkpoint(capsys, path, none, *argv)
        assert result.code == 2, (argv, result)
        assert f"mapping '{none}' has no checkpoint (checkpoint strategy NONE)" in result.err

    for argv, fragment in (
        (["--reason", "x"], "--reason goes with --set or --reset"),
        (["--limit", "3"], "--limit goes with --history"),
        (["--set", "1", "--reset"], "not allowed with argument"),
    ):
        result = _checkpoint(capsys, path, key, *argv)
        assert result.code == 2 and fragment in result.err, (argv, result)
    unknown = _checkpoint(capsys, path, "nope")
    assert unknown.code == 2 and "unknown mapping 'nope'" in unknown.err
    assert (
        _history(capsys, path, key) == []
        and store.get_checkpoint(get_engine(base_config["metadata"]), key) is None
    )
