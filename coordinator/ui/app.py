"""The run dashboard: a Starlette application with server-rendered Jinja2 pages (autoescaped:
everything shown from the data, e.g. quarantined rows, is text, never markup) and a little
htmx (vendored in ``static/``, no CDN) that polls a run's live part.

Pages: ``/`` the mappings, ``/runs`` the runs (filter, pages), ``/runs/{id}`` one run (live
progress, chunk timeline, chunks, quarantined rows, Stop/Resume), ``/mappings/{mapref}`` a
mapping's history; ``/metrics`` for Prometheus. Stop and Resume call the same functions as
``chordload stop`` and ``chordload resume``.

Endpoints are plain functions: Starlette runs them in its thread pool, so a slow metadata
query or broker call never blocks the event loop.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from coordinator.progress import RateMeter, clock, compact, progress_line
from coordinator.ui import metrics
from coordinator.ui.security import (
    CSRF_FIELD,
    AuthMiddleware,
    Credentials,
    cross_site_refusal,
    csrf_token,
    set_csrf_cookie,
)
from coordinator.ui.timeline import STATUS_COLOURS, chunk_timeline, history_chart
from shared.config.cron import next_after, parse_cron
from shared.config.settings import Settings
from shared.engines import get_engine
from shared.errors import ChordloadError
from shared.metadata import dashboard, store
from shared.run.statuses import RunStatus
from shared.run.values import display_value
from shared.timeutil import as_utc, utcnow

HERE = Path(__file__).resolve().parent
PAGE_SIZE = 50
QUARANTINE_SHOWN = 100
HISTORY_RUNS = 50


def _ago(value: dt.datetime | None) -> str:
    if value is None:
        return "never"
    return clock((utcnow() - as_utc(value)).total_seconds()) + " ago"


def _when(value: dt.datetime | None) -> str:
    return "-" if value is None else f"{as_utc(value):%Y-%m-%d %H:%M:%S}"


def _took(seconds: float | None) -> str:
    return "-" if seconds is None else clock(seconds)


def _json(value: Any) -> str:
    """A row or key as JSON text, characters as they are (autoescaping makes it safe)."""
    return json.dumps(value, ensure_ascii=False, default=str)


def _templates() -> Environment:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(["html", "svg"], default=True),
    )
    env.filters.update(
        ago=_ago, when=_when, took=_took, json=_json, compact=compact, value=display_value
    )
    env.globals.update(colours=STATUS_COLOURS, csrf_field=CSRF_FIELD)
    return env


class Dashboard:
    """The pages, bound to the settings they were started with."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.engine = get_engine(settings.metadata)
        self.env = _templates()

    def render(self, request: Request, name: str, status_code: int = 200, **ctx: Any) -> Response:
        html = self.env.get_template(name).render(
            request=request, csrf=csrf_token(request), user=request.state.user, **ctx
        )
        return set_csrf_cookie(request, HTMLResponse(html, status_code=status_code))

    # -- pages ---------------------------------------------------------------------------
    def mappings(self, request: Request) -> Response:
        now = utcnow()
        states = dashboard.mapping_states(self.engine, list(self.settings.mappings))
        rows = []
        for mapref, spec in self.settings.mappings.items():
            state = states[mapref]
            since_s = (
                (now - state.last_success_at).total_seconds() if state.last_success_at else None
            )
            stale = spec.freshness_s is not None and (since_s is None or since_s > spec.freshness_s)
            rows.append(
                SimpleNamespace(
                    mapref=mapref,
                    schedule=spec.schedule,
                    enabled=spec.enabled,
                    next_due=next_after(parse_cron(spec.schedule), now) if spec.schedule else None,
                    last_run=state.last_run,
                    last_success_at=state.last_success_at,
                    since_s=since_s,
                    freshness_s=spec.freshness_s,
                    stale=stale,
                    checkpoint=display_value(state.checkpoint) if state.checkpoint else None,
                )
            )
        return self.render(request, "mappings.html", rows=rows, page="mappings")

    def runs(self, request: Request) -> Response:
        mapref = request.query_params.get("mapping") or None
        status_text = request.query_params.get("status") or None
        try:
            status = RunStatus(status_text) if status_text else None
            page = max(int(request.query_params.get("page", "1")), 1)
        except ValueError:
            return self.render(
                request,
                "error.html",
                400,
                message=f"bad filter: status must be one of "
                f"{', '.join(s.value for s in RunStatus)} and page a number",
            )
        result = dashboard.runs_page(
            self.engine, mapref=mapref, status=status, page=page, page_size=PAGE_SIZE
        )

        def link(to_page: int) -> str:
            query = {"mapping": mapref or "", "status": status_text or "", "page": to_page}
            return "/runs?" + urlencode({k: v for k, v in query.items() if v})

        return self.render(
            request,
            "runs.html",
            result=result,
            mapref=mapref,
            status=status_text,
            maprefs=sorted(self.settings.mappings),
            statuses=[s.value for s in RunStatus],
            prev_link=link(page - 1) if page > 1 else None,
            next_link=link(page + 1) if result.has_next else None,
            page="runs",
        )

    def _run_context(self, run_id: str) -> dict[str, Any] | None:
        run = store.find_run(self.engine, run_id)
        if run is None:
            return None
        totals = store.progress_totals(self.engine, run_id)
        run = store.with_live_totals(self.engine, run, totals)
        chunks = store.get_chunks(self.engine, run_id)
        line = progress_line(SimpleNamespace(run=run, totals=totals), RateMeter())
        return {
            "run": run,
            "line": line,
            "chunks": chunks,
            "timeline": chunk_timeline(chunks, utcnow()),
            "live": not run.status.is_terminal,
            "can_stop": not run.status.is_terminal,
            "can_resume": run.status in (RunStatus.FAILED, RunStatus.STOPPED),
            "quarantined": dashboard.error_row_count(self.engine, run_id),
        }

    def run(self, request: Request) -> Response:
        run_id = request.path_params["run_id"]
        ctx = self._run_context(run_id)
        if ctx is None:
            return self.render(request, "error.html", 404, message=f"no run with id '{run_id}'")
        error_rows = store.error_rows(self.engine, run_id, limit=QUARANTINE_SHOWN)
        return self.render(
            request,
            "run.html",
            error_rows=error_rows,
            notice=request.query_params.get("notice"),
            problem=request.query_params.get("problem"),
            page="runs",
            **ctx,
        )

    def run_live(self, request: Request) -> Response:
        """The part of the run page that htmx polls while the run is active."""
        run_id = request.path_params["run_id"]
        ctx = self._run_context(run_id)
        if ctx is None:
            return self.render(request, "error.html", 404, message=f"no run with id '{run_id}'")
        return self.render(request, "run_live.html", **ctx)

    def mapping(self, request: Request) -> Response:
        mapref = request.path_params["mapref"]
        runs = dashboard.history(self.engine, mapref, HISTORY_RUNS)
        if not runs and mapref not in self.settings.mappings:
            return self.render(request, "error.html", 404, message=f"no mapping '{mapref}'")
        return self.render(
            request,
            "mapping.html",
            mapref=mapref,
            runs=runs[::-1],
            chart=history_chart(runs),
            page="mappings",
        )

    def metrics(self, request: Request) -> Response:
        body = metrics.render(self.engine, list(self.settings.mappings))
        return Response(body, media_type=metrics.CONTENT_TYPE)

    # -- actions -------------------------------------------------------------------------
    async def action(self, request: Request) -> Response:
        """Stop or Resume, as ``chordload stop`` / ``chordload resume`` do."""
        from starlette.concurrency import run_in_threadpool

        run_id, verb = request.path_params["run_id"], request.path_params["verb"]
        if verb not in ("stop", "resume"):
            return self.render(request, "error.html", 404, message=f"no action '{verb}'")
        form = await request.form()
        token = form.get(CSRF_FIELD)
        refusal = cross_site_refusal(request, token if isinstance(token, str) else None)
        if refusal is not None:
            return self.render(request, "error.html", 403, message=f"refused: {refusal}")
        try:
            notice = await run_in_threadpool(self._act, verb, run_id, request.state.user)
        except ChordloadError as err:
            return self._back(run_id, problem=str(err))
        return self._back(run_id, notice=notice)

    def _act(self, verb: str, run_id: str, user: str) -> str:
        if verb == "stop":
            from coordinator.stop import stop

            outcome = stop(run_id, settings=self.settings, requested_by=f"ui:{user}")
            return f"stop requested: run is {outcome.status.value}"
        from coordinator.resume import resume

        resume(run_id, settings=self.settings)
        return "resumed: its unfinished chunks were launched again"

    @staticmethod
    def _back(run_id: str, **query: str) -> Response:
        return RedirectResponse(f"/runs/{run_id}?{urlencode(query)}", status_code=303)


def create_app(settings: Settings, credentials: Credentials) -> Starlette:
    pages = Dashboard(settings)
    routes = [
        Route("/", pages.mappings),
        Route("/runs", pages.runs),
        Route("/runs/{run_id}", pages.run),
        Route("/runs/{run_id}/live", pages.run_live),
        Route("/runs/{run_id}/{verb:str}", pages.action, methods=["POST"]),
        Route("/mappings/{mapref:path}", pages.mapping),
        Route("/metrics", pages.metrics),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    return Starlette(
        routes=routes, middleware=[Middleware(AuthMiddleware, credentials=credentials)]
    )
