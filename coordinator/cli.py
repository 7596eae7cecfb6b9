"""The ``chordload`` command line.

Exit codes: 0 SUCCESS, 1 FAILED, 2 bad input or config, 3 STOPPED, 4 refused, 5 gave up
waiting (``--timeout-s``; the run goes on), 130 interrupted (Ctrl-C; the run goes on).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version

from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine

from shared.config.settings import Settings, load_settings
from shared.errors import ChordloadError, ConfigError

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_STOPPED, EXIT_REFUSED = 0, 1, 2, 3, 4
EXIT_WAIT_TIMEOUT = 5  # --timeout-s passed: this command gave up, the run did not
EXIT_INTERRUPTED = 130


def _settings(args: argparse.Namespace) -> Settings:
    """The settings of this command, loaded once and passed to whatever needs them."""
    return load_settings(getattr(args, "config", None))


def chordload_version() -> str:
    try:
        return version("chordload")
    except PackageNotFoundError:  # running from a checkout that was never installed
        return "unknown (not installed)"


def _metadata(settings: Settings) -> Engine:
    """The metadata engine, checked: reachable (else exit 2 naming it) and migrated (else
    exit 2 telling the user to run `chordload db upgrade`)."""
    from sqlalchemy.exc import DBAPIError

    from shared.engines import get_engine, mask_url
    from shared.errors import SourceUnavailableError, describe_db_error
    from shared.metadata.schema import require_current

    engine = get_engine(settings.metadata)
    try:
        require_current(engine)
    except DBAPIError as exc:
        raise SourceUnavailableError(
            f"cannot reach the metadata database "
            f"{mask_url(settings.metadata)}: {describe_db_error(exc)}"
        ) from None
    return engine


def _seconds(value: str) -> float:
    """A --timeout-s: more than 0 seconds."""
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, got {value}") from None
    if not number > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, got {value}")
    return number


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return number


def _console(args: argparse.Namespace) -> Console:
    return Console(stderr=bool(getattr(args, "json", False)))


def cmd_run(args: argparse.Namespace) -> int:
    from coordinator.launch import launch

    settings = _settings(args)
    _metadata(settings)
    console = _console(args)

    def planning_step(run_id: str, step: str) -> None:
        if args.wait:
            console.print(f"run {run_id} PLANNING: {step}", highlight=False)

    run_id = launch(
        args.mapref,
        settings=settings,
        chunks_override=args.chunks,
        full=args.full,
        window_from=args.window_from,
        window_to=args.window_to,
        on_step=planning_step,
        interruptible=True,
    )
    return _report(args, settings, run_id)


def cmd_resume(args: argparse.Namespace) -> int:
    from coordinator.resume import resume

    settings = _settings(args)
    _metadata(settings)
    run_id = resume(args.run_id, settings=settings)
    return _report(args, settings, run_id)


def cmd_watch(args: argparse.Namespace) -> int:
    from shared.metadata import store

    settings = _settings(args)
    store.get_run(_metadata(settings), args.run_id)
    args.wait = True
    return _report(args, settings, args.run_id, attached=True)


def cmd_stop(args: argparse.Namespace) -> int:
    from coordinator.stop import stop

    settings = _settings(args)
    _metadata(settings)
    outcome = stop(args.target, settings=settings, reason=args.reason)
    again = "" if outcome.new_request else " (it had already been asked to stop)"
    print(
        f"stop requested for run {outcome.run_id}{again}: {len(outcome.revoked_task_ids)} "
        f"pending chunks revoked; run is {outcome.status.value}"
        + (
            ""
            if outcome.status.is_terminal
            else f"; running chunks stop at their next batch (chordload watch {outcome.run_id})"
        )
    )
    return EXIT_OK


def cmd_errors(args: argparse.Namespace) -> int:
    from coordinator.progress import print_json
    from shared.metadata import store

    settings = _settings(args)
    metadata = _metadata(settings)
    run = store.get_run(metadata, args.run_id)
    rows = store.error_rows(metadata, run.run_id, args.limit)
    if args.json:
        print_json(
            [
                {"chunk_no": r.chunk_no, "key": r.row_key, "row": r.row_data, "message": r.message}
                for r in rows
            ]
        )
        return EXIT_OK
    console = Console()
    console.print(
        f"run {run.run_id} ({run.mapref}, {run.status.value}): {run.rows_errored:,} "
        f"error rows" + (f", showing {len(rows)}" if len(rows) < run.rows_errored else ""),
        highlight=False,
    )
    table = Table("chunk", "key", "message", "row")
    for r in rows:
        table.add_row(str(r.chunk_no), str(r.row_key), r.message, str(r.row_data))
    console.print(table)
    return EXIT_OK


def cmd_checkpoint(args: argparse.Namespace) -> int:
    from coordinator import checkpoint
    from coordinator.progress import print_json

    settings = _settings(args)
    _metadata(settings)
    if args.reason is not None and args.set_value is None and not args.reset:
        raise ConfigError("--reason goes with --set or --reset")
    if args.limit is not None and not args.history:
        raise ConfigError("--limit goes with --history")
    if args.history:
        changes = checkpoint.history(settings, args.mapref, args.limit)
        if args.json:
            print_json([c.to_json() for c in changes])
            return EXIT_OK
        print(f"checkpoint changes of {args.mapref}, newest first: {len(changes)}")
        for c in changes:
            print(c.line())
        return EXIT_OK
    if args.set_value is not None or args.reset:
        if args.reset:
            change = checkpoint.reset_checkpoint(settings, args.mapref, reason=args.reason)
        else:
            change = checkpoint.set_checkpoint(
                settings, args.mapref, args.set_value, reason=args.reason
            )
        if change is None:
            message = (
                f"mapping '{args.mapref}' has no stored checkpoint: nothing to reset "
                f"(the next run is an initial load)"
            )
            if args.json:
                print_json({"mapref": args.mapref, "action": "reset", "changed": False})
            else:
                print(message)
            return EXIT_OK
        if args.json:
            print_json({**change.to_json(), "changed": True})
        else:
            print(change.confirmation())
        return EXIT_OK
    stored = checkpoint.show(settings, args.mapref)
    if args.json:
        print_json(stored.to_json())
    else:
        print("\n".join(stored.lines()))
    return EXIT_OK


def cmd_reconcile(args: argparse.Namespace) -> int:
    from shared.lifecycle.reconcile import reconcile

    settings = _settings(args)
    _metadata(settings)
    actions = reconcile(settings)
    for a in actions:
        print(f"{a.run_id} ({a.mapref}): {a.action} -> {a.status}")
    if not actions:
        print("nothing to reconcile")
    return EXIT_OK


def _command(args: argparse.Namespace, *words: str) -> str:
    """A chordload command line to suggest, with this command's ``--config`` if it had one."""
    config = getattr(args, "config", None)
    return "chordload " + " ".join(words) + (f" --config {config}" if config else "")


