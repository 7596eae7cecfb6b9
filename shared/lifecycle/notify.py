"""Telling a webhook that a run ended badly, or recovered.

Sent when a run ends FAILED or STOPPED, and on the first SUCCESS after a run of the mapping
that did not succeed ("recovered"), by whoever ended the run (finalize, stop, reconcile,
the planner), after the status was committed. The webhook is the mapping's ``notify``
(stored with the run's plan, like its query), else the top-level one of the config of the
process that ends the run. The JSON body has ``text`` (what Slack shows) and the run's
fields for other receivers. Delivery is retried with backoff; a receiver that stays down is
logged, never the run's problem.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select

from shared.config.mapping import NotifySpec
from shared.config.settings import Settings
from shared.engines import get_engine
from shared.metadata.models import ProcessLog
from shared.metadata.store import session
from shared.run.statuses import RunStatus
from shared.timeutil import as_utc

log = logging.getLogger("chordload.notify")


def _where(url: str) -> str:
    """Scheme and host only: a webhook's path often is its secret (Slack's is)."""
    parts = urlsplit(url)
    return (
        f"{parts.scheme}://{parts.hostname or '?'}{':' + str(parts.port) if parts.port else ''}/…"
    )


def webhook_for(settings: Settings, run: ProcessLog) -> NotifySpec | None:
    """The mapping's webhook as the run was planned with it (its stored plan; a run that
    ended while planning has none yet: the config's mapping), else the top-level one of
    the config of the process ending the run."""
    stored = (run.mapping or {}).get("spec", {}).get("notify")
    if stored is not None:
        return NotifySpec.model_validate(stored)
    mapping = settings.mappings.get(run.mapref)
    if mapping is not None and mapping.notify is not None:
        return mapping.notify
    return settings.notify


def _previous_outcome(settings: Settings, run: ProcessLog) -> RunStatus | None:
    """The status of the mapping's last run that ended before this one."""
    with session(get_engine(settings.metadata)) as s:
        previous = s.scalars(
            select(ProcessLog)
            .where(
                ProcessLog.mapref == run.mapref,
                ProcessLog.run_id != run.run_id,
                ProcessLog.status.in_(
                    [RunStatus.SUCCESS.value, RunStatus.FAILED.value, RunStatus.STOPPED.value]
                ),
                ProcessLog.created_at < run.created_at,
            )
            .order_by(ProcessLog.created_at.desc())
            .limit(1)
        ).first()
    return previous.status if previous is not None else None


def event_of(settings: Settings, run: ProcessLog) -> str | None:
    """'failed', 'stopped', 'recovered' or None (a SUCCESS after a SUCCESS: no news)."""
    if run.status is RunStatus.FAILED:
        return "failed"
    if run.status is RunStatus.STOPPED:
        return "stopped"
    if run.status is RunStatus.SUCCESS and _previous_outcome(settings, run) in (
        RunStatus.FAILED,
        RunStatus.STOPPED,
    ):
        return "recovered"
    return None


def body(run: ProcessLog, event: str) -> dict[str, Any]:
    started, ended = as_utc(run.started_at or run.created_at), as_utc(run.ended_at)
    duration_s = round((ended - started).total_seconds(), 3) if started and ended else None
    headline = {
        "failed": f"chordload: run {run.run_id} of {run.mapref} FAILED",
        "stopped": f"chordload: run {run.run_id} of {run.mapref} was STOPPED",
        "recovered": f"chordload: {run.mapref} recovered: run {run.run_id} SUCCESS",
    }[event]
    text = headline + (f": {run.message}" if run.message and event != "recovered" else "")
    text += f" (details: chordload status {run.run_id})"
    return {
        "text": text,
        "event": event,
        "run_id": run.run_id,
        "mapref": run.mapref,
        "status": run.status.value,
        "load_kind": run.load_kind,
        "message": run.message,
        "rows_read": run.rows_read,
        "rows_inserted": run.rows_inserted,
        "rows_changed": run.rows_changed,
        "rows_errored": run.rows_errored,
        "chunks_total": run.chunks_total,
        "chunks_failed": run.chunks_failed,
        "started_at": started.isoformat() if started else None,
        "ended_at": ended.isoformat() if ended else None,
        "duration_s": duration_s,
    }


def post(spec: NotifySpec, payload: dict[str, Any]) -> bool:
    """POST ``payload`` as JSON, ``spec.attempts`` times at most, backing off; True once a
    receiver answered 2xx."""
    data = json.dumps(payload, default=str).encode()
    delay = spec.backoff_s
    for attempt in range(1, spec.attempts + 1):
        request = urllib.request.Request(
            spec.webhook_url,
            data=data,
            headers={"Content-Type": "application/json", "User-Agent": "chordload"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=spec.timeout_s) as response:
                if 200 <= response.status < 300:
                    return True
                problem = f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            problem = f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            problem = str(getattr(exc, "reason", exc))
        log.warning(
            "notify: webhook %s, attempt %s/%s for run %s failed: %s",
            _where(spec.webhook_url),
            attempt,
            spec.attempts,
            payload.get("run_id"),
            problem,
        )
        if attempt < spec.attempts:
            time.sleep(delay)
            delay *= 2
    return False


def notify_run_end(settings: Settings, run_id: str) -> None:
    """Tell the mapping's webhook how run ``run_id`` ended, if that is news; never raises."""
    try:
        with session(get_engine(settings.metadata)) as s:
            run = s.get(ProcessLog, run_id)
        if run is None or not run.status.is_terminal:
            return
        spec = webhook_for(settings, run)
        if spec is None:
            return
        event = event_of(settings, run)
        if event is not None:
            post(spec, body(run, event))
    except Exception:
        log.exception("notify: run %s: could not send the notification", run_id)
