"""Structured worker and beat logs, hooked into Celery's logging signals.

- ``after_setup_logger`` / ``after_setup_task_logger``: every handler Celery sets up gets the
  run-context filter and chordload's one-line formatter (``CHORDLOAD_LOG_JSON=1``: JSON).
- ``task_prerun`` / ``task_postrun``: the run context (run_id, mapref, chunk_no) is bound for
  the whole execution of a chordload task, including Celery's own "succeeded"/"failed" lines.
- The worker's main process logs "received" before any task code runs; the filter takes the
  run from the task id there and asks :func:`_lookup_mapref` once per run.

Imported by ``workers/app.py``; nothing here changes what tasks do.
"""
from __future__ import annotations

import logging
import os
import threading
from typing import Any

from celery import signals

from shared import logging_context
from shared.logging_context import parse_task_id

_tokens: dict[str, Any] = {}
_engines: dict[tuple[int, str], Any] = {}
_engines_lock = threading.Lock()

LOAD_CHUNK = "chordload.load_chunk"
FINALIZE_RUN = "chordload.finalize_run"


@signals.after_setup_logger.connect
def _install_on_root(logger: logging.Logger, **_: Any) -> None:
    logging_context.install(logger)


@signals.after_setup_task_logger.connect
def _install_on_task_logger(logger: logging.Logger, **_: Any) -> None:
    logging_context.install(logger)


def run_fields(task_name: str, task_id: str | None, args: Any, kwargs: Any) -> dict[str, Any]:
    """run_id / chunk_no of a task invocation, or {} when it belongs to no run."""
    args = list(args or ())
    kwargs = dict(kwargs or {})
    run_id, chunk_no = kwargs.get("run_id"), kwargs.get("chunk_no")
    if task_name == LOAD_CHUNK and len(args) >= 2:
        run_id, chunk_no = args[0], args[1]
    elif task_name == FINALIZE_RUN and args:
        run_id = args[0]
    if run_id is None:
        parsed = parse_task_id(task_id)
        if parsed is None:
            return {}
        run_id, chunk_no = parsed
    return {"run_id": run_id, "chunk_no": chunk_no}


@signals.task_prerun.connect
def _bind_run(task_id: str | None = None, task: Any = None, args: Any = None,
              kwargs: Any = None, **_: Any) -> None:
    if task is None or not str(task.name).startswith("chordload."):
        return
    fields = run_fields(task.name, task_id, args, kwargs)
    if fields:
        fields["mapref"] = logging_context.mapref_for(str(fields["run_id"])) \
            or logging_context.UNKNOWN
        _tokens[task_id] = logging_context.set_run_context(**fields)


@signals.task_postrun.connect
def _unbind_run(task_id: str | None = None, **_: Any) -> None:
    token = _tokens.pop(task_id, None)
    if token is not None:
        try:
            logging_context.reset_run_context(token)
        except ValueError:  # a token from another context (should not happen); just drop it
            pass


def _lookup_engine(url: str):  # noqa: ANN202
    """A one-connection engine with a short connect timeout: a log line must not hang on a
    database that is down (the load's own engines have their own settings)."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    key = (os.getpid(), url)
    with _engines_lock:
        engine = _engines.get(key)
        if engine is None:
            backend = make_url(url).get_backend_name()
            connect_args = {"connect_timeout": 3} if backend in {"postgresql", "mysql"} else {}
            engine = _engines[key] = create_engine(url, pool_size=1, max_overflow=0,
                                                   pool_pre_ping=True, pool_timeout=3,
                                                   connect_args=connect_args)
    return engine


def _lookup_mapref(run_id: str) -> str | None:
    from sqlalchemy import select

    from shared.metadata.models import ProcessLog
    from shared.config.settings import current_settings

    with _lookup_engine(current_settings().metadata).connect() as conn:
        return conn.execute(select(ProcessLog.mapref).where(
            ProcessLog.run_id == run_id)).scalar_one_or_none()


def _after_fork_in_child() -> None:
    for engine in _engines.values():
        engine.dispose(close=False)
    _engines.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)
logging_context.set_mapref_resolver(_lookup_mapref)

