"""The FastAPI application: ingest, labels, calibration history, alerts, health, metrics.

Every write (any method but GET/HEAD/OPTIONS, on any route) needs ``Authorization: Bearer
<token>`` when the environment variable named by ``api.token_env`` is set, and every body is
bounded by ``api.max_body_bytes``: both by :class:`monitor.api.guard.WriteGuard`, middleware
around the whole app, so a route added here or by another module is covered without declaring
anything. Reads are open. Invalid bodies get 422 with each offending field named
(``samples.3.prompt: Field required``), records that storage refuses come back per index.
"""

from __future__ import annotations

import base64
import binascii
import logging
from datetime import datetime, timezone
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from monitor.api.guard import WriteGuard, writes_open
from monitor.api.schemas import (
    AlertOut,
    CalibrationRow,
    Health,
    LabelIn,
    LabelsOut,
    RejectedOut,
    SampleIn,
    SamplesIn,
    SamplesOut,
)
from monitor.config import Settings
from monitor.daemon import metrics
from storage.models import Alert, CalibrationWindow

__all__ = ["create_app"]

logger = logging.getLogger(__name__)


def _field_errors(exc: RequestValidationError) -> list[str]:
    out = []
    for e in exc.errors():
        loc = [str(p) for p in e.get("loc", ()) if p != "body"]
        out.append(f"{'.'.join(loc) or 'body'}: {e.get('msg', 'invalid')}")
    return out


def _decode_image(value: str, max_bytes: int) -> tuple[bytes | None, str | None]:
    """Image bytes or URL from an API payload. Server-side file paths are not accepted."""
    from storage.images import ImageError, decode_image_ref

    text = value.strip()
    low = text[:8].lower()
    if low.startswith("data:") or low.startswith("http://") or low.startswith("https://"):
        ref = decode_image_ref(text, None, max_bytes)
        return ref.data, ref.url
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ImageError("image must be a data URL, base64 or an http(s) URL") from None
    if len(data) > max_bytes:
        raise ImageError(f"image is {len(data)} bytes, over storage.max_image_bytes={max_bytes}")
    return data, None


def _db(request: Request) -> Iterator[Session]:
    with request.app.state.sessions() as s:
        yield s


DB = Annotated[Session, Depends(_db)]


def create_app(settings: Settings, *, engine: Engine | None = None, daemon: Any = None) -> FastAPI:
    """Build the app over ``engine`` (default: ``storage.url``). ``daemon`` adds its status to /healthz."""
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

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        fields = _field_errors(exc)
        return JSONResponse(status_code=422, content={"error": "; ".join(fields), "fields": fields})

    app.add_middleware(WriteGuard, token=lambda: settings.secret(settings.api.token_env),
                       max_body_bytes=settings.api.max_body_bytes)

    @app.post("/v1/samples", response_model=SamplesOut, summary="Ingest a batch of samples")
    def post_samples(body: SamplesIn) -> SamplesOut:
        from storage.images import ImageError
        from storage.records import SampleRecord
        from storage.repo_samples import ingest_isolated

        records: list[SampleRecord] = []
        positions: list[int] = []
        rejected: list[RejectedOut] = []
        for i, smp in enumerate(body.samples):
            try:
                rec = _to_record(smp, settings.storage.max_image_bytes, SampleRecord)
            except ImageError as e:
                rejected.append(RejectedOut(index=i, id=smp.id, reason=f"samples.{i}.image: {e}"))
                continue
            records.append(rec)
            positions.append(i)
        # records the database refuses come back by index; the rest of the batch is stored
        res = ingest_isolated(sessions, records, max_image_bytes=settings.storage.max_image_bytes)
        for r in res.rejected:
            idx = positions[r.index] if 0 <= r.index < len(positions) else r.index
            rejected.append(RejectedOut(index=idx, id=r.key, reason=r.reason))
        metrics.API_INGESTED.labels("accepted").inc(len(res.inserted))
        metrics.API_INGESTED.labels("duplicate").inc(res.duplicates)
        metrics.API_INGESTED.labels("rejected").inc(len(rejected))
        out = SamplesOut(accepted=len(res.inserted), duplicates=res.duplicates, rejected=sorted(rejected, key=lambda r: r.index))
        if rejected and not res.inserted and not res.duplicates:
            raise HTTPException(422, detail=out.model_dump())
        return out

    @app.post("/v1/labels", response_model=LabelsOut, summary="Record correctness labels")
    def post_labels(body: LabelIn | list[LabelIn], s: DB) -> LabelsOut:
        from monitor.api.labels import store_labels

        items = body if isinstance(body, list) else [body]
        out = store_labels(s, items)
        s.commit()
        metrics.API_LABELS.labels("stored").inc(out.stored)
        metrics.API_LABELS.labels("duplicate").inc(out.duplicates)
        return out

    @app.get("/v1/calibration", response_model=list[CalibrationRow], summary="Calibration history")
    def get_calibration(
        s: DB,
        model: str | None = None,
        source: str | None = Query(None, description="human | self_consistency | combined"),
        kind: str | None = Query(None, description="time | rolling"),
        probe_version_id: int | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        include_partial: bool = True,
        limit: int = Query(500, ge=1, le=10_000),
    ) -> list[CalibrationRow]:
        q = select(CalibrationWindow)
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
        state: str | None = Query(None, description="firing | resolved"),
        model: str | None = None,
        rule: str | None = None,
        since: datetime | None = None,
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
        if daemon is not None:
            body.daemon = daemon.status()
        return JSONResponse(status_code=200 if body.status == "ok" else 503, content=body.model_dump(mode="json"))

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    def prom() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    return app


def _to_record(smp: SampleIn, max_bytes: int, record_cls: Any) -> Any:
    data, url = (None, None) if smp.image is None else _decode_image(smp.image, max_bytes)
    kw: dict[str, Any] = dict(
        id=smp.id, model=smp.model, prompt=smp.prompt, answer=smp.answer, source="api",
        image=data, image_url=url, response_id=smp.response_id, label=smp.label, meta=smp.meta,
    )
    if smp.ts is not None:
        kw["ts"] = smp.ts if smp.ts.tzinfo is not None else smp.ts.replace(tzinfo=timezone.utc)
    if smp.route:
        kw["route"] = smp.route
    return record_cls(**kw)