def _goes_on(args: argparse.Namespace, run_id: str) -> str:
    """The commands that follow or stop a run, each on a line of its own (never broken)."""
    return (
        f"\n  follow it: {_command(args, 'watch', run_id)}"
        f"\n  stop it:   {_command(args, 'stop', run_id)}"
    )


def _pending_task_ids(settings: Settings, run_id: str) -> Callable[[], list[str]]:
    from shared.engines import get_engine
    from shared.metadata import store
    from shared.run.statuses import ChunkStatus

    def read() -> list[str]:
        chunks = store.get_chunks(get_engine(settings.metadata), run_id)
        return [c.task_id for c in chunks if c.status is ChunkStatus.PENDING and c.task_id]

    return read


def _config_path(args: argparse.Namespace) -> str | None:
    """The config path to hand a worker, when this command was given one explicitly."""
    from pathlib import Path

    config = getattr(args, "config", None)
    return str(Path(config).resolve()) if config else None


def _report(
    args: argparse.Namespace, settings: Settings, run_id: str, *, attached: bool = False
) -> int:
    """Print the run id, or (``--wait``, ``watch``) follow the run to its end: live progress,
    worker problems as they appear, the summary. Giving up (``--timeout-s``) and Ctrl-C end
    this command only, and say so with the commands to follow or stop the run."""
    from coordinator.presence import PresenceWatch
    from coordinator.progress import ProgressDisplay, print_json, print_summary, run_summary
    from coordinator.watch import RunSnapshot, snapshot, wait

    console = _console(args)
    if not args.wait:
        if args.json:
            print_json(run_summary(snapshot(settings, run_id).run))
        else:
            print(run_id)
        return EXIT_OK
    first = snapshot(settings, run_id)
    if attached and first.run.status.is_terminal:  # watch of a run that already ended
        if args.json:
            print_json(run_summary(first.run, first.totals))
        else:
            console.print(f"run {run_id} already ended: {first.run.status.value}", highlight=False)
            print_summary(first.run, console, first.totals)
        return first.run.status.exit_code
    if attached:
        console.print(f"watching run {run_id} ({first.run.status.value})", highlight=False)
    else:
        console.print(f"run {run_id} started", highlight=False)
    display = ProgressDisplay(console, settings.progress_interval_s)
    presence = PresenceWatch(
        settings,
        display.note,
        config=_config_path(args),
        pending_task_ids=_pending_task_ids(settings, run_id),
    )
    last: list[RunSnapshot] = [first]

    def on_progress(snap: RunSnapshot) -> None:
        last[0] = snap
        display(snap)
        presence(snap)

    try:
        with display:
            run = wait(run_id, settings=settings, timeout_s=args.timeout_s, on_progress=on_progress)
    except TimeoutError:
        status = last[0].run.status.value
        print(
            f"gave up waiting after --timeout-s {args.timeout_s:g} (exit code "
            f"{EXIT_WAIT_TIMEOUT}): run {run_id} is still {status}; the run goes on"
            f"{_goes_on(args, run_id)}",
            file=sys.stderr,
        )
        return EXIT_WAIT_TIMEOUT
    except KeyboardInterrupt:
        print(
            f"\ninterrupted: run {run_id} continues on the workers{_goes_on(args, run_id)}",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    totals = last[0].totals
    if args.json:
        print_json(run_summary(run, totals))
    else:
        print_summary(run, console, totals)
    return run.status.exit_code


def _short_time(value: datetime | None) -> str:
    """``MM-DD HH:MM`` in UTC: a timestamp that fits a narrow column on one line."""
    from shared.timeutil import as_utc

    stamp = as_utc(value)
    return stamp.strftime("%m-%d %H:%M") if stamp is not None else "-"


def _took(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


RIGHT_ALIGNED = {
    "rows read",
    "took",
    "read",
    "try",
    "inserted",
    "changed",
    "unchanged",
    "duplicate",
}


def _narrow_table(*headers: str) -> Table:
    """A table for 80 columns: no vertical rules, headers never broken (each column is at
    least as wide as its header), run ids and statuses whole, long values folded."""
    from rich import box

    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1, 0, 0))
    for header in headers:
        whole = header in ("run_id", "status", "chunk", "started (UTC)")
        table.add_column(
            header,
            no_wrap=whole,
            overflow="fold",
            min_width=max(len(header), 12 if header == "run_id" else 0),
            justify="right" if header in RIGHT_ALIGNED else "left",
        )
    return table


