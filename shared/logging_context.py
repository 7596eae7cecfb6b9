"""Run context on log lines: every line of a run carries ``run_id``, ``mapref`` and ``chunk_no``.

A context variable holds the fields of the run being worked on; :class:`RunContextFilter`
copies them onto every ``LogRecord`` (``-`` when a line belongs to no run). Workers bind the
context at the start of each task (``workers/logging_setup.py``, Celery's ``task_prerun``);
other code binds it with :func:`bind_run_context`::

    with bind_run_context(run_id=run.run_id, mapref=run.mapref):
        log.info("finalized")

Celery's own lines about a task ("Task ... received", logged by the worker's main process
before any task code runs) carry the task id in their arguments; chordload's task ids are
deterministic (``<run_id>.<chunk_no>[.r<launch>][.finalize]``), so the filter takes run_id and
chunk_no from the id and looks the mapref up once per run through a resolver the worker
installs (:func:`set_mapref_resolver`).

Output is one line per event: ``key=value`` text with newlines escaped, or one JSON object per
line when ``CHORDLOAD_LOG_JSON=1``.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from shared.run.task_ids import parse_task_id

FIELDS = ("run_id", "mapref", "chunk_no")
NONE = "-"
UNKNOWN = "?"
TEXT_FORMAT = (
    "[%(asctime)s: %(levelname)s/%(processName)s] %(name)s run_id=%(run_id)s "
    "mapref=%(mapref)s chunk_no=%(chunk_no)s: %(message)s"
)

_context: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar(
    "chordload_run_context",
    default={},  # noqa: B039 - never mutated: set_run_context sets a new dict
)


def current_run_context() -> dict[str, Any]:
    return dict(_context.get())


def set_run_context(**fields: Any) -> contextvars.Token:
    """Add fields to the current context (None values are ignored); undo with the token.
    Binding another run_id drops the previous run's mapref and chunk_no unless given."""
    previous = _context.get()
    given = {k: v for k, v in fields.items() if v is not None}
    if "run_id" in given and given["run_id"] != previous.get("run_id"):
        previous = {}
    return _context.set({**previous, **given})


def reset_run_context(token: contextvars.Token) -> None:
    _context.reset(token)


@contextmanager
def bind_run_context(**fields: Any) -> Iterator[None]:
    token = set_run_context(**fields)
    try:
        yield
    finally:
        _context.reset(token)


# -- mapref lookup (once per run per process) ----------------------------------------------

_MAX_CACHED = 2048
_RETRY_AFTER_S = 30.0
_maprefs: OrderedDict[str, str] = OrderedDict()
_failed_at: dict[str, float] = {}
_lock = threading.Lock()
_resolver: Callable[[str], str | None] | None = None


def set_mapref_resolver(resolver: Callable[[str], str | None] | None) -> None:
    global _resolver
    _resolver = resolver


def remember_mapref(run_id: str, mapref: str) -> None:
    with _lock:
        _maprefs[run_id] = mapref
        _maprefs.move_to_end(run_id)
        while len(_maprefs) > _MAX_CACHED:
            _maprefs.popitem(last=False)


def mapref_for(run_id: str) -> str | None:
    """The mapref of a run: cached, else asked of the resolver (failures retried after 30 s)."""
    with _lock:
        cached = _maprefs.get(run_id)
        failed = _failed_at.get(run_id)
    if cached is not None:
        return cached
    if _resolver is None or (failed is not None and time.monotonic() - failed < _RETRY_AFTER_S):
        return None
    try:
        mapref = _resolver(run_id)
    except Exception:  # noqa: BLE001 - logging must never fail because the database did
        mapref = None
    if mapref is None:
        with _lock:
            _failed_at[run_id] = time.monotonic()
            if len(_failed_at) > _MAX_CACHED:
                _failed_at.clear()
        return None
    remember_mapref(run_id, mapref)
    return mapref


# -- filter and formatters -----------------------------------------------------------------


def _task_id_of(record: logging.LogRecord) -> str | None:
    for candidate in (record.args, getattr(record, "data", None)):
        if isinstance(candidate, Mapping):
            task_id = candidate.get("id")
            if isinstance(task_id, str):
                return task_id
    return None


class RunContextFilter(logging.Filter):
    """Sets ``record.run_id``, ``record.mapref`` and ``record.chunk_no`` on every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        ctx = _context.get()
        run_id, mapref, chunk_no = ctx.get("run_id"), ctx.get("mapref"), ctx.get("chunk_no")
        if run_id is None:
            parsed = parse_task_id(_task_id_of(record))
            if parsed is not None:
                run_id, chunk_no = parsed
                mapref = mapref_for(run_id) or UNKNOWN
        elif mapref is None and run_id != NONE:
            mapref = mapref_for(run_id) or UNKNOWN
        record.run_id = NONE if run_id is None else str(run_id)
        record.mapref = NONE if mapref is None else str(mapref)
        record.chunk_no = NONE if chunk_no is None else str(chunk_no)
        return True


def _one_line(text: str) -> str:
    return text.replace("\r", "\\r").replace("\n", "\\n")


class OneLineFormatter(logging.Formatter):
    """``key=value`` text, one line per event: newlines (tracebacks too) are escaped."""

    def __init__(self, fmt: str = TEXT_FORMAT) -> None:
        super().__init__(fmt, defaults=dict.fromkeys(FIELDS, NONE))

    def format(self, record: logging.LogRecord) -> str:
        return _one_line(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, process, pid, run_id, mapref, chunk_no,
    task_id, task_name, message and (if any) exc."""

    def format(self, record: logging.LogRecord) -> str:
        task_id = task_name = None
        args = record.args if isinstance(record.args, Mapping) else None
        if args is not None and isinstance(args.get("id"), str):
            task_id, task_name = args.get("id"), args.get("name")
        else:
            task_id, task_name = _current_task()
        doc: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "process": record.processName,
            "pid": record.process,
            "run_id": getattr(record, "run_id", NONE),
            "mapref": getattr(record, "mapref", NONE),
            "chunk_no": getattr(record, "chunk_no", NONE),
            "task_id": task_id,
            "task_name": task_name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            doc["exc"] = record.exc_text
        return json.dumps(doc, default=str, ensure_ascii=False)


def _current_task() -> tuple[str | None, str | None]:
    try:
        from celery._state import get_current_task
    except ImportError:  # pragma: no cover - celery is a dependency
        return None, None
    task = get_current_task()
    if task is None or task.request is None:
        return None, None
    return task.request.id, task.name


_json_lines = False


def use_json_lines(enabled: bool) -> None:
    """JSON log lines instead of text (the config's ``log_json``, ``CHORDLOAD_LOG_JSON``)."""
    global _json_lines
    _json_lines = enabled


def json_enabled() -> bool:
    return _json_lines


def make_formatter(json_lines: bool | None = None) -> logging.Formatter:
    return (
        JsonFormatter()
        if (json_enabled() if json_lines is None else json_lines)
        else OneLineFormatter()
    )


def install(logger: logging.Logger, json_lines: bool | None = None) -> None:
    """Give every handler of ``logger`` the run-context filter and chordload's formatter.
    Idempotent (Celery may set logging up more than once in a process)."""
    formatter = make_formatter(json_lines)
    for handler in logger.handlers:
        if not any(isinstance(f, RunContextFilter) for f in handler.filters):
            handler.addFilter(RunContextFilter())
        handler.setFormatter(formatter)
