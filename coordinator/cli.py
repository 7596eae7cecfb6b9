"""The ``chordload`` command line.

Exit codes: 0 SUCCESS, 1 FAILED, 2 bad input or config, 3 STOPPED, 4 refused.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

from shared.errors import ChordloadError
from shared.settings import Settings, load_settings, use_settings

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_STOPPED, EXIT_REFUSED = 0, 1, 2, 3, 4


def _settings(args: argparse.Namespace) -> Settings:
    settings = load_settings(getattr(args, "config", None))
    use_settings(settings)
    return settings


def _console(args: argparse.Namespace) -> Console:
    return Console(stderr=bool(getattr(args, "json", False)))


def cmd_run(args: argparse.Namespace) -> int:
    from coordinator.api import launch

    settings = _settings(args)
    from workers.app import app, configure

    configure(app, settings)
    run_id = launch(args.mapref, settings=settings, chunks_override=args.chunks)
    return _report(args, settings, run_id)


def _report(args: argparse.Namespace, settings: Settings, run_id: str) -> int:
    from coordinator.api import snapshot, wait
    from coordinator.progress import ProgressDisplay, print_json, print_summary, run_summary

    console = _console(args)
    if not args.wait:
        if args.json:
            print_json(run_summary(snapshot(settings, run_id).run))
        else:
            print(run_id)
        return EXIT_OK
    console.print(f"run {run_id} started", highlight=False)
    with ProgressDisplay(console) as display:
        run = wait(run_id, settings=settings, timeout_s=args.timeout_s, on_progress=display)
    if args.json:
        print_json(run_summary(run))
    else:
        print_summary(run, console)
    return run.status.exit_code


def cmd_status(args: argparse.Namespace) -> int:
    from coordinator.progress import print_json, print_summary, run_summary
    from shared.db import get_engine
    from shared.errors import NotFoundError
    from shared.metadata import store

    settings = _settings(args)
    metadata = get_engine(settings.metadata)
    console = Console()
    if args.target is None:
        runs = store.recent_runs(metadata, args.limit)
        if args.json:
            print_json([run_summary(r) for r in runs])
            return EXIT_OK
        table = Table("run_id", "mapref", "status", "started", "duration_s", "rows read",
                      "checkpoint")
        for r in runs:
            s = run_summary(r)
            table.add_row(r.run_id, r.mapref, r.status.value, (s["started_at"] or "-")[:19],
                          f"{s['duration_s']:.1f}" if s["duration_s"] is not None else "-",
                          f"{r.rows_read:,}", str(s["checkpoint_to"] or s["checkpoint_from"] or "-"))
        console.print(table)
        return EXIT_OK
    run = store.find_run(metadata, args.target)
    if run is None and args.target in settings.mappings:
        run = store.latest_run(metadata, args.target)
        if run is None:
            raise NotFoundError(f"mapping '{args.target}' has no runs yet")
    if run is None:
        raise NotFoundError(f"'{args.target}' is neither a run id nor a mapping in the config")
    chunks = store.get_chunks(metadata, run.run_id)
    if args.json:
        summary = run_summary(run)
        summary["chunk_list"] = [
            {"chunk_no": c.chunk_no, "status": c.status.value, "rows_read": c.rows_read,
             "rows_inserted": c.rows_inserted, "rows_changed": c.rows_changed,
             "rows_unchanged": c.rows_unchanged, "attempts": c.attempts, "worker": c.worker,
             "message": c.message} for c in chunks]
        print_json(summary)
        return EXIT_OK
    print_summary(run, console)
    table = Table("chunk", "status", "lower (excl)", "upper (incl)", "rows read", "inserted",
                  "changed", "unchanged", "attempts", "worker", "message")
    for c in chunks:
        table.add_row(str(c.chunk_no), c.status.value,
                      str(c.lower_bound["value"]) if c.lower_bound else "-",
                      str(c.upper_bound["value"]) if c.upper_bound else "-",
                      f"{c.rows_read:,}", f"{c.rows_inserted:,}", f"{c.rows_changed:,}",
                      f"{c.rows_unchanged:,}", str(c.attempts), c.worker or "-", c.message or "")
    console.print(table)
    return EXIT_OK


def cmd_validate(args: argparse.Namespace) -> int:
    from coordinator.api import validate_mapping

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


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from shared.db import get_engine, mask_url
    from shared.metadata.schema import upgrade

    settings = _settings(args)
    revision = upgrade(get_engine(settings.metadata))
    print(f"metadata database {mask_url(settings.metadata)} is at revision {revision}")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from coordinator.demo import run_demo

    return run_demo(rows=args.rows, workdir=args.dir, chunks=args.chunks)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default=argparse.SUPPRESS, metavar="PATH",
                        help="config file (default: $CHORDLOAD_CONFIG, else ./chordload.yaml)")
    parser = argparse.ArgumentParser(
        prog="chordload", parents=[common],
        description="Parallel, checkpointed SCD loads as one Celery chord per run.",
        epilog="exit codes: 0 success, 1 failed, 2 bad input/config, 3 stopped, 4 refused")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", parents=[common], help="plan and launch a run of a mapping")
    p.add_argument("mapref")
    p.add_argument("--wait", action="store_true", help="show progress and wait for the end")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--chunks", type=int, default=None, metavar="N",
                   help="override the planned chunk count")
    p.add_argument("--timeout-s", type=float, default=None, help="give up waiting after this")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("status", parents=[common], help="recent runs, or one run and its chunks")
    p.add_argument("target", nargs="?", metavar="RUN_ID|MAPREF")
    p.add_argument("--json", action="store_true")
    p.add_argument("--limit", type=int, default=20, help="how many recent runs to list")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("validate", parents=[common],
                       help="check the config and each mapping against its source")
    p.add_argument("mapref", nargs="?")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("db", parents=[common], help="metadata database")
    dbsub = p.add_subparsers(dest="db_command", required=True)
    up = dbsub.add_parser("upgrade", parents=[common], help="create/migrate the metadata tables")
    up.set_defaults(func=cmd_db_upgrade)

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
    except KeyboardInterrupt:
        print("interrupted; the run (if any) goes on: see `chordload status`", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
