"""The FastAPI application: ingest (samples, OTLP traces), labels, probe recalibration, calibration history,
alerts, health, metrics.

Every write (any method but GET/HEAD/OPTIONS, on any route) needs ``Authorization: Bearer
<token>`` when the environment variable named by ``api.token_env`` is set, and every body is
bounded by ``api.max_body_bytes``: both by :class:`monitor.api.guard.WriteGuard`, middleware
around the whole app, so a route added here or by another module is covered without declaring
anything. Reads are open. Invalid bodies get 422 with each offending field named
(``samples.3.prompt: Field required``), records that storage refuses come back per index.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from sqlalchemy import or_, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from monitor import metrics
from monitor.api.guard import WriteGuard, writes_open
from monitor.api.otlp import register_otlp
from monitor.api.schemas import (
    AlertOut,
    CalibrationRow,
    Health,
    LabelIn,
    LabelsOut,
    MAX_INT,
    QueryText,
    RecalibrateIn,
    SampleLookup,
    SamplesIn,
    SamplesOut,
    UtcDatetime,
)
from monitor.config import Settings
from storage.models import Alert, OVERALL_TASK, CalibrationWindow, Label, Sample

__all__ = ["create_app", "DaemonStatus"]

logger = logging.getLogger(__name__)

DaemonStatus = Callable[[], dict[str, Any]]
"""The daemon's status for /healthz (``Daemon.status()``: worker, leader, each job's runs and last error)."""


def _field_errors(exc: RequestValidationError) -> list[str]:
    out = []
    for e in exc.errors():
        loc = [str(p) for p in e.get("loc", ()) if p != "body"]
        out.append(f"{'.'.join(loc) or 'body'}: {e.get('msg', 'invalid')}")
    return out


def _db(request: Request) -> Iterator[Session]:
    with request.app.state.sessions() as s:
        yield s


DB = Annotated[Session, Depends(_db)]


def create_app(settings: Settings, *, engine: Engine | None = None, daemon_status: DaemonStatus | None = None) -> FastAPI:
    """Build the app over ``engine`` (default: ``storage.url``). ``daemon_status`` adds the daemon's to /healthz."""
    from storage.db import engine_for, require_schema, safe_url, session_factory

    engine = engine or engine_for(settings.storage)
    sessions: sessionmaker[Session] = session_factory(engine)
    app = FastAPI(
        title="vlmwatch",
        version="0.1.0",
        description="Monitoring API of vlmwatch: sample ingest, labels, calibration history, alerts.",
    )
    app.state.engine = engine
    app.state.sessions = sessions
    app.state.metrics = _metrics_registry(sessions, settings)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        fields = _field_errors(exc)
        return JSONResponse(status_code=422, content={"error": "; ".join(fields), "fields": fields})

    from monitor.ui import LOGIN_PATHS, mount_ui

    app.add_middleware(WriteGuard, token=lambda: settings.secret(settings.api.token_env),
                       max_body_bytes=settings.api.max_body_bytes, self_checked=LOGIN_PATHS)
    mount_ui(app, settings)  # the read-only dashboard under /ui

    @app.post("/v1/samples", response_model=SamplesOut, summary="Ingest a batch of samples")
    def post_samples(body: SamplesIn) -> SamplesOut:
        from monitor.api.ingest import ingest_batch

        out = ingest_batch(sessions, body.samples, max_image_bytes=settings.storage.max_image_bytes,
                           tasks=settings.task_rules())
        metrics.API_INGESTED.labels("accepted").inc(out.accepted)
        metrics.API_INGESTED.labels("duplicate").inc(out.duplicates)
        metrics.API_INGESTED.labels("rejected").inc(len(out.rejected))
        if out.rejected and not out.accepted and not out.duplicates:
            raise HTTPException(422, detail=out.model_dump())
        return out

    register_otlp(app, settings)

    @app.get("/v1/samples", response_model=SampleLookup, summary="Was the response with this id sampled?")
    def get_samples(s: DB, response_id: Annotated[QueryText, Query(min_length=1, max_length=128,
                                                                   description="the `id` of the chat completion")]
                    ) -> SampleLookup:
        """Labels count only for sampled requests: a labeller asks here first (no prompt or answer is shown).
        A response the proxy sampled is stored once its spool is shipped (``spool.ship_interval_seconds``)."""
        rows = list(s.scalars(select(Sample).where(Sample.response_id == response_id).order_by(Sample.ts)))
        ids = [r.id for r in rows]
        labels = list(s.execute(select(Label.sample_id, Label.source).where(
            or_(Label.response_id == response_id, Label.sample_id.in_(ids)) if ids else Label.response_id == response_id)))
        by_sample: dict[str, list[str]] = {}
        for sid, source in labels:
            by_sample.setdefault(sid, []).append(source)
        out = [{"id": r.id, "model": r.model, "ts": r.ts, "route": r.route, "status": r.status,
                "labels": sorted(by_sample.get(r.id, []))} for r in rows]
        return SampleLookup(response_id=response_id, sampled=bool(rows), samples=out,
                            waiting_labels=len(by_sample.get(None, [])))

    @app.post("/v1/labels", response_model=LabelsOut, summary="Record correctness labels")
    def post_labels(body: LabelIn | list[LabelIn], s: DB) -> LabelsOut:
        from monitor.api.labels import store_labels

        items = body if isinstance(body, list) else [body]
        out = store_labels(s, items)
        s.commit()
        metrics.API_LABELS.labels("stored").inc(out.stored)
        metrics.API_LABELS.labels("duplicate").inc(out.duplicates)
        return out

    @app.post("/v1/probes/{model}/recalibrate",
              summary="Recalibrate a model's active probe on its freshest labels, as a new probe version",
              responses={404: {"description": "unknown model"},
                         409: {"description": "no active probe, too few labels, or ranking broke (retrain)"}})
    def post_recalibrate(model: QueryText, s: DB, body: RecalibrateIn | None = None) -> JSONResponse:
        """The report of ``vlmwatch probe recalibrate --json``; refusals carry ``error`` (a code) and ``message``."""
        from monitor.probe.recalibrate import RecalibrationError, RecalibrationRequest, recalibrate_probe

        body = body or RecalibrateIn()
        request = RecalibrationRequest(model=model, since=body.since, max_labels=body.max_labels, method=body.method,
                                       activate=body.activate, force=body.force)
        try:
            res = recalibrate_probe(s, settings, request)
        except RecalibrationError as e:
            return JSONResponse(status_code=_RECAL_STATUS.get(e.code, 409), content=e.as_dict())
        s.commit()
        if res.status == "retrain":
            return JSONResponse(status_code=409, content={"error": "retrain", "message": res.report["advice"]["text"],
                                                          "status": res.status, **res.report})
        return JSONResponse(status_code=200, content={"status": res.status, **res.report})

    @app.get("/v1/calibration", response_model=list[CalibrationRow], summary="Calibration history")
    def get_calibration(
        s: DB,
        model: QueryText | None = None,
        source: QueryText | None = Query(None, description="human | self_consistency | combined"),
        kind: QueryText | None = Query(None, description="time | rolling"),
        probe_version_id: int | None = Query(None, ge=1, le=MAX_INT),
        task: QueryText | None = Query(None, description="a task's windows (collectors.tasks); omitted: the overall ones"),
        since: UtcDatetime | None = None,
        until: UtcDatetime | None = None,
        include_partial: bool = True,
        limit: int = Query(500, ge=1, le=10_000),
    ) -> list[CalibrationRow]:
        q = select(CalibrationWindow).where(CalibrationWindow.task == (task or OVERALL_TASK))
        for col, val in ((CalibrationWindow.model, model), (CalibrationWindow.source, source),
                         (CalibrationWindow.kind, kind), (CalibrationWindow.probe_version_id, probe_version_id)):
            if val is not None:
                q = q.where(col == val)
        if since is not None:
            q = q.where(CalibrationWindow.window_end >= since)
        if until is not None:
            q = q.where(CalibrationWindow.window_start < until)
        if not include_partial:
            q = q.where(CalibrationWindow.partial.is_(False))
        q = q.order_by(CalibrationWindow.window_start.desc(), CalibrationWindow.id.desc()).limit(limit)
        rows = list(s.scalars(q))
        return [CalibrationRow.model_validate(r, from_attributes=True) for r in reversed(rows)]

    @app.get("/v1/alerts", response_model=list[AlertOut], summary="Alerts, newest first")
    def get_alerts(
        s: DB,
        state: QueryText | None = Query(None, description="firing | resolved"),
        model: QueryText | None = None,
        rule: QueryText | None = None,
        since: UtcDatetime | None = None,
        limit: int = Query(100, ge=1, le=10_000),
    ) -> list[AlertOut]:
        q = select(Alert)
        for col, val in ((Alert.state, state), (Alert.model, model), (Alert.rule, rule)):
            if val is not None:
                q = q.where(col == val)
        if since is not None:
            q = q.where(Alert.started_at >= since)
        q = q.order_by(Alert.started_at.desc()).limit(limit)
        return [AlertOut.model_validate(a, from_attributes=True) for a in s.scalars(q)]

    @app.get("/healthz", response_model=Health, summary="Liveness and database health")
    def healthz() -> JSONResponse:
        body = Health(status="ok", database=safe_url(engine.url), schema_ok=True,
                      writes="open" if writes_open(settings) else "token")
        try:
            require_schema(engine)
        except Exception as e:
            body.status, body.schema_ok, body.error = "degraded", False, str(e)
        if daemon_status is not None:
            body.daemon = daemon_status()
        return JSONResponse(status_code=200 if body.status == "ok" else 503, content=body.model_dump(mode="json"))

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    def prom() -> Response:
        # this process's counters (jobs, ingest) + the database's state (windows, alerts, queues)
        body = generate_latest(REGISTRY) + generate_latest(app.state.metrics)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return app


_RECAL_STATUS = {"unknown_model": 404, "bad_request": 422}  # other refusals: 409 (the state does not allow it)


def _metrics_registry(sessions: sessionmaker[Session], settings: Settings) -> CollectorRegistry:
    """A registry of this app's own: the database collector reads at scrape time, never at registration."""
    from monitor.api.db_metrics import DatabaseCollector

    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector(sessions, settings))
    return registry