def _worker_warning(settings: Settings, run_id: str | None = None) -> str | None:
    """What the workers say about the settings' queue (and the run's pending chunks)."""
    from coordinator.presence import diagnose, no_worker_message, start_worker_command, survey

    if run_id is not None:  # ask about the queue the run was sent to
        from shared.engines import get_engine as _engine
        from shared.metadata import store as _store
        from shared.run.plan import on_run_queue

        settings = on_run_queue(settings, _store.get_run(_engine(settings.metadata), run_id))
    try:
        found = survey(settings, tasks=run_id is not None)
    except Exception as exc:  # noqa: BLE001 - status still shows what the metadata says
        return f"cannot ask the workers over the broker: {exc}"
    command = start_worker_command(settings)
    if run_id is None:
        return None if found.consumers else no_worker_message(found, command)
    from shared.engines import get_engine
    from shared.metadata import store
    from shared.run.statuses import ChunkStatus

    chunks = store.get_chunks(get_engine(settings.metadata), run_id)
    pending = [c.task_id for c in chunks if c.status is ChunkStatus.PENDING and c.task_id]
    running = sum(c.status is ChunkStatus.RUNNING for c in chunks)
    return diagnose(found, pending, running, command)


def cmd_status(args: argparse.Namespace) -> int:
    from coordinator.progress import print_json, print_summary, run_summary
    from shared.errors import NotFoundError
    from shared.metadata import store, verifies
    from shared.run.values import display_value

    settings = _settings(args)
    metadata = _metadata(settings)
    console = Console()
    if args.target is None:
        runs = [
            store.with_live_totals(metadata, r) for r in store.recent_runs(metadata, args.limit)
        ]
        if args.json:
            print_json([run_summary(r) for r in runs])
            return EXIT_OK
        # the checkpoint (a timestamp is 19+ characters) only where it fits on one line
        wide = console.width >= 110
        headers = ["run_id", "mapref", "status", "started (UTC)", "took", "rows read"]
        table = _narrow_table(*headers, *(["checkpoint"] if wide else []))
        for r in runs:
            s = run_summary(r)
            cells = [
                r.run_id,
                r.mapref,
                r.status.value,
                _short_time(r.started_at or r.created_at),
                _took(s["duration_s"]),
                f"{r.rows_read:,}",
            ]
            if wide:
                cells.append(display_value(r.checkpoint_to or r.checkpoint_from))
            table.add_row(*cells)
        console.print(table)
        if any(not r.status.is_terminal for r in runs):
            warning = _worker_warning(settings)
            if warning:
                console.print(f"warning: {warning}", highlight=False, markup=False)
        return EXIT_OK
    run = store.find_run(metadata, args.target)
    if run is None and args.target in settings.mappings:
        run = store.latest_run(metadata, args.target)
        if run is None:
            raise NotFoundError(f"mapping '{args.target}' has no runs yet")
    if run is None:
        raise NotFoundError(f"'{args.target}' is neither a run id nor a mapping in the config")
    totals = store.progress_totals(metadata, run.run_id)
    run = store.with_live_totals(metadata, run, totals)
    chunks = store.get_chunks(metadata, run.run_id)
    verification = verifies.run_verification(metadata, run.run_id)  # verify.after_run
    if args.json:
        summary = run_summary(run, totals)
        summary["verified"] = verification[0] if verification else None
        summary["chunk_list"] = [
            {
                "chunk_no": c.chunk_no,
                "status": c.status.value,
                "rows_read": c.rows_read,
                "rows_inserted": c.rows_inserted,
                "rows_changed": c.rows_changed,
                "rows_unchanged": c.rows_unchanged,
                "rows_errored": c.rows_errored,
                "rows_duplicate": c.rows_duplicate,
                "attempts": c.attempts,
                "worker": c.worker,
                "message": c.message,
            }
            for c in chunks
        ]
        print_json(summary)
        return EXIT_OK
    print_summary(run, console, totals)
    if verification:
        mark, verify = verification
        console.print(
            f"verified    {mark} (chordload verify {verify.verify_id} after the run"
            + (f": {verify.message})" if verify.message else ")"),
            highlight=False,
        )
    if not run.status.is_terminal:
        warning = _worker_warning(settings, run.run_id)
        if warning:
            console.print(f"warning: {warning}", highlight=False, markup=False)
    if not args.chunks:
        if chunks:
            console.print(
                f"(the {len(chunks)} chunk{'s' if len(chunks) != 1 else ''} one by one: "
                f"{_command(args, 'status', run.run_id)}"
                " --chunks)",
                highlight=False,
                markup=False,
            )
        return EXIT_OK
    # what each chunk wrote only where it fits: 80 columns keep range, rows read and notes
    counted = console.width >= 130
    counters = ["inserted", "changed", "unchanged", "duplicate"] if counted else []
    table = _narrow_table(
        "chunk", "status", "range (lower, upper]", "read", *counters, "try", "worker/message"
    )
    for c in chunks:
        note = " ".join(part for part in (c.worker, c.message) if part) or "-"
        counts = [
            f"{n:,}" for n in (c.rows_inserted, c.rows_changed, c.rows_unchanged, c.rows_duplicate)
        ]
        table.add_row(
            str(c.chunk_no),
            c.status.value,
            f"{display_value(c.lower_bound)} .. {display_value(c.upper_bound)}",
            f"{c.rows_read:,}",
            *(counts if counted else []),
            str(c.attempts),
            note,
        )
    console.print(table)
    return EXIT_OK


