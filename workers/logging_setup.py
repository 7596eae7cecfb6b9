"""Structured worker and beat logs, hooked into Celery's logging signals.

- ``after_setup_logger`` / ``after_setup_task_logger``: every handler Celery sets up gets the
  run-context filter and chordload's one-line formatter (``CHORDLOAD_LOG_JSON=1``: JSON).
- ``task_prerun`` / ``task_postrun``: the run context (run_id, mapref, chunk_no) is bound for
  the whole execution of a chordload task, including Celery's own "succeeded"/"failed" lines.
- The worker's main process logs "received" before any task code runs; the filter takes the
  run from the task id there and asks the metadata database (``use_metadata``) once per run.

Imported by ``workers/celery_app.py``; nothing here changes what tasks do.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

from celery import signals

from shared import logging_context
from shared.broker import FINALIZE_RUN, LOAD_CHUNK
from shared.engines import get_engine
from shared.run.task_ids import parse_task_id

_tokens: dict[str | None, Any] = {}  # by task id (the signals type it Optional)


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
def _bind_run(
    task_id: str | None = None, task: Any = None, args: Any = None, kwargs: Any = None, **_: Any
) -> None:
    if task is None or not str(task.name).startswith("chordload."):
        return
    fields = run_fields(task.name, task_id, args, kwargs)
    if fields:
        fields["mapref"] = (
            logging_context.mapref_for(str(fields["run_id"])) or logging_context.UNKNOWN
        )
        _tokens[task_id] = logging_context.set_run_context(**fields)


@signals.task_postrun.connect
def _unbind_run(task_id: str | None = None, **_: Any) -> None:
    token = _tokens.pop(task_id, None)
    if token is not None:
        try:
            logging_context.reset_run_context(token)
        except ValueError:  # a token from another context (should not happen); just drop it
            pass


def _lookup_mapref(metadata_url: str, run_id: str) -> str | None:
    from sqlalchemy import select

    from shared.metadata.models import ProcessLog

    # a log line must not hang on a database that is down: the quick engine gives up fast
    with get_engine(metadata_url, quick=True).connect() as conn:
        return conn.execute(
            select(ProcessLog.mapref).where(ProcessLog.run_id == run_id)
        ).scalar_one_or_none()


def use_metadata(metadata_url: str) -> None:
    """Name runs' mappings in log lines from this metadata database."""
    logging_context.set_mapref_resolver(partial(_lookup_mapref, metadata_url))
