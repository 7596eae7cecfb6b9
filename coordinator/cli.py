"""The ``chordload`` command line.

Exit codes: 0 SUCCESS, 1 FAILED, 2 bad input or config, 3 STOPPED, 4 refused.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine

from shared.config.settings import Settings, load_settings
from shared.errors import ChordloadError, ConfigError

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_STOPPED, EXIT_REFUSED = 0, 1, 2, 3, 4


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


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return number


def _table(*headers: str) -> Table:
    """A table that never truncates a value with '…' on a narrow or piped console: run ids
    stay whole (they are copied into other commands), long values fold onto more lines."""
    table = Table()
    for header in headers:
        if header in ("run_id", "status", "chunk"):
            table.add_column(header, no_wrap=True, min_width=12 if header == "run_id" else None)
        else:
            table.add_column(header, overflow="fold")
    return table


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
    return _report(args, settings, args.run_id)


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


def _report(args: argparse.Namespace, settings: Settings, run_id: str) -> int:
    from coordinator.progress import ProgressDisplay, print_json, print_summary, run_summary
    from coordinator.watch import snapshot, wait

    console = _console(args)
    if not args.wait:
        if args.json:
            print_json(run_summary(snapshot(settings, run_id).run))
        else:
            print(run_id)
        return EXIT_OK
    console.print(f"run {run_id} started", highlight=False)
    with ProgressDisplay(console, settings.progress_interval_s) as display:
        run = wait(run_id, settings=settings, timeout_s=args.timeout_s, on_progress=display)
    if args.json:
        print_json(run_summary(run))
    else:
        print_summary(run, console)
    return run.status.exit_code


def cmd_status(args: argparse.Namespace) -> int:
    from coordinator.progress import print_json, print_summary, run_summary
    from shared.errors import NotFoundError
    from shared.metadata import store
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
        table = _table(
            "run_id", "mapref", "status", "started", "duration_s", "rows read", "checkpoint"
        )
        for r in runs:
            s = run_summary(r)
            table.add_row(
                r.run_id,
                r.mapref,
                r.status.value,
                (s["started_at"] or "-")[:19],
                f"{s['duration_s']:.1f}" if s["duration_s"] is not None else "-",
                f"{r.rows_read:,}",
                str(s["checkpoint_to"] or s["checkpoint_from"] or "-"),
            )
        console.print(table)
        return EXIT_OK
    run = store.find_run(metadata, args.target)
    if run is None and args.target in settings.mappings:
        run = store.latest_run(metadata, args.target)
        if run is None:
            raise NotFoundError(f"mapping '{args.target}' has no runs yet")
    if run is None:
        raise NotFoundError(f"'{args.target}' is neither a run id nor a mapping in the config")
    run = store.with_live_totals(metadata, run)
    chunks = store.get_chunks(metadata, run.run_id)
    if args.json:
        summary = run_summary(run)
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
    print_summary(run, console)
    table = _table(
        "chunk",
        "status",
        "lower (excl)",
        "upper (incl)",
        "rows read",
        "inserted",
        "changed",
        "unchanged",
        "duplicate",
        "attempts",
        "worker",
        "message",
    )
    for c in chunks:
        table.add_row(
            str(c.chunk_no),
            c.status.value,
            display_value(c.lower_bound),
            display_value(c.upper_bound),
            f"{c.rows_read:,}",
            f"{c.rows_inserted:,}",
            f"{c.rows_changed:,}",
            f"{c.rows_unchanged:,}",
            f"{c.rows_duplicate:,}",
            str(c.attempts),
            c.worker or "-",
            c.message or "",
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
    table = _table("chunk", "lower (excl)", "upper (incl)", "rows")
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
    else:
        console.print(f"target {spec.target.table} exists and fits the load", highlight=False)
    return EXIT_OK


def cmd_validate(args: argparse.Namespace) -> int:
    from coordinator.plan import validate_mapping

    settings = _settings(args)
    names = [args.mapref] if args.mapref else list(settings.mappings)
    if args.mapref:
        settings.mapping(args.mapref)
    bad = 0
    for mapref in names:
        try:
            columns = validate_mapping(settings, mapref)
        except ChordloadError as err:
            bad += 1
            print(f"{mapref}: INVALID: {err}", file=sys.stderr)
        else:
            print(f"{mapref}: ok ({len(columns)} columns: {', '.join(columns)})")
    if not names:
        print("config is valid; it defines no mappings")
    return EXIT_BAD_INPUT if bad else EXIT_OK


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


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from shared.engines import get_engine, mask_url
    from shared.metadata.schema import upgrade

    settings = _settings(args)
    revision = upgrade(get_engine(settings.metadata))
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
        epilog="exit codes: 0 success, 1 failed, 2 bad input/config, 3 stopped, 4 refused",
    )
    parser.add_argument("--version", action="version", version=f"chordload {chordload_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", parents=[common], help="plan and launch a run of a mapping")
    p.add_argument("mapref")
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
    p.add_argument("--timeout-s", type=float, default=None, help="give up waiting after this")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "stop", parents=[common], help="stop a run (RUN_ID, or MAPREF for its active run)"
    )
    p.add_argument("target", metavar="RUN_ID|MAPREF")
    p.add_argument("--reason", default=None)
    p.set_defaults(func=cmd_stop)

    p = sub.add_parser("watch", parents=[common], help="live progress of a run until it ends")
    p.add_argument("run_id")
    p.add_argument("--json", action="store_true", help="print the final summary as JSON")
    p.add_argument("--timeout-s", type=float, default=None, help="give up waiting after this")
    p.set_defaults(func=cmd_watch)

    p = sub.add_parser(
        "resume",
        parents=[common],
        help="re-launch the unfinished chunks of a FAILED or STOPPED run",
    )
    p.add_argument("run_id")
    p.add_argument("--wait", action="store_true", help="show progress and wait for the end")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--timeout-s", type=float, default=None, help="give up waiting after this")
    p.set_defaults(func=cmd_resume)

    p = sub.add_parser("errors", parents=[common], help="the rows a run could not load")
    p.add_argument("run_id")
    p.add_argument("--json", action="store_true")
    p.add_argument("--limit", type=int, default=None, help="show at most this many")
    p.set_defaults(func=cmd_errors)

    p = sub.add_parser(
        "checkpoint",
        parents=[common],
        help="show, set or reset a mapping's stored checkpoint, or list its changes",
        description="Show the stored checkpoint of MAPREF (value and type, who set it, when); "
        "--set or --reset change it (refused while a run of the mapping is QUEUED or "
        "RUNNING) and record who, when, old -> new and --reason; --history lists the changes.",
    )
    p.add_argument("mapref")
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
        "--limit", type=_positive_int, default=None, help="--history: show at most this many"
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_checkpoint)

    p = sub.add_parser(
        "reconcile",
        parents=[common],
        help="finalize or fail runs whose chord was lost (beat runs this)",
    )
    p.set_defaults(func=cmd_reconcile)

    p = sub.add_parser("status", parents=[common], help="recent runs, or one run and its chunks")
    p.add_argument("target", nargs="?", metavar="RUN_ID|MAPREF")
    p.add_argument("--json", action="store_true")
    p.add_argument("--limit", type=int, default=20, help="how many recent runs to list")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser(
        "schedule",
        parents=[common],
        help="mappings with their cron schedule, next due time and last run",
    )
    p.add_argument("--json", action="store_true")
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
        "validate", parents=[common], help="check the config and each mapping against its source"
    )
    p.add_argument("mapref", nargs="?")
    p.set_defaults(func=cmd_validate)

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
    p.add_argument("--rows", type=int, default=200_000)
    p.add_argument("--chunks", type=int, default=8)
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
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("interrupted; the run (if any) goes on: see `chordload status`", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