def cmd_plan(args: argparse.Namespace) -> int:
    from coordinator.dry_run import dry_run
    from coordinator.progress import print_json
    from shared.run.values import display_value

    settings = _settings(args)
    _metadata(settings)
    preview = dry_run(
        settings,
        args.mapref,
        full=args.full,
        window_from=args.window_from,
        window_to=args.window_to,
        chunks_override=args.chunks,
    )
    doc = preview.to_json()
    if args.json:
        print_json(doc)
        return EXIT_OK
    console = Console()
    spec = preview.plan.run.spec
    window = doc["window"]
    if window["columns"]:
        span = (
            f"{window['from'] if window['from'] is not None else '(no lower bound)'} <= "
            f"{', '.join(window['columns'])} <= {window['to']}"
        )
        if window["includes_nulls"]:
            span += " (and rows where it is NULL)"
    else:
        span = "every row (no checkpoint)"
    estimate = f"~{doc['estimated_rows']:,} rows (the source's planner)"
    if doc["counted_rows"] is not None:
        estimate += (
            f"; counted {doc['counted_rows']:,} (the count stops past "
            f"min_rows_for_parallel {spec.chunking.min_rows_for_parallel:,})"
        )
    console.print(
        f"dry run of {args.mapref} ({doc['load_kind']}): nothing was written", highlight=False
    )
    console.print(f"window:   {span}", highlight=False)
    console.print(f"estimate: {estimate}", highlight=False)
    console.print(f"plan:     {doc['plan']}", highlight=False)
    table = _narrow_table("chunk", "lower (excl)", "upper (incl)", "rows")
    for c in preview.chunks:
        table.add_row(
            str(c.chunk_no), display_value(c.lower), display_value(c.upper), f"{c.rows:,}"
        )
    console.print(table)
    console.print(f"rows in the window: {doc['rows']:,}", highlight=False)
    if doc["target_ddl"]:
        console.print(f"target {spec.target.table} does not exist; a run creates it with:")
        for statement in doc["target_ddl"]:
            print(f"  {statement};")
        if doc["target_ddl_after_first_run"]:
            console.print("and at the end of its first run (so that run need not keep them):")
            for statement in doc["target_ddl_after_first_run"]:
                print(f"  {statement};")
    else:
        console.print(f"target {spec.target.table} exists and fits the load", highlight=False)
    return EXIT_OK


def cmd_validate(args: argparse.Namespace) -> int:
    """Each mapping (source query and columns, target database and table), then the metadata
    database, the broker and the workers: ok lines on stdout, problems on stderr. Exit 2 when
    anything is INVALID; a queue without a worker is only a WARNING."""
    from coordinator.validate import Verdict, validate

    settings = _settings(args)
    names = [args.mapref] if args.mapref else list(settings.mappings)
    if args.mapref:
        settings.mapping(args.mapref)
    if not names:
        print("config is valid; it defines no mappings")
    checks = validate(settings, names, _config_path(args))
    for check in checks:
        print(check.line(), file=sys.stdout if check.verdict is Verdict.OK else sys.stderr)
    return EXIT_BAD_INPUT if any(c.verdict is Verdict.INVALID for c in checks) else EXIT_OK


def cmd_schedule(args: argparse.Namespace) -> int:
    from coordinator.progress import print_json
    from coordinator.schedule import overview

    settings = _settings(args)
    _metadata(settings)
    rows = overview(settings)
    if args.json:
        print_json([r.to_json() for r in rows])
        return EXIT_OK
    table = Table("mapref", "schedule (UTC)", "enabled", "next due", "last slot", "last run")
    for r in rows:
        slot = r.last_slot
        slot_text = "-" if slot is None else f"{str(slot.scheduled_for)[:16]} {slot.status}"
        if slot is not None and slot.reason:
            slot_text += f": {slot.reason}"
        run_text = (
            "-"
            if r.last_run is None
            else (
                f"{r.last_run.run_id} {r.last_run.status.value} {str(r.last_run.created_at)[:19]}"
            )
        )
        table.add_row(
            r.mapref,
            r.schedule or "-",
            "yes" if r.enabled else "no",
            r.next_due.strftime("%Y-%m-%d %H:%M") if r.next_due else "-",
            slot_text,
            run_text,
        )
    Console().print(table)
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    from coordinator.progress import print_json
    from coordinator.verify import exit_code, print_report, verify

    settings = _settings(args)
    _metadata(settings)
    try:
        report = verify(
            settings,
            args.mapref,
            chunks_override=args.chunks,
            last_window=args.window,
            sample_pct=args.sample,
            timeout_s=args.timeout_s,
            show=args.show,
        )
    except TimeoutError as err:  # the verify goes on; verify_log gets its verdict
        print(
            f"error: {err}; it goes on, its verdict will be in verify_log (exit code 5, as "
            f"for any --timeout-s); if no worker consumes queue '{settings.celery.queue}', "
            f"start one: celery -A workers worker --queues {settings.celery.queue} -n w1@%h",
            file=sys.stderr,
        )
        return EXIT_WAIT_TIMEOUT
    if args.json:
        print_json(report)
    else:
        print_report(report, Console())
    return exit_code(report)


def cmd_ui(args: argparse.Namespace) -> int:
    from coordinator.ui.security import Credentials, refuse_unsafe_start
    from coordinator.ui.serve import serve

    credentials = Credentials.from_env()
    refuse_unsafe_start(credentials, args.host, args.local_only)
    settings = _settings(args)
    _metadata(settings)
    serve(settings, credentials, args.host, args.port)
    return EXIT_OK


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import DBAPIError

    from shared.engines import get_engine, mask_url
    from shared.errors import SourceUnavailableError, describe_db_error
    from shared.metadata.schema import upgrade

    settings = _settings(args)
    try:
        revision = upgrade(get_engine(settings.metadata))
    except DBAPIError as exc:
        raise SourceUnavailableError(
            f"cannot reach the metadata database {mask_url(settings.metadata)}: "
            f"{describe_db_error(exc)}; create the database (or fix `metadata` in the "
            f"config) and run `chordload db upgrade` again"
        ) from None
    print(f"metadata database {mask_url(settings.metadata)} is at revision {revision}")
    return EXIT_OK


def cmd_init(args: argparse.Namespace) -> int:
    from pathlib import Path

    from coordinator.init_config import write_config

    output = Path(args.output)
    mapref = write_config(args.source_url, args.table, output)
    print(
        f"wrote {output}: mapping '{mapref}' for {args.table}. Next: set "
        f"CHORDLOAD_METADATA_URL and CHORDLOAD_TARGET_URL (and CHORDLOAD_SOURCE_PASSWORD if "
        f"the URL had one), then `chordload validate` and `chordload plan {mapref}`"
    )
    return EXIT_OK


def cmd_flower(args: argparse.Namespace) -> int:
    from pathlib import Path

    from coordinator.flower import credentials_or_refuse, exec_flower
    from shared.config.settings import resolve_config_path

    credentials_or_refuse(dict(os.environ))  # before anything else: the fix comes first
    _settings(args)  # Flower's app reads the same config: refuse a missing or bad one here
    path = resolve_config_path(getattr(args, "config", None))
    exec_flower(Path(path) if path.is_file() else None, args.address, args.port)


def cmd_demo(args: argparse.Namespace) -> int:
    from coordinator.demo import run_demo

    return run_demo(rows=args.rows, workdir=args.dir, chunks=args.chunks)


TIMEOUT_HELP = (
    "stop waiting after S seconds: exit code 5, and the run goes on (the message says how "
    "to watch or stop it)"
)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        default=argparse.SUPPRESS,
        metavar="PATH",
        help="config file (default: $CHORDLOAD_CONFIG, else ./chordload.yaml)",
    )
    parser = argparse.ArgumentParser(
        prog="chordload",
        parents=[common],
        description="Parallel, checkpointed SCD loads as one Celery chord per run.",
        epilog="exit codes: 0 success, 1 failed, 2 bad input/config, 3 stopped, 4 refused, "
        "5 gave up waiting (--timeout-s; the run goes on), 130 interrupted (the run goes on)",
    )
    parser.add_argument("--version", action="version", version=f"chordload {chordload_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", parents=[common], help="plan and launch a run of a mapping")
    p.add_argument("mapref", metavar="MAPREF", help="the mapping to load (a name under `mappings`)")
    p.add_argument("--wait", action="store_true", help="show progress and wait for the end")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument(
        "--chunks",
        type=_positive_int,
        default=None,
        metavar="N",
        help="override the planned chunk count",
    )
    p.add_argument(
        "--full",
        action="store_true",
        help="ignore the stored checkpoint: reload everything (the new checkpoint "
        "is still set on success)",
    )
    p.add_argument(
        "--from",
        dest="window_from",
        default=None,
        metavar="X",
        help="backfill the checkpoint window X <= value <= Y (Y: --to, default the "
        "source's current maximum); the stored checkpoint does not move. "
        "Several checkpoint columns: comma-separated values",
    )
    p.add_argument(
        "--to",
        dest="window_to",
        default=None,
        metavar="Y",
        help="upper end of a --from backfill (inclusive)",
    )
    p.add_argument("--timeout-s", type=_seconds, default=None, metavar="S", help=TIMEOUT_HELP)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "stop", parents=[common], help="stop a run (RUN_ID, or MAPREF for its active run)"
    )
    p.add_argument(
        "target", metavar="RUN_ID|MAPREF", help="a run id, or a mapping name for its active run"
    )
    p.add_argument("--reason", default=None, metavar="TEXT", help="why, kept with the stop request")
    p.set_defaults(func=cmd_stop)

    p = sub.add_parser("watch", parents=[common], help="live progress of a run until it ends")
    p.add_argument("run_id", metavar="RUN_ID", help="the run to follow (see `chordload status`)")
    p.add_argument("--json", action="store_true", help="print the final summary as JSON")
    p.add_argument("--timeout-s", type=_seconds, default=None, metavar="S", help=TIMEOUT_HELP)
    p.set_defaults(func=cmd_watch)

    p = sub.add_parser(
        "resume",
        parents=[common],
        help="re-launch the unfinished chunks of a FAILED or STOPPED run",
    )
    p.add_argument("run_id", metavar="RUN_ID", help="a FAILED or STOPPED run")
    p.add_argument("--wait", action="store_true", help="show progress and wait for the end")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--timeout-s", type=_seconds, default=None, metavar="S", help=TIMEOUT_HELP)
    p.set_defaults(func=cmd_resume)

    p = sub.add_parser("errors", parents=[common], help="the rows a run could not load")
    p.add_argument("run_id", metavar="RUN_ID", help="the run whose quarantined rows to list")
    p.add_argument("--json", action="store_true", help="print a JSON list")
    p.add_argument(
        "--limit", type=_positive_int, default=None, metavar="N", help="show at most N rows"
    )
    p.set_defaults(func=cmd_errors)

    p = sub.add_parser(
        "checkpoint",
        parents=[common],
        help="show, set or reset a mapping's stored checkpoint, or list its changes",
        description="Show the stored checkpoint of MAPREF (value and type, who set it, when); "
        "--set or --reset change it (refused while a run of the mapping is QUEUED or "
        "RUNNING) and record who, when, old -> new and --reason; --history lists the changes.",
    )
    p.add_argument("mapref", metavar="MAPREF", help="the mapping whose checkpoint it is")
    action = p.add_mutually_exclusive_group()
    action.add_argument(
        "--set",
        dest="set_value",
        default=None,
        metavar="VALUE",
        help="store VALUE, read as the checkpoint's type (like the stored value, else the "
        "source's current maximum); lower than the stored one is allowed. Several checkpoint "
        "columns: comma-separated values",
    )
    action.add_argument(
        "--reset", action="store_true", help="delete it: the next run is an initial load"
    )
    action.add_argument(
        "--history",
        action="store_true",
        help="the changes, newest first: runs that moved it and changes by hand",
    )
    p.add_argument("--reason", default=None, metavar="TEXT", help="why (with --set or --reset)")
    p.add_argument(
        "--limit",
        type=_positive_int,
        default=None,
        metavar="N",
        help="--history: show at most N changes",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_checkpoint)

    p = sub.add_parser(
        "reconcile",
        parents=[common],
        help="finalize or fail runs whose chord was lost (beat runs this)",
    )
    p.set_defaults(func=cmd_reconcile)

    p = sub.add_parser(
        "status",
        parents=[common],
        help="recent runs, or one run: its chunks counted by status",
        description="Without RUN_ID|MAPREF: the recent runs, newest first. With one: that run "
        "(a mapping name: its latest run), its chunks counted by status and, while it is "
        "active, whether workers consume its queue; --chunks lists the chunks one by one.",
    )
    p.add_argument(
        "target",
        nargs="?",
        metavar="RUN_ID|MAPREF",
        help="a run id, or a mapping name for its latest run",
    )
    p.add_argument(
        "--chunks", action="store_true", help="with RUN_ID|MAPREF: list the chunks one by one"
    )
    p.add_argument("--json", action="store_true", help="print JSON (one run: with its chunk list)")
    p.add_argument(
        "--limit",
        type=_positive_int,
        default=20,
        metavar="N",
        help="how many recent runs to list (default 20)",
    )
    p.set_defaults(func=cmd_status)

    p = sub.add_parser(
        "schedule",
        parents=[common],
        help="mappings with their cron schedule, next due time and last run",
    )
    p.add_argument("--json", action="store_true", help="print a JSON list")
    p.set_defaults(func=cmd_schedule)

    p = sub.add_parser(
        "plan",
        parents=[common],
        help="dry run: show the window, estimate, chunks and target DDL of a run; write nothing",
        description="Plan a run of MAPREF as `run` would and show it: the checkpoint window, "
        "the planner's estimate and the bounded count, each chunk's boundaries and row count, "
        "and the statements that would create the target. Writes nothing: no run, no target "
        "table, no checkpoint change.",
    )
    p.add_argument("mapref", help="the mapping to plan (a name under 'mappings')")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--chunks", type=_positive_int, default=None, metavar="N", help="as for run")
    p.add_argument("--full", action="store_true", help="as for run: ignore the checkpoint")
    p.add_argument("--from", dest="window_from", default=None, metavar="X", help="as for run")
    p.add_argument("--to", dest="window_to", default=None, metavar="Y", help="as for run")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser(
        "validate",
        parents=[common],
        help="check the config, each mapping's databases, the metadata database, the broker "
        "and the workers",
        description="Check each mapping (the source query returns the columns it names, the "
        "target database exists, the target table fits or will be created), the metadata "
        "database (reachable, migrated), the broker, and warn when no worker consumes the "
        "queue. Writes nothing. Exit 2 when anything is INVALID.",
    )
    p.add_argument(
        "mapref", nargs="?", metavar="MAPREF", help="check only this mapping (default: all)"
    )
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser(
        "verify",
        parents=[common],
        help="prove the target's current rows equal the source's (exit 0 equal, 1 different)",
        description="Compare the source query's rows with the target's current rows, key "
        "range by key range on the workers; list the keys missing from the target, the keys "
        "the source does not have and the keys whose values differ (with their columns).",
    )
    p.add_argument("mapref", metavar="MAPREF", help="the mapping whose target to verify")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument(
        "--chunks", type=_positive_int, default=None, metavar="N", help="verify in N key ranges"
    )
    scope = p.add_mutually_exclusive_group()
    scope.add_argument(
        "--window",
        action="store_true",
        help="only the rows of the last successful run's checkpoint window",
    )
    scope.add_argument("--all", action="store_true", help="every key (the default)")
    p.add_argument(
        "--sample",
        type=float,
        default=None,
        metavar="P",
        help="verify a random P%% of the key ranges (for very large tables)",
    )
    p.add_argument(
        "--show",
        type=_positive_int,
        default=10,
        metavar="N",
        help="list the first N keys of each kind",
    )
    p.add_argument("--timeout-s", type=_seconds, default=None, help="give up waiting after this")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser(
        "ui",
        parents=[common],
        help="serve the run dashboard and /metrics (credentials: CHORDLOAD_UI_USER and "
        "CHORDLOAD_UI_PASSWORD, or CHORDLOAD_UI_TOKEN)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=_positive_int, default=8089, help="port (default 8089)")
    p.add_argument(
        "--local-only",
        action="store_true",
        help="serve without credentials, on loopback only",
    )
    p.set_defaults(func=cmd_ui)

    p = sub.add_parser("db", parents=[common], help="metadata database")
    dbsub = p.add_subparsers(dest="db_command", required=True)
    up = dbsub.add_parser("upgrade", parents=[common], help="create/migrate the metadata tables")
    up.set_defaults(func=cmd_db_upgrade)

    p = sub.add_parser(
        "init",
        help="write a commented chordload.yaml for one source table",
        description="Read a source table's columns and primary key and write a commented "
        "chordload.yaml: keys from the primary key, a checkpoint column suggested from a "
        "timestamp column. The URL's password is written as ${CHORDLOAD_SOURCE_PASSWORD}. "
        "An existing file is never overwritten (exit 4).",
    )
    p.add_argument(
        "--source-url",
        required=True,
        metavar="URL",
        help="SQLAlchemy URL of the source database, e.g. postgresql+psycopg2://u:pw@host/db",
    )
    p.add_argument("--table", required=True, metavar="T", help="table or schema.table")
    p.add_argument(
        "--output", default="chordload.yaml", metavar="PATH", help="default ./chordload.yaml"
    )
    p.set_defaults(func=cmd_init)

    p = sub.add_parser(
        "flower",
        parents=[common],
        help="start Flower: credentials required, loopback only by default",
        description="Start Flower (Celery's monitor) for the config's broker with the "
        "configuration shipped in chordload, from any directory. It refuses to start "
        "without FLOWER_BASIC_AUTH=user:password (or FLOWER_AUTH for OAuth) and listens on "
        "127.0.0.1 unless --address says otherwise.",
    )
    p.add_argument(
        "--address",
        default=os.environ.get("FLOWER_ADDRESS") or "127.0.0.1",
        help="listen address (default: $FLOWER_ADDRESS, else 127.0.0.1: this host only)",
    )
    p.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("FLOWER_PORT") or 5555),
        help="listen port (default: $FLOWER_PORT, else 5555)",
    )
    p.set_defaults(func=cmd_flower)

    p = sub.add_parser("demo", help="a real parallel SCD2 load on SQLite, no servers needed")
    p.add_argument(
        "--rows", type=_positive_int, default=200_000, metavar="N", help="source rows to generate"
    )
    p.add_argument(
        "--chunks", type=_positive_int, default=8, metavar="N", help="chunks of the initial load"
    )
    p.add_argument("--dir", default=None, help="where to keep the demo databases")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ChordloadError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except TimeoutError as err:  # --timeout-s passed: the run itself goes on
        print(
            f"error: {err}; it goes on: `chordload watch` or `chordload stop` it", file=sys.stderr
        )
        return EXIT_WAIT_TIMEOUT
    except KeyboardInterrupt:
        print("interrupted; the run (if any) goes on: see `chordload status`", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
